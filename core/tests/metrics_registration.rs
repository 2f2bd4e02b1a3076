//! The `metrics` feature with a recorder that panics when a batcher registers its series or
//! describes them: the batcher builds and serves without its metrics. (Its own test binary:
//! the series are described once per process, and this test must be the one that does it.)
#![cfg(feature = "metrics")]

use std::collections::HashMap;

use busline::{Batcher, Grouped};

/// A recorder that panics in every call a batcher makes while it is built.
struct PanicsAtRegistration;

impl metrics::Recorder for PanicsAtRegistration {
    fn describe_counter(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {
        panic!("the recorder's describe panics");
    }
    fn describe_gauge(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {
        panic!("the recorder's describe panics");
    }
    fn describe_histogram(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {
        panic!("the recorder's describe panics");
    }
    fn register_counter(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        panic!("the recorder's registration panics");
    }
    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        panic!("the recorder's registration panics");
    }
    fn register_histogram(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Histogram {
        panic!("the recorder's registration panics");
    }
}

#[test]
fn a_recorder_that_panics_at_registration_costs_the_metrics_not_the_batcher() {
    // Before: `build` panicked in the registration; and the first one, panicking inside the
    // process-wide `Once` that describes the series, poisoned it, so that every later `build`
    // in the process panicked too, whatever the recorder; a partition's group, built inside
    // its first load, panicked there (answered `Panicked`).
    metrics::with_local_recorder(&PanicsAtRegistration, || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            for name in ["first", "second"] {
                let b = Batcher::builder(|keys: Vec<u32>| async move {
                    Ok::<_, ()>(keys.into_iter().map(|k| (k, k * 2)).collect::<HashMap<_, _>>())
                })
                .name(name)
                .build()
                .expect("builds without its metrics");
                assert_eq!(b.load(3).await.unwrap(), Some(6), "{name}");
            }
            let tenants = Grouped::builder(|tenant: u32, keys: Vec<u32>| async move {
                Ok::<_, ()>(keys.into_iter().map(|k| (k, tenant + k)).collect::<HashMap<_, _>>())
            })
            .build()
            .unwrap();
            assert_eq!(tenants.load(100, 1).await.unwrap(), Some(101));
            assert_eq!(tenants.load(200, 2).await.unwrap(), Some(202));
        });
    });
}
