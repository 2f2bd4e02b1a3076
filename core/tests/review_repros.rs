//! Review repros (session 8, helper "review"): each test demonstrates one defect found in the
//! strategies, the partition or `Grouped`. They FAIL (or time out) against the code they were
//! written for; the lead decides whether they join the suite once fixed.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use busline::{Error, Serial};
use tokio::sync::Semaphore;

/// Silences the panic hook for the panics these tests inject (their message says "injected").
fn quiet_injected_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let injected = info.payload().downcast_ref::<&str>().is_some_and(|s| s.contains("injected"))
                || info.payload().downcast_ref::<String>().is_some_and(|s| s.contains("injected"));
            if !injected {
                default(info);
            }
        }));
    });
}

/// Runs `body` on its own thread and runtime; `Err` if it does not finish within `secs` (the
/// thread is then left behind: a hang is the finding).
fn within<T: Send + 'static>(secs: u64, body: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
        let _ = tx.send(out);
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(_)) => Err("the body panicked".into()),
        Err(_) => Err(format!("hung: no answer within {secs} s")),
    }
}

// ---------------------------------------------------------------------------------------------
// 1. A group's `Hash` that panics while the partition's map (papaya) copies its table to grow:
//    papaya re-hashes every key during the copy; the panic leaves group 7's old entry marked
//    COPYING for ever. The panic reaches another group's caller (the one whose insert drove the
//    copy), and the next call of group 7 (its `Hash` healthy again) parks its thread for ever
//    in papaya's `wait_copied` (seen with gdb: `Parker::park` < `wait_copied` < `remove_if` <
//    `Partition::find_or_create`).

/// A group whose `Hash` panics for id 7 while its flag is set (the flag is not part of the
/// group's identity; one flag per test, so that the tests do not disturb one another).
#[derive(Clone, Debug)]
struct Flaky(u64, &'static AtomicBool);

impl PartialEq for Flaky {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Eq for Flaky {}

impl Hash for Flaky {
    fn hash<H: Hasher>(&self, state: &mut H) {
        if self.0 == 7 && self.1.load(Ordering::Relaxed) {
            panic!("injected: group 7's hash");
        }
        self.0.hash(state);
    }
}

type GatedSerial = busline::PerGroup<Flaky, Serial<u64, (u64, u64), ()>>;

/// Serial per group whose calls record that they started, then wait for a permit of `gate`.
fn gated_serial(gate: &Arc<Semaphore>, started: &Arc<AtomicU64>) -> GatedSerial {
    let (gate, started) = (gate.clone(), started.clone());
    Serial::per_group(move |g: Flaky, x: u64| {
        let (gate, started) = (gate.clone(), started.clone());
        async move {
            started.fetch_add(1, Ordering::SeqCst);
            gate.acquire().await.unwrap().forget();
            Ok::<_, ()>((g.0, x))
        }
    })
    .build()
    .unwrap()
}

/// Group 7 enters while its `Hash` is healthy and stays (its call waits at the gate); then its
/// `Hash` goes bad and 4,000 other groups arrive and stay, so the map grows. Returns the other
/// groups that were not answered with their own value, and group 7's answer.
async fn grow_past_a_bad_hash(s: &GatedSerial, gate: &Arc<Semaphore>, started: &Arc<AtomicU64>, armed: &'static AtomicBool) -> (Vec<(u64, String)>, Option<(u64, u64)>) {
    let seven = tokio::spawn({
        let s = s.clone();
        async move { s.call(Flaky(7, armed), 7).await }
    });
    while started.load(Ordering::SeqCst) < 1 {
        tokio::task::yield_now().await;
    }
    armed.store(true, Ordering::Relaxed);
    const N: u64 = 4000;
    let others: Vec<_> = (1000..1000 + N)
        .map(|g| {
            let s = s.clone();
            tokio::spawn(async move { s.call(Flaky(g, armed), g).await })
        })
        .collect();
    // Until every call has started or ended (10 s at most).
    for _ in 0..1000 {
        let ended = others.iter().filter(|h| h.is_finished()).count() as u64;
        if started.load(Ordering::SeqCst) + ended >= N + 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gate.add_permits(N as usize + 1);
    let mut wrong = Vec::new();
    for (g, h) in (1000..1000 + N).zip(others) {
        match h.await.unwrap() {
            Ok((got, x)) if got == g && x == g => {}
            other => wrong.push((g, format!("{other:?}"))),
        }
    }
    (wrong, seven.await.unwrap().ok())
}

#[test]
fn partition_a_hash_panic_during_growth_reaches_another_groups_caller() {
    static ARMED: AtomicBool = AtomicBool::new(false);
    quiet_injected_panics();
    let (wrong, seven) = within(60, || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let (gate, started) = (Arc::new(Semaphore::new(0)), Arc::new(AtomicU64::new(0)));
            let s = gated_serial(&gate, &started);
            grow_past_a_bad_hash(&s, &gate, &started, &ARMED).await
        })
    })
    .expect("no hang");
    assert_eq!(seven, Some((7, 7)), "group 7 entered before its Hash went bad: its call runs");
    assert!(wrong.is_empty(), "group 7's Hash panic must reach group 7's callers only; these got: {wrong:?}");
}

#[test]
fn partition_a_hash_panic_during_growth_hangs_the_groups_next_call() {
    static ARMED: AtomicBool = AtomicBool::new(false);
    quiet_injected_panics();
    let again = within(30, || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let (gate, started) = (Arc::new(Semaphore::new(0)), Arc::new(AtomicU64::new(0)));
            let s = gated_serial(&gate, &started);
            let _ = grow_past_a_bad_hash(&s, &gate, &started, &ARMED).await;
            // Group 7's Hash is healthy again: its next call must run.
            ARMED.store(false, Ordering::Relaxed);
            gate.add_permits(1);
            s.call(Flaky(7, &ARMED), 8).await.ok()
        })
    });
    assert_eq!(again, Ok(Some((7, 8))), "group 7's next call, once its Hash is healthy");
}
