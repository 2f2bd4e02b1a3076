//! busline: request coalescing for async Rust.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, missing_debug_implementations)]

mod error;
pub mod policy;

pub use error::{ConfigError, Error};
