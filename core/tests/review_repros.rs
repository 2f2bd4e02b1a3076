//! Review repros (session 8, helper "review"): each test demonstrates one defect found in the
//! strategies, the partition or `Grouped`. They FAIL (or time out) against the code they were
//! written for; the lead decides whether they join the suite once fixed.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use busline::Serial;
use tokio::sync::Semaphore;

/// Silences the panic hook for the panics these tests inject (their message says "injected").
fn quiet_injected_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("REVIEW_LOUD").is_some() {
            return;
        }
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let injected = info.payload().downcast_ref::<&str>().is_some_and(|s| s.starts_with("injected"))
                || info.payload().downcast_ref::<String>().is_some_and(|s| s.starts_with("injected"));
            if !injected {
                default(info);
            }
        }));
    });
}

/// Runs `body` on its own thread and runtime; `Err` if it does not finish within `secs` (the
/// thread is then left behind: a hang is the finding).
fn within<T: Send + 'static>(secs: u64, body: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
        let _ = tx.send(out);
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(_)) => Err("the body panicked".into()),
        Err(_) => Err(format!("hung: no answer within {secs} s")),
    }
}

// ---------------------------------------------------------------------------------------------
// 1. A group's `Hash` that panics while the partition's map (papaya) copies its table to grow:
//    papaya re-hashes every key during the copy; the panic leaves group 7's old entry marked
//    COPYING for ever. The panic reaches another group's caller (the one whose insert drove the
//    copy), and the next call of group 7 (its `Hash` healthy again) parks its thread for ever
//    in papaya's `wait_copied` (seen with gdb: `Parker::park` < `wait_copied` < `remove_if` <
//    `Partition::find_or_create`).

/// A group whose `Hash` panics for id 7 while its flag is set (the flag is not part of the
/// group's identity; one flag per test, so that the tests do not disturb one another).
#[derive(Clone, Debug)]
struct Flaky(u64, &'static AtomicBool);

impl PartialEq for Flaky {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Eq for Flaky {}

impl Hash for Flaky {
    fn hash<H: Hasher>(&self, state: &mut H) {
        if self.0 == 7 && self.1.load(Ordering::Relaxed) {
            panic!("injected: group 7's hash");
        }
        self.0.hash(state);
    }
}

type GatedSerial = busline::PerGroup<Flaky, Serial<u64, (u64, u64), ()>>;

/// Serial per group whose calls record that they started, then wait for a permit of `gate`.
fn gated_serial(gate: &Arc<Semaphore>, started: &Arc<AtomicU64>) -> GatedSerial {
    let (gate, started) = (gate.clone(), started.clone());
    Serial::per_group(move |g: Flaky, x: u64| {
        let (gate, started) = (gate.clone(), started.clone());
        async move {
            started.fetch_add(1, Ordering::SeqCst);
            gate.acquire().await.unwrap().forget();
            Ok::<_, ()>((g.0, x))
        }
    })
    .build()
    .unwrap()
}

/// Group 7 enters while its `Hash` is healthy and stays (its call waits at the gate); then its
/// `Hash` goes bad and 4,000 other groups arrive and stay, so the map grows. Returns the other
/// groups that were not answered with their own value, and group 7's answer.
async fn grow_past_a_bad_hash(s: &GatedSerial, gate: &Arc<Semaphore>, started: &Arc<AtomicU64>, armed: &'static AtomicBool) -> (Vec<(u64, String)>, Option<(u64, u64)>) {
    let seven = tokio::spawn({
        let s = s.clone();
        async move { s.call(Flaky(7, armed), 7).await }
    });
    while started.load(Ordering::SeqCst) < 1 {
        tokio::task::yield_now().await;
    }
    armed.store(true, Ordering::Relaxed);
    const N: u64 = 4000;
    let others: Vec<_> = (1000..1000 + N)
        .map(|g| {
            let s = s.clone();
            tokio::spawn(async move { s.call(Flaky(g, armed), g).await })
        })
        .collect();
    // Until every call has started or ended (10 s at most).
    for _ in 0..1000 {
        let ended = others.iter().filter(|h| h.is_finished()).count() as u64;
        if started.load(Ordering::SeqCst) + ended > N {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gate.add_permits(N as usize + 1);
    let mut wrong = Vec::new();
    for (g, h) in (1000..1000 + N).zip(others) {
        match h.await.unwrap() {
            Ok((got, x)) if got == g && x == g => {}
            other => wrong.push((g, format!("{other:?}"))),
        }
    }
    (wrong, seven.await.unwrap().ok())
}

#[test]
fn partition_a_hash_panic_during_growth_reaches_another_groups_caller() {
    static ARMED: AtomicBool = AtomicBool::new(false);
    quiet_injected_panics();
    let (wrong, seven) = within(60, || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let (gate, started) = (Arc::new(Semaphore::new(0)), Arc::new(AtomicU64::new(0)));
            let s = gated_serial(&gate, &started);
            grow_past_a_bad_hash(&s, &gate, &started, &ARMED).await
        })
    })
    .expect("no hang");
    assert_eq!(seven, Some((7, 7)), "group 7 entered before its Hash went bad: its call runs");
    assert!(wrong.is_empty(), "group 7's Hash panic must reach group 7's callers only; these got: {wrong:?}");
}

#[test]
fn partition_a_hash_panic_during_growth_hangs_the_groups_next_call() {
    static ARMED: AtomicBool = AtomicBool::new(false);
    quiet_injected_panics();
    let again = within(30, || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let (gate, started) = (Arc::new(Semaphore::new(0)), Arc::new(AtomicU64::new(0)));
            let s = gated_serial(&gate, &started);
            let _ = grow_past_a_bad_hash(&s, &gate, &started, &ARMED).await;
            // Group 7's Hash is healthy again: its next call must run.
            ARMED.store(false, Ordering::Relaxed);
            gate.add_permits(1);
            s.call(Flaky(7, &ARMED), 8).await.ok()
        })
    });
    assert_eq!(again, Ok(Some((7, 8))), "group 7's next call, once its Hash is healthy");
}

// ---------------------------------------------------------------------------------------------
// 2. A value whose `Drop` panics: the strategies keep the shared outcome in a `Rendezvous`
//    inside an `Arc` (SingleFlight's flight, UseLast's and Debounce's round), and the caller
//    holds the last reference when it returns: the outcome is dropped in the caller's frame,
//    outside `drop_quietly`, and the panic unwinds out of the caller's `.await`. (The Batcher
//    catches these: "Panics in the Drop of keys, values, maps and errors ... are caught"; the
//    strategies' docs say every `Drop` of the user's is caught.)

/// A value whose original panics when dropped; its clones do not.
#[derive(Debug)]
struct Bomb {
    original: bool,
}

impl Clone for Bomb {
    fn clone(&self) -> Self {
        Bomb { original: false }
    }
}

impl Drop for Bomb {
    fn drop(&mut self) {
        if self.original && !std::thread::panicking() {
            panic!("injected: the value's drop");
        }
    }
}

/// Spawns `fut` and tells whether it ended without a panic.
async fn no_panic<T: Send + 'static>(fut: impl std::future::Future<Output = T> + Send + 'static) -> Result<T, String> {
    tokio::spawn(fut).await.map_err(|e| format!("the caller's task panicked: {e}"))
}

#[tokio::test(flavor = "current_thread")]
async fn single_flight_a_values_drop_panic_unwinds_into_the_caller() {
    quiet_injected_panics();
    let sf = busline::SingleFlight::<u32, Bomb, ()>::new();
    let out = no_panic(async move { sf.run(1, || async { Ok(Bomb { original: true }) }).await.is_ok() }).await;
    assert_eq!(out, Ok(true), "the caller gets its clone; the original's drop panic is caught");
}

#[tokio::test(flavor = "current_thread")]
async fn use_last_a_values_drop_panic_unwinds_into_the_caller() {
    quiet_injected_panics();
    let ul = busline::UseLast::new(|_: u32| async { Ok::<_, ()>(Bomb { original: true }) });
    let out = no_panic(async move { ul.call(1).await.is_ok() }).await;
    assert_eq!(out, Ok(true), "the caller gets its clone; the original's drop panic is caught");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn debounce_a_values_drop_panic_unwinds_into_the_caller() {
    quiet_injected_panics();
    let d = busline::Debounce::builder(|_: u32| async { Ok::<_, ()>(Bomb { original: true }) })
        .quiet(Duration::from_millis(10))
        .build()
        .unwrap();
    let out = no_panic(async move { d.call(1).await.is_ok() }).await;
    assert_eq!(out, Ok(true), "the caller gets its clone; the original's drop panic is caught");
}

// ---------------------------------------------------------------------------------------------
// 3. A group whose `Drop` panics: the group a caller passes to `PerGroup::call` or
//    `Grouped::load` is dropped in the library's frame, and the panic unwinds out of the
//    caller's `.await` (the Batcher catches a key's `Drop`, commit a002cee: "a refused caller's
//    key whose Drop panics is refused ... without a panic"). The partition's own copies of the
//    group (the member's, the map's key, the bound function's) are dropped on reclamation, in
//    whichever caller's frame or epoch guard reclaims them.

/// A group whose `Drop` panics if `bad` (clones copy `bad_clones` into `bad`).
#[derive(Debug)]
struct Touchy {
    id: u64,
    bad: bool,
    bad_clones: bool,
}

impl Clone for Touchy {
    fn clone(&self) -> Self {
        Touchy { id: self.id, bad: self.bad_clones, bad_clones: self.bad_clones }
    }
}

impl PartialEq for Touchy {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for Touchy {}

impl Hash for Touchy {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id.hash(state);
    }
}

impl Drop for Touchy {
    fn drop(&mut self) {
        if self.bad && !std::thread::panicking() {
            panic!("injected: the group's drop");
        }
    }
}

fn forgetful_serial() -> busline::PerGroup<Touchy, Serial<u64, u64, ()>> {
    // The function forgets its group: the user's own code never drops one.
    Serial::per_group(|g: Touchy, x: u64| {
        let id = g.id;
        std::mem::forget(g);
        async move { Ok::<_, ()>(id * 1000 + x) }
    })
    .build()
    .unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn per_group_the_callers_group_whose_drop_panics_unwinds_into_the_caller() {
    quiet_injected_panics();
    let s = forgetful_serial();
    let out = no_panic(async move { s.call(Touchy { id: 1, bad: true, bad_clones: false }, 2).await.ok() }).await;
    assert_eq!(out, Ok(Some(1002)), "answered, the group's drop panic caught");
}

#[tokio::test(flavor = "current_thread")]
async fn per_group_the_partitions_copies_of_a_group_whose_drop_panics_unwind_into_callers() {
    quiet_injected_panics();
    let s = forgetful_serial();
    let mut outs = Vec::new();
    for id in 0..64 {
        let s = s.clone();
        // The caller's own group is healthy; only the partition's clones of it panic on drop.
        outs.push(no_panic(async move { s.call(Touchy { id, bad: false, bad_clones: true }, 2).await.ok() }).await);
    }
    let panicked: Vec<_> = outs.iter().enumerate().filter(|(_, o)| o.is_err()).map(|(i, _)| i).collect();
    assert!(panicked.is_empty(), "callers whose task panicked: {panicked:?}");
    assert!(outs.iter().enumerate().all(|(i, o)| o == &Ok(Some(i as u64 * 1000 + 2))), "{outs:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn grouped_the_callers_group_whose_drop_panics_unwinds_into_the_caller() {
    quiet_injected_panics();
    let users = busline::Grouped::builder(|g: Touchy, ids: Vec<u32>| {
        std::mem::forget(g);
        async move { Ok::<_, ()>(ids.into_iter().map(|id| (id, id * 2)).collect::<std::collections::HashMap<_, _>>()) }
    })
    .build()
    .unwrap();
    let out = no_panic(async move { users.load(Touchy { id: 1, bad: true, bad_clones: false }, 21).await.ok() }).await;
    assert_eq!(out, Ok(Some(Some(42))), "answered, the group's drop panic caught");
}

// ---------------------------------------------------------------------------------------------
// 4. Debounce accepts a `max_wait` (or `quiet`) so large that `Instant + max_wait` overflows:
//    the cohort's task panics computing its deadline (`first_at + max_wait`, debounce.rs), and
//    every caller gets `Closed` instead of the run's result. `Duration::MAX` is the natural way
//    to say "no bound"; the builder should reject it or the deadline should saturate.

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn debounce_an_unbounded_max_wait_closes_every_call() {
    let d = busline::Debounce::builder(|x: u32| async move { Ok::<_, ()>(x) })
        .quiet(Duration::from_millis(10))
        .max_wait(Duration::MAX);
    match d.build() {
        Err(e) => eprintln!("rejected at build: {e}"), // acceptable: a clear error
        Ok(d) => {
            let out = d.call(5).await;
            assert!(matches!(out, Ok(5)), "the run's result after 10 ms of quiet; got {out:?}");
        }
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn debounce_a_huge_quiet_closes_every_call() {
    let d = busline::Debounce::builder(|x: u32| async move { Ok::<_, ()>(x) }).quiet(Duration::MAX);
    match d.build() {
        Err(e) => eprintln!("rejected at build: {e}"),
        Ok(d) => {
            // The run is due (practically) never: the call must still be waiting, not failed.
            let out = tokio::time::timeout(Duration::from_secs(3600), d.call(5)).await;
            assert!(out.is_err(), "still waiting for its quiet period; got {out:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Memory after a burst: SingleFlight's shards are hashbrown tables, which never shrink. After
//    30,000 distinct keys were in flight at once, `in_flight()` is 0 but the tables keep their
//    capacity for life ("Per-key state exists only while a key is in flight"; memory must follow
//    the load). Measured by a counting allocator that counts the test thread's allocations only
//    (the runtime is current_thread, so every task runs there). Likewise the partition: after a
//    burst of 30,000 groups live at once and gone, and 1,000 calls more, ~1 MB stays (papaya's
//    table or seize's retired entries).

mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static TRACKING: Cell<bool> = const { Cell::new(false) };
        static NET: Cell<isize> = const { Cell::new(0) };
    }

    pub(crate) struct Counting;

    fn count(delta: isize) {
        let _ = TRACKING.try_with(|t| {
            if t.get() {
                let _ = NET.try_with(|n| n.set(n.get() + delta));
            }
        });
    }

    // SAFETY: forwards to the system allocator; only counts.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            count(layout.size() as isize);
            // SAFETY: the caller's contract is the system allocator's.
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            count(-(layout.size() as isize));
            // SAFETY: as above.
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            count(new_size as isize - layout.size() as isize);
            // SAFETY: as above.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    /// Counts this thread's allocations from now on.
    pub(crate) fn track() {
        TRACKING.with(|t| t.set(true));
    }

    /// Net bytes this thread allocated since `track`.
    pub(crate) fn net() -> isize {
        NET.with(|n| n.get())
    }
}

#[global_allocator]
static ALLOCATOR: counting::Counting = counting::Counting;

#[test]
fn single_flight_keeps_a_bursts_table_for_life() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let sf = busline::SingleFlight::<u64, u64, ()>::new();
        // Warm-up: the runtime's and the table's first allocations.
        for k in 0..100u64 {
            sf.run(k, || async move { Ok(k) }).await.unwrap();
        }
        // The same burst without SingleFlight first: tokio's queues grow to its size and keep
        // it; that is not ours to count.
        let control = (0..30_000u64).map(|k| async move {
            tokio::spawn(async move {
                tokio::task::yield_now().await;
                k
            })
            .await
        });
        futures_util::future::join_all(control).await;
        counting::track();
        let start = counting::net();
        let burst = (0..30_000u64).map(|k| {
            let sf = sf.clone();
            async move {
                sf.run(k, || async move {
                    tokio::task::yield_now().await;
                    Ok(k)
                })
                .await
            }
        });
        let answers = futures_util::future::join_all(burst).await;
        assert!(answers.into_iter().enumerate().all(|(k, a)| a.ok() == Some(k as u64)));
        assert_eq!(sf.in_flight(), 0);
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        // What the idle handle holds: the bytes its drop frees (an idle SingleFlight should
        // hold its shards' fixed state, a few KiB).
        let before_drop = counting::net();
        drop(sf);
        let held = before_drop - counting::net();
        eprintln!("SingleFlight: {} bytes kept after a burst of 30,000 keys, {held} of them by the idle handle", before_drop - start);
        assert!(held <= 64 * 1024, "the idle SingleFlight holds {held} bytes after the burst; in_flight() was 0");
    });
}

#[test]
fn per_group_keeps_a_bursts_map_for_life() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let s = Serial::per_group(|g: u64, x: u64| async move {
            tokio::task::yield_now().await;
            Ok::<_, ()>((g, x))
        })
        .build()
        .unwrap();
        for g in 0..100u64 {
            s.call(g, g).await.unwrap();
        }
        // The same burst without the partition first: tokio's queues grow to its size and
        // keep it; that is not ours to count.
        let control = (0..30_000u64).map(|g| async move {
            tokio::task::yield_now().await;
            g
        });
        futures_util::future::join_all(control).await;
        counting::track();
        let start = counting::net();
        let burst = (0..30_000u64).map(|g| {
            let s = s.clone();
            async move { s.call(g, g).await }
        });
        let answers = futures_util::future::join_all(burst).await;
        assert!(answers.into_iter().enumerate().all(|(g, a)| a.ok() == Some((g as u64, g as u64))));
        // Some traffic afterwards, so that the map may shrink and the collector reclaim.
        for g in 0..1000u64 {
            s.call(g, g).await.unwrap();
        }
        assert_eq!(s.live_groups(), 0);
        let before_drop = counting::net();
        drop(s);
        let held = before_drop - counting::net();
        eprintln!("PerGroup<Serial>: {} bytes kept after a burst of 30,000 groups, {held} of them by the idle handle", before_drop - start);
        assert!(held <= 64 * 1024, "the idle PerGroup holds {held} bytes after the burst; live_groups() was 0");
    });
}

// ---------------------------------------------------------------------------------------------
// 6. `max_in_flight` per group does not bound the backend calls of a group whose callers time
//    out: the timed-out load leaves the group idle, the partition reclaims it (its Batcher is
//    dropped, its batch still running), and the next load builds a new Batcher, which starts
//    another batch. A slow backend plus callers with a timeout (the retry storm the bound is
//    for) gets one more call per timeout, without limit.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grouped_max_in_flight_is_bypassed_by_reclamation() {
    let running = Arc::new(AtomicU64::new(0));
    let most = Arc::new(AtomicU64::new(0));
    let users = {
        let (running, most) = (running.clone(), most.clone());
        busline::Grouped::builder(move |_tenant: u32, ids: Vec<u32>| {
            let (running, most) = (running.clone(), most.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                // The backend is stuck.
                std::future::pending::<()>().await;
                Ok::<_, ()>(ids.into_iter().map(|id| (id, id)).collect::<std::collections::HashMap<_, _>>())
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
    let most = most.load(Ordering::SeqCst);
    assert!(most <= 1, "one group, max_in_flight(1): {most} batch calls of it ran at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_group_coalescer_max_in_flight_is_bypassed_by_reclamation() {
    let running = Arc::new(AtomicU64::new(0));
    let most = Arc::new(AtomicU64::new(0));
    let views = {
        let (running, most) = (running.clone(), most.clone());
        busline::Coalescer::per_group(
            || 0u64,
            |n: &mut u64, x: u64| *n += x,
            move |_site: u32, n: u64| {
                let (running, most) = (running.clone(), most.clone());
                async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::future::pending::<()>().await;
                    Ok::<_, ()>(n)
                }
            },
        )
        .max_in_flight(1)
        .build()
        .unwrap()
    };
    for _ in 0..10 {
        let _ = tokio::time::timeout(Duration::from_millis(20), views.coalesce(1, 1)).await;
    }
    let most = most.load(Ordering::SeqCst);
    assert!(most <= 1, "one group, max_in_flight(1): {most} runs of it at once");
}

// ---------------------------------------------------------------------------------------------
// 7. A group whose `Eq` is not reflexive (a float NaN in it, a hand-written `eq` that is wrong):
//    every call creates a member, and the retirer's `remove_if(&member.group, ptr_eq)` never
//    finds it (papaya compares the keys with `Eq` before the closure sees the pointer), so the
//    dead member stays in the map for ever: `live_groups()` reads 0 while the map, and in
//    `Grouped` each member's Batcher with its driver task, grow by one per call.

/// A group that is never equal to anything, itself included (as a NaN).
#[derive(Clone, Debug)]
struct Nan(u64);

impl PartialEq for Nan {
    fn eq(&self, _: &Self) -> bool {
        false
    }
}

impl Eq for Nan {}

impl Hash for Nan {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grouped_a_group_unequal_to_itself_leaks_a_batcher_and_its_driver_per_load() {
    let users = busline::Grouped::builder(|_: Nan, ids: Vec<u32>| async move {
        Ok::<_, ()>(ids.into_iter().map(|id| (id, id)).collect::<std::collections::HashMap<_, _>>())
    })
    .build()
    .unwrap();
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    for i in 0..1000u32 {
        assert_eq!(users.load(Nan(1), i).await.ok(), Some(Some(i)));
    }
    assert_eq!(users.live_groups(), 0);
    // Time for dropped batchers' drivers to end.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let alive = metrics.num_alive_tasks() - before;
    assert!(alive <= 10, "{alive} tasks still alive after 1,000 loads of an idle group; live_groups() is 0");
}

#[test]
fn per_group_a_group_unequal_to_itself_leaks_a_member_per_call() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let s = Serial::per_group(|g: Nan, x: u64| async move { Ok::<_, ()>((g.0, x)) }).build().unwrap();
        for x in 0..100u64 {
            s.call(Nan(1), x).await.unwrap();
        }
        counting::track();
        let start = counting::net();
        for x in 0..3_000u64 {
            assert_eq!(s.call(Nan(1), x).await.ok(), Some((1, x)));
        }
        assert_eq!(s.live_groups(), 0);
        let kept = counting::net() - start;
        eprintln!("PerGroup<Serial>: {kept} bytes kept after 3,000 calls of one idle group unequal to itself");
        assert!(kept <= 64 * 1024, "{kept} bytes kept after 3,000 calls; live_groups() is 0");
    });
}

// ---------------------------------------------------------------------------------------------
// 8. `max_groups` refuses calls of the one group there is. A creator reserves its place before
//    it knows whether its member will be the group's (partition.rs, `find_or_create`): two
//    callers creating the same group at once both reserve, and at the bound the second is
//    refused instead of joining the first's member. Likewise a retired member still counts
//    between its retirer's CAS to DEAD and its `live.fetch_sub`, so the group's next caller,
//    which must create it afresh, is refused. With `max_groups(1)`, one group and two tasks
//    calling it, more than half the calls fail with `Overloaded`.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_group_max_groups_refuses_calls_of_the_only_group() {
    let s = Serial::per_group(|g: u64, x: u64| async move { Ok::<_, ()>((g, x)) }).max_groups(1).build().unwrap();
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move {
                let mut overloaded = 0u64;
                for x in 0..300_000u64 {
                    match s.call(1, x).await {
                        Ok((1, got)) if got == x => {}
                        Err(busline::Error::Overloaded) => overloaded += 1,
                        other => panic!("unexpected {other:?}"),
                    }
                }
                overloaded
            })
        })
        .collect();
    let mut overloaded = 0;
    for t in tasks {
        overloaded += t.await.unwrap();
    }
    assert_eq!(overloaded, 0, "one group, max_groups(1): {overloaded} of 600,000 calls refused as Overloaded");
}
