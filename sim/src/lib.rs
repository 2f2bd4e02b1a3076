//! busline-sim: a discrete-event simulator of burst traffic against a modelled database,
//! driving busline's own departure policy (`busline::policy`) in virtual time.
//!
//! - [`scenario`]: the TOML scenario files and `--set` overrides.
//! - [`traffic`], [`keys`], [`db`]: the models of arrivals, keys and the database; [`driver`]:
//!   the batcher driver's delays;
//!   [`zipf`]: Zipf keys without a `powf` per draw; [`client`]: callers that time out and retry.
//! - [`engine`]: the event loop ([`queue`]: its event queue) that feeds the core's `Scheduler` (one per service instance)
//!   and checks invariants; [`routing`]: the load balancer in front of a fleet.
//! - [`stats`]: histograms, per-run summaries and intervals; [`sweep`]: many runs in parallel;
//!   [`replicate`]: a policy's replications and their means; [`fleet`]: a scenario against
//!   the number of instances;
//!   [`report`]: CSV, plots, the policy checks and the report README; [`speed`]: simulated
//!   requests per CPU-second.
#![forbid(unsafe_code)]

pub mod client;
pub mod db;
pub mod driver;
pub mod engine;
pub mod fleet;
pub mod keys;
pub mod queue;
pub mod replicate;
pub mod report;
pub mod rng;
pub mod routing;
pub mod scenario;
pub mod speed;
pub mod stats;
pub mod sweep;
pub mod traffic;
pub mod zipf;

pub use engine::{RunOptions, RunOutput, run};
pub use scenario::Scenario;
