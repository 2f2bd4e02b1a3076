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
//! - [`Batcher`], [`Builder`]: the handle and its settings (`batcher.rs`, `builder.rs`).
//! - [`policy`]: when a batch departs, as a pure state machine the simulator drives too.
//! - `ring.rs`, `slot.rs`: the wait-free ingestion ring and its batch slots (all the `unsafe`).
//! - `driver.rs`: the tokio task that seals buses, runs batch functions, publishes outcomes.
//! - `load.rs`: the caller's futures. `timer.rs`: sub-millisecond deadlines.
//! - `sync.rs`: the loom facade.
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
//   builder                    configures and starts: puts the others together
//   batcher                    the handle
//   driver, load               the driver task; the callers' futures
//   shared                     the state all of the above share
//   signals, clock, timer      lock-free signals between them; time
//   ring, slot, sync           the ingestion ring and its slots; the loom facade
//   settings, policy, stats, error
mod answers;
mod batcher;
mod builder;
mod clock;
mod driver;
mod error;
mod grouped;
mod load;
pub mod observe;
pub mod policy;
mod ring;
#[cfg(feature = "tower")]
mod service;
mod settings;
mod shared;
mod signals;
mod slot;
mod stats;
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

/// Bytes one pending request occupies in a batcher's preallocated seats for keys of type `K`,
/// the key included: its state, its key and its caller's waker. (The caller's `Load` future
/// lives in the caller's task and is not counted.) A batcher preallocates, lazily, up to
/// `capacity` seats.
///
/// # Examples
///
/// ```
/// // 8 bytes of key, 32 of bookkeeping.
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
    pub use crate::ring::{Claim, Ring, Sealed};
    pub use crate::signals::{Boarded, Gate, Look, Signals, abandon, board, publish, release};
    pub use crate::slot::Slot;
}
