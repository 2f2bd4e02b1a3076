//! The `tracing` feature: one span per batch, which `follows_from` the span of every caller on
//! it, and each caller's load span records the batch that served it. (Its own test binary: the
//! subscriber is process-wide, since the driver runs on the runtime's workers.)
#![cfg(feature = "tracing")]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use busline::Batcher;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Instrument, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

#[derive(Debug, Default)]
struct Seen {
    name: String,
    parent: Option<u64>,
    fields: HashMap<String, String>,
}

#[derive(Default)]
struct Log {
    spans: HashMap<u64, Seen>,
    follows: Vec<(u64, u64)>,
}

#[derive(Clone, Default)]
struct Recording(Arc<Mutex<Log>>);

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_string(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recording {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let parent = ctx.span(id).and_then(|s| s.parent()).map(|p| p.id().into_u64());
        let mut seen = Seen { name: attrs.metadata().name().to_string(), parent, fields: HashMap::new() };
        attrs.record(&mut Fields(&mut seen.fields));
        self.0.lock().unwrap().spans.insert(id.into_u64(), seen);
    }
    fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
        if let Some(seen) = self.0.lock().unwrap().spans.get_mut(&id.into_u64()) {
            values.record(&mut Fields(&mut seen.fields));
        }
    }
    fn on_follows_from(&self, span: &Id, follows: &Id, _ctx: Context<'_, S>) {
        self.0.lock().unwrap().follows.push((span.into_u64(), follows.into_u64()));
    }
}

#[test]
fn a_batch_span_follows_from_every_caller_and_each_caller_records_its_batch() {
    let recording = Recording::default();
    let subscriber = tracing_subscriber::registry().with(recording.clone());
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber in this process");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let users: Batcher<u32, u32, std::io::Error> = Batcher::builder(|keys: Vec<u32>| async move {
            Ok(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>())
        })
        .name("users")
        .window(Duration::from_millis(20))
        .build()
        .unwrap();
        let requests = (0..3u32).map(|k| {
            let users = users.clone();
            async move { users.load(k).await }.instrument(tracing::info_span!("request", k))
        });
        for answer in futures_util::future::join_all(requests).await {
            answer.unwrap();
        }
        users.shutdown().await;

        // A solo run under `RunAlone` (a batch call of one request): at capacity, key 100 runs
        // alone in a "solo" request's span.
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let permits = gate.clone();
        let alone: Batcher<u32, u32, std::io::Error> = Batcher::builder(move |keys: Vec<u32>| {
            let permits = permits.clone();
            async move {
                if keys.contains(&0) {
                    permits.acquire().await.unwrap().forget();
                }
                Ok(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>())
            }
        })
        .name("alone")
        .max_batch_size(1)
        .max_in_flight(1)
        .overflow(busline::Overflow::RunAlone)
        .build()
        .unwrap();
        let zero = {
            let alone = alone.clone();
            tokio::spawn(async move { alone.load(0).await })
        };
        while alone.stats().batches < 1 {
            tokio::task::yield_now().await;
        }
        // Key 1 boards the next bus (polled once), which is full and cannot leave.
        let mut one = Box::pin(alone.load(1));
        assert!(std::future::poll_fn(|cx| std::task::Poll::Ready(one.as_mut().poll(cx))).await.is_pending());
        assert_eq!(alone.stats().ran_alone, 0);
        let solo = async { alone.load(100).await }.instrument(tracing::info_span!("solo")).await;
        assert_eq!(solo.unwrap(), Some(100));
        assert_eq!(alone.stats().ran_alone, 1);
        gate.add_permits(10);
        assert_eq!(zero.await.unwrap().unwrap(), Some(0));
        assert_eq!(one.await.unwrap(), Some(1));
        alone.shutdown().await;
    });
    drop(rt);
    let log = recording.0.lock().unwrap();
    let batches: Vec<(&u64, &Seen)> = log
        .spans
        .iter()
        .filter(|(_, s)| s.name == "busline.batch" && s.fields["batcher"] == "users")
        .collect();
    assert_eq!(batches.len(), 1, "one span per batch: {:#?}", log.spans);
    let (&batch, seen) = batches[0];
    assert_eq!(seen.parent, None, "a batch span is a root of its own");
    assert_eq!(seen.fields["batcher"], "users");
    assert_eq!(seen.fields["batch.requests"], "3");
    assert_eq!(seen.fields["batch.keys"], "3");
    assert_eq!(seen.fields["batch.policy"], "window");
    assert_eq!(seen.fields["batch.window_us"], "20000");
    assert!(seen.fields.contains_key("batch.queue_wait_us"));
    assert_eq!(seen.fields["batch.outcome"], "ok");
    assert_eq!(seen.fields["batch.alone"], "false");
    assert!(seen.fields.contains_key("batch.duration_us"));
    let loads: Vec<(&u64, &Seen)> = log
        .spans
        .iter()
        .filter(|(_, s)| s.name == "busline.load" && s.parent.is_some_and(|p| log.spans[&p].name == "request"))
        .collect();
    assert_eq!(loads.len(), 3);
    for (&load, seen) in loads {
        let parent = seen.parent.expect("a load span is a child of the caller's span");
        assert_eq!(log.spans[&parent].name, "request");
        assert!(log.follows.contains(&(batch, load)), "the batch follows from load {load}: {:?}", log.follows);
        assert_eq!(seen.fields["batch.id"], batch.to_string(), "the load records its batch");
    }

    // The solo run has its own batch span, of one request, linked to its caller. (Before, a
    // solo run had no span, and its caller's load span recorded no batch.)
    let solos: Vec<(&u64, &Seen)> = log
        .spans
        .iter()
        .filter(|(_, s)| s.name == "busline.batch" && s.fields["batcher"] == "alone" && s.fields["batch.alone"] == "true")
        .collect();
    assert_eq!(solos.len(), 1, "{:#?}", log.spans);
    let (&solo, seen) = solos[0];
    assert_eq!(seen.fields["batch.requests"], "1");
    assert_eq!(seen.fields["batch.outcome"], "ok");
    let (&load, seen) = log
        .spans
        .iter()
        .find(|(_, s)| s.name == "busline.load" && s.parent.is_some_and(|p| log.spans[&p].name == "solo"))
        .expect("the solo caller's load span");
    assert_eq!(seen.fields.get("batch.id"), Some(&solo.to_string()), "the solo load records its run");
    assert!(log.follows.contains(&(solo, load)), "{:?}", log.follows);
}
