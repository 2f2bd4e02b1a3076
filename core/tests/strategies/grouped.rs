//! Partitions: groups never share a batch, depart independently, are reclaimed when idle, are
//! bounded by `max_groups`, and a group whose `Hash` panics fails only its own caller.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use busline::{Error, Grouped};

use crate::groups::{Nan, Touchy};
use crate::support::poll_once;

type Calls = Arc<Mutex<Vec<(u32, Vec<u32>)>>>;

fn recording(window: Duration) -> (Grouped<u32, u32, String, String>, Calls) {
    let calls: Calls = Arc::default();
    let seen = calls.clone();
    let g = Grouped::builder(move |group: u32, keys: Vec<u32>| {
        let seen = seen.clone();
        async move {
            seen.lock().unwrap().push((group, keys.clone()));
            Ok(keys.into_iter().map(|k| (k, format!("{group}/{k}"))).collect::<HashMap<_, _>>())
        }
    })
    .window(window)
    .build()
    .unwrap();
    (g, calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_never_share_a_batch_and_the_batch_knows_its_group() {
    let (g, calls) = recording(Duration::from_millis(20));
    let loads = (0..60u32).map(|i| g.load(i % 3, i));
    let answers = futures_util::future::join_all(loads).await;
    for (i, a) in answers.into_iter().enumerate() {
        assert_eq!(a.unwrap(), Some(format!("{}/{i}", i % 3)));
    }
    let calls = calls.lock().unwrap();
    assert!(calls.len() >= 3, "one batch per group at least: {calls:?}");
    for (group, keys) in calls.iter() {
        assert!(keys.iter().all(|k| k % 3 == *group), "group {group} got {keys:?}");
    }
    // The window gathered each group's 20 callers into one call.
    assert_eq!(calls.len(), 3, "{calls:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_group_does_not_hold_up_another() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let opened = gate.clone();
    let g: Grouped<&'static str, u32, u32, String> = Grouped::builder(move |group: &'static str, keys: Vec<u32>| {
        let gate = opened.clone();
        async move {
            if group == "slow" {
                gate.notified().await;
            }
            Ok(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>())
        }
    })
    .build()
    .unwrap();
    let slow = {
        let g = g.clone();
        tokio::spawn(async move { g.load("slow", 1).await })
    };
    tokio::task::yield_now().await;
    // The slow group's batch is in flight and blocked; the fast group runs regardless.
    for k in 0..100 {
        assert_eq!(g.load("fast", k).await.unwrap(), Some(k));
    }
    assert!(!slow.is_finished());
    gate.notify_one();
    assert_eq!(slow.await.unwrap().unwrap(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_groups_are_reclaimed() {
    let (g, _) = recording(Duration::ZERO);
    for group in 0..1_000u32 {
        assert_eq!(g.load(group, 1).await.unwrap(), Some(format!("{group}/1")));
    }
    assert_eq!(g.live_groups(), 0);
    // Concurrent waves: many groups live at once, all reclaimed after.
    for wave in 0..10u32 {
        let loads = (0..500u32).map(|i| g.load(wave * 1000 + i % 50, i));
        for a in futures_util::future::join_all(loads).await {
            a.unwrap();
        }
    }
    assert_eq!(g.live_groups(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_groups_a_new_group_is_refused_never_merged() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let opened = gate.clone();
    let g: Grouped<u32, u32, u32, String> = Grouped::builder(move |group: u32, keys: Vec<u32>| {
        let gate = opened.clone();
        async move {
            let _permit = gate.acquire().await.unwrap();
            Ok(keys.into_iter().map(|k| (k, group)).collect::<HashMap<_, _>>())
        }
    })
    .max_groups(2)
    .build()
    .unwrap();
    let a = tokio::spawn({
        let g = g.clone();
        async move { g.load(1, 10).await }
    });
    let b = tokio::spawn({
        let g = g.clone();
        async move { g.load(2, 20).await }
    });
    while g.live_groups() < 2 {
        tokio::task::yield_now().await;
    }
    assert!(matches!(g.load(3, 30).await, Err(Error::Overloaded)));
    gate.add_permits(10);
    assert_eq!(a.await.unwrap().unwrap(), Some(1));
    assert_eq!(b.await.unwrap().unwrap(), Some(2));
    assert_eq!(g.live_groups(), 0);
    // Room again: the third group gets its own batch, with its own group.
    assert_eq!(g.load(3, 30).await.unwrap(), Some(3));
}

#[test]
fn zero_max_groups_is_a_config_error() {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        let err = Grouped::builder(|_: u32, keys: Vec<u32>| async move {
            Ok::<_, String>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>())
        })
        .max_groups(0)
        .build()
        .unwrap_err();
        assert_eq!(err.setting(), "max_groups");
        let err = Grouped::builder(|_: u32, keys: Vec<u32>| async move {
            Ok::<_, String>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>())
        })
        .max_batch_size(0)
        .build()
        .unwrap_err();
        assert_eq!(err.setting(), "max_batch_size");
    });
}

/// A group whose `Hash` panics for one value.
#[derive(Clone, PartialEq, Eq, Debug)]
struct Tenant(u32);
impl Hash for Tenant {
    fn hash<H: Hasher>(&self, state: &mut H) {
        assert_ne!(self.0, 13, "unlucky tenant");
        self.0.hash(state);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_whose_hash_panics_fails_only_its_caller() {
    let g: Grouped<Tenant, u32, u32, String> = Grouped::builder(|t: Tenant, keys: Vec<u32>| async move {
        Ok(keys.into_iter().map(|k| (k, t.0)).collect::<HashMap<_, _>>())
    })
    .build()
    .unwrap();
    let (bad, good) = tokio::join!(g.load(Tenant(13), 1), g.load(Tenant(7), 1));
    assert!(matches!(bad, Err(Error::Panicked)), "{bad:?}");
    assert_eq!(good.unwrap(), Some(7));
    assert_eq!(g.load(Tenant(8), 2).await.unwrap(), Some(8), "still serving");
    assert_eq!(g.live_groups(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_loads_leave_no_group_behind() {
    let (g, _) = recording(Duration::from_millis(50));
    for group in 0..200u32 {
        // Board (the first poll enters the group and takes a seat), then give up before the
        // window closes.
        let mut load = Box::pin(g.load(group, 1));
        assert!(poll_once(&mut load).await.is_none());
        drop(load);
    }
    assert_eq!(g.live_groups(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_tasks_many_groups_every_answer_checked() {
    let (g, _) = recording(Duration::ZERO);
    let tasks: Vec<_> = (0..64u32)
        .map(|t| {
            let g = g.clone();
            tokio::spawn(async move {
                let mut x = t.wrapping_mul(2_654_435_761);
                for i in 0..2_000u32 {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    let group = x % 37;
                    assert_eq!(g.load(group, i).await.unwrap(), Some(format!("{group}/{i}")));
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(g.live_groups(), 0);
}

/// A batch still running keeps its group (the group's `max_in_flight` holds when every caller
/// of the batch has given up), so loads with a timeout against a stuck backend start no second
/// batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_batch_keeps_its_group_so_max_in_flight_holds() {
    let running = Arc::new(AtomicU64::new(0));
    let most = Arc::new(AtomicU64::new(0));
    let users = {
        let (running, most) = (running.clone(), most.clone());
        Grouped::builder(move |_tenant: u32, ids: Vec<u32>| {
            let (running, most) = (running.clone(), most.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                // The backend is stuck.
                std::future::pending::<()>().await;
                Ok::<_, ()>(ids.into_iter().map(|id| (id, id)).collect::<HashMap<_, _>>())
            }
        })
        .max_in_flight(1)
        .build()
        .unwrap()
    };
    for attempt in 0..10u32 {
        // A caller with a timeout, as tower's or tokio's.
        let _ = tokio::time::timeout(Duration::from_millis(20), users.load(1, attempt)).await;
    }
    assert_eq!(most.load(Ordering::SeqCst), 1, "one group, max_in_flight(1): batches of it at once");
    assert_eq!(users.live_groups(), 1, "the group lives while its batch runs");
}

/// A group unequal to itself gets a batcher per load, each reclaimed with its driver: nothing
/// of it stays once its loads are answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_unequal_to_itself_leaves_no_batcher_behind() {
    let users = Grouped::builder(|_: Nan, ids: Vec<u32>| async move {
        Ok::<_, ()>(ids.into_iter().map(|id| (id, id)).collect::<HashMap<_, _>>())
    })
    .build()
    .unwrap();
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    for i in 0..1000u32 {
        assert_eq!(users.load(Nan(1), i).await.ok(), Some(Some(i)));
    }
    assert_eq!(users.live_groups(), 0);
    let mut alive = usize::MAX;
    for _ in 0..500 {
        // Time for the reclaimed batchers' drivers to end.
        alive = metrics.num_alive_tasks().saturating_sub(before);
        if alive <= 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(alive <= 10, "{alive} tasks still alive after 1,000 loads of an idle group");
}

/// The group a caller passes, and the partition's copies of it, drop where a panicking `Drop`
/// cannot unwind into a caller.
#[tokio::test(flavor = "current_thread")]
async fn a_groups_panicking_drop_reaches_no_caller() {
    crate::support::quiet_injected_panics();
    let users = Grouped::builder(|g: Touchy, ids: Vec<u32>| {
        // The function forgets its group: the user's own code never drops one.
        std::mem::forget(g);
        async move { Ok::<_, ()>(ids.into_iter().map(|id| (id, id * 2)).collect::<HashMap<_, _>>()) }
    })
    .build()
    .unwrap();
    for id in 0..64 {
        let users = users.clone();
        let out = tokio::spawn(async move { users.load(Touchy::callers(id), 21).await.ok() }).await;
        assert_eq!(out.ok(), Some(Some(Some(42))), "group {id}: answered, no panic in the caller's task");
    }
}

#[test]
fn a_grouped_batcher_checks_its_runtime_at_build() {
    // Before, `build` checked the settings only: on a runtime without the time driver, a
    // `batch_timeout` (or a window with `spin(false)`) was accepted, and every load then
    // failed to start its group's batcher and was answered `Closed`.
    let no_timer = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let grouped = || {
        Grouped::builder(|_: u32, keys: Vec<u32>| async move {
            Ok::<_, String>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>())
        })
        .runtime(no_timer.handle().clone())
    };
    let err = grouped().batch_timeout(Duration::from_secs(1)).build().unwrap_err();
    assert_eq!(err.setting(), "runtime", "{err}");
    let err = grouped().window(Duration::from_millis(1)).spin(false).build().unwrap_err();
    assert_eq!(err.setting(), "runtime", "{err}");
    // What needs no tokio timer is served there.
    let g = grouped().window(Duration::from_millis(1)).name("tenants").build().unwrap();
    assert_eq!(no_timer.block_on(g.load(1, 7)).unwrap(), Some(7));
}

/// A key whose original panics when dropped; its clones do not.
#[derive(Debug)]
struct Armed {
    id: u32,
    armed: bool,
}

impl Clone for Armed {
    fn clone(&self) -> Self {
        Armed { id: self.id, armed: false }
    }
}

impl PartialEq for Armed {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for Armed {}

impl Hash for Armed {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id.hash(state);
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        if self.armed && !std::thread::panicking() {
            panic!("injected: the key's drop");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_refused_with_its_group_is_dropped_quietly() {
    // A load whose group cannot be entered (here: past `max_groups`) drops the caller's key
    // itself. Its `Drop` is user code: it unwound into the caller's task, where a batcher's
    // refused key is dropped quietly (found by a cold review).
    crate::support::quiet_injected_panics();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let g = {
        let gate = gate.clone();
        Grouped::builder(move |_: u32, keys: Vec<Armed>| {
            let gate = gate.clone();
            async move {
                drop(gate.acquire().await.unwrap());
                Ok::<_, String>(keys.into_iter().map(|k| { let id = k.id; (k, id) }).collect::<HashMap<_, _>>())
            }
        })
        .max_groups(1)
        .build()
        .unwrap()
    };
    let waiting = tokio::spawn({
        let g = g.clone();
        async move { g.load(1, Armed { id: 1, armed: false }).await }
    });
    crate::support::eventually(10, "group 1 live", || g.live_groups() == 1).await;
    let refused = crate::support::without_panic({
        let g = g.clone();
        async move { g.load(2, Armed { id: 2, armed: true }).await }
    })
    .await
    // (Not the task's message: it names the injected panic, which the hook silences.)
    .unwrap_or_else(|_| panic!("the refused key's Drop unwound into the caller's task"));
    assert!(matches!(refused, Err(Error::Overloaded)), "{refused:?}");
    gate.add_permits(10);
    assert_eq!(waiting.await.unwrap().unwrap(), Some(1));
}

#[tokio::test(start_paused = true)]
async fn a_groups_hung_batch_times_out_frees_its_place_and_leaves_the_group() {
    let g = Grouped::builder(|group: u32, keys: Vec<u32>| async move {
        if keys.contains(&13) {
            std::future::pending::<()>().await;
        }
        Ok::<_, String>(keys.into_iter().map(|k| (k, group * 100 + k)).collect::<HashMap<_, _>>())
    })
    .max_in_flight(1)
    .batch_timeout(Duration::from_secs(30))
    .build()
    .unwrap();
    let within_an_hour = |load| async move { tokio::time::timeout(Duration::from_secs(3600), load).await.expect("never answered") };
    assert!(matches!(within_an_hour(g.load(1, 13)).await, Err(Error::Timeout)));
    assert_eq!(within_an_hour(g.load(1, 2)).await.unwrap(), Some(102), "the group's place was freed");
    // The timed-out call was dropped, and with it its hold on the group.
    crate::support::eventually(10, "the group reclaimed", || g.live_groups() == 0).await;
}
