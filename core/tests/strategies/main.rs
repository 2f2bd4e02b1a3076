//! The strategies and the partitions, one test binary (each binary costs seconds of a cold
//! build): a module per strategy, `Grouped`, the per-group forms, and what they share.
//! (`grouped_memory.rs` stays a binary of its own: it counts the process's allocations.)

mod coalescer;
mod debounce;
mod grouped;
#[path = "../common/groups.rs"]
mod groups;
mod per_group;
mod serial;
mod single_flight;
mod support;
mod use_last;
