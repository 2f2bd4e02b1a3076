//! The strategies' per-group forms (`Coalescer`, `Serial`, `UseLast` and `Debounce` through
//! `PerGroup`): the group reaches the function; groups never share work; one group's failure,
//! panic or cancellation stays in it; idle groups are reclaimed (100,000 come and go, none
//! stays); past `max_groups` a new group is refused; and under contention with reclamation
//! racing new calls, `Serial` never runs two calls of a group at once and `UseLast` keeps its
//! newest-wins per group.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use busline::{Coalescer, Debounce, Error, PerGroup, Serial, UseLast};
use crate::groups::Touchy;
use crate::support::{
    Came, DropBomb, Live, assert_send, chaos, eventually, exclusive, poll_at_most, poll_once, quiet_injected_panics,
    value_of, without_panic,
};
use tokio::sync::Notify;

type Tagged = (u64, u64);
/// A departure's group and sorted inputs.
type Departure = (u64, Vec<u64>);
/// What the chaos tests' `UseLast` and `Debounce` answer: the group, the input, its value.
type Answer = Result<(u64, u64, u64), Error<(u64, u64)>>;

/// Each group's function answers `(group, value_of(input))`.
fn serial() -> PerGroup<u64, Serial<u64, Tagged, u64>> {
    Serial::per_group(|g: u64, x: u64| async move { Ok((g, value_of(x))) }).build().unwrap()
}

fn use_last() -> PerGroup<u64, UseLast<u64, Tagged, u64>> {
    UseLast::per_group(|g: u64, x: u64| async move { Ok((g, value_of(x))) }).build().unwrap()
}

fn debounce(quiet: Duration) -> PerGroup<u64, Debounce<u64, Tagged, u64>> {
    Debounce::per_group(|g: u64, x: u64| async move { Ok((g, value_of(x))) }).quiet(quiet).build().unwrap()
}

/// Each departure answers its group and its sorted inputs.
fn coalescer(window: Duration) -> PerGroup<u64, Coalescer<u64, Departure, u64>> {
    Coalescer::per_group(Vec::new, |acc: &mut Vec<u64>, x: u64| acc.push(x), |g: u64, mut acc: Vec<u64>| async move {
        acc.sort_unstable();
        Ok((g, acc))
    })
    .window(window)
    .build()
    .unwrap()
}

/// Inputs below `GATED` wait for `gate`; each execution counts itself live.
const GATED: u64 = 100;

fn gated_use_last(live: &Arc<AtomicI64>, gate: &Arc<Notify>) -> PerGroup<u64, UseLast<u64, Tagged, ()>> {
    let (live, gate) = (live.clone(), gate.clone());
    UseLast::per_group(move |g: u64, x: u64| {
        let (live, gate) = (live.clone(), gate.clone());
        async move {
            let _alive = Live::new(&live);
            if x < GATED {
                gate.notified().await;
            }
            Ok((g, x))
        }
    })
    .build()
    .unwrap()
}

#[tokio::test]
async fn futures_are_send_and_handles_send_sync() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    let (s, u, d, c) = (serial(), use_last(), debounce(Duration::from_millis(1)), coalescer(Duration::ZERO));
    assert_send(&s.call(1, 1));
    assert_send(&u.call(1, 1));
    assert_send(&d.call(1, 1));
    assert_send(&c.coalesce(1, 1));
    send_sync(&s);
    send_sync(&u);
    send_sync(&d);
    send_sync(&c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_group_reaches_the_function_and_groups_never_share_work() {
    // Coalescer: a window gathers each group's callers; no departure mixes groups.
    let c = coalescer(Duration::from_millis(20));
    let answers = futures_util::future::join_all((0..60u64).map(|x| c.coalesce(x % 3, x))).await;
    for (x, answer) in answers.into_iter().enumerate() {
        let (group, inputs) = &*answer.unwrap();
        assert_eq!(*group, x as u64 % 3, "the departure ran with its callers' group");
        assert!(inputs.contains(&(x as u64)) && inputs.iter().all(|i| i % 3 == *group), "{inputs:?}");
    }
    // UseLast: a call supersedes only its own group's execution. The executions wait at a gate
    // opened once all three calls have started: each runs as its own task, and on two workers
    // the first could otherwise finish before the second call supersedes it.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let u = {
        let gate = gate.clone();
        UseLast::per_group(move |g: u64, x: u64| {
            let gate = gate.clone();
            async move {
                drop(gate.acquire().await.unwrap());
                Ok::<_, ()>((g, value_of(x)))
            }
        })
        .build()
        .unwrap()
    };
    let open = async {
        tokio::task::yield_now().await;
        gate.add_permits(3);
    };
    let (a1, a2, b1, ()) = tokio::join!(u.call(1, 10), u.call(1, 11), u.call(2, 20), open);
    assert_eq!((a1.unwrap(), a2.unwrap(), b1.unwrap()), ((1, value_of(11)), (1, value_of(11)), (2, value_of(20))));
    // Debounce: a call joins only its own group's cohort.
    let d = debounce(Duration::from_millis(5));
    let (a1, a2, b1) = tokio::join!(d.call(1, 10), d.call(1, 11), d.call(2, 20));
    assert_eq!((a1.unwrap(), a2.unwrap(), b1.unwrap()), ((1, value_of(11)), (1, value_of(11)), (2, value_of(20))));
    // Serial: each call its own result, with its group.
    let s = serial();
    let (a, b) = tokio::join!(s.call(1, 10), s.call(2, 20));
    assert_eq!((a.unwrap(), b.unwrap()), ((1, value_of(10)), (2, value_of(20))));
    // `UseLast` and `Debounce` groups stay live until their spawned work has ended, which may
    // be a moment after it answered.
    eventually(10, "every group reclaimed", || {
        c.live_groups() + u.live_groups() + d.live_groups() + s.live_groups() == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_is_one_at_a_time_per_group_and_groups_run_in_parallel() {
    let gate = Arc::new(Notify::new());
    let s = {
        let gate = gate.clone();
        Serial::per_group(move |g: &'static str, x: u64| {
            let gate = gate.clone();
            async move {
                if g == "stuck" {
                    gate.notified().await;
                }
                Ok::<_, ()>(x)
            }
        })
        .build()
        .unwrap()
    };
    let mut first = Box::pin(s.call("stuck", 1));
    let mut second = Box::pin(s.call("stuck", 2));
    assert!(poll_once(&mut first).await.is_none());
    assert!(poll_once(&mut second).await.is_none());
    // The stuck group's queue holds up nobody else.
    for x in 0..100 {
        assert_eq!(s.call("free", x).await.ok(), Some(x));
    }
    assert_eq!(s.live_groups(), 1, "only the stuck group is live");
    assert!(poll_once(&mut second).await.is_none(), "the second call waits for the first");
    gate.notify_one();
    assert_eq!(first.await.ok(), Some(1));
    gate.notify_one();
    assert_eq!(second.await.ok(), Some(2));
    assert_eq!(s.live_groups(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_groups_failure_panic_or_cancellation_stays_in_the_group() {
    quiet_injected_panics();
    // Group 1 fails, group 2 panics, group 3 is fine, all at once, in every strategy.
    fn outcome(g: u64, x: u64) -> Result<Tagged, u64> {
        match g {
            1 => Err(x),
            2 => panic!("injected"),
            _ => Ok((g, value_of(x))),
        }
    }
    let s = Serial::per_group(|g: u64, x: u64| async move { outcome(g, x) }).build().unwrap();
    let u = UseLast::per_group(|g: u64, x: u64| async move { outcome(g, x) }).build().unwrap();
    let d = Debounce::per_group(|g: u64, x: u64| async move { outcome(g, x) }).quiet(Duration::from_millis(1)).build().unwrap();
    let check = |failed: Result<Tagged, Error<u64>>, panicked: Result<Tagged, Error<u64>>, fine: Result<Tagged, Error<u64>>| {
        assert!(matches!(failed, Err(Error::Batch(ref e)) if **e == 10), "{failed:?}");
        assert!(matches!(panicked, Err(Error::Panicked)), "{panicked:?}");
        assert_eq!(fine.ok(), Some((3, value_of(30))));
    };
    let (a, b, c) = tokio::join!(s.call(1, 10), s.call(2, 20), s.call(3, 30));
    check(a, b, c);
    let (a, b, c) = tokio::join!(u.call(1, 10), u.call(2, 20), u.call(3, 30));
    check(a, b, c);
    let (a, b, c) = tokio::join!(d.call(1, 10), d.call(2, 20), d.call(3, 30));
    check(a, b, c);

    // Cancellation: every caller of group 1 gives up; its execution is dropped, group 2's
    // runs on and answers.
    let (live, gate) = (Arc::new(AtomicI64::new(0)), Arc::new(Notify::new()));
    let u = gated_use_last(&live, &gate);
    let mut one = Box::pin(u.call(1, 1));
    let mut two = Box::pin(u.call(2, 2));
    assert!(poll_once(&mut one).await.is_none());
    assert!(poll_once(&mut two).await.is_none());
    eventually(10, "both executions started", || live.load(Ordering::SeqCst) == 2).await;
    drop(one);
    eventually(10, "group 1's execution dropped", || live.load(Ordering::SeqCst) == 1).await;
    eventually(10, "group 1 reclaimed", || u.live_groups() == 1).await;
    gate.notify_one();
    assert_eq!(two.await.ok(), Some((2, 2)));
    eventually(10, "every group reclaimed", || u.live_groups() == 0).await;
}

/// `UseLast` and `Debounce` keep their group live while the work they spawned for it has not
/// ended, so a call that comes meanwhile joins that same instance (its execution superseded,
/// its cohort reopened) rather than a second one running beside it. On a current-thread
/// runtime the aborted task cannot be dropped before we yield, which makes it deterministic.
#[tokio::test(flavor = "current_thread")]
async fn spawned_work_keeps_its_group_live_until_it_ends() {
    let (live, gate) = (Arc::new(AtomicI64::new(0)), Arc::new(Notify::new()));
    let u = gated_use_last(&live, &gate);
    let mut call = Box::pin(u.call(7, 0));
    assert!(poll_once(&mut call).await.is_none());
    eventually(10, "the execution runs", || live.load(Ordering::SeqCst) == 1).await;
    drop(call);
    assert_eq!(u.live_groups(), 1, "the aborted execution still holds its group");
    // A call now enters the same instance and supersedes the aborted execution as usual.
    assert_eq!(u.call(7, GATED).await.ok(), Some((7, GATED)));
    eventually(10, "the group is reclaimed once its executions are gone", || {
        u.live_groups() == 0 && live.load(Ordering::SeqCst) == 0
    })
    .await;

    let d = debounce(Duration::from_millis(50));
    let mut call = Box::pin(d.call(7, 0));
    assert!(poll_once(&mut call).await.is_none());
    drop(call);
    assert_eq!(d.live_groups(), 1, "the cohort's aborted timer still holds its group");
    assert_eq!(d.call(7, 1).await.ok(), Some((7, value_of(1))));
    eventually(10, "reclaimed", || d.live_groups() == 0).await;
}

/// 100,000 distinct groups come and go through each strategy, 1,000 at a time: `live_groups`
/// is back to 0 after each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_groups_come_and_go() {
    const GROUPS: u64 = 100_000;
    const WAVE: u64 = 1_000;
    let (s, u, d, c) = (serial(), use_last(), debounce(Duration::from_millis(1)), coalescer(Duration::ZERO));
    for wave in 0..GROUPS / WAVE {
        let groups = wave * WAVE..(wave + 1) * WAVE;
        let serial = futures_util::future::join_all(groups.clone().map(|g| s.call(g, g)));
        let use_last = futures_util::future::join_all(groups.clone().map(|g| u.call(g, g)));
        let debounce = futures_util::future::join_all(groups.clone().map(|g| d.call(g, g)));
        let coalescer = futures_util::future::join_all(groups.clone().map(|g| c.coalesce(g, g)));
        let (serial, use_last, debounce, coalescer) = tokio::join!(serial, use_last, debounce, coalescer);
        for (g, answers) in groups.zip(serial.into_iter().zip(use_last).zip(debounce).zip(coalescer)) {
            let (((s, u), d), c) = answers;
            assert_eq!((s.unwrap(), u.unwrap(), d.unwrap()), ((g, value_of(g)), (g, value_of(g)), (g, value_of(g))));
            assert_eq!(*c.unwrap(), (g, vec![g]));
        }
    }
    eventually(30, "every group reclaimed", || {
        s.live_groups() + u.live_groups() + d.live_groups() + c.live_groups() == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_groups_a_new_group_is_refused_never_merged() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let held = |gate: &Arc<tokio::sync::Semaphore>| {
        let gate = gate.clone();
        move |g: u64, x: u64| {
            let gate = gate.clone();
            async move {
                drop(gate.acquire().await.unwrap());
                Ok::<_, ()>((g, x))
            }
        }
    };
    let s = Serial::per_group(held(&gate)).max_groups(2).build().unwrap();
    let u = UseLast::per_group(held(&gate)).max_groups(2).build().unwrap();
    let d = Debounce::per_group(held(&gate)).quiet(Duration::from_millis(1)).max_groups(2).build().unwrap();
    let held_run = held(&gate);
    let c = Coalescer::per_group(|| 0, |acc: &mut u64, x: u64| *acc += x, move |g: u64, acc: u64| held_run(g, acc))
        .max_groups(2)
        .build()
        .unwrap();
    let mut waiting = Vec::new();
    for g in [1, 2] {
        waiting.push(tokio::spawn({
            let (s, u, d, c) = (s.clone(), u.clone(), d.clone(), c.clone());
            async move {
                let (a, b, cc, dd) = tokio::join!(s.call(g, 1), u.call(g, 1), d.call(g, 1), c.coalesce(g, 1));
                (a.unwrap(), b.unwrap(), cc.unwrap(), *dd.unwrap())
            }
        }));
    }
    eventually(10, "two groups live in each", || {
        [s.live_groups(), u.live_groups(), d.live_groups(), c.live_groups()] == [2; 4]
    })
    .await;
    assert!(matches!(s.call(3, 1).await, Err(Error::Overloaded)));
    assert!(matches!(u.call(3, 1).await, Err(Error::Overloaded)));
    assert!(matches!(d.call(3, 1).await, Err(Error::Overloaded)));
    assert!(matches!(c.coalesce(3, 1).await, Err(Error::Overloaded)));
    gate.add_permits(1_000);
    for (g, w) in [1, 2].into_iter().zip(waiting) {
        assert_eq!(w.await.unwrap(), ((g, 1), (g, 1), (g, 1), (g, 1)), "each group its own");
    }
    eventually(10, "room again", || s.live_groups() + u.live_groups() + d.live_groups() + c.live_groups() == 0).await;
    assert_eq!(s.call(3, 1).await.ok(), Some((3, 1)), "a third group fits now");
}

#[test]
fn bad_settings_are_config_errors() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let f = |g: u64, x: u64| async move { Ok::<_, ()>((g, x)) };
        assert_eq!(Serial::per_group(f).max_groups(0).build().unwrap_err().setting(), "max_groups");
        assert_eq!(UseLast::per_group(f).max_groups(0).build().unwrap_err().setting(), "max_groups");
        assert_eq!(Debounce::per_group(f).build().unwrap_err().setting(), "quiet");
        assert_eq!(Debounce::per_group(f).quiet(Duration::ZERO).build().unwrap_err().setting(), "quiet");
        let c = Coalescer::per_group(|| 0, |acc: &mut u64, x: u64| *acc += x, move |g: u64, acc: u64| f(g, acc));
        assert_eq!(c.max_batch_size(0).build().unwrap_err().setting(), "max_batch_size");
    });
    let outside = Coalescer::per_group(|| 0, |acc: &mut u64, x: u64| *acc += x, |g: u64, acc: u64| async move {
        Ok::<_, ()>((g, acc))
    });
    assert_eq!(outside.build().unwrap_err().setting(), "runtime");
}

/// A group whose `Hash` panics for one value.
#[derive(Clone, PartialEq, Eq, Debug)]
struct Tenant(u64);
impl Hash for Tenant {
    fn hash<H: Hasher>(&self, state: &mut H) {
        assert_ne!(self.0, 13, "injected: unlucky tenant");
        self.0.hash(state);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_whose_hash_panics_fails_only_its_caller() {
    quiet_injected_panics();
    let s = Serial::per_group(|t: Tenant, x: u64| async move { Ok::<_, ()>((t.0, x)) }).build().unwrap();
    let (bad, good) = tokio::join!(s.call(Tenant(13), 1), s.call(Tenant(7), 1));
    assert!(matches!(bad, Err(Error::Panicked)), "{bad:?}");
    assert_eq!(good.ok(), Some((7, 1)));
    assert_eq!(s.call(Tenant(8), 2).await.ok(), Some((8, 2)), "still serving");
    assert_eq!(s.live_groups(), 0);
}

/// 200,000 calls from 6 tasks over 2 worker threads into 8 groups: at most 6 groups are busy
/// at once, so groups go idle and are reclaimed all the time, racing the next calls for them.
/// Random cancellation (before or during a call's turn), injected errors and panics. Every
/// answer is its own call's, no group ever runs two calls at once (across reclamations too),
/// nothing hangs, no group stays live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_serial_per_group_across_reclamations() {
    quiet_injected_panics();
    const GROUPS: u64 = 8;
    let running: Arc<[AtomicI64; GROUPS as usize]> = Arc::new(Default::default());
    let s = {
        let running = running.clone();
        Serial::per_group(move |g: u64, x: u64| {
            let running = running.clone();
            async move {
                let _one = exclusive(&running[g as usize]);
                if x % 3 == 0 {
                    tokio::task::yield_now().await;
                }
                match x % 64 {
                    13 => Err(x),
                    29 => panic!("injected"),
                    _ => Ok((g, value_of(x))),
                }
            }
        })
        .max_groups(GROUPS as usize)
        .build()
        .unwrap()
    };
    let handle = s.clone();
    let c = chaos(6, 200_000 / 6, move |x, polls| {
        let s = handle.clone();
        let g = value_of(x) % GROUPS;
        async move {
            match poll_at_most(s.call(g, x), polls).await {
                None => Came::Cancelled,
                Some(Ok(answer)) => {
                    assert_eq!(answer, (g, value_of(x)), "another call's result");
                    Came::Ok { by: None }
                }
                Some(Err(Error::Batch(e))) => {
                    assert_eq!((*e, x % 64), (x, 13), "another call's error");
                    Came::Failed { by: None }
                }
                Some(Err(Error::Panicked)) => {
                    assert_eq!(x % 64, 29, "another call's panic, or two calls of a group at once");
                    Came::Panicked
                }
                Some(Err(other)) => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
    assert!(c.panicked > 0, "{c:?}");
    assert_eq!(s.live_groups(), 0, "no group stays live");
    assert!(running.iter().all(|r| r.load(Ordering::SeqCst) == 0));
    println!("serial per group chaos: {c:?}", c = (c.ok, c.failed, c.panicked, c.cancelled));
}

/// 200,000 calls from 64 tasks over 2 worker threads into 16 groups of `UseLast`, and 100,000
/// from 500 tasks into 50 groups of `Debounce` (1 ms quiet, real time): random cancellation,
/// injected errors and panics. Every answer comes from the caller's own group; a call whose
/// own work answered a round got its own result; nothing hangs; no group, waiter or execution
/// stays behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_use_last_and_debounce_per_group() {
    quiet_injected_panics();
    let live = Arc::new(AtomicI64::new(0));
    let work = {
        let live = live.clone();
        move |g: u64, x: u64| {
            let live = live.clone();
            async move {
                let _alive = Live::new(&live);
                if x % 2 == 0 {
                    tokio::task::yield_now().await;
                }
                match x % 64 {
                    13 => Err((g, x)),
                    29 => panic!("injected"),
                    _ => Ok((g, x, value_of(x))),
                }
            }
        }
    };
    let u = UseLast::per_group(work.clone()).build().unwrap();
    let d = Debounce::per_group(work).quiet(Duration::from_millis(1)).max_wait(Duration::from_millis(1)).build().unwrap();
    let group_of = |x: u64, groups: u64| value_of(x) % groups;
    let classify = |g: u64, answer: Option<Answer>| match answer {
        None => Came::Cancelled,
        Some(Ok((from, y, v))) => {
            assert_eq!((from, v), (g, value_of(y)), "an answer from another group, or no execution's");
            Came::Ok { by: Some(y) }
        }
        Some(Err(Error::Batch(e))) => {
            assert_eq!((e.0, e.1 % 64), (g, 13), "an error from another group, or no execution's");
            Came::Failed { by: Some(e.1) }
        }
        Some(Err(Error::Panicked)) => Came::Panicked,
        Some(Err(other)) => panic!("unexpected {other:?}"),
    };
    let handle = u.clone();
    let c = chaos(64, 200_000 / 64, move |x, polls| {
        let (u, g) = (handle.clone(), group_of(x, 16));
        async move { classify(g, poll_at_most(u.call(g, x), polls).await) }
    })
    .await;
    assert!(c.panicked > 0 && c.check_own() > 0, "{c:?}");
    let handle = d.clone();
    let cd = chaos(500, 100_000 / 500, move |x, polls| {
        let (d, g) = (handle.clone(), group_of(x, 50));
        async move { classify(g, poll_at_most(d.call(g, x), polls).await) }
    })
    .await;
    cd.check_own();
    eventually(30, "every group reclaimed, every execution dropped", || {
        u.live_groups() + d.live_groups() == 0 && live.load(Ordering::SeqCst) == 0
    })
    .await;
    println!("use-last per group chaos: {:?}", (c.ok, c.failed, c.panicked, c.cancelled));
    println!("debounce per group chaos: {:?}", (cd.ok, cd.failed, cd.panicked, cd.cancelled));
}

/// 200,000 inputs from 64 tasks over 2 worker threads into 16 groups of `Coalescer`: random
/// cancellation, injected errors and panics in `run`. Every answer is its caller's own
/// departure's, of its own group; nothing hangs; no group stays live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_coalescer_per_group() {
    quiet_injected_panics();
    let departures = Arc::new(AtomicU64::new(0));
    let c = {
        let departures = departures.clone();
        Coalescer::per_group(Vec::new, |acc: &mut Vec<u64>, x: u64| acc.push(x), move |g: u64, mut acc: Vec<u64>| {
            departures.fetch_add(1, Ordering::Relaxed);
            async move {
                acc.sort_unstable();
                if acc.iter().any(|x| x % 5_000 == 13) {
                    return Err((g, acc));
                }
                assert!(!acc.iter().any(|x| x % 7_000 == 29), "injected");
                Ok((g, acc))
            }
        })
        .build()
        .unwrap()
    };
    let handle = c.clone();
    let tally = chaos(64, 200_000 / 64, move |x, polls| {
        let (c, g) = (handle.clone(), value_of(x) % 16);
        async move {
            match poll_at_most(c.coalesce(g, x), polls).await {
                None => Came::Cancelled,
                Some(Ok(answer)) => {
                    let (from, inputs) = &*answer;
                    assert_eq!(*from, g, "another group's departure");
                    assert!(inputs.binary_search(&x).is_ok(), "{x} got another departure's result");
                    assert!(inputs.iter().all(|i| value_of(*i) % 16 == g), "a departure mixed groups");
                    Came::Ok { by: None }
                }
                Some(Err(Error::Batch(e))) => {
                    assert!(e.0 == g && e.1.binary_search(&x).is_ok(), "{x} got another departure's error");
                    Came::Failed { by: None }
                }
                Some(Err(Error::Panicked)) => Came::Panicked,
                Some(Err(other)) => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
    eventually(30, "every group reclaimed", || c.live_groups() == 0).await;
    let departures = departures.load(Ordering::Relaxed);
    assert!(departures < 200_000, "inputs were coalesced ({departures} departures)");
    println!("coalescer per group chaos: {:?}, {departures} departures", (tally.ok, tally.failed, tally.panicked, tally.cancelled));
}

/// The group-less forms and the per-group forms answer alike: a per-group `Serial` with one
/// group is a `Serial`.
#[tokio::test]
async fn one_group_behaves_as_the_plain_strategy() {
    let order = Arc::new(Mutex::new(Vec::new()));
    let s = {
        let order = order.clone();
        Serial::per_group(move |_: (), x: u64| {
            let order = order.clone();
            async move {
                order.lock().unwrap().push(x);
                tokio::task::yield_now().await;
                Ok::<_, ()>(x)
            }
        })
        .build()
        .unwrap()
    };
    let answers = futures_util::future::join_all((0..20).map(|x| s.call((), x))).await;
    assert_eq!(answers.into_iter().map(Result::unwrap).collect::<Vec<_>>(), (0..20).collect::<Vec<_>>());
    assert_eq!(*order.lock().unwrap(), (0..20).collect::<Vec<_>>(), "arrival order");
}

/// A group whose `Hash` panics for id 7 while its flag is set (the flag is not part of the
/// group's identity; one flag per test).
#[derive(Clone, Debug)]
struct Flaky(u64, &'static std::sync::atomic::AtomicBool);

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

type GatedSerial = PerGroup<Flaky, Serial<u64, (u64, u64), ()>>;

/// Serial per group whose calls count that they started, then wait for a permit of `gate`.
fn gated_serial(gate: &Arc<tokio::sync::Semaphore>, started: &Arc<AtomicU64>) -> GatedSerial {
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
/// `Hash` goes bad and 4,000 other groups arrive and stay, so the map grows (and would re-hash
/// every key it holds). Returns the other groups not answered with their own value, and group
/// 7's answer.
async fn grow_past_a_bad_hash(
    s: &GatedSerial,
    gate: &Arc<tokio::sync::Semaphore>,
    started: &Arc<AtomicU64>,
    armed: &'static std::sync::atomic::AtomicBool,
) -> (Vec<(u64, String)>, Option<(u64, u64)>) {
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
    eventually(10, "every call started or ended", || {
        started.load(Ordering::SeqCst) + others.iter().filter(|h| h.is_finished()).count() as u64 > N
    })
    .await;
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

/// Runs `body` on its own thread and runtime; `Err` if it does not finish within `secs` (the
/// thread is then left behind: the hang is the failure).
fn within<T: Send + 'static>(secs: u64, body: impl std::future::Future<Output = T> + Send + 'static) -> Result<T, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.block_on(body))));
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(_)) => Err("the body panicked".into()),
        Err(_) => Err(format!("hung: no answer within {secs} s")),
    }
}

#[test]
fn a_groups_hash_never_runs_inside_the_map_as_it_grows() {
    static ARMED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    quiet_injected_panics();
    let (wrong, seven) = within(60, async {
        let (gate, started) = (Arc::new(tokio::sync::Semaphore::new(0)), Arc::new(AtomicU64::new(0)));
        let s = gated_serial(&gate, &started);
        grow_past_a_bad_hash(&s, &gate, &started, &ARMED).await
    })
    .expect("no hang");
    assert_eq!(seven, Some((7, 7)), "group 7 entered before its Hash went bad: its call runs");
    assert!(wrong.is_empty(), "only group 7's own callers may see its Hash panic; these got: {wrong:?}");
}

#[test]
fn a_group_whose_hash_panicked_is_served_once_it_recovers() {
    static ARMED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    quiet_injected_panics();
    let again = within(30, async {
        let (gate, started) = (Arc::new(tokio::sync::Semaphore::new(0)), Arc::new(AtomicU64::new(0)));
        let s = gated_serial(&gate, &started);
        let _ = grow_past_a_bad_hash(&s, &gate, &started, &ARMED).await;
        ARMED.store(false, Ordering::Relaxed);
        gate.add_permits(1);
        s.call(Flaky(7, &ARMED), 8).await.ok()
    });
    assert_eq!(again, Ok(Some((7, 8))), "group 7's next call, once its Hash is healthy");
}

/// With `max_groups(1)` the one group is always served: a call is refused only for a new
/// group while `max_groups` others are live, never while its own group's member retires or is
/// being created by another call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_groups_one_serves_its_only_group() {
    let s = Serial::per_group(|g: u64, x: u64| async move { Ok::<_, ()>((g, x)) }).max_groups(1).build().unwrap();
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move {
                let mut overloaded = 0u64;
                for x in 0..200_000u64 {
                    match s.call(1, x).await {
                        Ok((1, got)) if got == x => {}
                        Err(Error::Overloaded) => overloaded += 1,
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
    assert_eq!(overloaded, 0, "one group, max_groups(1): {overloaded} of 400,000 calls refused");
    assert_eq!(s.live_groups(), 0);
    // And a second group is still refused while the first is live.
    let gate = Arc::new(Notify::new());
    let held = Serial::per_group({
        let gate = gate.clone();
        move |g: u64, x: u64| {
            let gate = gate.clone();
            async move {
                gate.notified().await;
                Ok::<_, ()>((g, x))
            }
        }
    })
    .max_groups(1)
    .build()
    .unwrap();
    let first = tokio::spawn({
        let held = held.clone();
        async move { held.call(1, 1).await }
    });
    eventually(10, "group 1 live", || held.live_groups() == 1).await;
    assert!(matches!(held.call(2, 1).await, Err(Error::Overloaded)));
    gate.notify_one();
    assert_eq!(first.await.unwrap().ok(), Some((1, 1)));
}

/// A group whose `Clone` stalls once its [`Stall`] is armed (the stall is not part of the
/// group's identity; one per test). The partition clones a group once per new member, inside
/// its creator's window (the place taken, the member not yet in the map).
#[derive(Debug)]
struct Stalling(u64, &'static Stall);

/// One stall of a [`Stalling`] group's next `Clone` after `armed` is set: it says so in
/// `stalled`, then returns once `released` is set or after `at_most`.
#[derive(Debug)]
struct Stall {
    armed: std::sync::atomic::AtomicBool,
    stalled: std::sync::atomic::AtomicBool,
    released: std::sync::atomic::AtomicBool,
    at_most: Duration,
}

impl Stall {
    const fn new(at_most: Duration) -> Stall {
        use std::sync::atomic::AtomicBool;
        Stall { armed: AtomicBool::new(false), stalled: AtomicBool::new(false), released: AtomicBool::new(false), at_most }
    }
}

impl Clone for Stalling {
    fn clone(&self) -> Self {
        if self.1.armed.swap(false, Ordering::SeqCst) {
            self.1.stalled.store(true, Ordering::SeqCst);
            let start = std::time::Instant::now();
            while !self.1.released.load(Ordering::SeqCst) && start.elapsed() < self.1.at_most {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Stalling(self.0, self.1)
    }
}

impl PartialEq for Stalling {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Eq for Stalling {}

impl Hash for Stalling {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

type StallingSerial = PerGroup<Stalling, Serial<u64, Tagged, ()>>;

/// A `max_groups(1)` partition whose group 1 is being created by a call stalled in the group's
/// `Clone` (the only place in its hands), and that call.
async fn stalled_creation(stall: &'static Stall) -> (StallingSerial, tokio::task::JoinHandle<Result<Tagged, Error<()>>>) {
    let s = Serial::per_group(|g: Stalling, x: u64| async move { Ok::<_, ()>((g.0, x)) }).max_groups(1).build().unwrap();
    stall.armed.store(true, Ordering::SeqCst);
    let creator = tokio::spawn({
        let s = s.clone();
        async move { s.call(Stalling(1, stall), 1).await }
    });
    eventually(10, "the creator is in the group's Clone", || stall.stalled.load(Ordering::SeqCst)).await;
    (s, creator)
}

/// A call arriving while another call of its group is creating the group's member, the only
/// place of a `max_groups(1)` partition in that creator's hands (its thread preempted, or here
/// stalled 200 ms in the group's `Clone`, far longer than a call's careful look at the bound
/// lasted), is served: its own group's creation is under way. (The churn of
/// `max_groups_one_serves_its_only_group` refused such a call now and then on a loaded machine.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_waits_for_its_own_groups_creation_instead_of_being_refused() {
    static STALL: Stall = Stall::new(Duration::from_millis(200));
    let (s, creator) = stalled_creation(&STALL).await;
    let second = tokio::spawn({
        let s = s.clone();
        async move { s.call(Stalling(1, &STALL), 2).await }
    });
    let second = second.await.unwrap();
    assert!(matches!(second, Ok((1, 2))), "served, not refused, while its group's creation is under way: {second:?}");
    assert_eq!(creator.await.unwrap().ok(), Some((1, 1)));
    assert_eq!(s.live_groups(), 0);
}

/// A creation that hangs (the group's `Clone` does not return until the test says so) holds
/// its place: a call of another group at the bound is refused without waiting for it, and a
/// call of the hung group itself is refused after its bounded wait (rather than waiting, or
/// spinning, for ever). Once the creation ends, the group is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_creation_makes_no_caller_wait_for_ever() {
    static STALL: Stall = Stall::new(Duration::from_secs(60));
    let (s, creator) = stalled_creation(&STALL).await;
    let other = tokio::spawn({
        let s = s.clone();
        async move { s.call(Stalling(2, &STALL), 2).await }
    });
    assert!(matches!(other.await.unwrap(), Err(Error::Overloaded)), "another group, at the bound");
    assert!(!creator.is_finished(), "refused while the creation still hangs");
    let same = tokio::spawn({
        let s = s.clone();
        async move { s.call(Stalling(1, &STALL), 3).await }
    });
    assert!(matches!(same.await.unwrap(), Err(Error::Overloaded)), "the hung group's own caller, after its wait");
    assert!(!creator.is_finished(), "refused while the creation still hangs");
    STALL.released.store(true, Ordering::SeqCst);
    assert_eq!(creator.await.unwrap().ok(), Some((1, 1)));
    assert_eq!(s.call(Stalling(1, &STALL), 4).await.ok(), Some((1, 4)));
    assert_eq!(s.live_groups(), 0);
}

/// A departure still running keeps its group (a `Coalescer`'s `max_in_flight` holds when every
/// caller of the departure has given up), so callers with a timeout against a stuck backend
/// start no second departure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_departure_keeps_its_group_so_max_in_flight_holds() {
    let running = Arc::new(AtomicU64::new(0));
    let most = Arc::new(AtomicU64::new(0));
    let views = {
        let (running, most) = (running.clone(), most.clone());
        Coalescer::per_group(
            || 0u64,
            |n: &mut u64, x: u64| *n += x,
            move |_site: u32, n: u64| {
                let (running, most) = (running.clone(), most.clone());
                async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    // The backend is stuck.
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
        // A caller with a timeout, as tower's or tokio's.
        let _ = tokio::time::timeout(Duration::from_millis(20), views.coalesce(1, 1)).await;
    }
    assert_eq!(most.load(Ordering::SeqCst), 1, "one group, max_in_flight(1): departures of it at once");
    assert_eq!(views.live_groups(), 1, "the group lives while its departure runs");
}

/// A per-group coalescer whose function forgets its group: the user's own code never drops one.
fn forgetful_coalescer() -> PerGroup<Touchy, Coalescer<u64, u64, ()>> {
    Coalescer::per_group(
        || 0u64,
        |n: &mut u64, x: u64| *n += x,
        |g: Touchy, n: u64| {
            let id = g.id;
            std::mem::forget(g);
            async move { Ok::<_, ()>(id * 1000 + n) }
        },
    )
    .build()
    .unwrap()
}

/// The partition's own copies of a group (the member's, the map's key, those the group's
/// instance keeps) drop where a panicking `Drop` reaches no caller, whichever caller's frame or
/// epoch guard frees them.
#[tokio::test(flavor = "current_thread")]
async fn the_partitions_copies_of_a_group_drop_quietly() {
    quiet_injected_panics();
    // The functions forget their group: the user's own code never drops one.
    let s = Serial::per_group(|g: Touchy, x: u64| {
        let id = g.id;
        std::mem::forget(g);
        async move { Ok::<_, ()>(id * 1000 + x) }
    })
    .build()
    .unwrap();
    let c = forgetful_coalescer();
    for id in 0..64 {
        let (s, c) = (s.clone(), c.clone());
        // The caller's own group is healthy; only the partition's clones of it panic on drop.
        let serial = tokio::spawn(async move { s.call(Touchy::copies(id), 2).await.ok() });
        assert_eq!(serial.await.ok(), Some(Some(id * 1000 + 2)), "group {id}: answered, no panic in the caller's task");
        let coalesced = tokio::spawn(async move { c.coalesce(Touchy::copies(id), 3).await.ok().map(|n| *n) });
        assert_eq!(coalesced.await.ok(), Some(Some(id * 1000 + 3)), "group {id}: answered, no panic in the caller's task");
    }
    let c = forgetful_coalescer();
    // The caller's own group, dropped in the call.
    let coalesced = tokio::spawn(async move { c.coalesce(Touchy::callers(1), 2).await.ok().map(|n| *n) });
    assert_eq!(coalesced.await.ok(), Some(Some(1002)), "answered, the caller's group's drop panic caught");
}

/// A group whose copies are equal to everything and whose caller's own group is equal to
/// nothing (an `Eq` over a field `Clone` does not copy faithfully): the partition's lookup
/// finds no member, its insert finds one. The call fails with `Panicked` instead of looping
/// for ever, building and dropping an instance each round.
#[test]
fn a_group_whose_eq_contradicts_itself_fails_its_caller_instead_of_looping() {
    #[derive(Debug)]
    struct TwoFaced {
        original: bool,
    }
    impl Clone for TwoFaced {
        fn clone(&self) -> Self {
            TwoFaced { original: false }
        }
    }
    impl PartialEq for TwoFaced {
        fn eq(&self, _: &Self) -> bool {
            !self.original
        }
    }
    impl Eq for TwoFaced {}
    impl Hash for TwoFaced {
        fn hash<H: Hasher>(&self, state: &mut H) {
            7u64.hash(state);
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let gate = Arc::new(Notify::new());
    let s = {
        let _enter = runtime.enter();
        let gate = gate.clone();
        Serial::per_group(move |_: TwoFaced, x: u64| {
            let gate = gate.clone();
            async move {
                if x == 1 {
                    gate.notified().await;
                }
                Ok::<u64, ()>(x)
            }
        })
        .build()
        .unwrap()
    };
    // The first call creates the group's member (an empty map: no `Eq` runs) and stays in it.
    let first = runtime.spawn({
        let s = s.clone();
        async move { s.call(TwoFaced { original: true }, 1).await }
    });
    runtime.block_on(eventually(10, "the first call holds its group", || s.live_groups() == 1));
    // The second, on a thread of its own, so that a loop would fail the test rather than hang it.
    let (done, answer) = std::sync::mpsc::channel();
    let second = std::thread::spawn({
        let s = s.clone();
        move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let _ = done.send(rt.block_on(s.call(TwoFaced { original: true }, 2)));
        }
    });
    let answer = answer.recv_timeout(Duration::from_secs(10));
    gate.notify_one();
    assert!(matches!(answer, Ok(Err(Error::Panicked))), "{answer:?}");
    second.join().unwrap();
    assert_eq!(runtime.block_on(first).unwrap().ok(), Some(1));
}

#[tokio::test(start_paused = true)]
async fn a_groups_hung_departure_times_out_and_frees_its_place() {
    // The per-group `Coalescer` had no `batch_timeout`: a group's `run` that never finished
    // held the group's only in-flight place, so that group answered nothing again.
    let c = Coalescer::per_group(|| 0u64, |n: &mut u64, x: u64| *n += x, |g: u64, n: u64| async move {
        if n == 13 {
            std::future::pending::<()>().await;
        }
        Ok::<_, ()>((g, n))
    })
    .max_in_flight(1)
    .batch_timeout(Duration::from_secs(30))
    .build()
    .unwrap();
    let hung = tokio::time::timeout(Duration::from_secs(3600), c.coalesce(1, 13)).await.expect("never answered");
    assert!(matches!(hung, Err(Error::Timeout)), "{hung:?}");
    let next = tokio::time::timeout(Duration::from_secs(3600), c.coalesce(1, 2)).await.expect("the place stayed taken");
    assert_eq!(*next.unwrap(), (1, 2));
}

#[test]
fn a_per_group_coalescer_checks_its_runtime_at_build() {
    // Before, `build` checked the settings only: on a runtime without the time driver, a
    // `batch_timeout` was accepted and every group's first call then failed to start its
    // engine, answering `Closed`. Now `build` refuses it, as the `Batcher`'s does; and a
    // runtime given is used from outside any runtime.
    let no_timer = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let sum = || Coalescer::per_group(|| 0u64, |n: &mut u64, x: u64| *n += x, |g: u64, n: u64| async move { Ok::<_, ()>((g, n)) });
    let err = sum().batch_timeout(Duration::from_secs(1)).runtime(no_timer.handle().clone()).build().unwrap_err();
    assert_eq!(err.setting(), "runtime", "{err}");
    let err = no_timer.block_on(async { sum().batch_timeout(Duration::from_secs(1)).build().unwrap_err() });
    assert_eq!(err.setting(), "runtime", "{err}");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let c = sum().spin(false).window(Duration::from_millis(1)).name("views").runtime(rt.handle().clone()).build().unwrap();
    assert_eq!(*no_timer.block_on(c.coalesce(4, 5)).unwrap(), (4, 5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_refused_with_its_group_is_dropped_quietly() {
    // A call whose group cannot be entered (here: past `max_groups`) drops the caller's input
    // itself. Its `Drop` is user code: it unwound into the caller's task, where an admitted
    // input's drop is caught (found by a cold review).
    quiet_injected_panics();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let held = |gate: &Arc<tokio::sync::Semaphore>| {
        let gate = gate.clone();
        move |g: u64, _input: DropBomb| {
            let gate = gate.clone();
            async move {
                drop(gate.acquire().await.unwrap());
                Ok::<_, ()>(g)
            }
        }
    };
    let s = Serial::per_group(held(&gate)).max_groups(1).build().unwrap();
    let u = UseLast::per_group(held(&gate)).max_groups(1).build().unwrap();
    let d = Debounce::per_group(held(&gate)).quiet(Duration::from_millis(1)).max_groups(1).build().unwrap();
    let c = Coalescer::per_group(|| 0, |n: &mut u64, _input: DropBomb| *n += 1, {
        let gate = gate.clone();
        move |g: u64, _n: u64| {
            let gate = gate.clone();
            async move {
                drop(gate.acquire().await.unwrap());
                Ok::<_, ()>(g)
            }
        }
    })
    .max_groups(1)
    .build()
    .unwrap();
    // Group 1 is live in each (its call waits for the gate); the clones are unarmed.
    let waiting = tokio::spawn({
        let (s, u, d, c) = (s.clone(), u.clone(), d.clone(), c.clone());
        let quiet = || {
            let armed = DropBomb::new();
            let clone = armed.clone();
            std::mem::forget(armed);
            clone
        };
        async move {
            let (a, b, cc, dd) = tokio::join!(s.call(1, quiet()), u.call(1, quiet()), d.call(1, quiet()), c.coalesce(1, quiet()));
            (a.unwrap(), b.unwrap(), cc.unwrap(), *dd.unwrap())
        }
    });
    eventually(10, "group 1 live in each", || [s.live_groups(), u.live_groups(), d.live_groups(), c.live_groups()] == [1; 4]).await;
    let refused = without_panic({
        let (s, u, d, c) = (s.clone(), u.clone(), d.clone(), c.clone());
        async move {
            let s = s.call(2, DropBomb::new()).await;
            let u = u.call(2, DropBomb::new()).await;
            let d = d.call(2, DropBomb::new()).await;
            let c = c.coalesce(2, DropBomb::new()).await.map(|g| *g);
            [s, u, d, c]
        }
    })
    .await
    // (Not the task's message: it names the injected panic, which the hook silences.)
    .unwrap_or_else(|_| panic!("the refused input's Drop unwound into the caller's task"));
    assert!(refused.iter().all(|r| matches!(r, Err(Error::Overloaded))), "{refused:?}");
    gate.add_permits(1_000);
    assert_eq!(waiting.await.unwrap(), (1, 1, 1, 1));
}
