//! `UseLast`: each call supersedes the execution in progress; every caller since the last
//! result gets the newest call's result; long bursts run in flat stack and memory.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use busline::{Error, UseLast};
use crate::support::{DropBomb, Live, assert_send, came_from_work, chaos, eventually, poll_at_most, poll_once, quiet_injected_panics, value_of, without_panic};
use tokio::sync::Notify;

type Ul = UseLast<u64, (u64, u64), u64>;

#[test]
fn futures_are_send() {
    let u = UseLast::new(|x: u64| async move { Ok::<_, ()>(x) });
    assert_send(&u.call(1));
    fn send_sync<T: Send + Sync>() {}
    send_sync::<UseLast<u64, u64, ()>>();
}

/// Inputs below `gated` wait for `gate`; each execution counts itself live.
fn gated_use_last(live: &Arc<AtomicI64>, gate: &Arc<Notify>, gated: u64) -> Ul {
    let (live, gate) = (live.clone(), gate.clone());
    UseLast::new(move |x: u64| {
        let (live, gate) = (live.clone(), gate.clone());
        async move {
            let _alive = Live::new(&live);
            if x < gated {
                gate.notified().await;
            }
            Ok((x, value_of(x)))
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_caller_gets_the_newest_result_and_the_superseded_are_dropped() {
    let (live, gate) = (Arc::new(AtomicI64::new(0)), Arc::new(Notify::new()));
    let u = gated_use_last(&live, &gate, 100);
    let mut calls: Vec<_> = (0..3).map(|x| Box::pin(u.call(x))).collect();
    for call in &mut calls {
        assert!(poll_once(call).await.is_none());
    }
    eventually(10, "only the newest execution is left", || live.load(Ordering::SeqCst) == 1).await;
    gate.notify_one();
    for call in calls {
        assert_eq!(call.await.ok(), Some((2, value_of(2))), "the newest call's result");
    }
    // The round is over: the next call opens a new one with its own result.
    assert_eq!(u.call(500).await.ok(), Some((500, value_of(500))));
    assert_eq!(u.pending(), 0);
    eventually(10, "every execution dropped", || live.load(Ordering::SeqCst) == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newest_error_or_panic_reaches_the_whole_round() {
    quiet_injected_panics();
    let u = UseLast::new(|x: u64| async move {
        match x {
            1 => Err(x),
            2 => panic!("injected"),
            _ => {
                std::future::pending::<()>().await;
                Ok(x)
            }
        }
    });
    let mut older = Box::pin(u.call(0));
    assert!(poll_once(&mut older).await.is_none());
    let newest = u.call(1).await;
    let (Err(Error::Batch(a)), Err(Error::Batch(b))) = (&older.await, &newest) else { panic!("{newest:?}") };
    assert!(Arc::ptr_eq(a, b) && **a == 1, "one shared, unwrapped error");
    let mut older = Box::pin(u.call(0));
    assert!(poll_once(&mut older).await.is_none());
    assert!(matches!(u.call(2).await, Err(Error::Panicked)));
    assert!(matches!(older.await, Err(Error::Panicked)));
    assert_eq!(u.pending(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_leaves_the_round_and_the_last_one_out_drops_the_execution() {
    let (live, gate) = (Arc::new(AtomicI64::new(0)), Arc::new(Notify::new()));
    let u = gated_use_last(&live, &gate, 100);
    let mut a = Box::pin(u.call(0));
    let mut b = Box::pin(u.call(1));
    assert!(poll_once(&mut a).await.is_none());
    assert!(poll_once(&mut b).await.is_none());
    // The newest caller gives up: its execution still answers the older caller.
    drop(b);
    eventually(10, "only the newest execution is left", || live.load(Ordering::SeqCst) == 1).await;
    gate.notify_one();
    assert_eq!(a.await.ok(), Some((1, value_of(1))));
    // Every caller of a round gives up: its execution is dropped.
    let mut c = Box::pin(u.call(2));
    let mut d = Box::pin(u.call(3));
    assert!(poll_once(&mut c).await.is_none());
    assert!(poll_once(&mut d).await.is_none());
    drop((c, d));
    eventually(10, "the abandoned execution is dropped", || live.load(Ordering::SeqCst) == 0).await;
    assert_eq!(u.pending(), 0);
    assert_eq!(u.call(200).await.ok(), Some((200, value_of(200))), "it keeps serving");
}

/// 100,000 supersessions in a row on a thread with a 256 KiB stack: nothing recurses, the
/// superseded executions are freed as the burst goes on, and all 100,000 callers get the last
/// call's result.
#[test]
fn a_hundred_thousand_supersessions_in_flat_stack_and_memory() {
    const CALLS: u64 = 100_000;
    let thread = std::thread::Builder::new().stack_size(256 * 1024).spawn(|| {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let (live, gate) = (Arc::new(AtomicI64::new(0)), Arc::new(Notify::new()));
            let u = gated_use_last(&live, &gate, CALLS - 1);
            let mut calls = Vec::with_capacity(CALLS as usize);
            for x in 0..CALLS {
                let mut call = Box::pin(u.call(x));
                let early = poll_once(&mut call).await;
                assert!(early.is_none());
                calls.push(call);
                if x % 1_000 == 999 {
                    tokio::task::yield_now().await;
                    let alive = live.load(Ordering::SeqCst);
                    assert!(alive <= 2_000, "{alive} superseded executions kept after {x} calls");
                }
            }
            let last = (CALLS - 1, value_of(CALLS - 1));
            for answer in futures_util::future::join_all(calls).await {
                assert_eq!(answer.ok(), Some(last));
            }
            assert_eq!(u.pending(), 0);
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            assert_eq!(live.load(Ordering::SeqCst), 0);
        });
    });
    thread.unwrap().join().expect("no stack overflow, every caller answered");
}

/// A million calls from 64 tasks over 2 worker threads: random cancellation at a random poll,
/// injected errors and panics. Checked: every value is one some call's execution produced; a
/// caller whose own execution answered a round got its own result; nothing hangs; nothing is
/// left waiting or running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_a_million_calls() {
    quiet_injected_panics();
    const TASKS: u64 = 64;
    const CALLS: u64 = 1_000_000 / TASKS;
    let live = Arc::new(AtomicI64::new(0));
    let u: Ul = {
        let live = live.clone();
        UseLast::new(move |x: u64| {
            let live = live.clone();
            async move {
                let _alive = Live::new(&live);
                if x % 2 == 0 {
                    tokio::task::yield_now().await;
                }
                match x % 64 {
                    13 => Err(x),
                    29 => panic!("injected"),
                    _ => Ok((x, value_of(x))),
                }
            }
        })
    };
    let handle = u.clone();
    let c = chaos(TASKS, CALLS, move |x, polls| {
        let u = handle.clone();
        async move { came_from_work(poll_at_most(u.call(x), polls).await) }
    })
    .await;
    assert!(c.panicked > 0, "{c:?}");
    assert!(c.check_own() > 0);
    assert_eq!(u.pending(), 0, "nobody left waiting");
    eventually(30, "every execution dropped", || live.load(Ordering::SeqCst) == 0).await;
    println!("use-last chaos: {} ok, {} failed, {} panicked, {} cancelled", c.ok, c.failed, c.panicked, c.cancelled);
}

/// The caller that holds the round last drops the value: a panicking `Drop` is caught there.
#[tokio::test(flavor = "current_thread")]
async fn a_values_drop_that_panics_never_reaches_a_caller() {
    quiet_injected_panics();
    let u = UseLast::new(|_: u32| async { Ok::<_, ()>(DropBomb::new()) });
    let answered = without_panic(async move { u.call(1).await.is_ok() }).await;
    assert_eq!(answered, Ok(true));
}
