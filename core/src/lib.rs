//! busline: request coalescing for async Rust.
//!
//! Under burst traffic, N concurrent callers of `get_user_info(id)` make N small queries.
//! busline collects the requests of a short window into one batched call
//! (`WHERE id IN (...)`) and hands every caller its own entry of the one shared result; the
//! caller's API does not change: `users.load(42).await`. And it batches only when that pays:
//! when the road is empty everyone drives (no added latency), when traffic builds up a bus
//! leaves (one query for many callers); see [`policy`].
//!
//! # Where things live
//! - [`Batcher`], [`Builder`]: the handle and how it is configured and started (`batcher.rs`,
//!   `builder.rs`; the settings and their validation in `settings.rs`).
//! - [`policy`]: when a batch departs, as a pure state machine the simulator drives too.
//! - `ring.rs`, `slot.rs`, `seats.rs`: the wait-free ingestion ring, its batch slots and their
//!   seats, allocated in segments as load arrives (all the `unsafe`).
//! - `driver/`: the tokio task that seals buses (`mod.rs`), runs each bus's lifecycle
//!   (`batch.rs`: collect, run, publish) and keeps deadlines (`alarm.rs`).
//! - `load.rs`: the caller's futures. `signals.rs`: the lock-free signals between driver,
//!   callers and handles. `clock.rs`: tokio's clock. `timer.rs`: sub-millisecond deadlines.
//! - `sync.rs`: the loom facade.
//! - [`strategy`]: the other coalescing strategies: [`SingleFlight`], [`Serial`], [`UseLast`],
//!   [`Debounce`], and the generic aggregate [`Coalescer`] the keyed `Batcher` is one case of.
//!
//! # Runtimes
//!
//! Each batcher has one driver task, spawned by [`Builder::build`] on the runtime given to
//! [`Builder::runtime`] (by default, the runtime `build` is called in); batch functions'
//! futures run there too, with one exception: a request run alone at capacity under
//! [`Overflow::RunAlone`] calls the batch function and polls its future in the caller's own
//! task, so there the future sees the caller's runtime (or none, on a plain thread, where
//! tokio's timers and `spawn` panic: the caller gets [`Error::Panicked`]). Callers may be
//! anywhere: another runtime, or a thread that polls a `load` with any executor; they only
//! need their own task to be woken.
//!
//! - On a **multi-thread** runtime the driver runs whenever a worker is free: nothing to do.
//! - On a **`current_thread`** runtime the driver runs only while that runtime runs, that is,
//!   inside its `block_on` (or a `LocalSet` it drives). Loads awaited inside that `block_on`
//!   are served normally (the driver takes its turn between the callers). A load awaited
//!   elsewhere while nothing drives that runtime waits until something does; a batcher whose
//!   runtime is never driven again answers nothing, and one whose runtime is dropped answers
//!   every waiting caller [`Error::Closed`].
//! - **Blocking** a worker of the driver's runtime (a synchronous `Handle::block_on` on one of
//!   its threads, or a long computation) stalls the driver with it, as it would any task.
//!
//! # Time, and tokio's paused clock
//!
//! Windows are kept on tokio's clock. While it runs, a precise timer thread closes them within
//! microseconds; with [`Builder::spin`] off, tokio's own timer does, to its 1 ms resolution,
//! for less CPU. When a test pauses
//! tokio's clock (`#[tokio::test(start_paused = true)]`, `tokio::time::pause`), the driver
//! notices (the paused clock stands still while the OS clock moves) and keeps its deadlines
//! with `tokio::time::sleep_until` instead: auto-advance then closes windows, and batch
//! timeouts fire, in the same order in every run. Deadlines then have tokio's resolution of
//! 1 ms.
//!
//! # Faults
//!
//! User code that panics inside the engine reaches the callers it concerns as
//! [`Error::Panicked`], and later batches run. The batch function's call or its future fails
//! its batch. A key's `Hash`, `Eq` or `Clone` that panics while the driver de-duplicates a bus
//! fails that key's callers: the driver reads the bus again, each key under its own guard,
//! and sends the others. A value's `Clone` that panics
//! fails only the caller reading it. Panics in the `Drop` of keys, values, maps and errors,
//! which run after every caller concerned has its answer, are caught and ignored. A batch
//! call that hangs is dropped after [`Builder::batch_timeout`] (its callers get
//! [`Error::Timeout`]). Without a `batch_timeout` a call that never completes keeps its
//! callers waiting and its in-flight place taken (with every place so held, later buses
//! cannot leave), and [`Batcher::shutdown`] waits for it for ever. The batch function's call
//! itself (before its future) runs on the driver: blocking there stalls every batch, and no
//! timeout can interrupt it.
//!
//! A batch function may load through its own batcher (a tree of entities resolved through one
//! loader), but each level of nesting holds an in-flight place while it waits for the next:
//! nesting deeper than `max_in_flight` waits for ever (or until `batch_timeout`).
//!
//! # Examples
//!
//! ```
//! use std::collections::HashMap;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let squares = busline::Batcher::builder(|keys: Vec<u64>| async move {
//!     Ok::<_, std::convert::Infallible>(keys.into_iter().map(|k| (k, k * k)).collect::<HashMap<_, _>>())
//! })
//! .build()?;
//! assert_eq!(squares.load(7).await?, Some(49));
//! # Ok(()) }
//! ```
//!
//! # Features
//!
//! Every optional integration is off by default and costs nothing when off.
//!
//! | feature | adds |
//! |---|---|
//! | `metrics` | counters, gauges and histograms through the `metrics` facade, labelled with [`Builder::name`]; the table of names is in [`observe::metrics`] |
//! | `tracing` | one `busline.batch` span per batch that `follows_from` each caller's `busline.load` span, which records the batch that served it (see [`observe`]) |
//! | `tower` | `tower::Service<K>` for [`Batcher`] and `Service<(G, K)>` for [`Grouped`], with readiness that reflects capacity, so tower's timeout, retry, load-shed and rate-limit layers compose around them |
//!
//! Without a feature, [`Batcher::builder_per_key`] (one error per key) and [`Grouped`] (one bus
//! line per tenant, shard or context) are always there.
//!
//! # Cancel safety
//!
//! | method | dropping its future |
//! |---|---|
//! | [`Batcher::load`], [`Batcher::load_shared`] | gives up the request: a key whose callers all left before departure is not sent, a bus with nobody left is not run; after departure the answer is discarded. Nothing stays allocated. |
//! | [`Batcher::load_many`] | gives up every key it still waits for, as above |
//! | [`Batcher::shutdown`] | shutdown goes on (it was requested on the first poll); only the wait for it ends |
//! | [`Grouped::load`] | as `load`; a group it leaves idle is reclaimed |
//! | the `tower` services' futures | as `load` |
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, missing_debug_implementations)]

// Layers, each importing only from those below it:
//   strategy, grouped          the other strategies and the partitions, on the Batcher
//   partition                  one live instance per group
//   builder                    configures and starts: puts the others together
//   batcher                    the handle
//   driver, load               the driver task; the callers' futures
//   shared                     the state all of the above share
//   signals, clock, timer      lock-free signals between them; time
//   settings                   the settings, validated into the ring's shape (its limits)
//   ring, slot, seats, seat_waker  the ingestion ring, its slots, their seats and wakers
//   policy, stats, answers, observe
//   error, sync                the errors; the loom facade
mod answers;
mod batcher;
mod builder;
mod clock;
mod driver;
mod error;
mod grouped;
mod partition;
mod load;
pub mod observe;
pub mod policy;
mod ring;
mod seat_waker;
#[cfg(feature = "tower")]
mod service;
mod seats;
mod settings;
mod shared;
mod signals;
mod slot;
mod stats;
pub mod strategy;
mod sync;
mod timer;

pub use batcher::Batcher;
pub use builder::{Builder, DEFAULT_NAME};
pub use settings::{DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_IN_FLIGHT, Overflow};
pub use error::{ConfigError, Error};
pub use grouped::{DEFAULT_MAX_GROUPS, Grouped, GroupedBuilder};
pub use load::{Load, LoadShared};
pub use policy::Policy;
pub use stats::{Stats, Summary};
#[cfg(feature = "tower")]
pub use service::BoxFuture;
pub use strategy::{Coalescer, Debounce, PerGroup, Serial, SingleFlight, UseLast};

/// Bytes one seat occupies for keys of type `K`, the key included: its state, its key and its
/// caller's waker. (The caller's `Load` future lives in the caller's task and is not counted.)
///
/// Seats are allocated as requests arrive, in segments that grow with the batch (see
/// `seats.rs`), and go back to a small per-batcher pool when their batch is done: a batcher
/// holding `n` pending requests in a bus has allocated at most `n + n / 4 + 32` seats for them,
/// whatever `max_batch_size` says.
///
/// # Examples
///
/// ```
/// // 8 bytes of key, 32 of bookkeeping: the caller's waker (16), its registration state and
/// // the seat's (8, padded).
/// assert_eq!(busline::seat_bytes::<u64>(), 40);
/// ```
pub const fn seat_bytes<K>() -> usize {
    std::mem::size_of::<slot::Entry<K>>()
}

// The public futures and handles are `Send` (spawnable on a multi-thread runtime) and the
// handles `Sync` whenever the key, value and error types are: checked when the crate compiles.
type SomeBatcher = Batcher<u64, String, std::io::Error>;
type SomeGrouped = Grouped<u32, u64, String, std::io::Error>;
const _: fn(&SomeBatcher, &SomeGrouped) = |b, g| {
    fn send<T: Send>(_: &T) {}
    fn send_sync<T: Send + Sync>(_: &T) {}
    send_sync(b);
    send_sync(g);
    send(&b.load(1));
    send(&b.load_shared(1));
    send(&b.load_many([1, 2]));
    send(&b.shutdown());
    send(&g.load(1, 2));
};

/// The engine's internals, exposed only to the loom model checks (`--cfg busline_loom`).
#[cfg(busline_loom)]
#[doc(hidden)]
pub mod model {
    pub use crate::partition::Activity;
    pub use crate::ring::{Claim, MAX_SEATS, Ring, Sealed};
    pub use crate::seats::{POOL_SEATS, live_segments};
    pub use crate::settings::Overflow;
    pub use crate::signals::{
        Admission, Boarded, Fanout, Gate, Look, Signals, abandon, admit, board, board_marked, publish, publish_in_steps,
        release, room_or_unstalled, update_stall,
    };
    pub use crate::slot::{Gathered, Slot};
    pub use crate::sync::{Bug, break_on_purpose};

    /// A ring whose boarding slot's `count` starts at `count` (see `Ring::with_count`).
    pub fn ring_with_count<K, R>(slots: usize, seats: usize, count: u64) -> Ring<K, R> {
        Ring::with_count(slots, seats, count)
    }

    /// The raw `count` of `ring`'s head word.
    pub fn head_count<K, R>(ring: &Ring<K, R>) -> u64 {
        ring.head_count()
    }
}
