//! The `tower` feature: readiness reflects capacity, so tower's layers compose around a batcher
//! (timeout, load-shed), and `Grouped` serves `(group, key)` requests.
#![cfg(feature = "tower")]

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use busline::{Batcher, Error, Grouped};
use tokio::sync::Semaphore;
use tower05::{Service, ServiceBuilder, ServiceExt};

/// A batcher at capacity after two loads: one seat per bus, one batch in flight, and batch
/// calls that wait for a permit.
fn gated() -> (Batcher<u32, u32, std::io::Error>, Arc<Semaphore>) {
    gated_with(busline::Overflow::Wait)
}

/// As [`gated`], under `overflow`.
fn gated_with(overflow: busline::Overflow) -> (Batcher<u32, u32, std::io::Error>, Arc<Semaphore>) {
    let gate = Arc::new(Semaphore::new(0));
    let permits = gate.clone();
    let b = Batcher::builder(move |keys: Vec<u32>| {
        let permits = permits.clone();
        async move {
            permits.acquire().await.unwrap().forget();
            Ok(keys.into_iter().map(|k| (k, k + 1)).collect::<HashMap<_, _>>())
        }
    })
    .max_batch_size(1)
    .max_in_flight(1)
    .overflow(overflow)
    .build()
    .unwrap();
    (b, gate)
}

/// Fills `b` to capacity: one batch in flight, one full bus waiting.
async fn fill(b: &Batcher<u32, u32, std::io::Error>) -> Vec<tokio::task::JoinHandle<Result<Option<u32>, Error<std::io::Error>>>> {
    let mut loads = Vec::new();
    for k in [1, 2] {
        let caller = b.clone();
        loads.push(tokio::spawn(async move { caller.load(k).await }));
        while b.stats().requests < u64::from(k) - 1 {
            tokio::task::yield_now().await;
        }
    }
    // Wait until the driver has seen the full bus stuck behind the running batch. A sleep, not
    // a yield, between looks: while readiness answers at once, 10,000 yields pass in a fraction
    // of a second, too soon for a driver on a busy machine (the engine binary runs ~150 tests
    // on 2 cores); 10,000 sleeps take at least 10 s.
    let mut svc = b.clone();
    for _ in 0..10_000 {
        if tokio::time::timeout(Duration::from_millis(1), svc.ready()).await.is_err() {
            return loads;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("the batcher never reached capacity");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_is_pending_at_capacity_and_returns_when_the_bus_leaves() {
    let (b, gate) = gated();
    let loads = fill(&b).await;
    let mut svc = b.clone();
    assert!(tokio::time::timeout(Duration::from_millis(20), svc.ready()).await.is_err(), "ready at capacity");
    let ready = tokio::spawn(async move {
        svc.ready().await.unwrap();
        svc.call(3).await
    });
    gate.add_permits(100);
    assert_eq!(ready.await.unwrap().unwrap(), Some(4));
    for load in loads {
        load.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_reject_the_service_stays_ready_and_its_call_is_refused_at_capacity() {
    // `Reject` never makes a caller wait, through tower either: ready at capacity, and the call
    // answers `Overloaded` at once.
    let (b, gate) = gated_with(busline::Overflow::Reject);
    let held: Vec<_> = [1, 2]
        .into_iter()
        .map(|k| {
            let b = b.clone();
            tokio::spawn(async move { b.load(k).await })
        })
        .collect();
    // Probes, each polled once and kept if it boarded (it waits for the held backend; one
    // given up could free its bus). After each refusal (the batcher at capacity, or about to
    // be), readiness is polled once: it must be `Ready` every time, where under `Wait` it is
    // `Pending` once the driver has flagged the stall.
    let mut svc = b.clone();
    let (mut refusals, mut probes) = (0, Vec::new());
    let mut attempts = 0;
    while refusals < 50 {
        attempts += 1;
        assert!(attempts < 1_000_000, "the batcher never reached capacity");
        let mut load = Box::pin(b.load(7));
        match std::future::poll_fn(|cx| std::task::Poll::Ready(load.as_mut().poll(cx))).await {
            std::task::Poll::Ready(Err(Error::Overloaded)) => {
                refusals += 1;
                let ready = std::future::poll_fn(|cx| std::task::Poll::Ready(svc.poll_ready(cx))).await;
                assert!(matches!(ready, std::task::Poll::Ready(Ok(()))), "readiness at capacity under Reject: {ready:?}");
            }
            std::task::Poll::Pending => probes.push(load),
            std::task::Poll::Ready(other) => panic!("a probe answered {other:?} with the backend held"),
        }
        tokio::task::yield_now().await;
    }
    // Ready, so called: refused at once, or (if a bus opened since) seated.
    let call = tokio::spawn(async move { svc.call(3).await });
    gate.add_permits(100);
    // The probes first: an answered batch keeps its slot until its callers read it, and a bus
    // seated after them leaves only once a slot is free.
    for probe in probes {
        assert_eq!(probe.await.unwrap(), Some(8));
    }
    for load in held {
        // Either boarded (and answered now) or refused itself, racing the probes.
        let answer = load.await.unwrap();
        assert!(matches!(answer, Ok(Some(_)) | Err(Error::Overloaded)), "{answer:?}");
    }
    let answer = call.await.unwrap();
    assert!(matches!(answer, Ok(Some(4)) | Err(Error::Overloaded)), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_shed_refuses_at_capacity_instead_of_queueing() {
    let (b, gate) = gated();
    let loads = fill(&b).await;
    let mut shed = ServiceBuilder::new().load_shed().service(b.clone());
    let err = shed.ready().await.unwrap().call(9).await.unwrap_err();
    assert!(err.is::<tower05::load_shed::error::Overloaded>(), "{err}");
    gate.add_permits(100);
    for load in loads {
        load.await.unwrap().unwrap();
    }
    // Room again: the same stack serves.
    let mut shed = ServiceBuilder::new().load_shed().service(b.clone());
    assert_eq!(shed.ready().await.unwrap().call(9).await.unwrap(), Some(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_and_load_shed_stack_on_a_batcher() {
    let b: Batcher<u32, u32, std::io::Error> = Batcher::builder(|keys: Vec<u32>| async move {
        if keys.contains(&13) {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Ok(keys.into_iter().map(|k| (k, k * 2)).collect::<HashMap<_, _>>())
    })
    // The caller's timeout does not stop the batch call; the batcher's own bound does, so that
    // shutdown below does not wait for the hung call forever.
    .batch_timeout(Duration::from_millis(200))
    .build()
    .unwrap();
    let mut svc = ServiceBuilder::new().load_shed().timeout(Duration::from_millis(50)).service(b.clone());
    assert_eq!(svc.ready().await.unwrap().call(21).await.unwrap(), Some(42));
    let err = svc.ready().await.unwrap().call(13).await.unwrap_err();
    assert!(err.is::<tower05::timeout::error::Elapsed>(), "{err}");
    // The batcher's errors pass through as themselves: once shut down, it is not ready.
    b.shutdown().await;
    let err = svc.ready().await.expect_err("a closed batcher is not ready");
    assert!(err.downcast_ref::<Error<std::io::Error>>().is_some_and(|e| matches!(e, Error::Closed)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_batcher_is_not_ready() {
    let (b, _gate) = gated();
    b.shutdown().await;
    let mut svc = b.clone();
    assert!(matches!(svc.ready().await, Err(Error::Closed)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grouped_serves_group_key_pairs() {
    let g: Grouped<String, u32, String, std::io::Error> = Grouped::builder(|tenant: String, keys: Vec<u32>| async move {
        Ok(keys.into_iter().map(|k| (k, format!("{tenant}:{k}"))).collect::<HashMap<_, _>>())
    })
    .build()
    .unwrap();
    let mut svc = ServiceBuilder::new().timeout(Duration::from_secs(5)).service(g);
    let answer = svc.ready().await.unwrap().call(("acme".to_string(), 3)).await.unwrap();
    assert_eq!(answer, Some("acme:3".to_string()));
}

/// As [`gated_with`], its driver on `runtime`; keys from 100 on are answered without waiting.
fn gated_on(overflow: busline::Overflow, runtime: &tokio::runtime::Runtime) -> (Batcher<u32, u32, std::io::Error>, Arc<Semaphore>) {
    let gate = Arc::new(Semaphore::new(0));
    let permits = gate.clone();
    let b = Batcher::builder(move |keys: Vec<u32>| {
        let permits = permits.clone();
        async move {
            if keys.iter().any(|&k| k < 100) {
                permits.acquire().await.unwrap().forget();
            }
            Ok(keys.into_iter().map(|k| (k, k + 1)).collect::<HashMap<_, _>>())
        }
    })
    .max_batch_size(1)
    .max_in_flight(1)
    .overflow(overflow)
    .runtime(runtime.handle().clone())
    .build()
    .unwrap();
    (b, gate)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_at_capacity_when_the_drivers_runtime_goes_away_is_closed_not_a_hang() {
    // Before: the driver's drop closed the ring but left the stall flag set, so readiness kept
    // waiting for a seal that no driver would make (a `ready()` that never returned).
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let (b, _gate) = gated_on(busline::Overflow::Wait, &runtime);
    let loads = fill(&b).await;
    runtime.shutdown_background();
    for load in loads {
        assert!(matches!(load.await.unwrap(), Err(Error::Closed)));
    }
    let mut svc = b.clone();
    let ready = tokio::time::timeout(Duration::from_secs(10), svc.ready()).await.expect("readiness hung");
    assert!(matches!(ready, Err(Error::Closed)), "{:?}", ready.map(|_| ()));
    assert!(b.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_capacity_under_run_alone_a_load_after_the_drivers_runtime_went_away_is_closed() {
    // Before: the stall flag, left set by the driver's drop, sent the load to run alone on a
    // runtime that was gone (and answered it `Ok`), where every other load got `Closed`.
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let (b, _gate) = gated_on(busline::Overflow::RunAlone, &runtime);
    let one = {
        let caller = b.clone();
        tokio::spawn(async move { caller.load(1).await })
    };
    while b.stats().batches < 1 {
        tokio::task::yield_now().await;
    }
    // Key 2 boards the next bus (polled once: seated, or, had the bus been full, run alone),
    // which is full and cannot leave.
    let mut two = Box::pin(b.load(2));
    assert!(std::future::poll_fn(|cx| std::task::Poll::Ready(two.as_mut().poll(cx))).await.is_pending());
    assert_eq!(b.stats().ran_alone, 0, "key 2 boarded");
    // At capacity: loads run alone. Meanwhile the driver flags the stall (no way to see it
    // from here but to give it time).
    for k in 100..200 {
        assert_eq!(b.load(k).await.unwrap(), Some(k + 1));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(b.stats().ran_alone >= 100);
    runtime.shutdown_background();
    assert!(matches!(one.await.unwrap(), Err(Error::Closed)));
    assert!(matches!(two.await, Err(Error::Closed)));
    let answer = b.load(300).await;
    assert!(matches!(answer, Err(Error::Closed)), "{answer:?}");
}
