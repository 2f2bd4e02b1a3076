//! The `metrics` feature: a batcher's series reach the installed recorder with the batcher's
//! name, and count what happened. (Its own test binary: the recorder is process-wide.)
#![cfg(feature = "metrics")]

use std::collections::HashMap;
use std::time::Duration;

use busline::{Batcher, Error, Overflow};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::{CompositeKey, MetricKind};

/// Each series of one batcher: (kind, name, labels) -> value.
type Series = HashMap<(MetricKind, String, Vec<(String, String)>), DebugValue>;

fn snapshot(snapshotter: &Snapshotter, batcher: &str) -> Series {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value): (CompositeKey, _, _, DebugValue)| {
            let (kind, key) = key.into_parts();
            let labels: Vec<(String, String)> =
                key.labels().map(|l| (l.key().to_string(), l.value().to_string())).collect();
            labels
                .iter()
                .any(|(k, v)| k == "batcher" && v == batcher)
                .then(|| ((kind, key.name().to_string(), labels), value))
        })
        .collect()
}

fn counter(snap: &Series, name: &str, outcome: Option<&str>) -> u64 {
    snap.iter()
        .filter(|((kind, n, labels), _)| {
            *kind == MetricKind::Counter
                && n == name
                && outcome.is_none_or(|o| labels.iter().any(|(k, v)| k == "outcome" && v == o))
        })
        .map(|(_, v)| match v {
            DebugValue::Counter(c) => *c,
            _ => 0,
        })
        .sum()
}

fn histogram_len(snap: &Series, name: &str) -> usize {
    snap.iter()
        .filter(|((kind, n, _), _)| *kind == MetricKind::Histogram && n == name)
        .map(|(_, v)| match v {
            DebugValue::Histogram(h) => h.len(),
            _ => 0,
        })
        .sum()
}

fn gauge(snap: &Series, name: &str) -> Option<f64> {
    snap.iter().find_map(|((kind, n, _), v)| match v {
        DebugValue::Gauge(g) if *kind == MetricKind::Gauge && n == name => Some(g.into_inner()),
        _ => None,
    })
}

#[test]
fn every_series_counts_what_happened() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().expect("the only recorder in this process");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let users: Batcher<u32, u32, std::io::Error> = Batcher::builder(|keys: Vec<u32>| async move {
            if keys.contains(&13) {
                return Err(std::io::Error::other("unlucky"));
            }
            if keys.contains(&99) {
                panic!("the batch function panicked");
            }
            Ok(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>())
        })
        .name("users")
        .window(Duration::from_millis(5))
        .build()
        .unwrap();
        let answers = futures_util::future::join_all((0..10).map(|k| users.load(k))).await;
        assert!(answers.into_iter().all(|a| a.is_ok()));
        assert!(matches!(users.load(13).await, Err(Error::Batch(_))));
        assert!(matches!(users.load(99).await, Err(Error::Panicked)));
        // Given up before the window closes: boarded on the first poll, then dropped.
        let mut given_up = Box::pin(users.load(5));
        assert!(poll_once(&mut given_up).await.is_pending());
        drop(given_up);
        users.shutdown().await;

        let snap = snapshot(&snapshotter, "users");
        assert_eq!(counter(&snap, "busline_requests_total", None), 12, "{snap:#?}");
        assert_eq!(counter(&snap, "busline_batches_total", Some("ok")), 1);
        assert_eq!(counter(&snap, "busline_batches_total", Some("error")), 1);
        assert_eq!(counter(&snap, "busline_batches_total", Some("panicked")), 1);
        assert_eq!(counter(&snap, "busline_cancelled_total", None), 1);
        assert_eq!(histogram_len(&snap, "busline_batch_keys"), 3);
        assert_eq!(histogram_len(&snap, "busline_queue_wait_seconds"), 3);
        assert_eq!(histogram_len(&snap, "busline_batch_duration_seconds"), 3);
        assert_eq!(gauge(&snap, "busline_window_seconds"), Some(0.005), "the window every batch applied");

        // A full bus that cannot leave, under `Reject`: refusals are counted.
        let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
        let permits = gate.clone();
        let strict: Batcher<u32, u32, std::io::Error> = Batcher::builder(move |keys: Vec<u32>| {
            let permits = permits.clone();
            async move {
                permits.acquire().await.unwrap().forget();
                Ok(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>())
            }
        })
        .name("strict")
        .max_batch_size(1)
        .max_in_flight(1)
        .overflow(Overflow::Reject)
        .build()
        .unwrap();
        let first = tokio::spawn({
            let strict = strict.clone();
            async move { strict.load(1).await }
        });
        let mut refused = 0;
        for k in 2..200 {
            if let Ok(Err(Error::Overloaded)) = tokio::time::timeout(Duration::from_millis(1), strict.load(k)).await {
                refused += 1;
            }
        }
        gate.add_permits(1_000);
        // The spawned first load may itself come after the loop filled the batcher.
        match first.await.unwrap() {
            Err(Error::Overloaded) => refused += 1,
            answer => assert_eq!(answer.unwrap(), Some(1)),
        }
        assert!(refused > 0);
        let snap = snapshot(&snapshotter, "strict");
        assert_eq!(counter(&snap, "busline_rejected_total", None), refused);

        // A `Coalescer` and a `Grouped` report under their own names too (their builders had
        // no `name`: every coalescer and every group reported as "busline").
        let views = busline::Coalescer::builder(|| 0u64, |n: &mut u64, x: u64| *n += x, |n: u64| async move {
            Ok::<_, std::io::Error>(n)
        })
        .name("views")
        .build()
        .unwrap();
        assert_eq!(*views.coalesce(3).await.unwrap(), 3);
        views.shutdown().await;
        assert_eq!(counter(&snapshot(&snapshotter, "views"), "busline_requests_total", None), 1);
        let tenants = busline::Grouped::builder(|_: u32, keys: Vec<u32>| async move {
            Ok::<_, std::io::Error>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>())
        })
        .name("tenants")
        .build()
        .unwrap();
        assert_eq!(tenants.load(1, 7).await.unwrap(), Some(7));
        assert_eq!(tenants.load(2, 8).await.unwrap(), Some(8));
        assert_eq!(counter(&snapshot(&snapshotter, "tenants"), "busline_requests_total", None), 2);
    });
}

#[test]
fn the_names_table_lists_every_series() {
    assert_eq!(busline::observe::metrics::NAMES.len(), 12);
    assert!(busline::observe::metrics::NAMES.iter().all(|n| n.starts_with("busline_")));
}

/// Polls `fut` once, as the first step of an `await`.
async fn poll_once<F: std::future::Future + Unpin>(fut: &mut F) -> std::task::Poll<F::Output> {
    std::future::poll_fn(|cx| std::task::Poll::Ready(std::pin::Pin::new(&mut *fut).poll(cx))).await
}

/// A recorder whose every counter and histogram panics when touched: user code the driver and
/// the callers run between steps that must both happen (a batch's publication and the end of
/// its call; a cancelled seat's count and its release).
struct PanickyRecorder;

struct Boom;

impl metrics::CounterFn for Boom {
    fn increment(&self, _: u64) {
        panic!("the recorder's counter panics");
    }
    fn absolute(&self, _: u64) {
        panic!("the recorder's counter panics");
    }
}

impl metrics::HistogramFn for Boom {
    fn record(&self, _: f64) {
        panic!("the recorder's histogram panics");
    }
}

impl metrics::Recorder for PanickyRecorder {
    fn describe_counter(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}
    fn describe_gauge(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}
    fn describe_histogram(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}
    fn register_counter(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        metrics::Counter::from_arc(std::sync::Arc::new(Boom))
    }
    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }
    fn register_histogram(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Histogram {
        metrics::Histogram::from_arc(std::sync::Arc::new(Boom))
    }
}

#[test]
fn a_panicking_recorder_costs_its_measurements_not_the_callers_answers() {
    // A local recorder (the process-wide one belongs to the test above) on a current-thread
    // runtime, so that the driver runs where it is installed.
    metrics::with_local_recorder(&PanickyRecorder, || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let b = Batcher::builder(|keys: Vec<u32>| async move {
                Ok::<_, ()>(keys.into_iter().map(|k| (k, k * 2)).collect::<HashMap<_, _>>())
            })
            .name("panicky")
            .window(Duration::from_millis(1))
            .build()
            .unwrap();
            // Every batch's end records its duration: the histogram panics there.
            for k in 0..4 {
                let answer = tokio::time::timeout(Duration::from_secs(10), b.load(k)).await;
                assert!(matches!(answer, Ok(Ok(Some(v))) if v == k * 2), "load {k}: {answer:?}");
            }
            // A caller that gives up is counted (the counter panics), then releases its seat.
            for k in 10..14 {
                let mut gone = Box::pin(b.load(k));
                assert!(poll_once(&mut gone).await.is_pending());
            }
            let answer = tokio::time::timeout(Duration::from_secs(10), b.load(20)).await;
            assert!(matches!(answer, Ok(Ok(Some(40)))), "{answer:?}");
            assert_eq!(b.live_slots(), 0, "every slot released");
        });
    });
}
