//! The other coalescing strategies: what to do when many callers want the same kind of work at
//! once, besides the keyed batch of [`Batcher`](crate::Batcher).
//!
//! # Car or bus
//!
//! A call is a trip to the backend. Sending each caller in its own car is the simplest and, when
//! the road is empty, the fastest: nobody waits for anybody. When traffic builds up, the cars
//! jam the backend (N queries for one hot key, N connections for N tiny writes) and a bus pays:
//! one trip carries many callers, at the price of some waiting for the bus. The strategies
//! differ in who boards, what the bus carries, and who gets what at the end:
//!
//! | strategy | who shares a trip | what runs | who gets what | use it for |
//! |---|---|---|---|---|
//! | [`Batcher`](crate::Batcher) | callers of one departure | the batch function, with their distinct keys | each caller its own key's entry | `WHERE id IN (...)`, DataLoader |
//! | [`Coalescer`] | callers of one departure | `run(fold(seed(), inputs))` | every caller the one shared result | counters, bulk writes, merged requests |
//! | [`SingleFlight`] | concurrent callers of one key | the first caller's function | all the same value | cache stampedes, token refresh (Go's `singleflight`) |
//! | [`UseLast`] | every caller until a result comes | the newest call's function (older ones dropped) | all the newest result | search-as-you-type, "latest state wins" reads |
//! | [`Debounce`] | calls until a pause of `quiet` | one run with the last input | all that run's result | autosave, re-indexing after a burst of edits |
//! | [`Serial`] | nobody: one seat | every call, one at a time, in arrival order | each caller its own result | a resource that must not see two calls at once |
//!
//! The load decides when a bus pays. `Batcher` and `Coalescer` ask a [`Policy`](crate::policy::Policy)
//! (the default, natural batching, sends a lone caller at once and fills buses only while
//! the backend is busy). `SingleFlight` never waits at all: it only merges callers who arrive
//! while the trip is already under way, so it adds no latency, ever. `UseLast` and `Debounce`
//! trade completeness for freshness: work that a newer call makes obsolete is dropped or never
//! started. `Serial` is the degenerate bus with one seat.
//!
//! # What they share
//!
//! - Errors: [`Error::Batch`](crate::Error::Batch) carries the user's own error (one `Arc`
//!   shared by everyone it reaches, not wrapped), [`Error::Panicked`](crate::Error::Panicked) a
//!   caught panic, [`Error::Closed`](crate::Error::Closed) a runtime gone away. No new
//!   variants were needed.
//! - No user code under a lock of ours. Every function, future, `Clone` and `Drop` of the
//!   user's runs outside our mutexes (their critical sections are a few loads and stores);
//!   the one exception is a key's `Eq` during [`SingleFlight`]'s lookup, as in any concurrent
//!   map. Panics in any of it are caught (`user.rs`).
//! - Fan-out without recursion: an outcome is published once into a set-once cell and every
//!   waiter is woken by one loop (`rendezvous.rs`), so a million waiters cost flat stack.
//! - Cancellation: dropping a caller's future always takes that caller out; work is dropped
//!   only when nobody is left to want it; nothing stays allocated (`pending()`,
//!   `in_flight()`, `live_slots()` read zero afterwards).
//! - Every future is `Send` and `#[must_use]` (an unawaited future does nothing).
//!
//! # Per group
//!
//! Each strategy is one handle for one group of callers. For one per tenant, user or device,
//! each has a per-group form, [`PerGroup`]: `Serial::per_group(|group, input| ...)` (likewise
//! `UseLast`, `Debounce`, and `Coalescer::per_group(seed, fold, |group, acc| ...)`) with
//! `max_groups(n)`, then `call(group, input)` (`coalesce` for the `Coalescer`). The user's
//! function receives the group, so a tenant's context travels with its own work; groups never
//! share a run, a round, a queue or a departure, and one group's failures and cancellations stay
//! in it. A group's instance is created on its first call and reclaimed once nothing of it is
//! left (no caller, and no execution or run spawned for it); past `max_groups` a new group is
//! refused with [`Error::Overloaded`](crate::Error::Overloaded).
//!
//! It is the one partition mechanism of [`Grouped`](crate::Grouped) (`partition.rs`: a
//! lock-free map, an activity word per group, reclamation that never loses a call and never
//! lets two instances of one group have callers at once), holding strategy instances instead
//! of batchers. [`SingleFlight`] needs no per-group form: it is keyed already, a key lives only
//! while its flight runs, so a group is part of the key (`sf.run((tenant, key), ...)`), and
//! the closure is the caller's own, which captures the group.

mod coalescer;
mod debounce;
mod pending;
mod per_group;
mod rendezvous;
mod round;
mod serial;
mod single_flight;
mod use_last;
mod user;

pub use coalescer::{Coalescer, CoalescerBuilder};
pub use debounce::{Debounce, DebounceBuilder};
pub use per_group::{PerGroup, PerGroupBuilder};
pub use serial::Serial;
pub use single_flight::SingleFlight;
pub use use_last::UseLast;
