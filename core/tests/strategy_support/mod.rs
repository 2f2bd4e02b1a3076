//! What the strategies' tests share.
#![allow(dead_code, reason = "each test file uses a different part")]

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

/// Waits (yielding, then sleeping briefly) until `done()`; panics after `secs` seconds so a
/// bug shows as a failure, not a hang.
pub(crate) async fn eventually(secs: u64, what: &str, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed().as_secs() < secs, "not within {secs} s: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}
