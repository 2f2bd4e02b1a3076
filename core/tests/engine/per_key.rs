//! Per-key results: a key's own error reaches only that key's callers, "not found" stays
//! `Ok(None)`, the outer error still fails the whole batch, and duplicate callers of a failed key
//! share one `Arc`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use busline::{Batcher, Error};

/// Keys divisible by 7 fail on their own; keys >= 1000 are not found; key 666 fails the batch.
fn per_key() -> Batcher<u32, u32, String> {
    Batcher::builder_per_key(|keys: Vec<u32>| async move {
        if keys.contains(&666) {
            return Err("the whole batch failed".to_string());
        }
        Ok(keys
            .into_iter()
            .filter(|&k| k < 1000)
            .map(|k| (k, if k % 7 == 0 { Err(format!("key {k} failed")) } else { Ok(k * 10) }))
            .collect::<HashMap<_, _>>())
    })
    .window(Duration::from_millis(20))
    .build()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_error_reaches_only_its_callers() {
    let b = per_key();
    let answers = futures_util::future::join_all((1..=30).map(|k| b.load(k))).await;
    for (k, answer) in (1..=30).zip(answers) {
        if k % 7 == 0 {
            match answer {
                Err(Error::Key(e)) => assert_eq!(*e, format!("key {k} failed")),
                other => panic!("key {k}: {other:?}"),
            }
        } else {
            assert_eq!(answer.unwrap(), Some(k * 10), "key {k}");
        }
    }
    let stats = b.stats();
    assert_eq!(stats.failed_batches, 0, "a key's error does not fail its batch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_is_not_failed() {
    let b = per_key();
    let (missing, failed) = tokio::join!(b.load(1234), b.load(14));
    assert_eq!(missing.unwrap(), None);
    assert_eq!(failed.unwrap_err().key_error().map(String::as_str), Some("key 14 failed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_callers_of_a_failed_key_share_one_arc() {
    let b = per_key();
    let answers = futures_util::future::join_all([21, 21, 21, 22].map(|k| b.load(k))).await;
    let errors: Vec<Arc<String>> = answers[..3]
        .iter()
        .map(|a| match a {
            Err(Error::Key(e)) => Arc::clone(e),
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(Arc::ptr_eq(&errors[0], &errors[1]) && Arc::ptr_eq(&errors[1], &errors[2]));
    assert_eq!(answers[3].as_ref().unwrap(), &Some(220));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outer_error_still_fails_the_whole_batch() {
    let b = per_key();
    let (a, c) = tokio::join!(b.load(666), b.load(5));
    assert!(matches!(a, Err(Error::Batch(_))), "{a:?}");
    assert!(matches!(c, Err(Error::Batch(_))), "{c:?}");
    // The next batch is fine.
    assert_eq!(b.load(5).await.unwrap(), Some(50));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_shared_hands_out_the_values_only() {
    let b = per_key();
    let (map, _) = tokio::join!(b.load_shared(1), b.load(7));
    let map = map.unwrap();
    assert_eq!(map.get(&1), Some(&10));
    assert_eq!(map.get(&7), None, "a failed key has no value");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_many_reports_a_key_error() {
    let b = per_key();
    let err = b.load_many([1, 2, 7]).await.unwrap_err();
    assert_eq!(err.key_error().map(String::as_str), Some("key 7 failed"));
    assert_eq!(b.load_many([1, 2, 1234]).await.unwrap(), HashMap::from([(1, 10), (2, 20)]));
}

#[tokio::test(start_paused = true)]
async fn a_grouped_per_key_batch_function_fails_a_key_in_its_group_only() {
    // `Grouped` had no per-key form: a tenant's one bad row failed the tenant's whole batch
    // (or had to pass for "not found").
    let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = calls.clone();
    let rows = busline::Grouped::builder_per_key(move |tenant: u8, mut keys: Vec<u32>| {
        keys.sort_unstable();
        seen.lock().unwrap().push((tenant, keys.clone()));
        async move {
            if keys.contains(&666) {
                return Err(format!("tenant {tenant} is down"));
            }
            Ok(keys
                .into_iter()
                .filter(|&k| k < 1000)
                .map(|k| (k, if k == 13 { Err(format!("{tenant}/{k} is corrupt")) } else { Ok(u32::from(tenant) * 100 + k) }))
                .collect::<HashMap<_, _>>())
        }
    })
    .window(Duration::from_millis(5))
    .build()
    .unwrap();
    let (a, bad, dup, missing, other_group, down, down_too) = tokio::join!(
        rows.load(1, 2),
        rows.load(1, 13),
        rows.load(1, 13),
        rows.load(1, 1234),
        rows.load(2, 13),
        rows.load(3, 666),
        rows.load(3, 4),
    );
    assert_eq!(a.unwrap(), Some(102));
    let (bad, dup) = (bad.unwrap_err(), dup.unwrap_err());
    assert_eq!(bad.key_error().map(String::as_str), Some("1/13 is corrupt"));
    match (&bad, &dup) {
        (Error::Key(x), Error::Key(y)) => assert!(Arc::ptr_eq(x, y), "duplicate callers share one Arc"),
        other => panic!("{other:?}"),
    }
    assert_eq!(missing.unwrap(), None, "not found is not failed");
    assert_eq!(other_group.unwrap_err().key_error().map(String::as_str), Some("2/13 is corrupt"));
    assert_eq!(down.unwrap_err().batch_error().map(String::as_str), Some("tenant 3 is down"));
    assert_eq!(down_too.unwrap_err().batch_error().map(String::as_str), Some("tenant 3 is down"));
    let mut calls = calls.lock().unwrap().clone();
    calls.sort();
    assert_eq!(calls, vec![(1, vec![2, 13, 1234]), (2, vec![13]), (3, vec![4, 666])], "one batch per group");
}
