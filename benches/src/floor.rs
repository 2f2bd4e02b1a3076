//! The machine's floor for a submit: the least a seat-ring `load` can cost its caller here.
//!
//! A submit that hands a request to a batcher without a lock needs, at the very least, one
//! atomic read-modify-write to claim a seat and the stores that fill it (the key, the caller's
//! waker, a Release flag), inside a future that is built, polled once and kept. [`FloorLoad`]
//! does exactly that and nothing else: no capacity check, no overflow policy, no segment table,
//! no driver to wake, seats reused round-robin. Timed in the same loop as busline's board
//! ([`board_floor`] beside `scenarios::board_only`, the futures held the same way), it tells how
//! much of a submit figure is the machine (an uncontended `lock xadd` costs ~2 ns on some hosts
//! and ~10 ns on others) and how much is busline's own path above it.

use std::future::Future;
use std::mem::ManuallyDrop;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::scenarios::{Holding, board_chunk};

/// One seat: a key and a waker, as busline's seat holds them (40 bytes for u64 keys), written
/// with plain (Relaxed) stores and published by a Release store of `state`.
#[derive(Debug, Default)]
struct Seat {
    key: AtomicU64,
    waker_data: AtomicUsize,
    waker_vtable: AtomicUsize,
    state: AtomicU8,
}

/// The seats and the claim counter.
#[derive(Debug)]
pub struct FloorRing {
    head: AtomicU64,
    seats: Box<[Seat]>,
}

impl FloorRing {
    /// `seats` seats (a power of two: the claim's seat is a mask, not a division), reused
    /// round-robin.
    pub fn new(seats: usize) -> FloorRing {
        assert!(seats.is_power_of_two(), "a power of two of seats");
        FloorRing { head: AtomicU64::new(0), seats: (0..seats).map(|_| Seat::default()).collect() }
    }
}

enum Stage {
    Boarding(u64),
    Seated,
    Done,
}

/// The floor's future: the first poll claims a seat (`fetch_add`, Acquire as busline's claim)
/// and fills it; it never completes. The waker's clone is stored as its raw parts and never
/// dropped, so only wakers that own nothing (`Waker::noop()`) belong here.
pub struct FloorLoad<'a> {
    ring: &'a FloorRing,
    stage: Stage,
}

impl<'a> FloorLoad<'a> {
    /// A load of `key` on `ring`; nothing happens until the first poll.
    pub fn new(ring: &'a FloorRing, key: u64) -> FloorLoad<'a> {
        FloorLoad { ring, stage: Stage::Boarding(key) }
    }
}

impl Future for FloorLoad<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if let Stage::Boarding(key) = std::mem::replace(&mut self.stage, Stage::Done) {
            let claimed = self.ring.head.fetch_add(1, Ordering::Acquire) as usize;
            let seat = &self.ring.seats[claimed & (self.ring.seats.len() - 1)];
            seat.key.store(key, Ordering::Relaxed);
            let waker = ManuallyDrop::new(cx.waker().clone());
            seat.waker_data.store(waker.data() as usize, Ordering::Relaxed);
            seat.waker_vtable.store(std::ptr::from_ref(waker.vtable()) as usize, Ordering::Relaxed);
            seat.state.store(1, Ordering::Release);
            self.stage = Stage::Seated;
        }
        Poll::Pending
    }
}

/// Boards `n` floor loads exactly as `scenarios::board_only` boards busline's (see
/// [`board_chunk`]); returns the time of those builds and polls.
pub fn board_floor(ring: &FloorRing, first_key: u64, n: usize, holding: Holding) -> Duration {
    board_chunk(first_key, n, holding, |key| FloorLoad::new(ring, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_poll_claims_and_fills_one_seat() {
        let ring = FloorRing::new(8);
        let _ = board_floor(&ring, 100, 5, Holding::InPlace);
        assert_eq!(ring.head.load(Ordering::Relaxed), 5);
        let keys: Vec<u64> = ring.seats.iter().map(|s| s.key.load(Ordering::Relaxed)).collect();
        assert_eq!(keys, [100, 101, 102, 103, 104, 0, 0, 0]);
        assert!(ring.seats[..5].iter().all(|s| s.state.load(Ordering::Relaxed) == 1));
        assert!(ring.seats[..5].iter().all(|s| s.waker_vtable.load(Ordering::Relaxed) != 0));
    }
}
