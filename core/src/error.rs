//! The errors a caller of [`Batcher`](crate::Batcher) can see.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

/// Why a [`load`](crate::Batcher::load) did not produce a value.
///
/// `E` is the batch function's error type. It is shared, not cloned: every caller of a failed
/// batch holds the same `Arc<E>`, and callers of other batches are not affected.
#[non_exhaustive]
pub enum Error<E> {
    /// The batch function returned this error for the batch that carried this request.
    Batch(Arc<E>),
    /// A per-key batch function ([`Batcher::builder_per_key`](crate::Batcher::builder_per_key))
    /// returned this error for this request's key alone; the batch's other keys were answered.
    /// Every caller of that key in that batch holds the same `Arc`.
    Key(Arc<E>),
    /// User code panicked while this request's batch was prepared or computed: the batch
    /// function (its call or its future), or the `Hash`, `Eq` or `Clone` of a key in the batch.
    /// The panic was caught; later batches run normally. In a partition (`Grouped`, the
    /// per-group strategies) also a group's `Eq` that contradicts itself, so that its group can
    /// be neither found nor created.
    Panicked,
    /// The batcher was shut down (or every handle to it dropped) before this request was
    /// accepted, or its runtime went away before this request's batch had its answer (not yet
    /// sent, or still running).
    Closed,
    /// The batcher is full and its [`Overflow`](crate::Overflow) policy is `Reject`.
    Overloaded,
    /// The batch call (or this request's solo run under
    /// [`Overflow::RunAlone`](crate::Overflow::RunAlone)) ran longer than the batcher's
    /// [`batch_timeout`](crate::Builder::batch_timeout) and was dropped.
    Timeout,
}

impl<E> Clone for Error<E> {
    fn clone(&self) -> Self {
        match self {
            Error::Batch(e) => Error::Batch(Arc::clone(e)),
            Error::Key(e) => Error::Key(Arc::clone(e)),
            Error::Panicked => Error::Panicked,
            Error::Closed => Error::Closed,
            Error::Overloaded => Error::Overloaded,
            Error::Timeout => Error::Timeout,
        }
    }
}

impl<E> Error<E> {
    /// The batch function's error for the whole batch, if that is what this is.
    pub fn batch_error(&self) -> Option<&E> {
        match self {
            Error::Batch(e) => Some(e),
            _ => None,
        }
    }

    /// The per-key batch function's error for this key, if that is what this is.
    pub fn key_error(&self) -> Option<&E> {
        match self {
            Error::Key(e) => Some(e),
            _ => None,
        }
    }
}

impl<E: fmt::Debug> fmt::Debug for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Batch(e) => f.debug_tuple("Batch").field(e).finish(),
            Error::Key(e) => f.debug_tuple("Key").field(e).finish(),
            Error::Panicked => f.write_str("Panicked"),
            Error::Closed => f.write_str("Closed"),
            Error::Overloaded => f.write_str("Overloaded"),
            Error::Timeout => f.write_str("Timeout"),
        }
    }
}

impl<E: fmt::Display> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Batch(e) => write!(f, "batch failed: {e}"),
            Error::Key(e) => write!(f, "key failed: {e}"),
            Error::Panicked => f.write_str("user code panicked (the batch function, or a key's or value's code)"),
            Error::Closed => f.write_str("batcher is closed"),
            Error::Overloaded => f.write_str("batcher is overloaded"),
            Error::Timeout => f.write_str("batch call timed out"),
        }
    }
}

impl<E: StdError + 'static> StdError for Error<E> {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Error::Batch(e) | Error::Key(e) => Some(&**e),
            _ => None,
        }
    }
}

/// An invalid setting, reported by [`Builder::build`](crate::Builder::build).
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::collections::HashMap;
///
/// let err = busline::Batcher::builder(|ids: Vec<u32>| async move {
///         Ok::<_, std::io::Error>(HashMap::<u32, u32>::new())
///     })
///     .max_batch_size(0)
///     .build()
///     .unwrap_err();
/// assert_eq!(err.setting(), "max_batch_size");
/// assert_eq!(err.to_string(), "invalid max_batch_size: must be at least 1");
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    setting: &'static str,
    reason: String,
}

impl ConfigError {
    pub(crate) fn new(setting: &'static str, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            setting,
            reason: reason.into(),
        }
    }

    /// The name of the offending setting, as the builder method (or policy field) spells it.
    pub fn setting(&self) -> &'static str {
        self.setting
    }

    /// What is wrong with it.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}: {}", self.setting, self.reason)
    }
}

impl StdError for ConfigError {}
