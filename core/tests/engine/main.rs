//! The engine as its callers see it, in one test binary (one link instead of seven: most of a
//! cold `make test` was linking test binaries). Files whose tests need process-wide state of
//! their own stay apart: `metrics.rs` and `tracing.rs` install a global recorder or subscriber,
//! `seat_memory.rs` and `grouped_memory.rs` count the global allocator.

mod api;
mod failures;
mod faults;
#[path = "../common/groups.rs"]
#[allow(dead_code, reason = "the groups this binary's tests use, among others'")]
mod groups;
mod newcomer;
mod paused;
mod per_key;
mod stress;
mod support;
mod tower;
