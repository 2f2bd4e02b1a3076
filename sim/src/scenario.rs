//! Scenario files: what traffic, keys, database and policy one simulation runs.
//!
//! A scenario is a TOML file whose keys are a contract shared with other tools (see
//! `sim/README.md` for every key). Unknown keys and invalid values are errors that name the
//! key and the line; `--set key=value` overrides are applied on top and errors in them name the
//! override.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use busline::policy::{AdaptiveConfig, Limits, Policy};
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

/// The windows (in ms) a sweep tries when neither the command line nor the scenario says.
pub const DEFAULT_WINDOWS_MS: [f64; 11] =
    [0.0, 0.05, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 50.0, 100.0, 500.0];

/// One simulation's complete description.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Name used in reports and file names.
    pub name: String,
    /// Seed of every random stream of the run.
    #[serde(default)]
    pub seed: u64,
    /// Stop generating arrivals after this many requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<u64>,
    /// Stop generating arrivals after this many simulated seconds.
    #[serde(
        default,
        deserialize_with = "opt_positive",
        skip_serializing_if = "Option::is_none"
    )]
    pub duration_s: Option<f64>,
    /// The arrival process.
    pub traffic: TrafficConfig,
    /// Which keys requests ask for.
    #[serde(default)]
    pub keys: KeysConfig,
    /// The database behind the batcher.
    #[serde(default)]
    pub db: DbConfig,
    /// The departure policy under test.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// How long the batcher's driver takes to carry out a departure (default: no time).
    #[serde(default, skip_serializing_if = "DriverConfig::is_instant")]
    pub driver: DriverConfig,
    /// The application's own CPU per request, run on the database's `servers` (an embedded
    /// database's servers are the process's cores). Absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuConfig>,
    /// What `sweep` and `report` do with this scenario.
    #[serde(default)]
    pub sweep: SweepConfig,
    /// The service instances in front of the database, and how requests reach them.
    #[serde(default)]
    pub fleet: FleetConfig,
    /// The callers: patience, retries, open or closed loop. Absent: open loop, infinite
    /// patience (every request waits for its answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<ClientConfig>,
    /// Independent replications a sweep runs of each policy, with seeds `seed`, `seed + 1`,
    /// ...; replication `r` uses the same seed under every policy (common random numbers).
    #[serde(default = "one", deserialize_with = "positive_u32")]
    pub replications: u32,
    /// Requests arriving before this instant are left out of every statistic (the run still
    /// simulates them); rates are over the horizon after it.
    #[serde(default, deserialize_with = "opt_non_negative", skip_serializing_if = "Option::is_none")]
    pub warmup_s: Option<f64>,
    /// Directory relative paths (a trace file) are resolved against: the scenario file's.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// `[traffic]`: the arrival process. Which keys apply depends on `kind`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrafficConfig {
    /// The model.
    pub kind: TrafficKind,
    /// poisson: the rate; onoff: the rate while on; diurnal: the mean rate; spike: the base rate.
    #[serde(default, deserialize_with = "opt_non_negative", skip_serializing_if = "Option::is_none")]
    pub rate_per_s: Option<f64>,
    /// mmpp: the rate in the low state.
    #[serde(default, deserialize_with = "opt_non_negative", skip_serializing_if = "Option::is_none")]
    pub rate_low_per_s: Option<f64>,
    /// mmpp: the rate in the high state.
    #[serde(default, deserialize_with = "opt_non_negative", skip_serializing_if = "Option::is_none")]
    pub rate_high_per_s: Option<f64>,
    /// mmpp: mean (exponential) time spent in the low state.
    #[serde(default, deserialize_with = "opt_positive", skip_serializing_if = "Option::is_none")]
    pub dwell_low_s: Option<f64>,
    /// mmpp: mean (exponential) time spent in the high state.
    #[serde(default, deserialize_with = "opt_positive", skip_serializing_if = "Option::is_none")]
    pub dwell_high_s: Option<f64>,
    /// onoff: mean length of an on period (Pareto).
    #[serde(default, deserialize_with = "opt_positive", skip_serializing_if = "Option::is_none")]
    pub on_mean_s: Option<f64>,
    /// onoff: mean length of an off period (Pareto).
    #[serde(default, deserialize_with = "opt_positive", skip_serializing_if = "Option::is_none")]
    pub off_mean_s: Option<f64>,
    /// onoff: Pareto shape of both periods (> 1; default 1.5).
    #[serde(default, deserialize_with = "opt_positive", skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    /// diurnal: relative swing of the rate, in [0, 1] (default 0.5: ±50 %).
    #[serde(default, deserialize_with = "opt_non_negative", skip_serializing_if = "Option::is_none")]
    pub amplitude: Option<f64>,
    /// diurnal: length of one day (default 86400).
    #[serde(default, deserialize_with = "opt_positive", skip_serializing_if = "Option::is_none")]
    pub period_s: Option<f64>,
    /// spike: peak rate as a multiple of the base rate.
    #[serde(default, deserialize_with = "opt_positive", skip_serializing_if = "Option::is_none")]
    pub multiplier: Option<f64>,
    /// spike: when the ramp starts.
    #[serde(default, deserialize_with = "opt_non_negative", skip_serializing_if = "Option::is_none")]
    pub start_s: Option<f64>,
    /// spike: how long the linear ramp to the peak lasts.
    #[serde(default, deserialize_with = "opt_non_negative", skip_serializing_if = "Option::is_none")]
    pub ramp_s: Option<f64>,
    /// spike: how long the peak holds.
    #[serde(default, deserialize_with = "opt_non_negative", skip_serializing_if = "Option::is_none")]
    pub hold_s: Option<f64>,
    /// spike: time constant of the exponential decay back to the base rate.
    #[serde(default, deserialize_with = "opt_positive", skip_serializing_if = "Option::is_none")]
    pub decay_s: Option<f64>,
    /// trace: CSV file of `timestamp[,key]` rows, relative to the scenario file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// trace: unit of the timestamps (default `s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_unit: Option<TimeUnit>,
}

/// The arrival models.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TrafficKind {
    /// Poisson arrivals at `rate_per_s`.
    Poisson,
    /// Two-state Markov-modulated Poisson process.
    Mmpp,
    /// Poisson arrivals during Pareto-distributed on periods, none during Pareto off periods.
    Onoff,
    /// Poisson arrivals whose rate follows a sine over the day (by thinning).
    Diurnal,
    /// A flash crowd: base rate, linear ramp to `multiplier` ×, hold, exponential decay.
    Spike,
    /// Replay of a CSV of timestamps (and keys).
    Trace,
}

/// Unit of trace timestamps.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TimeUnit {
    /// Seconds.
    S,
    /// Milliseconds.
    Ms,
    /// Microseconds.
    Us,
    /// Nanoseconds.
    Ns,
}

impl TimeUnit {
    /// Nanoseconds in one unit.
    pub fn nanos(self) -> f64 {
        match self {
            TimeUnit::S => 1e9,
            TimeUnit::Ms => 1e6,
            TimeUnit::Us => 1e3,
            TimeUnit::Ns => 1.0,
        }
    }
}

/// `[keys]`: which key each request loads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    /// The key model.
    #[serde(default = "default_keys_kind")]
    pub kind: KeysKind,
    /// uniform, zipf: number of distinct keys.
    #[serde(default = "default_key_count", deserialize_with = "positive_u32")]
    pub count: u32,
    /// zipf: skew exponent (YCSB uses 0.99).
    #[serde(default = "default_theta", deserialize_with = "positive")]
    pub theta: f64,
}

impl Default for KeysConfig {
    fn default() -> Self {
        KeysConfig { kind: default_keys_kind(), count: default_key_count(), theta: default_theta() }
    }
}

fn default_keys_kind() -> KeysKind {
    KeysKind::Unique
}
fn default_key_count() -> u32 {
    100_000
}
fn default_theta() -> f64 {
    0.99
}

/// Key models.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum KeysKind {
    /// Every request a new key: a batch of n has n distinct keys.
    Unique,
    /// Uniform over `count` keys.
    Uniform,
    /// Zipf over `count` keys with exponent `theta`.
    Zipf,
}

/// `[db]`: the database the batches are sent to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DbConfig {
    /// Connections: queries running at once. Queries beyond wait, first come first served.
    #[serde(default = "one", deserialize_with = "positive_u32")]
    pub servers: u32,
    /// Distribution of a query's service time around its mean.
    #[serde(default = "default_service")]
    pub service: ServiceKind,
    /// Fixed part of a query's mean service time.
    #[serde(default = "default_base_ms", deserialize_with = "non_negative")]
    pub base_ms: f64,
    /// Mean service time added per distinct key in the query.
    #[serde(default, deserialize_with = "non_negative")]
    pub per_key_ms: f64,
    /// Slow-down of every running query per extra running query (0.1: 10 % each); with
    /// `per_key_contention`, of a query's `base_ms` part only.
    #[serde(default, deserialize_with = "non_negative")]
    pub contention: f64,
    /// Slow-down of a query's per-key part per extra running query; `None` (the default):
    /// `contention`, one factor for the whole query. A query of `k` keys then slows by the
    /// mean of the two weighted by its parts' means (`sim/src/db.rs`).
    #[serde(default, deserialize_with = "opt_non_negative", skip_serializing_if = "Option::is_none")]
    pub per_key_contention: Option<f64>,
    /// lognormal: shape σ of the underlying normal (default 0.5).
    #[serde(default = "default_sigma", deserialize_with = "non_negative")]
    pub lognormal_sigma: f64,
    /// Connections each service instance may hold at once (its own pool, in front of the
    /// shared database's `servers`); queries beyond wait in the instance's FIFO. None: no
    /// per-instance limit.
    #[serde(default, deserialize_with = "opt_positive_u32", skip_serializing_if = "Option::is_none")]
    pub pool_per_instance: Option<u32>,
    /// How a batch's service time varies with its keys (default `per_key`).
    #[serde(default = "default_batch_cost")]
    pub batch_cost: BatchCost,
    /// `per_key`: coefficient of variation of one key's work (default 1: exponential per key).
    #[serde(default = "default_per_key_cv", deserialize_with = "non_negative")]
    pub per_key_cv: f64,
}

/// How a batch's service time is drawn from its distinct keys.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BatchCost {
    /// `base` drawn from `service` with mean `base_ms`, plus the sum of one independent work
    /// per key, each of mean `per_key_ms` and coefficient of variation `per_key_cv`: a gamma
    /// of shape `keys / per_key_cv²`. The per-key part's variance grows linearly with the keys
    /// (its relative spread shrinks as 1/√keys), as a sum of independent lookups does.
    PerKey,
    /// One draw from `service` scaled to the whole mean `base_ms + per_key_ms × keys`: a
    /// batch's spread grows with its size squared (the simulator's behaviour before issue 15).
    Scaled,
}

impl Default for DbConfig {
    fn default() -> Self {
        DbConfig {
            servers: 1,
            service: default_service(),
            base_ms: default_base_ms(),
            per_key_ms: 0.0,
            contention: 0.0,
            per_key_contention: None,
            lognormal_sigma: default_sigma(),
            pool_per_instance: None,
            batch_cost: default_batch_cost(),
            per_key_cv: default_per_key_cv(),
        }
    }
}

fn default_batch_cost() -> BatchCost {
    BatchCost::PerKey
}
fn default_per_key_cv() -> f64 {
    1.0
}

fn one() -> u32 {
    1
}
fn default_service() -> ServiceKind {
    ServiceKind::Exp
}
fn default_base_ms() -> f64 {
    1.0
}
fn default_sigma() -> f64 {
    0.5
}

/// Service-time distributions, all with the mean `base_ms + per_key_ms × distinct keys`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ServiceKind {
    /// Exactly the mean.
    Const,
    /// Exponential.
    Exp,
    /// Lognormal with shape `lognormal_sigma`.
    Lognormal,
}

/// `[policy]`: the departure policy, by the names of `busline::policy::Policy::name()`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Which policy.
    #[serde(default = "default_policy_kind")]
    pub kind: PolicyKind,
    /// window, gated: the window.
    #[serde(default = "default_window_ms", deserialize_with = "non_negative")]
    pub window_ms: f64,
    /// Most requests in one batch (all policies but car).
    #[serde(default = "default_max_batch", deserialize_with = "positive_usize")]
    pub max_batch: usize,
    /// Most batches in flight (sent and not completed); default `db.servers`.
    #[serde(default, deserialize_with = "opt_positive_usize", skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<usize>,
    /// gated: expected passengers per window from which it waits.
    #[serde(default = "default_threshold", deserialize_with = "positive_usize")]
    pub threshold: usize,
    /// adaptive: the latency budget B; also what `report` checks the policies against.
    #[serde(default = "default_budget_ms", deserialize_with = "positive")]
    pub latency_budget_ms: f64,
    /// adaptive: override of `AdaptiveConfig::gate`.
    #[serde(default, deserialize_with = "opt_non_negative", skip_serializing_if = "Option::is_none")]
    pub gate: Option<f64>,
    /// adaptive: override of `AdaptiveConfig::lateness_memory`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lateness_memory: Option<u32>,
    /// adaptive: override of `AdaptiveConfig::rate_samples`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_samples: Option<u32>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            kind: default_policy_kind(),
            window_ms: default_window_ms(),
            max_batch: default_max_batch(),
            max_in_flight: None,
            threshold: default_threshold(),
            latency_budget_ms: default_budget_ms(),
            gate: None,
            lateness_memory: None,
            rate_samples: None,
        }
    }
}

fn default_policy_kind() -> PolicyKind {
    PolicyKind::Natural
}
fn default_window_ms() -> f64 {
    1.0
}
fn default_max_batch() -> usize {
    1000
}
fn default_threshold() -> usize {
    2
}
fn default_budget_ms() -> f64 {
    1.0
}

/// The policies, named as `busline::policy::Policy::name()` names them.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PolicyKind {
    /// Every request alone.
    Car,
    /// A fixed window.
    Window,
    /// Natural (smart) batching.
    Natural,
    /// A window gated on concurrency.
    Gated,
    /// The adaptive window.
    Adaptive,
}

impl PolicyKind {
    /// The name, as `Policy::name()` spells it.
    pub fn name(self) -> &'static str {
        match self {
            PolicyKind::Car => "car",
            PolicyKind::Window => "window",
            PolicyKind::Natural => "natural",
            PolicyKind::Gated => "gated",
            PolicyKind::Adaptive => "adaptive",
        }
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `[driver]`: the time a real batcher's driver takes to act on the policy's release of a bus,
/// each an empirical distribution in µs given by quantiles at equal steps (`[q0, q5, ..., q100]`
/// for 21 values; one value is a constant), drawn by linear interpolation between them (see
/// [`crate::driver`]). Empty (the default): no delay, the bus leaves the instant it is released.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DriverConfig {
    /// From the release of a bus by an arrival or a completion to its seal; requests arriving
    /// meanwhile still board.
    #[serde(default, deserialize_with = "quantiles", skip_serializing_if = "Vec::is_empty")]
    pub reaction_us: Vec<f64>,
    /// The same for a release by a deadline (a window closing); empty: `reaction_us`.
    #[serde(default, deserialize_with = "quantiles", skip_serializing_if = "Vec::is_empty")]
    pub timer_reaction_us: Vec<f64>,
    /// From the seal to the query's start (the batch function's task being polled); nobody
    /// boards any more.
    #[serde(default, deserialize_with = "quantiles", skip_serializing_if = "Vec::is_empty")]
    pub launch_us: Vec<f64>,
    /// From a query's end to each of its callers holding the answer (the outcome published,
    /// the caller's task woken and run), for the first caller woken; a caller's latency ends
    /// then.
    #[serde(default, deserialize_with = "quantiles", skip_serializing_if = "Vec::is_empty")]
    pub answer_us: Vec<f64>,
    /// Added to `answer_us` per caller woken before this one in its bus (callers are woken in
    /// the order they boarded).
    #[serde(default, deserialize_with = "non_negative", skip_serializing_if = "is_zero")]
    pub answer_per_caller_us: f64,
    /// Added to the launch of a query sealed when the database has run nothing for at least
    /// `wake_after_us` (its threads have parked and must be woken), for direct calls too.
    #[serde(default, deserialize_with = "quantiles", skip_serializing_if = "Vec::is_empty")]
    pub wake_us: Vec<f64>,
    /// See `wake_us`.
    #[serde(default, deserialize_with = "non_negative", skip_serializing_if = "is_zero")]
    pub wake_after_us: f64,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

impl DriverConfig {
    /// No delay anywhere: the simulator's behaviour without a `[driver]` section.
    pub fn is_instant(&self) -> bool {
        [&self.reaction_us, &self.timer_reaction_us, &self.launch_us, &self.answer_us, &self.wake_us]
            .iter()
            .all(|q| q.iter().all(|&x| x == 0.0))
            && self.answer_per_caller_us == 0.0
    }
}

/// `[cpu]`: the application's CPU per request, for an embedded database (SQLite), whose queries
/// run on the application's own cores. Each request, as it arrives, puts `request_us` of work
/// (its task spawned and polled, its boarding, its wake-up and answer: what it costs the
/// process besides its query) on the database's `servers`, in the same first-come-first-served
/// queue as the queries and contended as a query's base (`[db] contention`): under a burst
/// the queries behind that work wait for a core, as they do in the process. The work answers
/// nobody; it only takes a server's time. Absent (the default): no such work, the simulator
/// event for event as before.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CpuConfig {
    /// The work each request puts on the servers, µs (constant).
    #[serde(default, deserialize_with = "non_negative")]
    pub request_us: f64,
    /// The same for a request sent straight to the pool (policy `car`: no batcher in between,
    /// so no boarding or wake-up by a batch); absent: `request_us`.
    #[serde(default, deserialize_with = "opt_non_negative", skip_serializing_if = "Option::is_none")]
    pub direct_request_us: Option<f64>,
    /// The CPU a batcher's driver spends before each deadline of a timed policy, µs: its
    /// precise timer spins, then the driver stays runnable, through the last stretch before
    /// the departure. Each armed deadline puts that stretch (this long, or what is left of the
    /// window if less) on the servers as work, from that much before it. Absent: none.
    #[serde(default, deserialize_with = "non_negative", skip_serializing_if = "is_zero")]
    pub timer_us: f64,
    /// How the work shares the servers with the queries (default: [`CpuSharing::Queue`]).
    #[serde(default, skip_serializing_if = "CpuSharing::is_queue")]
    pub sharing: CpuSharing,
}

/// `[cpu] sharing`: how the application's work and the queries share the database's servers.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CpuSharing {
    /// The work joins the queries' first-come-first-served queue and holds a server while it
    /// runs: a query sent behind it waits for it (the model before `sharing`).
    #[default]
    Queue,
    /// Processor sharing, as a kernel time-slices the threads: the work starts the instant it
    /// arrives, holds no server (a query never waits for it to start), and runs beside the
    /// queries, every running job, work or query, slowed by the others through `[db]`'s
    /// contention.
    Processor,
}

impl CpuSharing {
    fn is_queue(&self) -> bool {
        *self == CpuSharing::Queue
    }
}

impl CpuConfig {
    /// The work per request under `policy`, ns (rounded).
    pub fn request_ns(&self, policy: PolicyKind) -> u64 {
        let us = match policy {
            PolicyKind::Car => self.direct_request_us.unwrap_or(self.request_us),
            _ => self.request_us,
        };
        (us * 1e3).round() as u64
    }
}

/// `[sweep]`: what `sweep` and `report` do with the scenario. All optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SweepConfig {
    /// Windows to sweep, in ms (default: 0, 0.05, 0.1, 0.5, 1, 2, 5, 10, 50, 100, 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub windows_ms: Option<Vec<f64>>,
    /// Width of the time-series buckets (default: 1/150 of the run).
    #[serde(default, deserialize_with = "opt_positive", skip_serializing_if = "Option::is_none")]
    pub bucket_ms: Option<f64>,
    /// This is the steady-low-load scenario: `report` requires adaptive's p99 latency to be
    /// within 5 % of car's here.
    #[serde(default)]
    pub low_load: bool,
}

/// `[fleet]`: how many service instances run the batcher, and how a load balancer spreads the
/// requests over them. Every instance runs its own scheduler with the scenario's policy; all
/// share the one `[db]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// Service instances.
    #[serde(default = "one", deserialize_with = "positive_u32")]
    pub instances: u32,
    /// How the load balancer picks an instance for each request.
    #[serde(default = "default_routing")]
    pub routing: Routing,
    /// key_affinity: points per instance on the consistent-hash ring.
    #[serde(default = "default_vnodes", deserialize_with = "positive_u32")]
    pub vnodes: u32,
    /// Zipf exponent of the instances' shares (instance i gets a share ∝ (i + 1)^-skew): an
    /// uneven balancer. 0 (the default): even.
    #[serde(default, deserialize_with = "non_negative")]
    pub instance_skew: f64,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig { instances: 1, routing: default_routing(), vnodes: default_vnodes(), instance_skew: 0.0 }
    }
}

fn default_routing() -> Routing {
    Routing::Random
}
fn default_vnodes() -> u32 {
    100
}

/// How a load balancer spreads requests over the instances.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Routing {
    /// Each request to an instance drawn at random (by share).
    Random,
    /// Requests in turn (by share, when skewed).
    RoundRobin,
    /// Consistent hashing on the request's key: a key always reaches the same instance.
    KeyAffinity,
}

impl Routing {
    /// Every routing, in report order.
    pub const ALL: [Routing; 3] = [Routing::Random, Routing::RoundRobin, Routing::KeyAffinity];

    /// The name, as scenario files spell it.
    pub fn name(self) -> &'static str {
        match self {
            Routing::Random => "random",
            Routing::RoundRobin => "round_robin",
            Routing::KeyAffinity => "key_affinity",
        }
    }
}

impl fmt::Display for Routing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `[client]`: what callers do while they wait. Absent: open loop with infinite patience.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// How long a caller waits for one attempt's answer. On the timeout it stops waiting: a
    /// request the policy has not yet sent is dropped (it costs the database nothing); one
    /// already sent still runs, and its answer is wasted. Absent: callers wait forever.
    #[serde(default, deserialize_with = "opt_positive", skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<f64>,
    /// Attempts after the first, each after a timeout (default 0).
    #[serde(default)]
    pub max_retries: u32,
    /// Backoff before retry `k` (1, 2, ...): `backoff_ms × 2^(k−1)`, jittered (default 0).
    #[serde(default, deserialize_with = "non_negative")]
    pub backoff_ms: f64,
    /// Fraction of the backoff drawn at random: the wait is `b × (1 − jitter × U)`, U uniform
    /// on [0, 1). 1 is "full jitter" (uniform on (0, b]), 0 none (default 1).
    #[serde(default = "default_jitter", deserialize_with = "non_negative")]
    pub jitter: f64,
    /// Closed loop: this many callers, each thinking, then sending one request and waiting for
    /// it (with its retries) before thinking again. `[traffic]` is then not used. Absent:
    /// open loop, fresh requests arrive from `[traffic]` whatever happened to earlier ones.
    #[serde(default, deserialize_with = "opt_positive_u32", skip_serializing_if = "Option::is_none")]
    pub population: Option<u32>,
    /// Closed loop: mean think time, exponential (default 0).
    #[serde(default, deserialize_with = "non_negative")]
    pub think_ms: f64,
}

fn default_jitter() -> f64 {
    1.0
}

impl Scenario {
    /// Reads and validates a scenario file.
    ///
    /// # Errors
    ///
    /// If the file cannot be read, or a key is unknown or has a bad value (the message names
    /// the key and the line).
    pub fn load(path: &Path) -> Result<Scenario> {
        Scenario::load_with(path, &[])
    }

    /// Reads a scenario file and applies `key=value` overrides (`traffic.rate_per_s=800`).
    ///
    /// # Errors
    ///
    /// As [`load`](Scenario::load), and if an override is malformed or names an unknown key or
    /// a bad value (the message quotes the override).
    pub fn load_with(path: &Path, overrides: &[String]) -> Result<Scenario> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading scenario {}", path.display()))?;
        let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Scenario::parse_with(&text, &base_dir, overrides)
            .with_context(|| format!("in scenario {}", path.display()))
    }

    /// Parses scenario text (relative paths resolve against `base_dir`) with overrides.
    ///
    /// # Errors
    ///
    /// As [`load_with`](Scenario::load_with).
    pub fn parse_with(text: &str, base_dir: &Path, overrides: &[String]) -> Result<Scenario> {
        // First the file alone, so that its errors carry its own line numbers.
        let mut scenario: Scenario = toml::from_str(text).map_err(|e| anyhow!("{e}"))?;
        if !overrides.is_empty() {
            let mut table: toml::Table = toml::from_str(text).map_err(|e| anyhow!("{e}"))?;
            for o in overrides {
                apply_override(&mut table, o)?;
                // Each override alone, so an error names the one at fault.
                Scenario::deserialize(toml::Value::Table(table.clone()))
                    .map_err(|e| anyhow!("--set {o}: {}", e.message()))?;
            }
            scenario = Scenario::deserialize(toml::Value::Table(table))
                .map_err(|e| anyhow!("--set: {}", e.message()))?;
        }
        scenario.base_dir = base_dir.to_path_buf();
        scenario.validate()?;
        Ok(scenario)
    }

    /// Checks what the types cannot: required keys for the chosen kinds, and ranges that
    /// depend on several keys.
    ///
    /// # Errors
    ///
    /// The first problem, naming the key.
    pub fn validate(&self) -> Result<()> {
        let t = &self.traffic;
        if self.requests.is_some() && self.duration_s.is_some() {
            bail!("give either `requests` or `duration_s`, not both");
        }
        if self.requests.is_none() && self.duration_s.is_none() && t.kind != TrafficKind::Trace {
            bail!("missing `requests` or `duration_s`: the run must end");
        }
        let need = |v: Option<f64>, key: &str| -> Result<f64> {
            v.ok_or_else(|| anyhow!("traffic.{key} is required for kind = \"{}\"", kind_name(t.kind)))
        };
        match t.kind {
            TrafficKind::Poisson | TrafficKind::Diurnal => {
                if need(t.rate_per_s, "rate_per_s")? <= 0.0 {
                    bail!("traffic.rate_per_s must be > 0");
                }
                if t.amplitude.unwrap_or(0.5) > 1.0 {
                    bail!("traffic.amplitude must be in [0, 1]");
                }
            }
            TrafficKind::Mmpp => {
                let lo = need(t.rate_low_per_s, "rate_low_per_s")?;
                let hi = need(t.rate_high_per_s, "rate_high_per_s")?;
                need(t.dwell_low_s, "dwell_low_s")?;
                need(t.dwell_high_s, "dwell_high_s")?;
                if lo + hi <= 0.0 {
                    bail!("traffic.rate_low_per_s and rate_high_per_s cannot both be 0");
                }
            }
            TrafficKind::Onoff => {
                if need(t.rate_per_s, "rate_per_s")? <= 0.0 {
                    bail!("traffic.rate_per_s must be > 0");
                }
                need(t.on_mean_s, "on_mean_s")?;
                need(t.off_mean_s, "off_mean_s")?;
                if t.alpha.unwrap_or(1.5) <= 1.0 {
                    bail!("traffic.alpha must be > 1 (a Pareto period needs a finite mean)");
                }
            }
            TrafficKind::Spike => {
                if need(t.rate_per_s, "rate_per_s")? <= 0.0 {
                    bail!("traffic.rate_per_s must be > 0");
                }
                need(t.multiplier, "multiplier")?;
                need(t.start_s, "start_s")?;
                need(t.ramp_s, "ramp_s")?;
                need(t.hold_s, "hold_s")?;
                need(t.decay_s, "decay_s")?;
            }
            TrafficKind::Trace => {
                if t.path.is_none() {
                    bail!("traffic.path is required for kind = \"trace\"");
                }
            }
        }
        self.policy().map_err(|e| anyhow!("{e}"))?;
        if let Some(c) = &self.client {
            if c.jitter > 1.0 {
                bail!("client.jitter must be in [0, 1]");
            }
            if c.max_retries > 0 && c.timeout_ms.is_none() {
                bail!("client.max_retries needs client.timeout_ms: only a timeout starts a retry");
            }
        }
        if let (Some(w), Some(d)) = (self.warmup_s, self.duration_s)
            && w >= d
        {
            bail!("warmup_s ({w}) must be shorter than duration_s ({d})");
        }
        if let Some(ws) = &self.sweep.windows_ms
            && ws.iter().any(|w| !(w.is_finite() && *w >= 0.0))
        {
            bail!("sweep.windows_ms: every window must be a finite number >= 0");
        }
        Ok(())
    }

    /// The `busline` policy the `[policy]` table describes.
    ///
    /// # Errors
    ///
    /// If the core rejects its parameters.
    pub fn policy(&self) -> Result<Policy, busline::ConfigError> {
        let p = &self.policy;
        let policy = match p.kind {
            PolicyKind::Car => Policy::Car,
            PolicyKind::Window => Policy::window(ms(p.window_ms)),
            PolicyKind::Natural => Policy::Natural,
            PolicyKind::Gated => Policy::gated(ms(p.window_ms), p.threshold),
            PolicyKind::Adaptive => {
                let mut cfg = AdaptiveConfig::new(ms(p.latency_budget_ms));
                if let Some(g) = p.gate {
                    cfg.gate = g;
                }
                if let Some(m) = p.lateness_memory {
                    cfg.lateness_memory = m;
                }
                if let Some(n) = p.rate_samples {
                    cfg.rate_samples = n;
                }
                Policy::Adaptive(cfg)
            }
        };
        policy.validate()?;
        Ok(policy)
    }

    /// The scheduler's hard limits (each instance's): `policy.max_batch`, and
    /// `policy.max_in_flight` or else `db.servers`.
    /// With `db.pool_per_instance`, the default in-flight limit is that pool instead.
    pub fn limits(&self) -> Limits {
        let connections = self.db.pool_per_instance.unwrap_or(self.db.servers);
        Limits {
            max_batch_size: self.policy.max_batch,
            max_in_flight: self.policy.max_in_flight.unwrap_or(connections as usize),
        }
    }

    /// This scenario's replication `r` (0-based): the same scenario under seed `seed + r`.
    pub fn replication(&self, r: u32) -> Scenario {
        let mut s = self.clone();
        s.seed = self.seed.wrapping_add(u64::from(r));
        s
    }

    /// When the statistics start: `warmup_s` in ns (0 without a warm-up).
    pub fn warmup_ns(&self) -> u64 {
        self.warmup_s.map_or(0, |w| (w * 1e9).round() as u64)
    }

    /// This scenario with another policy kind (and window), everything else equal.
    pub fn with_policy(&self, kind: PolicyKind, window_ms: Option<f64>) -> Scenario {
        let mut s = self.clone();
        s.policy.kind = kind;
        if let Some(w) = window_ms {
            s.policy.window_ms = w;
        }
        s
    }
}

fn kind_name(k: TrafficKind) -> &'static str {
    match k {
        TrafficKind::Poisson => "poisson",
        TrafficKind::Mmpp => "mmpp",
        TrafficKind::Onoff => "onoff",
        TrafficKind::Diurnal => "diurnal",
        TrafficKind::Spike => "spike",
        TrafficKind::Trace => "trace",
    }
}

/// Milliseconds (finite, >= 0) as a `Duration`, rounded to the nanosecond.
pub fn ms(x: f64) -> Duration {
    Duration::from_nanos((x * 1e6).round() as u64)
}

/// Applies one `a.b=value` override to the parsed table. The value is read as a TOML value
/// (`800`, `0.5`, `true`, `[1, 2]`, `"x"`), or else taken as a bare string (`car`).
fn apply_override(table: &mut toml::Table, spec: &str) -> Result<()> {
    let (key, raw) = spec
        .split_once('=')
        .ok_or_else(|| anyhow!("--set {spec}: expected key=value"))?;
    let key = key.trim();
    let raw = raw.trim();
    if key.is_empty() || key.split('.').any(str::is_empty) {
        bail!("--set {spec}: empty key");
    }
    let value = match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    };
    let parts: Vec<&str> = key.split('.').collect();
    let (last, parents) = parts.split_last().expect("split yields at least one part");
    let mut t = table;
    for p in parents {
        t = t
            .entry((*p).to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| anyhow!("--set {spec}: `{p}` is not a table"))?;
    }
    // The run ends by request count or by duration: setting one replaces the other.
    if parents.is_empty() {
        match *last {
            "requests" => drop(t.remove("duration_s")),
            "duration_s" => drop(t.remove("requests")),
            _ => {}
        }
    }
    t.insert((*last).to_string(), value);
    Ok(())
}

fn checked<'de, D: Deserializer<'de>>(d: D, ok: fn(f64) -> bool, what: &str) -> Result<f64, D::Error> {
    let v = f64::deserialize(d)?;
    if v.is_finite() && ok(v) {
        Ok(v)
    } else {
        Err(de::Error::custom(format!("invalid value {v}: must be a finite number {what}")))
    }
}

fn positive<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    checked(d, |v| v > 0.0, "> 0")
}

fn non_negative<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    checked(d, |v| v >= 0.0, ">= 0")
}

fn opt_positive<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    positive(d).map(Some)
}

fn opt_non_negative<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    non_negative(d).map(Some)
}

fn positive_u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = i64::deserialize(d)?;
    u32::try_from(v)
        .ok()
        .filter(|&v| v > 0)
        .ok_or_else(|| de::Error::custom(format!("invalid value {v}: must be an integer in 1..=4294967295")))
}

fn positive_usize<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let v = i64::deserialize(d)?;
    usize::try_from(v)
        .ok()
        .filter(|&v| v > 0)
        .ok_or_else(|| de::Error::custom(format!("invalid value {v}: must be an integer >= 1")))
}

/// Quantiles of a delay: finite, >= 0 and non-decreasing.
fn quantiles<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    let q = Vec::<f64>::deserialize(d)?;
    if q.iter().any(|x| !(x.is_finite() && *x >= 0.0)) {
        return Err(de::Error::custom("every quantile must be a finite number >= 0"));
    }
    if q.windows(2).any(|w| w[1] < w[0]) {
        return Err(de::Error::custom("quantiles must be non-decreasing"));
    }
    Ok(q)
}

fn opt_positive_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    positive_u32(d).map(Some)
}

fn opt_positive_usize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    positive_usize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BURST: &str = r#"name = "burst"
seed = 42
requests = 1000000
[traffic]
kind = "poisson"
rate_per_s = 800.0
[keys]
kind = "unique"
count = 100000
theta = 0.99
[db]
servers = 1
service = "exp"
base_ms = 1.0
per_key_ms = 0.0
contention = 0.0
[policy]
kind = "window"
window_ms = 2.0
max_batch = 1000
"#;

    fn parse(text: &str, sets: &[&str]) -> Result<Scenario> {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        Scenario::parse_with(text, Path::new("."), &sets)
    }

    #[test]
    fn the_contract_example_parses() {
        let s = parse(BURST, &[]).unwrap();
        assert_eq!(s.requests, Some(1_000_000));
        assert_eq!(s.traffic.rate_per_s, Some(800.0));
        assert_eq!(s.policy.kind, PolicyKind::Window);
        assert_eq!(s.policy().unwrap(), Policy::window(Duration::from_millis(2)));
        assert_eq!(s.limits(), Limits { max_batch_size: 1000, max_in_flight: 1 });
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let text = BURST.replace("rate_per_s = 800.0", "rate_per_s = 800.0\nrate_per_sec = 1.0");
        let err = format!("{:#}", parse(&text, &[]).unwrap_err());
        assert!(err.contains("rate_per_sec"), "{err}");
        assert!(err.contains("line 7"), "{err}");
    }

    #[test]
    fn bad_value_names_key_and_line() {
        let text = BURST.replace("base_ms = 1.0", "base_ms = -1.0");
        let err = format!("{:#}", parse(&text, &[]).unwrap_err());
        assert!(err.contains("line 14"), "{err}");
        assert!(err.contains("base_ms"), "{err}");
        let text = BURST.replace("service = \"exp\"", "service = \"gamma\"");
        let err = format!("{:#}", parse(&text, &[]).unwrap_err());
        assert!(err.contains("line 13") && err.contains("gamma"), "{err}");
    }

    #[test]
    fn overrides_apply_and_bad_ones_are_named() {
        let s = parse(BURST, &["traffic.rate_per_s=900", "policy.kind=car", "duration_s=5"]).unwrap();
        assert_eq!(s.traffic.rate_per_s, Some(900.0));
        assert_eq!(s.policy.kind, PolicyKind::Car);
        assert_eq!((s.requests, s.duration_s), (None, Some(5.0)));
        let err = format!("{:#}", parse(BURST, &["traffic.rate=1"]).unwrap_err());
        assert!(err.contains("traffic.rate=1") && err.contains("unknown field"), "{err}");
        let err = format!("{:#}", parse(BURST, &["db.servers=0"]).unwrap_err());
        assert!(err.contains("db.servers=0"), "{err}");
        let err = format!("{:#}", parse(BURST, &["policy.kind=bus"]).unwrap_err());
        assert!(err.contains("policy.kind=bus") && err.contains("bus"), "{err}");
        assert!(parse(BURST, &["no_equals_sign"]).is_err());
    }

    #[test]
    fn driver_delays_are_optional_and_checked() {
        let s = parse(BURST, &[]).unwrap();
        assert!(s.driver.is_instant());
        let s = parse(BURST, &["driver.reaction_us=[10, 20, 40]", "driver.launch_us=[5]"]).unwrap();
        assert_eq!(s.driver.reaction_us, vec![10.0, 20.0, 40.0]);
        assert!(!s.driver.is_instant());
        let err = format!("{:#}", parse(BURST, &["driver.reaction_us=[20, 10]"]).unwrap_err());
        assert!(err.contains("non-decreasing"), "{err}");
        let err = format!("{:#}", parse(BURST, &["driver.launch_us=[-1]"]).unwrap_err());
        assert!(err.contains(">= 0"), "{err}");
        let s = parse(BURST, &["driver.answer_per_caller_us=1.5"]).unwrap();
        assert!(!s.driver.is_instant());
        assert!(parse(BURST, &["driver.answer_per_caller_us=-1"]).is_err());
    }

    #[test]
    fn missing_required_keys_are_named() {
        let text = BURST.replace("kind = \"poisson\"", "kind = \"mmpp\"");
        let err = format!("{:#}", parse(&text, &[]).unwrap_err());
        assert!(err.contains("traffic.rate_low_per_s"), "{err}");
        let err = format!("{:#}", parse(BURST, &["policy.kind=gated", "policy.threshold=0"]).unwrap_err());
        assert!(err.contains("threshold"), "{err}");
    }
}
