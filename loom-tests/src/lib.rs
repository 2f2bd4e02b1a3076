//! loom model checks of busline's lock-free core.
//!
//! The models in `tests/` drive the core's real `Ring` and `Slot` (re-exported as
//! `busline::model` under `--cfg busline_loom`, where the core's `sync.rs` facade swaps its
//! atomics, cells, yields and waker cells for loom's). This library holds what the models
//! share: the model runner with its execution counter, keys that count their drops, waiters
//! that count the wakers left behind, and the driver's and the caller's side of the protocol
//! written the way `driver.rs` and `load.rs` use it.
//!
//! Without `--cfg busline_loom` the crate is empty and every test file compiles to nothing, so
//! `cargo test --workspace` and `cargo clippy --workspace --all-targets` pass over it.
//! See README.md for the models, what each proves, and how to run them (`run.sh`).

#[cfg(busline_loom)]
pub mod harness;
