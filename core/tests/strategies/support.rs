//! What the strategies' tests share: checked values, cancellation at a random poll, the chaos
//! harness, counters of live things.

use std::future::Future;
use std::pin::pin;
use std::sync::Once;
use std::task::Poll;

/// A value no wrong hand-off would reproduce.
pub(crate) fn value_of(x: u64) -> u64 {
    x.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xABCD
}

/// Silences the panic hook for the panics the tests inject (their message says "injected"), so
/// a million-call run does not print thousands of backtraces; other panics still print.
pub(crate) fn quiet_injected_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let injected = info
                .payload()
                .downcast_ref::<&str>()
                .is_some_and(|s| s.contains("injected"))
                || info.payload().downcast_ref::<String>().is_some_and(|s| s.contains("injected"));
            if !injected {
                default(info);
            }
        }));
    });
}

/// Polls `fut` at most `polls` times, yielding to the runtime in between: its output, or `None`
/// if it was still pending (it is then dropped: a cancellation at a random point).
pub(crate) async fn poll_at_most<F: Future>(fut: F, polls: usize) -> Option<F::Output> {
    let mut fut = pin!(fut);
    for i in 0..polls {
        if let Poll::Ready(out) = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await {
            return Some(out);
        }
        if i + 1 < polls {
            tokio::task::yield_now().await;
        }
    }
    None
}

/// Polls `fut` once: `Some(output)` if it completed.
pub(crate) async fn poll_once<F: Future + Unpin>(fut: &mut F) -> Option<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(match std::pin::Pin::new(&mut *fut).poll(cx) {
        Poll::Ready(out) => Some(out),
        Poll::Pending => None,
    }))
    .await
}

/// A value whose original panics when dropped; its clones do not. The strategies share one
/// outcome between callers, each cloning it: whoever holds the original last drops it.
#[derive(Debug)]
pub(crate) struct DropBomb {
    original: bool,
}

impl DropBomb {
    pub(crate) fn new() -> DropBomb {
        DropBomb { original: true }
    }
}

impl Clone for DropBomb {
    fn clone(&self) -> Self {
        DropBomb { original: false }
    }
}

impl Drop for DropBomb {
    fn drop(&mut self) {
        if self.original && !std::thread::panicking() {
            panic!("injected: the value's drop");
        }
    }
}

/// Runs `fut` as a task of its own: `Err` if the task panicked.
pub(crate) async fn without_panic<T: Send + 'static>(fut: impl Future<Output = T> + Send + 'static) -> Result<T, String> {
    tokio::spawn(fut).await.map_err(|e| format!("the caller's task panicked: {e}"))
}

/// Asserts at compile time that a value is `Send`.
pub(crate) fn assert_send<T: Send>(_: &T) {}

/// Counts live instances: created with `new`, forgotten on drop.
#[derive(Debug)]
pub(crate) struct Live(std::sync::Arc<std::sync::atomic::AtomicI64>);

impl Live {
    pub(crate) fn new(count: &std::sync::Arc<std::sync::atomic::AtomicI64>) -> Live {
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Live(std::sync::Arc::clone(count))
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Counts calls running at once (of one `Serial`, of one group); a second one at the same
/// time is a bug the caller sees as a panic (`Error::Panicked`), which the tests refuse.
pub(crate) fn exclusive(running: &std::sync::atomic::AtomicI64) -> impl Drop + '_ {
    use std::sync::atomic::{AtomicI64, Ordering};
    assert_eq!(running.fetch_add(1, Ordering::SeqCst), 0, "two calls ran at once");
    struct Leave<'a>(&'a AtomicI64);
    impl Drop for Leave<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    Leave(running)
}

/// Classifies the answer of a call to a strategy whose work answers others (`UseLast`,
/// `Debounce`) in the chaos tests, where input `y` answers `Ok((y, value_of(y)))`, or
/// `Err(y)` if `y % 64 == 13`: checks that the answer is one some call's work produced, and
/// names that call.
pub(crate) fn came_from_work(answer: Option<Result<(u64, u64), busline::Error<u64>>>) -> Came {
    match answer {
        None => Came::Cancelled,
        Some(Ok((y, v))) => {
            assert_eq!(v, value_of(y), "a value no call's work produced");
            Came::Ok { by: Some(y) }
        }
        Some(Err(busline::Error::Batch(e))) => {
            assert_eq!(*e % 64, 13, "an error no call's work returned");
            Came::Failed { by: Some(*e) }
        }
        Some(Err(busline::Error::Panicked)) => Came::Panicked,
        Some(Err(other)) => panic!("unexpected {other:?}"),
    }
}

/// Waits (yielding, then sleeping briefly) until `done()`; panics after `secs` seconds so a
/// bug shows as a failure, not a hang.
pub(crate) async fn eventually(secs: u64, what: &str, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed().as_secs() < secs, "not within {secs} s: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

/// What one call of a chaos run came to. `by` names the call whose work answered it, where the
/// strategy lets one call answer others (`UseLast`, `Debounce`): see [`Chaos::check_own`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Came {
    Ok { by: Option<u64> },
    Failed { by: Option<u64> },
    Panicked,
    Cancelled,
}

/// The tally of a chaos run.
#[derive(Debug, Default)]
pub(crate) struct Chaos {
    pub(crate) ok: u64,
    pub(crate) failed: u64,
    pub(crate) panicked: u64,
    pub(crate) cancelled: u64,
    /// For each answered call that named `by`: the call whose work answered it.
    pub(crate) answered_by: std::collections::HashMap<u64, u64>,
}

impl Chaos {
    /// Checks that every call whose own work answered others, and which waited for it, got
    /// its own result (a round's newest caller, the caller whose input a debounced run used).
    /// Returns how many such calls were checked.
    pub(crate) fn check_own(&self) -> usize {
        let mut checked = 0;
        for &by in self.answered_by.values() {
            if let Some(&own) = self.answered_by.get(&by) {
                assert_eq!(own, by, "call {by}, whose work answered others, got call {own}'s result");
                checked += 1;
            }
        }
        checked
    }
}

/// Runs `tasks × calls` calls from `tasks` spawned tasks: call `x` (numbered `t * calls + i`)
/// is `call(x, polls)`, which must poll the strategy's future at most `polls` times (through
/// [`poll_at_most`]) and classify its answer, asserting what it can. One call in 20 is given
/// up after 1 to 3 polls, at random (seeded per task). Asserts that nothing hangs (five
/// minutes: the tests of this binary run two at a time on the 2 cores CI has, each several
/// times slower than alone, and a hang is forever) and that errors and cancellations
/// happened; returns the tally.
pub(crate) async fn chaos<C, Fut>(tasks: u64, calls: u64, call: C) -> Chaos
where
    C: Fn(u64, usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Came> + Send,
{
    use rand::{Rng, SeedableRng};

    let spawned: Vec<_> = (0..tasks)
        .map(|t| {
            let call = call.clone();
            tokio::spawn(async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64(t);
                let mut tally = Chaos::default();
                for i in 0..calls {
                    let x = t * calls + i;
                    let polls = if rng.random_ratio(1, 20) { rng.random_range(1..4) } else { usize::MAX };
                    let by = match call(x, polls).await {
                        Came::Ok { by } => {
                            tally.ok += 1;
                            by
                        }
                        Came::Failed { by } => {
                            tally.failed += 1;
                            by
                        }
                        Came::Panicked => {
                            tally.panicked += 1;
                            None
                        }
                        Came::Cancelled => {
                            tally.cancelled += 1;
                            None
                        }
                    };
                    if let Some(by) = by {
                        tally.answered_by.insert(x, by);
                    }
                }
                tally
            })
        })
        .collect();
    let all = async {
        let mut total = Chaos::default();
        for task in spawned {
            let tally = task.await.expect("a chaos task failed");
            total.ok += tally.ok;
            total.failed += tally.failed;
            total.panicked += tally.panicked;
            total.cancelled += tally.cancelled;
            total.answered_by.extend(tally.answered_by);
        }
        total
    };
    let total = tokio::time::timeout(std::time::Duration::from_secs(300), all).await.expect("nothing hangs");
    assert_eq!(total.ok + total.failed + total.panicked + total.cancelled, tasks * calls);
    assert!(total.failed > 0 && total.cancelled > 0, "{total:?}");
    total
}
