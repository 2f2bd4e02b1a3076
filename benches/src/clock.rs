//! A sleep finer than tokio's 1 ms timer wheel, for the mock backend and the arrival schedule.
//!
//! One process-wide thread keeps a heap of deadlines and waits on a condition variable until
//! the earliest; each sleeper awaits a oneshot. No spinning: the wake-up is late by the
//! kernel's timer slack plus a thread hand-off, measured at 50–80 µs on the reference VM (the
//! `window_precision` report's `tokio::time::sleep` rows show what tokio's own timer costs).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

struct Sleeper {
    deadline: Instant,
    seq: u64,
    tx: oneshot::Sender<()>,
}

impl PartialEq for Sleeper {
    fn eq(&self, other: &Self) -> bool {
        (self.deadline, self.seq) == (other.deadline, other.seq)
    }
}
impl Eq for Sleeper {}
impl PartialOrd for Sleeper {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Sleeper {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.deadline, self.seq).cmp(&(other.deadline, other.seq))
    }
}

#[derive(Default)]
struct Queue {
    heap: BinaryHeap<Reverse<Sleeper>>,
    seq: u64,
}

struct Clock {
    queue: Mutex<Queue>,
    changed: Condvar,
}

fn clock() -> &'static Clock {
    static CLOCK: OnceLock<&'static Clock> = OnceLock::new();
    CLOCK.get_or_init(|| {
        let clock: &'static Clock =
            Box::leak(Box::new(Clock { queue: Mutex::new(Queue::default()), changed: Condvar::new() }));
        std::thread::Builder::new()
            .name("bench-clock".into())
            .spawn(move || run(clock))
            .expect("spawn the bench clock thread");
        clock
    })
}

fn run(clock: &'static Clock) {
    let mut queue = clock.queue.lock().unwrap();
    loop {
        let now = Instant::now();
        while queue.heap.peek().is_some_and(|Reverse(s)| s.deadline <= now) {
            let Reverse(sleeper) = queue.heap.pop().expect("peeked");
            let _ = sleeper.tx.send(());
        }
        queue = match queue.heap.peek() {
            Some(Reverse(next)) => {
                let wait = next.deadline.saturating_duration_since(now);
                clock.changed.wait_timeout(queue, wait).unwrap().0
            }
            None => clock.changed.wait(queue).unwrap(),
        };
    }
}

/// Waits until `deadline` (late by ~50–80 µs, see the module doc); returns at once if it passed.
pub async fn sleep_until(deadline: Instant) {
    if deadline <= Instant::now() {
        return;
    }
    let (tx, rx) = oneshot::channel();
    let clock = clock();
    {
        let mut queue = clock.queue.lock().unwrap();
        queue.seq += 1;
        let seq = queue.seq;
        let earliest = queue.heap.peek().is_none_or(|Reverse(s)| deadline < s.deadline);
        queue.heap.push(Reverse(Sleeper { deadline, seq, tx }));
        if earliest {
            clock.changed.notify_one();
        }
    }
    let _ = rx.await;
}

/// Waits `duration`; see [`sleep_until`].
pub async fn sleep(duration: Duration) {
    sleep_until(Instant::now() + duration).await;
}
