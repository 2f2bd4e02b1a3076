//! `Serial`: one call at a time in arrival order, each caller its own result; failures, panics
//! and cancellations stay with their own call.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use busline::{Error, Serial};
use crate::groups::Touchy;
use crate::support::{Came, assert_send, chaos, exclusive, poll_at_most, poll_once, quiet_injected_panics, value_of, without_panic};
use tokio::sync::Notify;

#[test]
fn futures_are_send() {
    let s = Serial::new(|x: u64| async move { Ok::<_, ()>(x) });
    assert_send(&s.call(1));
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Serial<u64, u64, ()>>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_run_one_at_a_time_in_arrival_order() {
    let order = Arc::new(Mutex::new(Vec::new()));
    let running = Arc::new(AtomicI64::new(0));
    let s = {
        let (order, running) = (order.clone(), running.clone());
        Serial::new(move |i: u64| {
            let (order, running) = (order.clone(), running.clone());
            async move {
                let _one = exclusive(&running);
                order.lock().unwrap().push(i);
                for _ in 0..3 {
                    tokio::task::yield_now().await;
                }
                Ok::<_, ()>(value_of(i))
            }
        })
    };
    let mut calls: Vec<_> = (0..50).map(|i| Box::pin(s.call(i))).collect();
    // Arrival is the first poll: in index order.
    let mut early = Vec::new();
    for (i, call) in calls.iter_mut().enumerate() {
        if let Some(out) = poll_once(call).await {
            early.push((i, out));
        }
    }
    assert!(early.is_empty(), "every call yields while it runs");
    let results = futures_util::future::join_all(calls).await;
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(r.ok(), Some(value_of(i as u64)), "each caller gets its own call's result");
    }
    assert_eq!(*order.lock().unwrap(), (0..50).collect::<Vec<_>>(), "run in arrival order");
    assert_eq!(s.pending(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_contention_never_two_at_once() {
    let running = Arc::new(AtomicI64::new(0));
    let s = {
        let running = running.clone();
        Serial::new(move |i: u64| {
            let running = running.clone();
            async move {
                let _one = exclusive(&running);
                tokio::task::yield_now().await;
                Ok::<_, ()>(value_of(i))
            }
        })
    };
    let tasks: Vec<_> = (0..8u64)
        .map(|t| {
            let s = s.clone();
            tokio::spawn(async move {
                for i in 0..1_000 {
                    let x = t * 1_000 + i;
                    assert_eq!(s.call(x).await.ok(), Some(value_of(x)));
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(s.pending(), 0);
}

#[tokio::test]
async fn a_failure_or_a_panic_is_its_own_calls_alone() {
    quiet_injected_panics();
    let s = Serial::new(|i: u64| async move {
        match i {
            1 => Err(i),
            2 => panic!("injected"),
            _ => Ok(i * 10),
        }
    });
    let (a, b, c, d) = tokio::join!(s.call(0), s.call(1), s.call(2), s.call(3));
    assert_eq!(a.ok(), Some(0));
    assert!(matches!(b, Err(Error::Batch(ref e)) if **e == 1), "{b:?}");
    assert!(matches!(c, Err(Error::Panicked)), "{c:?}");
    assert_eq!(d.ok(), Some(30));
    let s = Serial::new(|i: u64| -> std::future::Ready<Result<u64, ()>> {
        assert!(i != 7, "injected");
        std::future::ready(Ok(i))
    });
    assert!(matches!(s.call(7).await, Err(Error::Panicked)));
    assert_eq!(s.call(8).await.ok(), Some(8));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_gone_before_its_turn_is_skipped() {
    let gate = Arc::new(Notify::new());
    let ran = Arc::new(Mutex::new(Vec::new()));
    let s = {
        let (gate, ran) = (gate.clone(), ran.clone());
        Serial::new(move |i: u64| {
            ran.lock().unwrap().push(i);
            let gate = gate.clone();
            async move {
                if i == 0 {
                    gate.notified().await;
                }
                Ok::<_, ()>(i)
            }
        })
    };
    let mut first = Box::pin(s.call(0));
    let mut second = Box::pin(s.call(1));
    let mut third = Box::pin(s.call(2));
    assert!(poll_once(&mut first).await.is_none());
    assert!(poll_once(&mut second).await.is_none());
    assert!(poll_once(&mut third).await.is_none());
    drop(second);
    gate.notify_one();
    assert_eq!((first.await.ok(), third.await.ok()), (Some(0), Some(2)));
    assert_eq!(*ran.lock().unwrap(), vec![0, 2], "the cancelled call never ran");
    assert_eq!(s.pending(), 0);
}

/// A million calls from 4 tasks over 2 worker threads: random cancellation at a random poll
/// (before or during the turn), injected errors and panics. Every answer is its own call's,
/// never two at once, nothing hangs, nothing stays queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_a_million_calls() {
    quiet_injected_panics();
    const TASKS: u64 = 4;
    const CALLS: u64 = 1_000_000 / TASKS;
    let running = Arc::new(AtomicI64::new(0));
    let s = {
        let running = running.clone();
        Serial::new(move |x: u64| {
            let running = running.clone();
            async move {
                let _one = exclusive(&running);
                if x % 3 == 0 {
                    tokio::task::yield_now().await;
                }
                match x % 64 {
                    13 => Err(x),
                    29 => panic!("injected"),
                    _ => Ok(value_of(x)),
                }
            }
        })
    };
    let handle = s.clone();
    let c = chaos(TASKS, CALLS, move |x, polls| {
        let s = handle.clone();
        async move {
            match poll_at_most(s.call(x), polls).await {
                None => Came::Cancelled,
                Some(Ok(v)) => {
                    assert_eq!(v, value_of(x), "another call's result");
                    Came::Ok { by: None }
                }
                Some(Err(Error::Batch(e))) => {
                    assert_eq!((*e, x % 64), (x, 13), "another call's error");
                    Came::Failed { by: None }
                }
                Some(Err(Error::Panicked)) => {
                    assert_eq!(x % 64, 29, "another call's panic, or two calls at once");
                    Came::Panicked
                }
                Some(Err(other)) => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
    assert!(c.panicked > 0, "{c:?}");
    assert_eq!(s.pending(), 0, "nothing stays queued");
    assert_eq!(running.load(Ordering::SeqCst), 0);
    println!("serial chaos: {} ok, {} failed, {} panicked, {} cancelled", c.ok, c.failed, c.panicked, c.cancelled);
}

#[tokio::test(flavor = "current_thread")]
async fn per_group_a_callers_group_whose_drop_panics_is_answered() {
    quiet_injected_panics();
    let s = Serial::per_group(|g: Touchy, x: u64| async move { Ok::<_, ()>(g.id * 1000 + x) }).build().unwrap();
    let answer = without_panic(async move { s.call(Touchy::callers(1), 2).await.ok() }).await;
    assert_eq!(answer, Ok(Some(1002)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_given_up_before_its_turn_is_dropped_quietly() {
    // A call waits for its turn holding the caller's input; a caller that gives up then drops
    // it with the call's future. Its `Drop` is user code: it unwound into whoever dropped the
    // future, where the other strategies (and a `Batcher`'s `load`) drop it quietly (found by
    // a cold review).
    quiet_injected_panics();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let s = {
        let gate = gate.clone();
        Serial::new(move |_: crate::support::DropBomb| {
            let gate = gate.clone();
            async move {
                drop(gate.acquire().await.unwrap());
                Ok::<_, ()>(1)
            }
        })
    };
    let unarmed = || {
        let armed = crate::support::DropBomb::new();
        let clone = armed.clone();
        std::mem::forget(armed);
        clone
    };
    // The first call takes the turn and waits for the gate.
    let mut first = Box::pin(s.call(unarmed()));
    assert!(poll_once(&mut first).await.is_none());
    let gave_up = without_panic({
        let s = s.clone();
        async move {
            let mut second = Box::pin(s.call(crate::support::DropBomb::new()));
            assert!(poll_once(&mut second).await.is_none(), "waits for its turn");
            drop(second);
        }
    })
    .await;
    // (Not the task's message: it names the injected panic, which the hook silences.)
    assert!(gave_up.is_ok(), "the given-up input's Drop unwound into the caller's task");
    gate.add_permits(1);
    assert_eq!(first.await.unwrap(), 1);
    assert_eq!(s.pending(), 0);
}
