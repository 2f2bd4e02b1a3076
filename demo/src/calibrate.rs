//! Measuring the database's cost model, and writing it as a simulator scenario.
//!
//! The simulator models a query's service time as `base + per_key × keys` (mean), `servers`
//! places where queries run (beyond them, queries wait first come first served), and a
//! `contention` factor: with `m` queries running, each progresses at rate `1 / (1 + c (m − 1))`
//! (`sim/README.md`, `[db]`). Each is measured here, closed loop: `n` tasks (`n` ≤ the pool, so
//! none waits for a connection) each send query after query of `k` random distinct ids for a
//! fixed time, and the mean time of a `fetch_users` call is taken for every (`n`, `k`).
//!
//! **Repeated cells.** The plan runs in rounds, each visiting every cell once, so a burst of
//! load from elsewhere on a shared machine spoils one round of a cell, not the cell: a cell's
//! figure is the median of its rounds' means.
//!
//! **Base and per key.** Per `n`, a line through the cells' times over `k`, fitted by least
//! squares on *relative* errors (weights `1 / t²`): an ordinary fit is dominated by the
//! 1,000-id queries and misses the single-id ones, which are what direct calls and most of the
//! demo's batches cost. The scenario's `base_ms` and `per_key_ms` are the line at `n` = 1.
//!
//! **Servers and contention.** An embedded database (SQLite) runs its queries on the
//! application's threads: `n` connections do not run `n` queries at once when the machine has
//! fewer cores; a server database has its own limits. So `servers` is not assumed to be the
//! pool size: `servers` = `s` and the contention are fitted to what the closed-loop cells did.
//! With `n` clients always busy, `m = min(n, s)` queries run, each at rate
//! `1 / (1 + c (m − 1))`, so a call takes `R(n, k) = S(1, k) · (n / m) · (1 + c (m − 1))`.
//! The contention depends on the query's size (a single-id query on SQLite is mostly
//! hand-offs between threads, a 1,000-id one keeps a core busy): `c` is the base's
//! contention `c_b` and the per-key part's `c_k` weighted by the two parts' means at `n` = 1,
//! `c(k) = (c_b base + c_k per_key k) / (base + per_key k)`, as the simulator applies them
//! (`[db] contention` and `per_key_contention`). For every `s` from 1 to the pool, `(c_b, c_k)`
//! minimise the absolute log error of `R` summed over every cell with `n` > 1 (all
//! concurrencies and all `k` at once, and absolute rather than squared, so no single noisy
//! cell or row decides), and the `s` with the smallest error is written. The one-factor fit
//! (`c_b = c_k`, the model before) is kept beside it for the report. The machine's core count
//! is reported beside it.
//!
//! **Spread.** The spread of single-key times sets the lognormal's shape:
//! `sigma = (ln q84 − ln q16) / 2` (a lognormal's, read from its middle 68 %, so the few queries
//! a busy machine preempts do not inflate it; the simulator's lognormal keeps the mean), the
//! median over the rounds.
//!
//! **Wake-up.** The closed loop keeps every thread busy; the replays' background sends a query
//! about every millisecond, after the pool's worker thread and the runtime's have parked and a
//! quiet machine's cores have idled. So single-id queries are also sent open loop, as the
//! background sends them (Poisson at 1,000/s from tasks an injector thread spawns), and each
//! one sent after the database had nothing to do for at least [`WAKE_AFTER_US`] is set against
//! the closed loop's single-id mean: the difference is its wake-up, and their table (the
//! slowest 1 % left out, as the driver's) is the scenario's `wake_us`.
//!
//! What is timed is the whole call as the caller sees it (acquire, the statement, the rows back
//! through sqlx): that is what a batch, or a direct call, costs once sent.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use indicatif::ProgressBar;
use rand::rngs::SmallRng;
use rand::seq::index::sample;
use rand::SeedableRng;
use serde::Serialize;

use crate::db::Database;
use crate::reaction::{Delay, DriverModel};

/// The mean cost of a query of `keys` ids with `concurrency` queries running.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CostPoint {
    /// Queries running at once (closed-loop clients).
    pub concurrency: u32,
    /// Ids per query.
    pub keys: u32,
    /// Queries timed, over every round.
    pub samples: u64,
    /// Mean time per query, ms: the median of the rounds' means.
    pub mean_ms: f64,
    /// The rounds' means, ms, in the order they ran.
    pub round_means_ms: Vec<f64>,
    /// Coefficient of variation of the time per query (median over the rounds).
    pub cv: f64,
    /// Spread of the log of the time per query, from its 16th and 84th percentiles
    /// (`(ln q84 − ln q16) / 2`: a lognormal's `sigma`, robust to the few queries a busy
    /// machine preempts); median over the rounds.
    pub log_spread: f64,
    /// The process's CPU per query, µs (median over the rounds; `None` where the scheduler's
    /// statistics cannot be read): what the query costs the cores, as against its time.
    pub cpu_us: Option<f64>,
    /// Mean wait for a pooled connection per query, ms (median over the rounds): with as many
    /// clients as connections, each client waits for its next connection's hand-back.
    pub pool_wait_ms: f64,
}

/// `base + per_key × keys` fitted at one concurrency.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Line {
    /// Queries running at once.
    pub concurrency: u32,
    /// Fixed part, ms.
    pub base_ms: f64,
    /// Per id, ms.
    pub per_key_ms: f64,
}

/// The best `contention` for one candidate `servers`, and how well the pair reproduces the
/// closed-loop cells.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ServerFit {
    /// Queries that run at once.
    pub servers: u32,
    /// Slow-down of a query's base per extra running query (>= 0).
    pub contention: f64,
    /// Slow-down of a query's per-key part per extra running query (>= 0).
    pub per_key_contention: f64,
    /// Mean absolute error of `ln R` over the cells with more than one client (0.1: about
    /// 10 %).
    pub mean_abs_log_error: f64,
    /// The best single factor for both parts (the model before contention by size), and its
    /// error.
    pub one_factor: (f64, f64),
}

/// The measured cost model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CostModel {
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// The pool size the demo runs with (the batchers' `max_in_flight`).
    pub pool_size: u32,
    /// Every measured point.
    pub points: Vec<CostPoint>,
    /// The fitted line per concurrency.
    pub lines: Vec<Line>,
    /// The scenario's `base_ms` and `per_key_ms`: the line at concurrency 1.
    pub base_ms: f64,
    /// See `base_ms`.
    pub per_key_ms: f64,
    /// The fit for every candidate `servers`, 1 to the pool.
    pub server_fits: Vec<ServerFit>,
    /// The scenario's `servers`: the candidate with the smallest error.
    pub servers: u32,
    /// The scenario's `contention` (of a query's base): that candidate's.
    pub contention: f64,
    /// The scenario's `per_key_contention`: that candidate's.
    pub per_key_contention: f64,
    /// Lognormal shape from the single-key spread (`log_spread` at concurrency 1, one id).
    pub lognormal_sigma: f64,
    /// A single-id query's wake-up after the database was idle at least [`WAKE_AFTER_US`]:
    /// its open-loop time less the closed loop's single-id mean (`None` until measured).
    pub wake: Option<Delay>,
    /// The application's CPU per request beyond its query's (`None` until measured, or where
    /// the scheduler's statistics cannot be read): see [`crate::app_cpu`].
    pub app_cpu: Option<AppCpu>,
}

/// The application's CPU per request, measured on bursts (see [`crate::app_cpu`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppCpu {
    /// The process's cores (what the scheduler lets it run on).
    pub cores: u32,
    /// The CPU of a closed-loop query, µs: the line through the single-client cells' CPU per
    /// query.
    pub query_base_us: f64,
    /// See `query_base_us`: per id.
    pub query_per_key_us: f64,
    /// Through a natural batcher: CPU per request beyond its queries', µs (median of rounds).
    pub request_us: f64,
    /// Direct calls: the same, µs.
    pub direct_request_us: f64,
    /// Each round's bursts: (batched, direct).
    pub bursts: Vec<(crate::app_cpu::Burst, crate::app_cpu::Burst)>,
}

/// The CPU a batcher's driver spends before each deadline of a timed policy, µs: the core's
/// precise timer wakes the driver 100 µs before a light bus's deadline (`WORKER_WAKE_LATENCY`
/// in `core/src/driver/alarm.rs`), after spinning the 100 µs before that itself (`SPIN_BEFORE`
/// in `core/src/timer.rs`), and the driver stays runnable from its wake to the deadline: two
/// threads busy one after the other over the last 200 µs. The core's design, not a fit; the
/// report sets it against what the replays' CPU says (`timer_cpu_check` in `report.rs`).
pub const DRIVER_TIMER_US: f64 = 200.0;

/// The idleness from which a query counts as woken, µs: in the per-idle breakdown of one
/// `make demo` (17:38 UTC, 2026-11-28, load 1.6) single-id queries sent less than 100 µs after
/// the previous one ended cost what the closed loop's do (medians 27-31 µs, natural and the
/// 0.1 ms window), and those sent later 38-79 µs. One run on a shared machine: a threshold
/// read off it, not a fitted figure (the wake-up itself is measured every run).
pub const WAKE_AFTER_US: f64 = 100.0;

/// Sends single-id queries open loop at 1,000/s for `duration` (Poisson, `seed`) from tasks
/// spawned by an injector thread, as the replays' background; returns each one's (start, end).
///
/// # Errors
///
/// If a query fails or a task panics.
pub async fn open_loop(db: &Database, users: u32, duration: Duration, seed: u64) -> Result<Vec<(Instant, Instant)>> {
    use rand::Rng;
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut at = Duration::ZERO;
    let mut sends = Vec::new();
    while at < duration {
        sends.push((at, rng.random_range(1..=i64::from(users.max(1)))));
        let gap: f64 = rand_distr::Distribution::sample(&rand_distr::Exp1, &mut rng);
        at += Duration::from_secs_f64(gap / 1000.0);
    }
    let db = db.clone();
    let start = Instant::now() + Duration::from_millis(1);
    let (at, ids): (Vec<Duration>, Vec<i64>) = sends.into_iter().unzip();
    let tasks = crate::replay::inject(start, at, None, move |i| {
        let (db, id) = (db.clone(), ids[i]);
        async move {
            let t = Instant::now();
            db.fetch_users(&[id]).await.map(|_| (t, Instant::now()))
        }
    })
    .await?;
    let mut spans = Vec::with_capacity(tasks.len());
    for t in tasks {
        spans.push(t.await.context("a wake-up query panicked")??);
    }
    Ok(spans)
}

/// From each query's (start, end): the wake-up of those started with nothing running for at
/// least [`WAKE_AFTER_US`] (time less `hot_ms`, µs, at least 0).
pub fn wake_ups(spans: &[(Instant, Instant)], hot_ms: f64) -> Vec<f64> {
    let mut order: Vec<&(Instant, Instant)> = spans.iter().collect();
    order.sort_by_key(|s| s.0);
    let mut last_end: Option<Instant> = None;
    let mut out = Vec::new();
    for &&(start, end) in &order {
        let idle_us = match last_end {
            Some(e) if e > start => 0.0,
            Some(e) => (start - e).as_secs_f64() * 1e6,
            None => 0.0,
        };
        if idle_us >= WAKE_AFTER_US {
            out.push(((end - start).as_secs_f64() * 1e3 - hot_ms).max(0.0) * 1e3);
        }
        last_end = Some(last_end.map_or(end, |e| e.max(end)));
    }
    out
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Concurrencies (each at most the pool size).
    pub concurrency: Vec<u32>,
    /// Ids per query.
    pub keys: Vec<u32>,
    /// Rounds: each visits every cell once; a cell's figure is the median of its rounds.
    pub rounds: u32,
    /// How long each cell runs per round.
    pub per_point: Duration,
    /// Ids are drawn from `1..=users`.
    pub users: u32,
    /// How long each round sends single-id queries open loop for the wake-up (zero: not
    /// measured).
    pub wake_per_round: Duration,
    /// Whether each round also measures the application's CPU per request on bursts
    /// ([`crate::app_cpu`]).
    pub bursts: bool,
}

impl Plan {
    /// 1 to `pool` queries at once (every level, so the servers-and-contention fit sees the
    /// whole curve); 1 to 1,000 ids (the demo's batches span that range); 3 rounds of 50 ms a
    /// cell (an odd count, so the median is a measured round and one spoiled round is
    /// outvoted): 20 cells in about 3 s, leaving `make demo`'s budget to the replays' rounds.
    pub fn demo(pool: u32, users: u32) -> Plan {
        Plan {
            concurrency: (1..=pool.max(1)).collect(),
            keys: vec![1, 10, 50, 200, 1000],
            rounds: 3,
            per_point: Duration::from_millis(50),
            wake_per_round: Duration::from_millis(100),
            bursts: true,
            users,
        }
    }

    /// Cells measured per round.
    pub fn points(&self) -> usize {
        self.concurrency.len() * self.keys.len()
    }

    /// Cell-rounds measured: what a progress bar counts.
    pub fn steps(&self) -> usize {
        self.points() * self.rounds.max(1) as usize
    }
}

/// One round of one cell.
#[derive(Debug)]
struct Round {
    samples: u64,
    mean_ms: f64,
    cv: f64,
    log_spread: f64,
    cpu_us: Option<f64>,
    pool_wait_ms: f64,
}

/// Measures `plan` on `db`; `progress` advances by one per cell and round.
///
/// # Errors
///
/// If a query fails, or a point gets no sample.
pub async fn calibrate(db: &Database, plan: &Plan, progress: Option<&ProgressBar>) -> Result<CostModel> {
    let mut c = Calibration::new(plan.clone());
    for _ in 0..plan.rounds.max(1) {
        c.round(db, progress).await?;
    }
    c.finish(db.backend(), db.pool_size())
}

/// A calibration in rounds that may be interleaved with other work (`make demo` runs one
/// before each round of replays, so the cost model sees the same spells of load as the
/// replays do): [`Calibration::round`] as often as wanted, then [`Calibration::finish`].
#[derive(Debug)]
pub struct Calibration {
    plan: Plan,
    cells: Vec<(u32, u32)>,
    rounds: Vec<Vec<Round>>,
    /// Per round, the wake-up queries' (start, end).
    wake_spans: Vec<Vec<(Instant, Instant)>>,
    /// Per round, the application's bursts (batched, direct), where measured.
    bursts: Vec<(crate::app_cpu::Burst, crate::app_cpu::Burst)>,
    done: u32,
}

impl Calibration {
    /// Nothing measured yet.
    pub fn new(plan: Plan) -> Calibration {
        let cells: Vec<(u32, u32)> =
            plan.concurrency.iter().flat_map(|&n| plan.keys.iter().map(move |&k| (n, k.min(plan.users)))).collect();
        let rounds = cells.iter().map(|_| Vec::new()).collect();
        Calibration { plan, cells, rounds, wake_spans: Vec::new(), bursts: Vec::new(), done: 0 }
    }

    /// Rounds measured so far.
    pub fn rounds_done(&self) -> u32 {
        self.done
    }

    /// Measures one round: every cell once, then the open-loop single-id queries of the
    /// wake-up; `progress` advances by one per cell.
    ///
    /// # Errors
    ///
    /// If a query fails or a task panics.
    pub async fn round(&mut self, db: &Database, progress: Option<&ProgressBar>) -> Result<()> {
        let r = self.done;
        for (cell, &(n, k)) in self.cells.iter().enumerate() {
            self.rounds[cell].push(measure(db, n, k, r, &self.plan).await?);
            if let Some(p) = progress {
                p.inc(1);
            }
        }
        if self.plan.wake_per_round > Duration::ZERO {
            self.wake_spans.push(open_loop(db, self.plan.users, self.plan.wake_per_round, 1000 + u64::from(r)).await?);
        }
        if self.plan.bursts {
            let seed = 2000 + u64::from(r);
            let batched = crate::app_cpu::burst(db, self.plan.users, true, seed).await?;
            let direct = crate::app_cpu::burst(db, self.plan.users, false, seed).await?;
            if let Some(pair) = batched.zip(direct) {
                self.bursts.push(pair);
            }
        }
        self.done += 1;
        Ok(())
    }

    /// The model fitted to every round measured (see the module docs).
    ///
    /// # Errors
    ///
    /// If no round was measured, or concurrency 1 was not.
    pub fn finish(self, backend: &str, pool_size: u32) -> Result<CostModel> {
        anyhow::ensure!(self.done > 0, "no calibration round was measured");
        let points = self
            .cells
            .iter()
            .zip(self.rounds)
            .map(|(&(concurrency, keys), rs)| CostPoint {
                concurrency,
                keys,
                samples: rs.iter().map(|r| r.samples).sum(),
                mean_ms: median(rs.iter().map(|r| r.mean_ms).collect()),
                round_means_ms: rs.iter().map(|r| r.mean_ms).collect(),
                cv: median(rs.iter().map(|r| r.cv).collect()),
                log_spread: median(rs.iter().map(|r| r.log_spread).collect()),
                cpu_us: rs.iter().map(|r| r.cpu_us).collect::<Option<Vec<f64>>>().map(median),
                pool_wait_ms: median(rs.iter().map(|r| r.pool_wait_ms).collect()),
            })
            .collect();
        let mut model = fit(backend, pool_size, points)?;
        if !self.wake_spans.is_empty() {
            // The closed loop's single-id mean: the cost of a query sent to busy threads.
            let hot_ms = model.points.iter().find(|p| p.concurrency == 1 && p.keys == 1).map_or(model.base_ms, |p| p.mean_ms);
            let samples = self.wake_spans.iter().flat_map(|spans| wake_ups(spans, hot_ms)).collect();
            model.wake = Delay::of(samples).ok();
        }
        model.app_cpu = app_cpu(&model.points, self.bursts);
        Ok(model)
    }
}

async fn measure(db: &Database, n: u32, k: u32, round: u32, plan: &Plan) -> Result<Round> {
    let deadline = Instant::now() + plan.per_point;
    let users = plan.users;
    let before = crate::sched::snapshot();
    let clients: Vec<_> = (0..n)
        .map(|c| {
            let db = db.clone();
            tokio::spawn(async move {
                let seed = (u64::from(round) << 48) | (u64::from(c) << 32) | u64::from(k);
                let mut rng = SmallRng::seed_from_u64(seed);
                let mut times = Vec::new();
                // Two unmeasured queries first: the connection and the statement are warm.
                for i in 0.. {
                    let ids: Vec<i64> = sample(&mut rng, users as usize, k as usize).iter().map(|i| i as i64 + 1).collect();
                    let t = Instant::now();
                    let fetched = db.fetch_users(&ids).await?;
                    if i >= 2 {
                        times.push((t.elapsed().as_secs_f64() * 1e3, fetched.pool_wait.as_secs_f64() * 1e3));
                    }
                    if Instant::now() >= deadline && times.len() >= 3 {
                        return Ok::<_, sqlx::Error>(times);
                    }
                }
                unreachable!("the loop returns")
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut waits = Vec::new();
    for c in clients {
        let (times, waited): (Vec<f64>, Vec<f64>) = c.await.context("calibration client panicked")??.into_iter().unzip();
        all.extend(times);
        waits.extend(waited);
    }
    // Every query the clients sent, the two unmeasured ones each included.
    let sent = all.len() as f64 + 2.0 * f64::from(n);
    let cpu_us = crate::sched::usage_since(before).map(|u| u.cpu_ms * 1e3 / sent);
    let m = mean(&all);
    let sd = (all.iter().map(|x| (x - m).powi(2)).sum::<f64>() / all.len() as f64).sqrt();
    all.sort_unstable_by(f64::total_cmp);
    let q = |p: f64| all[((all.len() - 1) as f64 * p).round() as usize];
    let log_spread = (q(0.8413).ln() - q(0.1587).ln()) / 2.0;
    Ok(Round { samples: all.len() as u64, mean_ms: m, cv: sd / m, log_spread, cpu_us, pool_wait_ms: mean(&waits) })
}

fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len() as f64
}

/// The median (the mean of the middle two for an even count); NaN for none.
pub fn median(mut x: Vec<f64>) -> f64 {
    x.sort_unstable_by(f64::total_cmp);
    median_of_sorted(&x)
}

/// The median of `x`, sorted by `f64::total_cmp`; NaN for none.
pub fn median_of_sorted(x: &[f64]) -> f64 {
    if x.is_empty() {
        return f64::NAN;
    }
    let h = x.len() / 2;
    if x.len() % 2 == 1 { x[h] } else { (x[h - 1] + x[h]) / 2.0 }
}

/// Least-squares line through (x, y): (intercept, slope).
pub fn least_squares(points: &[(f64, f64)]) -> (f64, f64) {
    weighted_least_squares(&points.iter().map(|&(x, y)| (x, y, 1.0)).collect::<Vec<_>>())
}

/// Weighted least-squares line through (x, y, weight): (intercept, slope).
pub fn weighted_least_squares(points: &[(f64, f64, f64)]) -> (f64, f64) {
    let w: f64 = points.iter().map(|p| p.2).sum();
    let mx = points.iter().map(|p| p.2 * p.0).sum::<f64>() / w;
    let my = points.iter().map(|p| p.2 * p.1).sum::<f64>() / w;
    let sxx: f64 = points.iter().map(|p| p.2 * (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| p.2 * (p.0 - mx) * (p.1 - my)).sum();
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    (my - slope * mx, slope)
}

/// The closed-loop time of a call with `n` clients always busy, `servers` places and
/// `contention` `c`, relative to the time alone: `(n / m) (1 + c (m − 1))`, `m = min(n, servers)`.
pub fn closed_loop_ratio(n: u32, servers: u32, c: f64) -> f64 {
    let m = n.min(servers).max(1);
    f64::from(n) / f64::from(m) * (1.0 + c * f64::from(m - 1))
}

/// Largest contention tried: 10 (each extra running query costing ten times its own work is
/// far beyond any sharing of cores; a fit that wants more has a broken cell).
const MAX_CONTENTION: f64 = 10.0;

/// A query's contention by size: `c_b` and `c_k` weighted by the parts' means
/// (`base_ms`, `per_key_ms` × `keys`), as the simulator's `[db]` applies them.
pub fn sized_contention(c_b: f64, c_k: f64, base_ms: f64, per_key_ms: f64, keys: u32) -> f64 {
    let per_key = per_key_ms * f64::from(keys);
    let total = base_ms + per_key;
    if total > 0.0 { (c_b * base_ms + c_k * per_key) / total } else { c_b }
}

/// The grid's step: 0.001 (finer than any cell's noise).
const STEP: f64 = 0.001;

/// The `(c_b, c_k)` that best reproduce `cells` (`(n, k, measured time / time alone)`, `n` > 1)
/// with `servers` and the line at `n` = 1, `(base_ms, per_key_ms)`, and the mean absolute log
/// error; and the best single factor with its error. Least absolute deviations, not squares: a
/// median-like fit, so one spoiled cell cannot pull it. The single factor is searched on a grid
/// of 0.001 over [0, 10]; the pair on a grid of 0.05 over [0, 10]², then of 0.001 around the
/// best point (the error is piecewise smooth in each factor: no shape assumed beyond that).
fn fit_contention(cells: &[(u32, u32, f64)], servers: u32, (base_ms, per_key_ms): (f64, f64)) -> ServerFit {
    let err = |c_b: f64, c_k: f64| {
        cells
            .iter()
            .map(|&(n, k, r)| (r.ln() - closed_loop_ratio(n, servers, sized_contention(c_b, c_k, base_ms, per_key_ms, k)).ln()).abs())
            .sum::<f64>()
    };
    let mean = |e: f64| if cells.is_empty() { 0.0 } else { e / cells.len() as f64 };
    let grid = |from: f64, to: f64, step: f64| {
        let n = ((to - from) / step).round() as u32;
        (0..=n).map(move |i| (from + f64::from(i) * step).clamp(0.0, MAX_CONTENTION))
    };
    let best = |points: &mut dyn Iterator<Item = (f64, f64)>| {
        points.map(|(b, k)| (b, k, err(b, k))).min_by(|x, y| x.2.total_cmp(&y.2)).expect("at least one point")
    };
    let (one, _, e_one) = best(&mut grid(0.0, MAX_CONTENTION, STEP).map(|c| (c, c)));
    let coarse = 50.0 * STEP;
    let (b0, k0, _) = best(&mut grid(0.0, MAX_CONTENTION, coarse).flat_map(|b| grid(0.0, MAX_CONTENTION, coarse).map(move |k| (b, k))));
    let (b, k, e) = best(&mut grid(b0 - coarse, b0 + coarse, STEP).flat_map(|b| grid(k0 - coarse, k0 + coarse, STEP).map(move |k| (b, k))));
    // The pair cannot do worse than the single factor (a point of its plane); a coarse grid
    // that missed the single factor's valley falls back to it.
    let (b, k, e) = if e <= e_one { (b, k, e) } else { (one, one, e_one) };
    ServerFit { servers, contention: b, per_key_contention: k, mean_abs_log_error: mean(e), one_factor: (one, mean(e_one)) }
}

/// Fits the model to measured points (see the module docs).
///
/// # Errors
///
/// If concurrency 1 was not measured.
pub fn fit(backend: &str, pool_size: u32, points: Vec<CostPoint>) -> Result<CostModel> {
    let mut concurrencies: Vec<u32> = points.iter().map(|p| p.concurrency).collect();
    concurrencies.sort_unstable();
    concurrencies.dedup();
    let lines: Vec<Line> = concurrencies
        .iter()
        .map(|&n| {
            let xy: Vec<(f64, f64, f64)> = points
                .iter()
                .filter(|p| p.concurrency == n && p.mean_ms > 0.0)
                .map(|p| (f64::from(p.keys), p.mean_ms, 1.0 / (p.mean_ms * p.mean_ms)))
                .collect();
            let (base, slope) = weighted_least_squares(&xy);
            // A noisy fit may dip below zero: no query is free or gets cheaper with more ids.
            Line { concurrency: n, base_ms: base.max(0.0), per_key_ms: slope.max(0.0) }
        })
        .collect();
    let one = lines.iter().find(|l| l.concurrency == 1).ok_or_else(|| anyhow!("calibration needs concurrency 1"))?;
    // Every cell with more than one client, as its time over the same `k` alone.
    let ratios: Vec<(u32, u32, f64)> = points
        .iter()
        .filter(|p| p.concurrency > 1)
        .filter_map(|p| {
            let solo = points.iter().find(|q| q.concurrency == 1 && q.keys == p.keys)?;
            let r = p.mean_ms / solo.mean_ms;
            (r.is_finite() && r > 0.0).then_some((p.concurrency, p.keys, r))
        })
        .collect();
    let line = (one.base_ms, one.per_key_ms);
    let server_fits: Vec<ServerFit> = (1..=pool_size.max(1)).map(|s| fit_contention(&ratios, s, line)).collect();
    // The smallest error; on a tie (no cell tells them apart) the pool size, the larger.
    let chosen = server_fits
        .iter()
        .rev()
        .min_by(|a, b| a.mean_abs_log_error.total_cmp(&b.mean_abs_log_error))
        .copied()
        .unwrap_or(ServerFit { servers: pool_size, contention: 0.0, per_key_contention: 0.0, mean_abs_log_error: 0.0, one_factor: (0.0, 0.0) });
    let sigma = points.iter().find(|p| p.concurrency == 1 && p.keys == 1).map_or(0.5, |p| p.log_spread);
    Ok(CostModel {
        backend: backend.to_string(),
        pool_size,
        base_ms: one.base_ms,
        per_key_ms: one.per_key_ms,
        server_fits,
        servers: chosen.servers,
        contention: chosen.contention,
        per_key_contention: chosen.per_key_contention,
        lognormal_sigma: sigma,
        wake: None,
        app_cpu: None,
        points,
        lines,
    })
}

/// The application's CPU per request from the rounds' `bursts` (batched, direct) and the
/// single-client cells' CPU per query (see [`crate::app_cpu`]); `None` without either.
fn app_cpu(points: &[CostPoint], bursts: Vec<(crate::app_cpu::Burst, crate::app_cpu::Burst)>) -> Option<AppCpu> {
    let xy: Vec<(f64, f64, f64)> = points
        .iter()
        .filter(|p| p.concurrency == 1)
        .filter_map(|p| p.cpu_us.filter(|&c| c > 0.0).map(|c| (f64::from(p.keys), c, 1.0 / (c * c))))
        .collect();
    if xy.len() < 2 || bursts.is_empty() {
        return None;
    }
    // Relative least squares, as the cost line: the single-id queries are what matter here.
    let (base, slope) = weighted_least_squares(&xy);
    let q = crate::app_cpu::QueryCpu { base_us: base.max(0.0), per_key_us: slope.max(0.0) };
    Some(AppCpu {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        query_base_us: q.base_us,
        query_per_key_us: q.per_key_us,
        request_us: median(bursts.iter().map(|(b, _)| q.request_us(b)).collect()),
        direct_request_us: median(bursts.iter().map(|(_, d)| q.request_us(d)).collect()),
        bursts,
    })
}

impl CostModel {
    /// The model before contention by size: the `servers` whose single factor fits best, and
    /// that factor (for both parts of a query).
    pub fn one_factor(&self) -> (u32, f64) {
        self.server_fits
            .iter()
            .rev()
            .min_by(|a, b| a.one_factor.1.total_cmp(&b.one_factor.1))
            .map_or((self.servers, self.contention), |f| (f.servers, f.one_factor.0))
    }

    /// The best fit with another `servers` than the chosen one: the closed loop often fits two
    /// or three `servers` almost equally well with very different contentions (on a 2-core
    /// machine running an in-process database, `servers` 2 with almost no contention and 4 with
    /// a third), and the predictions of the contenders whose queries overlap turn on which.
    pub fn runner_up(&self) -> Option<&ServerFit> {
        self.server_fits
            .iter()
            .filter(|f| f.servers != self.servers)
            .min_by(|a, b| a.mean_abs_log_error.total_cmp(&b.mean_abs_log_error))
    }

    /// The `--set` overrides that put [`CostModel::runner_up`]'s fit into the scenario (none
    /// when there is no other fit).
    pub fn runner_up_overrides(&self) -> Vec<String> {
        self.runner_up().map_or_else(Vec::new, |f| {
            vec![
                format!("db.servers={}", f.servers),
                format!("db.contention={}", f.contention),
                format!("db.per_key_contention={}", f.per_key_contention),
            ]
        })
    }

    /// The `--set` overrides that put [`one_factor`](CostModel::one_factor) into this model's
    /// scenario.
    pub fn one_factor_overrides(&self) -> Vec<String> {
        let (servers, c) = self.one_factor();
        vec![format!("db.servers={servers}"), format!("db.contention={c}"), format!("db.per_key_contention={c}")]
    }

    /// The simulator scenario of this database: the cost model as `[db]`, the demo's batcher
    /// limits as `[policy]`, the batcher driver's measured delays (if given) as `[driver]`, and
    /// a trace (relative to the scenario file) as `[traffic]`. Policy and trace are overridden
    /// per contender (`--set`).
    pub fn scenario_toml(&self, name: &str, trace: &str, provenance: &str, driver: Option<&DriverModel>) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# The {} database's cost model, measured by `busline-demo calibrate`.", self.backend);
        for line in provenance.lines() {
            let _ = writeln!(s, "# {line}");
        }
        let _ = writeln!(s, "# Per concurrency (queries running at once): base + per_key x ids, ms (relative least squares):");
        for l in &self.lines {
            let _ = writeln!(s, "#   {}: {:.5} + {:.6} x ids", l.concurrency, l.base_ms, l.per_key_ms);
        }
        let _ = writeln!(
            s,
            "# servers and contention (base, per key), fitted to every cell with more than one client (mean absolute log error;\n\
             # one factor for both: the model before contention by size):"
        );
        for f in &self.server_fits {
            let _ = writeln!(
                s,
                "#   servers {}: contention {:.3}, per key {:.3}, error {:.3} (one factor {:.3}, error {:.3})",
                f.servers, f.contention, f.per_key_contention, f.mean_abs_log_error, f.one_factor.0, f.one_factor.1
            );
        }
        let _ = writeln!(s, "name = \"{name}\"");
        let _ = writeln!(s, "seed = 1\n");
        let _ = writeln!(s, "[traffic]\nkind = \"trace\"\npath = \"{trace}\"\ntime_unit = \"ns\"\n");
        let _ = writeln!(s, "[db]");
        let _ = writeln!(s, "servers = {}", self.servers);
        let _ = writeln!(s, "service = \"lognormal\"");
        let _ = writeln!(s, "base_ms = {:.6}", self.base_ms);
        let _ = writeln!(s, "per_key_ms = {:.8}", self.per_key_ms);
        let _ = writeln!(s, "contention = {:.4}", self.contention);
        let _ = writeln!(s, "per_key_contention = {:.4}", self.per_key_contention);
        let _ = writeln!(s, "lognormal_sigma = {:.4}\n", self.lognormal_sigma);
        let _ = writeln!(s, "[policy]\nkind = \"natural\"\nmax_batch = 1024\nmax_in_flight = {}", self.pool_size);
        let _ = writeln!(s, "window_ms = 1.0\nthreshold = 2\nlatency_budget_ms = 1.0");
        if let Some(d) = driver {
            let table = |q: &[f64]| q.iter().map(|x| format!("{x:.1}")).collect::<Vec<_>>().join(", ");
            let _ = writeln!(s, "\n# The batcher driver's delays, µs, measured against a mock backend (demo/src/reaction.rs):");
            let _ = writeln!(
                s,
                "# quantiles at 5 % steps, the slowest 1 % left out ({}, {} and {} buses of {} requests per policy).",
                d.reaction.samples,
                d.timer_reaction.samples,
                d.launch.samples,
                d.requests
            );
            let _ = writeln!(s, "[driver]");
            let _ = writeln!(s, "reaction_us = [{}]", table(&d.reaction.quantiles_us));
            let _ = writeln!(s, "timer_reaction_us = [{}]", table(&d.timer_reaction.quantiles_us));
            let _ = writeln!(s, "launch_us = [{}]", table(&d.launch.quantiles_us));
            let _ = writeln!(s, "answer_us = [{}]", table(&d.answer.quantiles_us));
            let _ = writeln!(s, "answer_per_caller_us = {:.3}", d.answer_per_caller_us);
            if let Some(w) = &self.wake {
                let _ = writeln!(s, "# A query sent after the database was idle {WAKE_AFTER_US} µs: its wake-up, measured open loop (demo/src/calibrate.rs).");
                let _ = writeln!(s, "wake_us = [{}]", table(&w.quantiles_us));
                let _ = writeln!(s, "wake_after_us = {WAKE_AFTER_US:.1}");
            }
        }
        // The application's work shares the servers only where the database runs in the
        // process: a server database's servers are its own.
        if let Some(c) = self.app_cpu.as_ref().filter(|_| self.backend == "sqlite") {
            let _ = writeln!(
                s,
                "\n# The application's CPU per request beyond its queries', µs, on bursts of {} requests within {} ms (demo/src/app_cpu.rs):\n\
                 # the process's CPU less its queries' (a closed-loop query: {:.1} + {:.2} x ids µs of CPU), median of {} rounds.\n\
                 # SQLite runs in the process: its `servers` ({}) are the process's cores ({}), which this work shares,\n\
                 # time-sliced by the kernel with the queries (processor sharing), not queued ahead of them.",
                crate::app_cpu::BURST,
                crate::app_cpu::WIDTH.as_millis(),
                c.query_base_us,
                c.query_per_key_us,
                c.bursts.len(),
                self.servers,
                c.cores
            );
            let _ = writeln!(
                s,
                "# The driver's CPU through the last stretch before each deadline (the core's timer: DRIVER_TIMER_US in demo/src/calibrate.rs).\n\
                 [cpu]\nrequest_us = {:.2}\ndirect_request_us = {:.2}\ntimer_us = {DRIVER_TIMER_US:.0}\nsharing = \"processor\"",
                c.request_us, c.direct_request_us
            );
        }
        s
    }

    /// Writes [`scenario_toml`](CostModel::scenario_toml) to `path`.
    ///
    /// # Errors
    ///
    /// If the file cannot be written.
    pub fn write_scenario(&self, path: &Path, name: &str, trace: &str, provenance: &str, driver: Option<&DriverModel>) -> Result<()> {
        std::fs::write(path, self.scenario_toml(name, trace, provenance, driver)).with_context(|| format!("writing {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(concurrency: u32, keys: u32, mean_ms: f64) -> CostPoint {
        CostPoint {
            concurrency,
            keys,
            samples: 100,
            mean_ms,
            round_means_ms: vec![mean_ms],
            cv: 0.2,
            log_spread: 0.3,
            cpu_us: None,
            pool_wait_ms: 0.0,
        }
    }

    #[test]
    fn a_line_is_recovered_exactly() {
        let (a, b) = least_squares(&[(1.0, 0.06), (10.0, 0.15), (100.0, 1.05)]);
        assert!((a - 0.05).abs() < 1e-12 && (b - 0.01).abs() < 1e-12, "{a} {b}");
    }

    #[test]
    fn the_applications_cpu_is_the_bursts_cpu_less_their_queries() {
        use crate::app_cpu::Burst;
        // Single-client cells on the line 20 + 5 × ids µs of CPU per query; a batched burst of
        // 200 requests in 4 queries of 200 ids in all, 3.0 ms of CPU: its queries used
        // 4 × 20 + 200 × 5 = 1,080 µs, so 1,920 µs over 200 requests, 9.6 µs each. A direct
        // burst of 200 single-id queries in 6.0 ms: 6,000 / 200 − 25 = 5 µs each.
        let cell = |k: u32| CostPoint { cpu_us: Some(20.0 + 5.0 * f64::from(k)), ..point(1, k, 1.0) };
        let points = vec![cell(1), cell(10), cell(100), point(2, 1, 1.0)];
        let batched = Burst { requests: 200, queries: 4, keys: 200, cpu_ms: 3.0, span_ms: 3.0 };
        let direct = Burst { requests: 200, queries: 200, keys: 200, cpu_ms: 6.0, span_ms: 3.0 };
        let c = app_cpu(&points, vec![(batched, direct)]).expect("measured");
        assert!((c.query_base_us - 20.0).abs() < 1e-9 && (c.query_per_key_us - 5.0).abs() < 1e-9, "{c:?}");
        assert!((c.request_us - 9.6).abs() < 1e-9 && (c.direct_request_us - 5.0).abs() < 1e-9, "{c:?}");
        // Less CPU than its queries' (a burst on a quiet machine): none left, not a negative.
        let quiet = Burst { cpu_ms: 0.5, ..batched };
        assert_eq!(app_cpu(&points, vec![(quiet, direct)]).unwrap().request_us, 0.0);
        // No burst, or no CPU per cell: nothing measured.
        assert!(app_cpu(&points, Vec::new()).is_none());
        assert!(app_cpu(&[point(1, 1, 1.0), point(1, 10, 1.0)], vec![(batched, direct)]).is_none());
    }

    #[test]
    fn the_median_takes_the_middle() {
        assert_eq!(median(vec![0.7, 0.1, 0.2]), 0.2);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(Vec::new()).is_nan());
    }

    #[test]
    fn the_relative_fit_keeps_the_single_key_cost() {
        // 40 µs + 3 µs per id, the 1,000-id point 10 % high (noise): an ordinary fit moves
        // the base far off; the relative fit keeps it near the single-key cost.
        let pts = vec![point(1, 1, 0.043), point(1, 10, 0.070), point(1, 200, 0.640), point(1, 1000, 3.344)];
        let m = fit("sqlite", 4, pts).unwrap();
        assert!((m.base_ms - 0.040).abs() < 0.004, "{}", m.base_ms);
        let (ols_base, _) = least_squares(&[(1.0, 0.043), (10.0, 0.070), (200.0, 0.640), (1000.0, 3.344)]);
        assert!((ols_base - 0.040).abs() > (m.base_ms - 0.040).abs(), "{ols_base} vs {}", m.base_ms);
    }

    #[test]
    fn contention_is_the_slowdown_per_extra_query() {
        // Every level runs at once (4 servers) and every query is 1.2x as slow per extra one.
        let pts = [1u32, 100]
            .iter()
            .flat_map(|&k| {
                let s = 0.05 + 0.001 * f64::from(k);
                (1..=4).map(move |n| point(n, k, s * (1.0 + 0.2 * f64::from(n - 1))))
            })
            .collect();
        let m = fit("sqlite", 4, pts).unwrap();
        assert!((m.base_ms - 0.05).abs() < 1e-9 && (m.per_key_ms - 0.001).abs() < 1e-9);
        assert_eq!(m.servers, 4);
        assert!((m.contention - 0.2).abs() < 1e-9, "{}", m.contention);
        assert_eq!(m.lognormal_sigma, 0.3);
    }

    #[test]
    fn contention_by_size_is_recovered() {
        // Three places; a query's base contends 0.3 per extra running query, its per-key part
        // 1.2: small queries slow each other less than large ones. One factor cannot fit both.
        let (base, per_key) = (0.025, 0.0036);
        let pts = [1u32, 10, 50, 200, 1000]
            .iter()
            .flat_map(|&k| {
                let s = base + per_key * f64::from(k);
                let c = sized_contention(0.3, 1.2, base, per_key, k);
                (1..=4).map(move |n| point(n, k, s * closed_loop_ratio(n, 3, c)))
            })
            .collect();
        let m = fit("sqlite", 4, pts).unwrap();
        assert_eq!(m.servers, 3, "{:?}", m.server_fits);
        assert!((m.contention - 0.3).abs() < 0.002 && (m.per_key_contention - 1.2).abs() < 0.002, "{:?}", m.server_fits);
        let f = m.server_fits[2];
        assert!(f.mean_abs_log_error < 1e-3 && f.one_factor.1 > 0.05, "{f:?}");
        // What the simulator is told.
        let text = m.scenario_toml("db-sqlite", "trace.csv", "test", None);
        let s = busline_sim::Scenario::parse_with(&text, Path::new("."), &[]).unwrap();
        assert!((s.db.contention - 0.3).abs() < 0.002 && (s.db.per_key_contention.unwrap() - 1.2).abs() < 0.002);
    }

    #[test]
    fn two_cores_show_as_two_servers() {
        // Two places, a 10 % slow-down when both run, and beyond two the clients queue:
        // 1, 1.1, 1.65, 2.2 times the time alone. One outlier cell does not move the choice.
        let mut pts: Vec<CostPoint> = [1u32, 10, 100]
            .iter()
            .flat_map(|&k| {
                let s = 0.05 + 0.001 * f64::from(k);
                (1..=4).map(move |n| point(n, k, s * closed_loop_ratio(n, 2, 0.1)))
            })
            .collect();
        pts.iter_mut().find(|p| p.concurrency == 4 && p.keys == 10).unwrap().mean_ms *= 3.0;
        let m = fit("sqlite", 4, pts).unwrap();
        assert_eq!(m.servers, 2, "{:?}", m.server_fits);
        assert!((m.contention - 0.1).abs() < 0.05, "{}", m.contention);
        // The runner-up is the best of the other `servers`, and its overrides put it in.
        let r = m.runner_up().expect("four candidates");
        assert_ne!(r.servers, m.servers);
        let chosen = m.server_fits.iter().find(|f| f.servers == m.servers).unwrap();
        assert!(m.server_fits.iter().filter(|f| f.servers != m.servers).all(|f| f.mean_abs_log_error >= r.mean_abs_log_error));
        assert!(r.mean_abs_log_error >= chosen.mean_abs_log_error);
        assert_eq!(m.runner_up_overrides()[0], format!("db.servers={}", r.servers));
    }

    #[test]
    fn a_wake_up_counts_only_after_the_database_was_idle() {
        // Queries (start, end) in µs: 0-50; 60-90 (idle 10 µs: not counted); 300-380 (idle
        // 210 µs: 80 − 30 = 50 µs); 310-340 started while 300-380 ran (not counted); 1000-1020
        // (idle 620 µs, 20 µs: faster than hot, 0).
        let t0 = Instant::now();
        let at = |us: u64| t0 + Duration::from_micros(us);
        let spans = [(at(0), at(50)), (at(60), at(90)), (at(300), at(380)), (at(310), at(340)), (at(1000), at(1020))];
        let w = wake_ups(&spans, 0.030);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!((w[0] - 50.0).abs() < 1e-6 && w[1] == 0.0, "{w:?}");
    }

    #[test]
    fn the_scenario_parses_in_the_simulator() {
        let m = fit("sqlite", 4, vec![point(1, 1, 0.05), point(1, 10, 0.06)]).unwrap();
        let text = m.scenario_toml("db-sqlite", "trace.csv", "test", None);
        let s = busline_sim::Scenario::parse_with(&text, Path::new("."), &["policy.kind=car".into()]).unwrap();
        assert_eq!(s.db.servers, 4);
        assert_eq!(s.limits().max_in_flight, 4);
        assert!(s.driver.is_instant());
        let delay = |base: f64| crate::reaction::Delay::of((0..100).map(|i| base + f64::from(i)).collect()).unwrap();
        let d = DriverModel {
            reaction: delay(20.0),
            completion_reaction: None,
            busy_reaction: None,
            timer_reaction: delay(5.0),
            launch: delay(1.0),
            answer: delay(3.0),
            answer_per_caller_us: 0.75,
            answer_raw: delay(3.0),
            window_ms: 0.5,
            requests: 100,
        };
        let text = m.scenario_toml("db-sqlite", "trace.csv", "test", Some(&d));
        let s = busline_sim::Scenario::parse_with(&text, Path::new("."), &[]).unwrap();
        assert_eq!(s.driver.reaction_us.len(), crate::reaction::QUANTILES);
        assert_eq!((s.driver.reaction_us[0], s.driver.timer_reaction_us[0], s.driver.launch_us[20]), (20.0, 5.0, 99.0));
        assert_eq!((s.driver.answer_us[0], s.driver.answer_per_caller_us), (3.0, 0.75));
        assert!(s.driver.wake_us.is_empty(), "no wake-up measured, none written");
        let woken = CostModel { wake: Some(delay(15.0)), ..m };
        let s = busline_sim::Scenario::parse_with(&woken.scenario_toml("db-sqlite", "trace.csv", "test", Some(&d)), Path::new("."), &[]).unwrap();
        assert_eq!((s.driver.wake_us[0], s.driver.wake_after_us), (15.0, WAKE_AFTER_US));
        assert!(s.cpu.is_none(), "no application CPU measured, no [cpu]");
        // With it measured: the work per request, shared with the queries, and the driver's timer.
        use crate::app_cpu::Burst;
        let cell = |k: u32| CostPoint { cpu_us: Some(20.0 + 5.0 * f64::from(k)), ..point(1, k, 1.0) };
        let batched = Burst { requests: 200, queries: 4, keys: 200, cpu_ms: 3.0, span_ms: 3.0 };
        let direct = Burst { requests: 200, queries: 200, keys: 200, cpu_ms: 6.0, span_ms: 3.0 };
        let app_cpu = app_cpu(&[cell(1), cell(10)], vec![(batched, direct)]);
        let busy = CostModel { app_cpu, ..woken };
        let s = busline_sim::Scenario::parse_with(&busy.scenario_toml("db-sqlite", "trace.csv", "test", Some(&d)), Path::new("."), &[]).unwrap();
        let c = s.cpu.expect("[cpu] written");
        assert_eq!((c.request_us, c.direct_request_us, c.timer_us), (9.6, Some(5.0), DRIVER_TIMER_US));
        assert_eq!(c.sharing, busline_sim::scenario::CpuSharing::Processor);
    }
}
