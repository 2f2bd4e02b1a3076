//! The other coalescing strategies: single-flight, serial, use-last, debounce, and the generic
//! aggregate the keyed [`Batcher`](crate::Batcher) is one instance of.
//!
//! (Essay to be completed.)

mod rendezvous;
mod single_flight;
mod user;

pub use single_flight::SingleFlight;
