//! After 100,000 distinct groups have come and gone, `live_groups()` is back to 0 and the
//! memory the process holds is back to where it started: reclaimed groups leave nothing behind,
//! in `Grouped` and in the strategies' per-group forms (whose `UseLast` executions hold their
//! group until they end); a `SingleFlight` gives back the table a burst of keys grew. (Its own test binary: the counting allocator sees every allocation
//! of the process; its tests take turns, so that one's allocations do not count in another's.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicIsize, Ordering};

use busline::{Grouped, Serial, SingleFlight, UseLast};

#[path = "common/groups.rs"]
#[allow(dead_code, reason = "the groups this binary's tests use, among others'")]
mod groups;
use groups::Nan;

struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live_bytes() -> isize {
    LIVE_BYTES.load(Ordering::Relaxed)
}

/// One test at a time: the allocation count is the process's.
static TURN: Mutex<()> = Mutex::new(());

#[test]
fn a_hundred_thousand_groups_come_and_go_and_memory_returns() {
    let _turn = TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let g: Grouped<u64, u32, u32, String> = Grouped::builder(|group: u64, keys: Vec<u32>| async move {
            Ok(keys.into_iter().map(|k| (k, group as u32)).collect::<HashMap<_, _>>())
        })
        .build()
        .unwrap();
        // Warm up what is allocated once per process or per map (tokio's blocking pool and
        // timer, the map's first table), then take the baseline.
        for group in 0..1_000u64 {
            g.load(group, 1).await.unwrap();
        }
        settle(|| g.live_groups(), isize::MAX).await;
        let start = live_bytes();
        for wave in 0..100u64 {
            let loads = (0..1_000u64).map(|i| g.load(1_000 + wave * 1_000 + i, i as u32));
            for (i, answer) in futures_util::future::join_all(loads).await.into_iter().enumerate() {
                assert_eq!(answer.unwrap(), Some((1_000 + wave * 1_000 + i as u64) as u32));
            }
        }
        assert_eq!(g.live_groups(), 0);
        let end = settle(|| g.live_groups(), start).await;
        eprintln!("live bytes: {start} before, {end} after 100,000 groups");
        // Slack for the allocator's own bookkeeping of tokio's worker-local queues and the
        // map's current table, which may have been rebuilt at another size: 64 KiB.
        assert!(
            end - start <= 64 * 1024,
            "{} bytes more after 100,000 groups came and went ({} -> {})",
            end - start,
            start,
            end
        );
    });
}

#[test]
fn per_group_strategies_return_their_memory_after_a_hundred_thousand_groups() {
    let _turn = TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let s = Serial::per_group(|g: u64, x: u64| async move { Ok::<_, ()>(g + x) }).build().unwrap();
        let u = UseLast::per_group(|g: u64, x: u64| async move {
            tokio::task::yield_now().await;
            Ok::<_, ()>(g + x)
        })
        .build()
        .unwrap();
        let live = || s.live_groups() + u.live_groups();
        let wave = |first: u64| {
            let (s, u) = (&s, &u);
            async move {
                let serial = futures_util::future::join_all((first..first + 1_000).map(|g| s.call(g, 1)));
                let use_last = futures_util::future::join_all((first..first + 1_000).map(|g| u.call(g, 2)));
                let (serial, use_last) = tokio::join!(serial, use_last);
                for (g, (a, b)) in (first..).zip(serial.into_iter().zip(use_last)) {
                    assert_eq!((a.unwrap(), b.unwrap()), (g + 1, g + 2));
                }
            }
        };
        wave(0).await;
        settle(live, isize::MAX).await;
        let start = live_bytes();
        for w in 1..=100u64 {
            wave(w * 1_000).await;
        }
        let end = settle(live, start).await;
        assert_eq!(live(), 0);
        eprintln!("live bytes: {start} before, {end} after 100,000 groups of each");
        // The same slack as for `Grouped`, for the same reasons.
        assert!(end - start <= 64 * 1024, "{} bytes more after 100,000 groups came and went", end - start);
    });
}

#[test]
fn a_group_unequal_to_itself_leaves_nothing_behind() {
    let _turn = TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let s = Serial::per_group(|g: Nan, x: u64| async move { Ok::<_, ()>((g.0, x)) }).build().unwrap();
        for x in 0..100u64 {
            s.call(Nan(1), x).await.unwrap();
        }
        let start = live_bytes();
        for x in 0..3_000u64 {
            assert_eq!(s.call(Nan(1), x).await.ok(), Some((1, x)));
        }
        assert_eq!(s.live_groups(), 0);
        let end = settle(|| s.live_groups(), start).await;
        eprintln!("live bytes: {start} before, {end} after 3,000 calls of a group unequal to itself");
        assert!(end - start <= 64 * 1024, "{} bytes more after 3,000 calls of one idle group", end - start);
    });
}

/// The map does not shrink (documented): an idle `PerGroup` keeps a table sized for its
/// largest burst of distinct groups. The bound is that burst, not the traffic: bursts of as
/// many other groups after it keep no more (the map may resize on one of them, to a table of
/// either size: 0.3 or 0.6 MB for 30,000 groups here).
#[test]
fn an_idle_partition_keeps_only_its_largest_bursts_table() {
    let _turn = TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let s = Serial::per_group(|g: u64, x: u64| async move {
            tokio::task::yield_now().await;
            Ok::<_, ()>((g, x))
        })
        .build()
        .unwrap();
        const N: u64 = 30_000;
        let burst = |first: u64| {
            let s = &s;
            async move {
                let answers = futures_util::future::join_all((first..first + N).map(|g| s.call(g, g))).await;
                assert!(answers.into_iter().zip(first..).all(|(a, g)| a.ok() == Some((g, g))));
            }
        };
        // The same burst's size without the partition first: tokio's queues grow to it and
        // keep it; that is not the partition's to count.
        futures_util::future::join_all((0..N).map(|g| async move {
            tokio::task::yield_now().await;
            g
        }))
        .await;
        let start = settle(|| s.live_groups(), isize::MAX).await;
        let mut kept = Vec::new();
        for b in 0..4 {
            burst(b * N).await;
            kept.push(settle(|| s.live_groups(), isize::MAX).await - start);
        }
        assert_eq!(s.live_groups(), 0);
        eprintln!("bytes kept after each of 4 bursts of {N} distinct groups: {kept:?}");
        // At most 32 bytes a group of one burst (a power of two of slots, 9 bytes each, the
        // load factor, and a table of the next size if a resize came late in a burst), after
        // each burst, though 4 bursts' worth of groups came and went.
        assert!(kept.iter().all(|&k| k <= 32 * N as isize), "bytes kept after each burst: {kept:?}");
    });
}

/// Waits (bounded) for retired groups' drivers or executions to finish and their memory to be
/// freed.
async fn settle(live_groups: impl Fn() -> usize, target: isize) -> isize {
    let mut last = live_bytes();
    for _ in 0..2_000 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        let now = live_bytes();
        if live_groups() == 0 && (now <= target.saturating_add(64 * 1024) || (target == isize::MAX && now == last)) {
            return now;
        }
        last = now;
    }
    live_bytes()
}

/// What an idle `SingleFlight` holds: the bytes its drop frees.
fn held_by(sf: SingleFlight<u64, u64, ()>) -> isize {
    let before = live_bytes();
    drop(sf);
    before - live_bytes()
}

#[test]
fn a_single_flight_gives_back_what_a_burst_of_keys_took() {
    let _turn = TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let fresh = held_by(SingleFlight::new());
        let sf = SingleFlight::<u64, u64, ()>::new();
        // 30,000 keys in flight at once (each execution yields once before it answers).
        let burst = (0..30_000u64).map(|k| {
            sf.run(k, move || async move {
                tokio::task::yield_now().await;
                Ok(k)
            })
        });
        let answers = futures_util::future::join_all(burst).await;
        assert!(answers.into_iter().zip(0..).all(|(a, k)| a.ok() == Some(k)));
        assert_eq!(sf.in_flight(), 0);
        let held = held_by(sf);
        eprintln!("an idle SingleFlight holds {fresh} bytes fresh, {held} after a burst of 30,000 keys");
        // Each shard may keep a small table (`KEEP_CAPACITY` entries): 32 KiB covers 64 shards.
        assert!(held - fresh <= 32 * 1024, "{held} bytes held after the burst, {fresh} fresh");
    });
}
