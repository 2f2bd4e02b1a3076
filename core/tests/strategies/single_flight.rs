//! `SingleFlight`: one execution per key in flight, shared by its concurrent callers; errors,
//! panics and cancellation reach exactly the callers they concern; nothing stays behind.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use busline::{Error, SingleFlight};
use crate::support::{Came, DropBomb, Live, assert_send, chaos, eventually, poll_at_most, poll_once, quiet_injected_panics, value_of, without_panic};
use tokio::sync::Notify;

type Sf = SingleFlight<u64, u64, u64>;

#[test]
fn futures_are_send() {
    let sf = Sf::new();
    let fut = sf.run(1, || async { Ok(1) });
    assert_send(&fut);
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Sf>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_share_one_execution() {
    const CALLERS: usize = 200;
    let sf = Sf::new();
    let executions = Arc::new(AtomicU64::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let joined = Arc::new(AtomicU64::new(0));
    let all_joined = Arc::new(Notify::new());
    let tasks: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (sf, executions, gate, joined, all_joined) =
                (sf.clone(), executions.clone(), gate.clone(), joined.clone(), all_joined.clone());
            tokio::spawn(async move {
                let mut call = Box::pin(sf.run(9, || async move {
                    executions.fetch_add(1, Ordering::SeqCst);
                    let _ = gate.acquire().await.unwrap();
                    Ok(value_of(9))
                }));
                // The first poll joins (or starts) the flight; only then may the gate open.
                let early = poll_once(&mut call).await;
                assert!(early.is_none(), "the execution waits for the gate");
                if joined.fetch_add(1, Ordering::SeqCst) + 1 == CALLERS as u64 {
                    all_joined.notify_one();
                }
                call.await
            })
        })
        .collect();
    all_joined.notified().await;
    assert_eq!(sf.in_flight(), 1);
    gate.add_permits(1);
    for t in tasks {
        assert_eq!(t.await.unwrap().ok(), Some(value_of(9)));
    }
    assert_eq!(executions.load(Ordering::SeqCst), 1, "one execution for every caller");
    assert_eq!(sf.in_flight(), 0);
}

#[tokio::test]
async fn a_call_after_completion_starts_afresh() {
    let sf = Sf::new();
    let n = Arc::new(AtomicU64::new(0));
    let (n1, n2) = (n.clone(), n.clone());
    let a = sf.run(1, || async move { Ok(n1.fetch_add(1, Ordering::SeqCst)) }).await;
    let b = sf.run(1, || async move { Ok(n2.fetch_add(1, Ordering::SeqCst)) }).await;
    assert_eq!((a.ok(), b.ok()), (Some(0), Some(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_callers_cancellation_leaves_the_others_and_the_execution() {
    let sf = Sf::new();
    let release = Arc::new(Notify::new());
    let live = Arc::new(AtomicI64::new(0));
    let start = |sf: &Sf| {
        let (release, live) = (release.clone(), live.clone());
        let sf = sf.clone();
        async move {
            sf.run(3, move || async move {
                let _alive = Live::new(&live);
                release.notified().await;
                Ok(30)
            })
            .await
        }
    };
    let mut first = Box::pin(start(&sf));
    let second = tokio::spawn(start(&sf));
    assert!(poll_once(&mut first).await.is_none());
    eventually(10, "the execution started", || live.load(Ordering::SeqCst) == 1).await;
    drop(first);
    tokio::task::yield_now().await;
    assert_eq!(live.load(Ordering::SeqCst), 1, "the execution survives one caller's cancellation");
    release.notify_one();
    assert_eq!(second.await.unwrap().ok(), Some(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_execution_is_dropped_when_its_last_waiter_goes_and_the_key_is_freed() {
    let sf = Sf::new();
    let live = Arc::new(AtomicI64::new(0));
    let call = |sf: &Sf| {
        let live = live.clone();
        let sf = sf.clone();
        Box::pin(async move {
            sf.run(4, move || async move {
                let _alive = Live::new(&live);
                std::future::pending::<()>().await;
                Ok(0)
            })
            .await
        })
    };
    let (mut a, mut b) = (call(&sf), call(&sf));
    assert!(poll_once(&mut a).await.is_none());
    assert!(poll_once(&mut b).await.is_none());
    eventually(10, "the execution started", || live.load(Ordering::SeqCst) == 1).await;
    drop(a);
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(live.load(Ordering::SeqCst), 1, "one waiter is left: the execution runs on");
    assert_eq!(sf.in_flight(), 1);
    drop(b);
    assert_eq!(sf.in_flight(), 0, "the last waiter's drop frees the key at once");
    eventually(10, "the execution is dropped", || live.load(Ordering::SeqCst) == 0).await;
    assert_eq!(sf.run(4, || async { Ok(44) }).await.ok(), Some(44), "the next call starts afresh");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_reaches_every_waiter_unwrapped_and_frees_the_key() {
    let sf = Sf::new();
    let gate = Arc::new(Notify::new());
    let g = gate.clone();
    let mut a = Box::pin(sf.run(5, move || async move {
        g.notified().await;
        Err(55)
    }));
    assert!(poll_once(&mut a).await.is_none());
    let mut b = Box::pin(sf.run(5, || async { Ok(0) }));
    assert!(poll_once(&mut b).await.is_none());
    gate.notify_one();
    let (a, b) = (a.await, b.await);
    let (Err(Error::Batch(ea)), Err(Error::Batch(eb))) = (&a, &b) else { panic!("{a:?} {b:?}") };
    assert_eq!((**ea, **eb), (55, 55), "the error itself, not wrapped");
    assert!(Arc::ptr_eq(ea, eb), "one error shared by the execution's waiters");
    assert_eq!(sf.in_flight(), 0);
    assert_eq!(sf.run(5, || async { Ok(5) }).await.ok(), Some(5), "the error freed the key");
}

#[tokio::test]
async fn panics_reach_the_waiters_as_panicked_and_the_key_is_freed() {
    quiet_injected_panics();
    let sf = Sf::new();
    let in_future = sf.run(6, || async { panic!("injected") }).await;
    assert!(matches!(in_future, Err(Error::Panicked)), "{in_future:?}");
    let in_f = sf
        .run(6, || -> std::future::Ready<Result<u64, u64>> { panic!("injected") })
        .await;
    assert!(matches!(in_f, Err(Error::Panicked)), "{in_f:?}");
    assert_eq!(sf.in_flight(), 0);
    assert_eq!(sf.run(6, || async { Ok(6) }).await.ok(), Some(6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_starts_the_next_caller_afresh_and_current_waiters_keep_theirs() {
    let sf = Sf::new();
    let (old_gate, new_gate) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let g = old_gate.clone();
    let mut old = Box::pin(sf.run(7, move || async move {
        g.notified().await;
        Ok(1)
    }));
    assert!(poll_once(&mut old).await.is_none());
    assert!(sf.forget(&7));
    assert!(!sf.forget(&7), "forgotten once");
    let g = new_gate.clone();
    let mut new = Box::pin(sf.run(7, move || async move {
        g.notified().await;
        Ok(2)
    }));
    assert!(poll_once(&mut new).await.is_none());
    // The old execution ends first: it must not free the new flight's key.
    old_gate.notify_one();
    assert_eq!(old.await.ok(), Some(1), "the current waiter keeps its execution");
    assert_eq!(sf.in_flight(), 1, "the new flight is still in flight");
    let mut joiner = Box::pin(sf.run(7, || async { Ok(3) }));
    assert!(poll_once(&mut joiner).await.is_none(), "joins the new flight");
    new_gate.notify_one();
    assert_eq!((new.await.ok(), joiner.await.ok()), (Some(2), Some(2)));
    assert_eq!(sf.in_flight(), 0);
}

/// Per group: cancelling every caller of one key does not disturb the callers of another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_one_key_does_not_disturb_another() {
    let sf = Sf::new();
    let gate = Arc::new(Notify::new());
    let g = gate.clone();
    let other = tokio::spawn({
        let sf = sf.clone();
        async move {
            sf.run(2, move || async move {
                g.notified().await;
                Ok(22)
            })
            .await
        }
    });
    for _ in 0..100 {
        let mut doomed = Box::pin(sf.run(1, std::future::pending));
        assert!(poll_once(&mut doomed).await.is_none());
    }
    eventually(10, "key 2 is in flight", || sf.in_flight() == 1).await;
    gate.notify_one();
    assert_eq!(other.await.unwrap().ok(), Some(22));
    assert_eq!(sf.in_flight(), 0);
}

/// A key whose `Hash` and `Eq` panic on demand.
#[derive(Debug, Clone)]
struct Touchy(u64);
impl Hash for Touchy {
    fn hash<H: Hasher>(&self, state: &mut H) {
        assert!(self.0 != 13, "injected hash panic");
        self.0.hash(state);
    }
}
impl PartialEq for Touchy {
    fn eq(&self, other: &Self) -> bool {
        assert!(self.0 != 14, "injected eq panic");
        self.0 == other.0
    }
}
impl Eq for Touchy {}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_key_reaches_its_own_caller_only() {
    quiet_injected_panics();
    let sf = SingleFlight::<Touchy, u64, ()>::new();
    assert!(matches!(sf.run(Touchy(13), || async { Ok(0) }).await, Err(Error::Panicked)));
    // Eq runs only against a key in flight in the same bucket: two keys 14 in flight at once.
    let gate = Arc::new(Notify::new());
    let g = gate.clone();
    let mut first = Box::pin(sf.run(Touchy(14), move || async move {
        g.notified().await;
        Ok(14)
    }));
    assert!(poll_once(&mut first).await.is_none());
    assert!(matches!(sf.run(Touchy(14), || async { Ok(0) }).await, Err(Error::Panicked)));
    assert!(!sf.forget(&Touchy(14)), "a panicking key counts as not in flight");
    gate.notify_one();
    assert_eq!(first.await.ok(), Some(14));
    assert_eq!(sf.run(Touchy(1), || async { Ok(1) }).await.ok(), Some(1), "the group keeps serving");
    assert_eq!(sf.in_flight(), 0);
}

/// A value whose `Clone` and a key whose `Drop` call back into the group: were either run under
/// one of its locks, this would deadlock (std's mutex is not reentrant).
#[derive(Debug)]
struct Reentrant(Arc<OnceLock<SingleFlight<ReentrantKey, Reentrant, ()>>>);
impl Clone for Reentrant {
    fn clone(&self) -> Self {
        let sf = self.0.get().unwrap();
        let _ = sf.in_flight();
        sf.forget(&ReentrantKey(99, Arc::clone(&self.0)));
        Reentrant(Arc::clone(&self.0))
    }
}
#[derive(Debug)]
struct ReentrantKey(u64, Arc<OnceLock<SingleFlight<ReentrantKey, Reentrant, ()>>>);
impl Hash for ReentrantKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}
impl PartialEq for ReentrantKey {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl Eq for ReentrantKey {}
impl Drop for ReentrantKey {
    fn drop(&mut self) {
        if let Some(sf) = self.1.get() {
            let _ = sf.in_flight();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_user_code_runs_under_our_lock() {
    let cell = Arc::new(OnceLock::new());
    let sf = cell.get_or_init(SingleFlight::new).clone();
    let value = Reentrant(Arc::clone(&cell));
    let v = value.clone();
    let a = sf.run(ReentrantKey(1, Arc::clone(&cell)), move || {
        let _ = v.0.get().unwrap().in_flight();
        async move { Ok(v) }
    });
    let b = sf.run(ReentrantKey(1, Arc::clone(&cell)), || async { Ok(value) });
    let (a, b) = tokio::join!(a, b);
    assert!(a.is_ok() && b.is_ok());
    assert_eq!(sf.in_flight(), 0);
}

/// A million calls from 64 tasks over 2 worker threads on 512 keys: random cancellation at a
/// random poll, injected errors and panics. Every answer is the right one for its key, nothing
/// hangs, and no execution, key or waiter stays behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_a_million_calls() {
    quiet_injected_panics();
    const TASKS: u64 = 64;
    const CALLS: u64 = 1_000_000 / TASKS;
    let sf = Sf::new();
    let live = Arc::new(AtomicI64::new(0));
    let executions = Arc::new(AtomicU64::new(0));
    let (handle, live_, executions_) = (sf.clone(), live.clone(), executions.clone());
    let c = chaos(TASKS, CALLS, move |x, polls| {
        // 512 keys, visited in a scrambled order; 0 to 2 yields in an execution.
        let key = value_of(x) % 512;
        let yields = (value_of(x) >> 16) % 3;
        let (sf, live, executions) = (handle.clone(), live_.clone(), executions_.clone());
        async move {
            let call = sf.run(key, move || {
                executions.fetch_add(1, Ordering::Relaxed);
                async move {
                    let _alive = Live::new(&live);
                    for _ in 0..yields {
                        tokio::task::yield_now().await;
                    }
                    match key % 64 {
                        13 => Err(key),
                        29 => panic!("injected"),
                        _ => Ok(value_of(key)),
                    }
                }
            });
            match poll_at_most(call, polls).await {
                None => Came::Cancelled,
                Some(Ok(v)) => {
                    assert_eq!(v, value_of(key), "key {key} got another key's value");
                    Came::Ok { by: None }
                }
                Some(Err(Error::Batch(e))) => {
                    assert_eq!((*e, key % 64), (key, 13), "an error reached the wrong key");
                    Came::Failed { by: None }
                }
                Some(Err(Error::Panicked)) => {
                    assert_eq!(key % 64, 29, "a panic reached the wrong key");
                    Came::Panicked
                }
                Some(Err(other)) => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
    assert!(c.panicked > 0, "{c:?}");
    let executions = executions.load(Ordering::Relaxed);
    assert!(executions < TASKS * CALLS, "some calls shared an execution ({executions})");
    assert_eq!(sf.in_flight(), 0, "no key stays in flight");
    eventually(30, "every execution dropped", || live.load(Ordering::SeqCst) == 0).await;
    println!(
        "single-flight chaos: {} ok, {} failed, {} panicked, {} cancelled, {executions} executions",
        c.ok, c.failed, c.panicked, c.cancelled
    );
}

/// The caller that holds the shared outcome last drops the value: a panicking `Drop` there is
/// the user's code and is caught; the caller gets its clone.
#[tokio::test(flavor = "current_thread")]
async fn a_values_drop_that_panics_never_reaches_a_caller() {
    quiet_injected_panics();
    let sf = SingleFlight::<u32, DropBomb, ()>::new();
    let answered = without_panic(async move { sf.run(1, || async { Ok(DropBomb::new()) }).await.is_ok() }).await;
    assert_eq!(answered, Ok(true));
}
