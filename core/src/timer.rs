//! A process-wide timer that holds sub-millisecond deadlines.
//!
//! tokio's timer wheel has a 1 ms resolution and rounds deadlines up: a 1 ms `sleep` costs
//! ~2.3 ms on the reference machine, and a 50 µs window would cost a whole tick. Windows from
//! 50 µs to a few ms need better, so the driver's deadlines go to one dedicated thread instead:
//!
//! 1. It sleeps on a condition variable until the earliest deadline, or, for a
//!    [`Precision::Spin`] deadline, until `SPIN_BEFORE` ahead of it. On Linux it first sets its
//!    timer slack to 1 ns (`PR_SET_TIMERSLACK`), so the kernel does not defer the wake-up by the
//!    default 50 µs slack.
//! 2. For a `Spin` deadline it then spins (reading the clock, with a spin hint) until the
//!    deadline. It wakes the driver's task.
//!
//! The driver asks to be woken a little before its deadline (`TIMER_EARLY` in `driver.rs`) and
//! covers the rest by yielding (staying runnable) rather than parking, because waking a parked
//! tokio worker costs tens of microseconds too. It asks for a spin only for a lightly loaded
//! bus, whose workers may be parked; under load the workers are awake and the driver's own
//! stretch covers the sleep's wake-up latency, so no core is burnt on the spin. A spin costs at
//! most ~100 µs of a core per window, and only while a window is open; an idle batcher
//! registers no deadline and the thread sleeps. `examples/window_precision.rs` measures the
//! result against tokio's `sleep`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Condvar, Mutex, OnceLock};
use std::task::Waker;
use std::time::{Duration, Instant};

/// How long before a deadline the thread stops sleeping and spins. The futex wake-up latency
/// of a 2-vCPU VM is 10–60 µs; 100 µs covers it with room.
const SPIN_BEFORE: Duration = Duration::from_micros(100);

/// How a deadline is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Precision {
    /// Sleep until `SPIN_BEFORE` ahead, then spin: wakes within a microsecond or two.
    Spin,
    /// Sleep until the deadline (1 ns timer slack): late by the thread's wake-up latency,
    /// 10-60 µs on a 2-vCPU VM, with no core burnt.
    Sleep,
}

struct Entry {
    deadline: Instant,
    seq: u64,
    precision: Precision,
    waker: Waker,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.deadline, self.seq) == (other.deadline, other.seq)
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
        (self.deadline, self.seq).cmp(&(other.deadline, other.seq))
    }
}

#[derive(Default)]
struct Queue {
    heap: BinaryHeap<Reverse<Entry>>,
    seq: u64,
}

struct Timer {
    queue: Mutex<Queue>,
    changed: Condvar,
}

fn timer() -> &'static Timer {
    static TIMER: OnceLock<&'static Timer> = OnceLock::new();
    TIMER.get_or_init(|| {
        let timer: &'static Timer = Box::leak(Box::new(Timer {
            queue: Mutex::new(Queue::default()),
            changed: Condvar::new(),
        }));
        std::thread::Builder::new()
            .name("busline-timer".into())
            .spawn(move || timer.run())
            .expect("spawning the busline timer thread");
        timer
    })
}

/// Wakes `waker` at `deadline` (or just after, see [`Precision`]). Each call registers one
/// wake-up.
pub(crate) fn wake_at(deadline: Instant, precision: Precision, waker: &Waker) {
    let timer = timer();
    let mut q = timer.queue.lock().unwrap_or_else(|e| e.into_inner());
    q.seq += 1;
    let seq = q.seq;
    let earliest = q.heap.peek().is_none_or(|Reverse(e)| deadline < e.deadline);
    q.heap.push(Reverse(Entry { deadline, seq, precision, waker: waker.clone() }));
    drop(q);
    if earliest {
        timer.changed.notify_one();
    }
}

impl Timer {
    fn run(&self) {
        set_fine_timer_slack();
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let Some(Reverse(next)) = q.heap.peek() else {
                q = self.changed.wait(q).unwrap_or_else(|e| e.into_inner());
                continue;
            };
            let deadline = next.deadline;
            let spin = match next.precision {
                Precision::Spin => SPIN_BEFORE,
                Precision::Sleep => Duration::ZERO,
            };
            let now = Instant::now();
            if deadline <= now {
                let Reverse(entry) = q.heap.pop().expect("peeked");
                drop(q);
                entry.waker.wake();
                q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            } else if deadline - now > spin {
                let sleep = deadline - now - spin;
                q = self.changed.wait_timeout(q, sleep).unwrap_or_else(|e| e.into_inner()).0;
            } else {
                // Spin outside the lock: a new, earlier deadline may come in meanwhile; it is
                // at most SPIN_BEFORE late, and is picked up on the next turn.
                drop(q);
                while Instant::now() < deadline {
                    std::hint::spin_loop();
                }
                q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            }
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
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(Mutex<usize>);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            *self.0.lock().unwrap() += 1;
        }
    }

    #[test]
    fn wakes_every_registration_in_order_of_deadline() {
        let count = Arc::new(Count(Mutex::new(0)));
        let waker = Waker::from(count.clone());
        let start = Instant::now();
        for (ms, precision) in [(3, Precision::Sleep), (1, Precision::Spin), (2, Precision::Sleep)] {
            wake_at(start + Duration::from_millis(ms), precision, &waker);
        }
        while *count.0.lock().unwrap() < 3 {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(start.elapsed() >= Duration::from_millis(3));
    }
}
