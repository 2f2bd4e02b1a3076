//! A process-wide timer that holds sub-millisecond deadlines.
//!
//! tokio's timer wheel has a 1 ms resolution and rounds deadlines up: a 1 ms `sleep` costs
//! ~2.3 ms on the reference machine, and a 50 µs window would cost a whole tick. Windows from
//! 50 µs to a few ms need better, so the driver's deadlines go to one dedicated thread instead:
//!
//! 1. It sleeps on a condition variable until `SPIN_BEFORE` ahead of the earliest deadline.
//!    On Linux it first sets its timer slack to 1 ns (`PR_SET_TIMERSLACK`), so the kernel does
//!    not defer the wake-up by the default 50 µs slack.
//! 2. It then asks the deadline's [`SkipSpin`] whether the spin is needed. If so it spins
//!    (reading the clock, with a spin hint, in short slices between which it serves the other
//!    deadlines) until the deadline; if not, it sleeps on to the deadline itself. It wakes the
//!    driver's task at the deadline, deadlines due together in their order.
//!
//! The driver asks to be woken a little before its deadline (by a thread's or a parked worker's
//! wake-up latency, `driver/alarm.rs`) and covers the rest by yielding (staying runnable)
//! rather than parking, because waking a parked tokio worker costs tens of microseconds too.
//! Its `SkipSpin` says "skip" when the bus is busy: its workers are awake with callers then,
//! and the driver's own last stretch covers the sleep's wake-up latency, so no core is burnt
//! on a spin. (Asked when the spin would begin,
//! not when the deadline is set: a bus is armed when its first passenger boards, long before it
//! fills.) A spin costs at most ~100 µs of a core per window, and only while a lightly loaded
//! window is open; an idle batcher registers no deadline and the thread sleeps.
//! `examples/window_precision.rs` measures the result against tokio's `sleep`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::task::Waker;
use std::time::{Duration, Instant};

/// How long before a deadline the thread stops sleeping and spins: the futex wake-up latency
/// of a 2-vCPU VM (10–60 µs, `examples/window_precision.rs`) with room.
const SPIN_BEFORE: Duration = Duration::from_micros(100);

/// How long the thread spins before it looks at its queue again (new deadlines, deadlines
/// due, spins no longer needed).
const SPIN_SLICE: Duration = Duration::from_micros(2);

/// Asked (on the timer thread, outside its lock; it should be quick) when the last
/// `SPIN_BEFORE` before a deadline begins, and again every `SPIN_SLICE` of the spin: `true` if
/// the thread may sleep to the deadline instead of spinning to it.
pub(crate) type SkipSpin = Arc<dyn Fn() -> bool + Send + Sync>;

struct Entry {
    /// When the thread must look at this entry: `SPIN_BEFORE` ahead of the deadline, or the
    /// deadline itself once the spin is skipped.
    start: Instant,
    deadline: Instant,
    seq: u64,
    skip_spin: SkipSpin,
    waker: Waker,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.start, self.seq) == (other.start, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.start, self.seq).cmp(&(other.start, other.seq))
    }
}

#[derive(Default)]
struct Queue {
    /// Ordered by `start`, the time the thread must act on an entry.
    heap: BinaryHeap<Reverse<Entry>>,
    seq: u64,
}

struct Timer {
    queue: Mutex<Queue>,
    changed: Condvar,
}

/// The running timer thread, once started. `Arc`, not a leaked box: a start whose spawn fails
/// leaves nothing behind.
static TIMER: OnceLock<Arc<Timer>> = OnceLock::new();

/// Held while the thread is spawned: one spawn at a time, and a failed spawn is tried again by
/// the next `start` (a thread limit or memory shortage may pass).
static SPAWNING: Mutex<()> = Mutex::new(());

/// The timer thread, running: what a driver keeps to register its deadlines. Only [`start`]
/// makes one, so holding one means the thread exists and registering cannot fail.
#[derive(Clone, Copy)]
pub(crate) struct Handle(&'static Timer);

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("timer::Handle")
    }
}

/// Starts the timer thread if it is not running yet (at `build`, so that the first deadline
/// does not pay for spawning it), and returns its handle.
///
/// # Errors
///
/// The operating system's error if the thread cannot be spawned (a thread or memory limit);
/// a later call tries again.
pub(crate) fn start() -> std::io::Result<Handle> {
    #[cfg(test)]
    if tests::REFUSE_SPAWN.with(std::cell::Cell::get) {
        return Err(std::io::Error::new(std::io::ErrorKind::WouldBlock, "spawn refused by the test"));
    }
    if let Some(timer) = TIMER.get() {
        return Ok(Handle(timer));
    }
    let _spawning = SPAWNING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(timer) = TIMER.get() {
        return Ok(Handle(timer));
    }
    let timer = Arc::new(Timer { queue: Mutex::new(Queue::default()), changed: Condvar::new() });
    let runs = Arc::clone(&timer);
    std::thread::Builder::new().name("busline-timer".into()).spawn(move || runs.run())?;
    // Under `SPAWNING`, after a `get` that found it empty: nobody else sets it.
    let _ = TIMER.set(timer);
    Ok(Handle(TIMER.get().expect("set just above")))
}

impl Handle {
    /// Wakes `waker` at `deadline` (or just after: within a microsecond or two with a spin, by
    /// the thread's wake-up latency, 10–60 µs on a 2-vCPU VM, when `skip_spin` says to skip
    /// it). Each call registers one wake-up.
    pub(crate) fn wake_at(self, deadline: Instant, skip_spin: &SkipSpin, waker: &Waker) {
        let timer = self.0;
        let start = deadline.checked_sub(SPIN_BEFORE).unwrap_or(deadline);
        let skip_spin = Arc::clone(skip_spin);
        let mut q = timer.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.seq += 1;
        let seq = q.seq;
        let earliest = q.heap.peek().is_none_or(|Reverse(e)| start < e.start);
        q.heap.push(Reverse(Entry { start, deadline, seq, skip_spin, waker: waker.clone() }));
        drop(q);
        if earliest {
            timer.changed.notify_one();
        }
    }
}

impl Timer {
    fn run(&self) {
        set_fine_timer_slack();
        let mut due: Vec<(Instant, u64, Waker)> = Vec::new();
        let mut started: Vec<Entry> = Vec::new();
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let now = Instant::now();
            // Every entry whose start has come: due, or to be asked about its spin.
            while q.heap.peek().is_some_and(|Reverse(e)| e.start <= now) {
                let Reverse(entry) = q.heap.pop().expect("peeked");
                if entry.deadline <= now {
                    due.push((entry.deadline, entry.seq, entry.waker));
                } else {
                    started.push(entry);
                }
            }
            if due.is_empty() && started.is_empty() {
                q = match q.heap.peek() {
                    Some(Reverse(next)) => {
                        let sleep = next.start - now;
                        self.changed.wait_timeout(q, sleep).unwrap_or_else(|e| e.into_inner()).0
                    }
                    None => self.changed.wait(q).unwrap_or_else(|e| e.into_inner()),
                };
                continue;
            }
            // Outside the lock: drivers may arm deadlines meanwhile, and waking a task or asking
            // a driver (whose answer may drop the last reference to its batcher) runs code that
            // is not ours.
            drop(q);
            due.sort_unstable_by_key(|&(deadline, seq, _)| (deadline, seq));
            for (.., waker) in due.drain(..) {
                waker.wake();
            }
            // The earliest deadline still spun for, if any.
            let mut spin_to: Option<Instant> = None;
            for entry in &mut started {
                if entry.start < entry.deadline {
                    // A panicking answer counts as "skip": the deadline is still kept, less tightly.
                    let skip = std::panic::catch_unwind(AssertUnwindSafe(|| (entry.skip_spin)())).unwrap_or(true);
                    if skip {
                        entry.start = entry.deadline;
                    } else {
                        spin_to = Some(spin_to.map_or(entry.deadline, |t| t.min(entry.deadline)));
                    }
                }
            }
            if let Some(deadline) = spin_to {
                let until = deadline.min(now + SPIN_SLICE);
                while Instant::now() < until {
                    std::hint::spin_loop();
                }
            }
            q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.heap.extend(started.drain(..).map(Reverse));
        }
    }
}

#[cfg(all(target_os = "linux", not(miri)))]
fn set_fine_timer_slack() {
    // SAFETY: prctl(PR_SET_TIMERSLACK, 1) only changes this thread's timer slack; it takes no
    // pointers.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
}

// Miri does not run foreign functions such as prctl; the slack only affects precision.
#[cfg(any(not(target_os = "linux"), miri))]
fn set_fine_timer_slack() {}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::cell::Cell;
    use std::task::Wake;

    thread_local! {
        /// Set by a test: `start` on this thread fails as a refused spawn would, whether or not
        /// another test started the thread already (the process shares one).
        pub(crate) static REFUSE_SPAWN: Cell<bool> = const { Cell::new(false) };
    }

    /// Makes `start` fail on this thread until the guard is dropped.
    #[cfg(not(busline_loom))]
    pub(crate) fn refuse_spawn() -> impl Drop {
        struct Reset;
        impl Drop for Reset {
            fn drop(&mut self) {
                REFUSE_SPAWN.with(|refuse| refuse.set(false));
            }
        }
        REFUSE_SPAWN.with(|refuse| refuse.set(true));
        Reset
    }

    /// Runs `f` with `start` failing on this thread.
    #[cfg(not(busline_loom))]
    pub(crate) fn refusing_spawn<T>(f: impl FnOnce() -> T) -> T {
        let _refused = refuse_spawn();
        f()
    }

    struct Record(usize, Arc<Mutex<Vec<usize>>>);
    impl Wake for Record {
        fn wake(self: Arc<Self>) {
            self.1.lock().unwrap().push(self.0);
        }
    }

    #[test]
    fn wakes_every_registration_once_in_order_of_deadline() {
        let fired = Arc::new(Mutex::new(Vec::new()));
        let spin: SkipSpin = Arc::new(|| false);
        let skip: SkipSpin = Arc::new(|| true);
        let timer = super::start().expect("spawning the timer thread");
        let start = Instant::now();
        // Deadlines 0.5 ms apart, spins of 0.1 ms: a skipped spin's entry must not hold up a
        // spinning one that starts before its deadline, nor the other way round.
        let plan = [(4, &skip), (1, &spin), (2, &skip), (3, &spin), (0, &skip)];
        for (i, &(half_ms, skip_spin)) in plan.iter().enumerate() {
            let waker = Waker::from(Arc::new(Record(i, Arc::clone(&fired))));
            timer.wake_at(start + Duration::from_micros(1000 + 500 * half_ms), skip_spin, &waker);
        }
        while fired.lock().unwrap().len() < plan.len() {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(*fired.lock().unwrap(), vec![4, 1, 2, 3, 0], "in order of deadline, once each");
        assert!(start.elapsed() >= Duration::from_millis(3));
    }
}
