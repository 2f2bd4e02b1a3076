//! Review repros (session 8, helper "review"): each test demonstrates one defect found in the
//! strategies, the partition or `Grouped`. They FAIL (or time out) against the code they were
//! written for; the lead decides whether they join the suite once fixed.

use std::hash::{Hash, Hasher};
use std::time::Duration;

use busline::Serial;

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
//    (the runtime is current_thread, so every task runs there). (The partition's map after a
//    burst is documented and tested in `grouped_memory.rs`.)

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
