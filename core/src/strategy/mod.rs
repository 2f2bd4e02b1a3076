//! The other coalescing strategies: single-flight, serial, use-last, debounce, and the generic
//! aggregate the keyed [`Batcher`](crate::Batcher) is one instance of.
//!
//! (Essay to be completed.)

mod coalescer;
mod debounce;
mod pending;
mod rendezvous;
mod serial;
mod single_flight;
mod use_last;
mod user;

pub use coalescer::{Coalescer, CoalescerBuilder};
pub use debounce::{Debounce, DebounceBuilder};
pub use serial::Serial;
pub use single_flight::SingleFlight;
pub use use_last::UseLast;
