//! A batcher's settings: the defaults, the overflow policy, and their validation into the
//! figures the engine is built from. Nothing here runs; the builder fills a [`Settings`] and
//! the rest of the crate reads the [`Validated`] result.

use std::time::Duration;

use crate::ConfigError;
use crate::policy::{Limits, Policy, Scheduler};
use crate::ring::MAX_SLOTS;

/// Default `max_batch_size`: TF Serving's default `max_batch_size` is 1000, and 1024 keys keep
/// an `IN (...)` list well within every mainstream database's limits.
pub const DEFAULT_MAX_BATCH_SIZE: usize = 1024;

/// Default `max_in_flight`: one batch running and one leaving. Natural batching accumulates
/// only while every in-flight place is busy, so this limit is what makes buses fill under
/// load; raise it for a slow backend with a large connection pool, where concurrent batches do
/// run in parallel.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 2;

/// What a request does when the bus is full and cannot leave yet.
///
/// The bus is full when `max_batch_size` requests wait. It leaves at once unless the batcher is
/// at capacity: `max_in_flight` batches already run, or every batch slot is still in use.
/// `Reject` and `RunAlone` decide at once and never wait: a request that finds the bus full
/// (even in the microseconds before the driver sends it) is refused or run alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Overflow {
    /// Wait for the next bus (backpressure, like a bounded channel's `send().await`).
    #[default]
    Wait,
    /// Fail at once with [`Error::Overloaded`](crate::Error::Overloaded).
    Reject,
    /// Call the batch function for this one key, in the caller's task.
    RunAlone,
}

/// What a user set on the [`Builder`](crate::Builder), not yet checked.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) policy: Policy,
    pub(crate) max_batch_size: usize,
    pub(crate) max_in_flight: usize,
    pub(crate) capacity: Option<usize>,
    pub(crate) overflow: Overflow,
    pub(crate) batch_timeout: Option<Duration>,
    pub(crate) spin: bool,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            policy: Policy::Natural,
            max_batch_size: DEFAULT_MAX_BATCH_SIZE,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            capacity: None,
            overflow: Overflow::Wait,
            batch_timeout: None,
            spin: true,
        }
    }
}

/// Settings that passed validation, and what they imply.
#[derive(Debug)]
pub(crate) struct Validated {
    /// The policy's state machine, within the hard limits.
    pub(crate) scheduler: Scheduler,
    /// Batch slots in the ring.
    pub(crate) slots: usize,
    /// Seats per slot: the batch size the scheduler applies (1 under `Car`).
    pub(crate) seats: usize,
    pub(crate) overflow: Overflow,
    pub(crate) batch_timeout: Option<Duration>,
    /// Whether the precise timer may spin through a deadline's last microseconds.
    pub(crate) spin: bool,
}

impl Settings {
    /// Whether the driver may set an alarm under this policy: every policy but `Car` (a
    /// window's, gated's or adaptive's deadline, natural's holds, and a deadline that passed
    /// while every in-flight place was busy).
    pub(crate) fn sets_alarms(&self) -> bool {
        !matches!(self.policy, Policy::Car)
    }

    /// Checks every setting and derives the ring's shape.
    pub(crate) fn validate(self) -> Result<Validated, ConfigError> {
        if self.max_batch_size == 0 {
            return Err(ConfigError::new("max_batch_size", "must be at least 1"));
        }
        if self.max_in_flight == 0 {
            return Err(ConfigError::new("max_in_flight", "must be at least 1"));
        }
        if self.max_in_flight > MAX_SLOTS - 2 {
            return Err(ConfigError::new("max_in_flight", format!("must be at most {}", MAX_SLOTS - 2)));
        }
        if self.batch_timeout == Some(Duration::ZERO) {
            return Err(ConfigError::new("batch_timeout", "must be more than zero"));
        }
        // "No limit per batch, at most `capacity` admitted": a bus takes what the capacity
        // leaves each of the `max_in_flight + 1` batches it must hold, so the bound holds and
        // a full bus still meets the overflow policy.
        let max_batch_size = match self.capacity {
            Some(capacity) if self.max_batch_size == usize::MAX && capacity > 0 => {
                (capacity / (self.max_in_flight + 1)).max(1)
            }
            _ => self.max_batch_size,
        };
        let scheduler =
            Scheduler::new(self.policy, Limits { max_batch_size, max_in_flight: self.max_in_flight })?;
        // Under `Car` every request is its own batch: one seat per bus.
        let seats = scheduler.limits().max_batch_size;
        let slots = match self.capacity {
            None => (self.max_in_flight + 2).min(MAX_SLOTS),
            Some(0) => return Err(ConfigError::new("capacity", "must be at least 1")),
            Some(capacity) => {
                let slots = capacity.div_ceil(seats);
                if slots < self.max_in_flight + 1 {
                    return Err(ConfigError::new(
                        "capacity",
                        format!(
                            "must hold max_in_flight + 1 = {} batches of {seats}, i.e. at least {}",
                            self.max_in_flight + 1,
                            (self.max_in_flight + 1).saturating_mul(seats)
                        ),
                    ));
                }
                if slots > MAX_SLOTS {
                    return Err(ConfigError::new(
                        "capacity",
                        format!("must be at most {MAX_SLOTS} batches of {seats}, i.e. {}", MAX_SLOTS.saturating_mul(seats)),
                    ));
                }
                slots
            }
        };
        Ok(Validated {
            scheduler,
            slots,
            seats,
            overflow: self.overflow,
            batch_timeout: self.batch_timeout,
            spin: self.spin,
        })
    }
}
