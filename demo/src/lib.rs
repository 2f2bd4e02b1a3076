//! busline-demo: the article's scenario on a real database, and the simulator checked against it.
//!
//! `get_user_info(id)` runs `SELECT id, name, email FROM users WHERE id IN (...)` through sqlx's
//! connection pool, on an embedded SQLite file (default) or PostgreSQL (`DATABASE_URL`). A load
//! generator replays a burst against direct calls and against a [`busline::Batcher`] under each
//! policy, and the database itself counts the queries it ran. A calibration measures the
//! database's cost model and writes it as a `busline-sim` scenario; the simulator then replays
//! the same arrivals and its predictions are set against the measurements.
//!
//! - [`db`]: the table, the query, the pool, the database's own query count.
//! - [`sqlite_trace`]: SQLite's statement-profile hook (the crate's only `unsafe`).
//! - [`trace`]: the arrival trace; [`replay`]: the open-loop load generator.
//! - [`calibrate`]: the cost model and its scenario; [`reaction`]: the batcher driver's delays;
//!   [`simcheck`]: the simulator's predictions.
//! - [`app_cpu`]: the application's CPU per request, measured on bursts.
//! - [`sched`]: the CPU a replay used and its wait for a core.
//! - [`segments`]: the requests split by the part of the trace they arrived in.
//! - [`rounds`]: each contender replayed a few times, interleaved; medians and spreads.
//! - [`turnover`]: how fast the pool hands its connections on while direct calls queue.
//! - [`report`]: `reports/db/` (README, CSV, plot).
#![deny(unsafe_code)]

/// Worker threads of the demo's tokio runtime (`busline-demo`'s and the tests'): two, as the
/// machine `make demo` is measured on has two cores.
pub const RUNTIME_WORKERS: usize = 2;

pub mod app_cpu;
pub mod calibrate;
pub mod db;
pub mod reaction;
pub mod replay;
pub mod report;
pub mod rounds;
pub mod sched;
pub mod segments;
pub mod simcheck;
pub mod sqlite_trace;
pub mod trace;
pub mod turnover;
