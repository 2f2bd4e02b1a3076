//! Measuring the batcher's driver: how long it takes to act on the policy's decision.
//!
//! In the simulator a bus leaves the instant the policy releases it. A real batcher's driver
//! is a tokio task: the arrival that makes a bus due (or the deadline that closes a window)
//! must wake it, and it must be scheduled, before it seals the bus; callers that arrive
//! meanwhile still board (natural batching even waits a few rounds of the runtime for them
//! while the bus grows, `core/src/driver/mod.rs`). Then the batch function's future is spawned
//! as a task of its own and runs when a worker polls it. Both delays are measured here, on
//! this machine, with the demo's runtime and batcher settings, in front of a mock backend:
//!
//! - **The mock.** `max_in_flight` threads, one per pooled connection as sqlx runs SQLite's,
//!   each taking one query at a time and spinning for the database's calibrated time alone
//!   (`base + per_key × ids`), so the driver competes for the cores much as it does in the
//!   replay; no database is touched.
//! - **The load.** A burst of the demo's shape (its own seed, so not the demo's trace): 0.3 s
//!   of a 1,000/s Poisson background, two of the article's spikes (200 requests within 3 ms)
//!   and a 50 ms surge at 10,000/s, replayed open loop as the replay's injector does (a task
//!   spawned per request from a plain thread).
//! - **Reaction** (a bus due on arrival): natural batching; for each bus whose first passenger
//!   found nothing in flight (so the policy released it on that arrival), seal − that
//!   passenger's call.
//! - **After a deadline**: a fixed window `W`; for each bus with an in-flight place free at its
//!   deadline (so the deadline released it), seal − the first passenger's call − `W`.
//! - **Launch**: every bus, its future's first poll − the seal (nobody boards any more).
//! - **Way back**: every request, its caller holding the answer − its bus's end (the batch
//!   function's future returning): the outcome published and the callers woken in the order
//!   they boarded, each a task a worker must run. So it grows with the caller's place `k` in its
//!   bus: a line `a + b k` is fitted by least squares over every request, `b` is the
//!   scenario's `answer_per_caller_us`, and the residuals `back − b k` are its `answer_us`
//!   table. The mock answers each id with the demo's `User` (two strings), so a caller's share
//!   of the way back (cloning its value) costs what it does in the replay.
//!
//! "Seal" is when the driver calls the batch function (it seals the bus just before, in the
//! same step); the function notes the instant synchronously and again in its future.
//!
//! Each is written as an empirical distribution: 21 quantiles at 5 % steps (the simulator's
//! `[driver]` tables, drawn by linear interpolation between them). The slowest 1 % of samples
//! is left out first: on a shared machine they are another process's time slice (milliseconds),
//! and one of them would weigh in a 5 % step of the table as much as a hundred ordinary ones.
//! The simulator draws each delay independently of the load at that moment; the tables mix the
//! quiet background's buses with the spikes' (see the report for what that leaves out).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};
use busline::{Batcher, Policy};
use indicatif::ProgressBar;
use serde::Serialize;
use tokio::sync::oneshot;

use crate::calibrate::{CostModel, least_squares};
use crate::db::User;
use crate::trace::{Arrival, Burst, Spike, TraceSpec};

/// Quantiles per table: 0 %, 5 %, ..., 100 % (of the samples without their slowest 1 %).
pub const QUANTILES: usize = 21;

/// What to measure.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The load replayed under each policy.
    pub trace: TraceSpec,
    /// The fixed window of the deadline measurement.
    pub window: Duration,
    /// The batchers' `max_in_flight`, and the mock's connections.
    pub max_in_flight: usize,
    /// The mock query's time alone: fixed part and per id.
    pub base: Duration,
    /// See `base`.
    pub per_key: Duration,
}

impl Plan {
    /// The demo's shape (see the module docs) against the database's calibrated cost, a 0.5 ms
    /// window (the demo's middle one): about 1,200 requests per policy, 0.7 s in all.
    pub fn demo(model: &CostModel, users: u32) -> Plan {
        Plan {
            trace: TraceSpec {
                seed: 31,
                users,
                duration_s: 0.3,
                background_per_s: 1000.0,
                spikes: vec![Spike { start_s: 0.05, requests: 200, width_ms: 3.0 }, Spike { start_s: 0.25, requests: 200, width_ms: 3.0 }],
                bursts: vec![Burst { start_s: 0.12, duration_s: 0.05, rate_per_s: 10_000.0 }],
            },
            window: Duration::from_micros(500),
            max_in_flight: model.pool_size as usize,
            base: Duration::from_secs_f64(model.base_ms / 1e3),
            per_key: Duration::from_secs_f64(model.per_key_ms / 1e3),
        }
    }

    /// Requests sent in all: what a progress bar counts.
    pub fn steps(&self) -> u64 {
        2 * self.trace.generate().len() as u64
    }
}

/// One measured delay: its table and a summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delay {
    /// 21 quantiles at 5 % steps, µs, of the samples without their slowest 1 %.
    pub quantiles_us: Vec<f64>,
    /// Mean of those samples, µs.
    pub mean_us: f64,
    /// Samples measured (before the slowest 1 % is left out).
    pub samples: usize,
    /// The largest sample, µs (left out of the table).
    pub max_us: f64,
}

impl Delay {
    /// The table of `samples_us` (see the module docs).
    ///
    /// # Errors
    ///
    /// If there are no samples.
    pub fn of(mut samples_us: Vec<f64>) -> Result<Delay> {
        ensure!(!samples_us.is_empty(), "no samples");
        samples_us.sort_unstable_by(f64::total_cmp);
        let n = samples_us.len();
        let max_us = samples_us[n - 1];
        let kept = &samples_us[..(n - n / 100).max(1)];
        let q = |p: f64| kept[((kept.len() - 1) as f64 * p).round() as usize];
        let quantiles_us = (0..QUANTILES).map(|i| q(i as f64 / (QUANTILES - 1) as f64)).collect();
        Ok(Delay { quantiles_us, mean_us: kept.iter().sum::<f64>() / kept.len() as f64, samples: n, max_us })
    }

    /// The quantile at `p` (a multiple of 0.05), µs.
    pub fn at(&self, p: f64) -> f64 {
        self.quantiles_us[(p * (QUANTILES - 1) as f64).round() as usize]
    }
}

/// The driver's delays as measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriverModel {
    /// Release to seal when the bus is due on an arrival (natural).
    pub reaction: Delay,
    /// Release to seal when the bus is due on an arrival with other buses in flight (natural):
    /// for the report (`None` without such a bus).
    pub busy_reaction: Option<Delay>,
    /// Release to seal when the bus is due on a completion (natural, every in-flight place was
    /// taken when its first passenger called): for the report (`None` without such a bus).
    pub completion_reaction: Option<Delay>,
    /// Deadline to seal (a fixed window).
    pub timer_reaction: Delay,
    /// Seal to the batch future's first poll, over both policies.
    pub launch: Delay,
    /// The way back less `answer_per_caller_us` per caller woken before, over both policies
    /// (the scenario's `answer_us`).
    pub answer: Delay,
    /// The way back's growth per caller woken before in the same bus, µs (least squares).
    pub answer_per_caller_us: f64,
    /// The way back itself, per request, over both policies (for the report).
    pub answer_raw: Delay,
    /// The window of the deadline measurement.
    pub window_ms: f64,
    /// Requests replayed per policy.
    pub requests: usize,
}

/// One bus as its batch function saw it.
#[derive(Debug, Clone)]
pub struct Bus {
    /// The batch function's call (the driver sealed the bus just before).
    pub sealed: Instant,
    /// Its future's first poll.
    pub started: Instant,
    /// Its future's end.
    pub finished: Instant,
    /// Its passengers: their indices in the trace.
    pub passengers: Vec<u64>,
}

/// A query for the mock: its cost, and where to say it is done. `None` stops a connection.
type Job = Option<(Duration, oneshot::Sender<()>)>;

/// The mock database: `connections` threads, each spinning one query at a time for its cost.
struct MockDb {
    jobs: mpsc::Sender<Job>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl MockDb {
    fn new(connections: usize) -> MockDb {
        let (jobs, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let threads = (0..connections.max(1))
            .map(|_| {
                let rx = Arc::clone(&rx);
                std::thread::spawn(move || {
                    loop {
                        let job = rx.lock().expect("mock queue lock").recv();
                        let Ok(Some((cost, done))) = job else { return };
                        let until = Instant::now() + cost;
                        while Instant::now() < until {
                            std::hint::spin_loop();
                        }
                        let _ = done.send(());
                    }
                })
            })
            .collect();
        MockDb { jobs, threads }
    }

    /// Stops every connection (the batch function still holds a sender: dropping ours would
    /// not end them).
    fn close(self) {
        for _ in &self.threads {
            let _ = self.jobs.send(None);
        }
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Replays `plan.trace` under `policy` against the mock.
async fn replay(policy: Policy, plan: &Plan, progress: Option<&ProgressBar>) -> Result<Replayed> {
    let db = MockDb::new(plan.max_in_flight);
    let buses = Arc::new(Mutex::new(Vec::<Bus>::new()));
    let batcher: Batcher<i64, User, Infallible> = {
        let (jobs, buses, base, per_key) = (db.jobs.clone(), Arc::clone(&buses), plan.base, plan.per_key);
        Batcher::builder(move |ids: Vec<i64>| {
            let sealed = Instant::now();
            let (jobs, buses) = (jobs.clone(), Arc::clone(&buses));
            async move {
                let started = Instant::now();
                let (done, answered) = oneshot::channel();
                let cost = base + per_key * u32::try_from(ids.len()).unwrap_or(u32::MAX);
                if jobs.send(Some((cost, done))).is_ok() {
                    let _ = answered.await;
                }
                let finished = Instant::now();
                let passengers = ids.iter().map(|&id| id as u64).collect();
                buses.lock().expect("buses lock").push(Bus { sealed, started, finished, passengers });
                Ok::<_, Infallible>(ids.into_iter().map(|id| (id, User::expected(id))).collect::<HashMap<_, _>>())
            }
        })
        .policy(policy)
        .max_batch_size(1024)
        .max_in_flight(plan.max_in_flight)
        .build()
        .map_err(|e| anyhow!("batcher: {e}"))?
    };
    // Warm-up, unmeasured: the driver, its timer thread and the mock are running.
    for id in 0..8i64 {
        batcher.load(-1 - id).await.map_err(|e| anyhow!("warm-up: {e}"))?;
    }
    buses.lock().expect("buses lock").clear();
    let trace: Vec<Arrival> = plan.trace.generate();
    let n = trace.len();
    let base = Instant::now();
    let called: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let answered: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let start = base + Duration::from_millis(2);
    let at = trace.iter().map(|a| Duration::from_nanos(a.at_ns)).collect();
    let tasks = {
        let (called, answered, b) = (Arc::clone(&called), Arc::clone(&answered), batcher.clone());
        crate::replay::inject(start, at, progress.cloned(), move |i| {
            let (called, answered, b) = (Arc::clone(&called), Arc::clone(&answered), b.clone());
            async move {
                let t0 = Instant::now();
                called[i].store(ns(t0.saturating_duration_since(base)), Ordering::Relaxed);
                let got = b.load(i as i64).await;
                answered[i].store(ns(base.elapsed()), Ordering::Relaxed);
                got.map(|v| v == Some(User::expected(i as i64)))
            }
        })
        .await?
    };
    for t in tasks {
        let right = t.await.context("request task panicked")?.map_err(|e| anyhow!("mock request failed: {e}"))?;
        ensure!(right, "the mock answered a request with another's value");
    }
    batcher.shutdown().await;
    db.close();
    let at = |xs: &[AtomicU64]| xs.iter().map(|c| base + Duration::from_nanos(c.load(Ordering::Relaxed))).collect();
    let buses = std::mem::take(&mut *buses.lock().expect("buses lock"));
    Ok(Replayed { called: at(&called), answered: at(&answered), buses })
}

/// A mock replay: each request's call and answer, and every bus.
struct Replayed {
    called: Vec<Instant>,
    answered: Vec<Instant>,
    buses: Vec<Bus>,
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Buses sealed and not yet finished at `t` (the batcher's in-flight count, as its batch
/// function sees it).
fn in_flight(buses: &[Bus], t: Instant) -> usize {
    buses.iter().filter(|b| b.sealed <= t && t < b.finished).count()
}

/// Each bus's first passenger's call.
fn opened(called: &[Instant], bus: &Bus) -> Option<Instant> {
    bus.passengers.iter().filter_map(|&i| called.get(i as usize)).min().copied()
}

/// The reaction of each natural bus released on its first passenger's arrival (nothing in
/// flight then): seal − that call, µs.
pub fn reactions(called: &[Instant], buses: &[Bus]) -> Vec<f64> {
    buses
        .iter()
        .filter_map(|b| {
            let open = opened(called, b)?;
            (in_flight(buses, open) == 0).then(|| us(b.sealed.saturating_duration_since(open)))
        })
        .collect()
}

/// The reaction of each natural bus released on its first passenger's arrival while other
/// buses were in flight (fewer than `max_in_flight`: a place was free): seal − that call, µs.
/// Under a burst the runtime then has callers and answers to run; the simulator draws these
/// from the table of buses that found nothing in flight (`reactions`).
pub fn busy_reactions(called: &[Instant], buses: &[Bus], max_in_flight: usize) -> Vec<f64> {
    buses
        .iter()
        .filter_map(|b| {
            let open = opened(called, b)?;
            let n = in_flight(buses, open);
            (n > 0 && n < max_in_flight).then(|| us(b.sealed.saturating_duration_since(open)))
        })
        .collect()
}

/// The reaction of each natural bus released by a completion: its first passenger found
/// `max_in_flight` buses in flight, so it left when the first of them ended; seal − that end,
/// µs. (The simulator draws this from the table of releases by an arrival, `reactions`.)
pub fn completion_reactions(called: &[Instant], buses: &[Bus], max_in_flight: usize) -> Vec<f64> {
    buses
        .iter()
        .filter_map(|b| {
            let open = opened(called, b)?;
            if in_flight(buses, open) < max_in_flight {
                return None;
            }
            let freed = buses.iter().map(|o| o.finished).filter(|&f| f > open && f <= b.sealed).min()?;
            Some(us(b.sealed.saturating_duration_since(freed)))
        })
        .collect()
}

/// The lateness of each bus of a `window` released by its deadline (fewer than `max_in_flight`
/// in flight then): seal − first call − `window`, µs.
pub fn timer_reactions(called: &[Instant], buses: &[Bus], window: Duration, max_in_flight: usize) -> Vec<f64> {
    buses
        .iter()
        .filter_map(|b| {
            let deadline = opened(called, b)? + window;
            (in_flight(buses, deadline) < max_in_flight).then(|| us(b.sealed.saturating_duration_since(deadline)))
        })
        .collect()
}

/// Each bus's launch: its future's first poll − its seal, µs.
pub fn launches(buses: &[Bus]) -> Vec<f64> {
    buses.iter().map(|b| us(b.started.saturating_duration_since(b.sealed))).collect()
}

/// Each request's way back (its answer − its bus's end, µs) with its place in its bus (callers
/// woken before it: they are woken in the order they boarded).
pub fn ways_back(answered: &[Instant], buses: &[Bus]) -> Vec<(usize, f64)> {
    buses
        .iter()
        .flat_map(|b| {
            b.passengers
                .iter()
                .enumerate()
                .filter_map(|(k, &i)| Some((k, us(answered.get(i as usize)?.saturating_duration_since(b.finished)))))
        })
        .collect()
}

/// The way back as the scenario carries it: `(b, residuals)` with `b` the least-squares
/// growth per caller woken before (µs, at least 0) and the residuals `back − b k` (at least 0).
pub fn way_back_line(samples: &[(usize, f64)]) -> (f64, Vec<f64>) {
    let xy: Vec<(f64, f64)> = samples.iter().map(|&(k, back)| (k as f64, back)).collect();
    let (_, slope) = least_squares(&xy);
    let b = if slope.is_finite() { slope.max(0.0) } else { 0.0 };
    (b, samples.iter().map(|&(k, back)| (back - b * k as f64).max(0.0)).collect())
}

/// Measures the driver's delays (see the module docs); `progress` advances by one per request.
///
/// # Errors
///
/// If the batcher cannot be built, a request fails, or a delay got no sample.
pub async fn measure(plan: &Plan, progress: Option<&ProgressBar>) -> Result<DriverModel> {
    let natural = replay(Policy::natural(), plan, progress).await?;
    let reaction = reactions(&natural.called, &natural.buses);
    let windowed = replay(Policy::window(plan.window), plan, progress).await?;
    let timer_reaction = timer_reactions(&windowed.called, &windowed.buses, plan.window, plan.max_in_flight);
    let mut launch = launches(&natural.buses);
    launch.extend(launches(&windowed.buses));
    let mut back = ways_back(&natural.answered, &natural.buses);
    back.extend(ways_back(&windowed.answered, &windowed.buses));
    let (answer_per_caller_us, residuals) = way_back_line(&back);
    Ok(DriverModel {
        reaction: Delay::of(reaction).context("the reaction on arrival")?,
        completion_reaction: Delay::of(completion_reactions(&natural.called, &natural.buses, plan.max_in_flight)).ok(),
        busy_reaction: Delay::of(busy_reactions(&natural.called, &natural.buses, plan.max_in_flight)).ok(),
        timer_reaction: Delay::of(timer_reaction).context("the reaction after a deadline")?,
        launch: Delay::of(launch).context("the launch")?,
        answer: Delay::of(residuals).context("the way back")?,
        answer_per_caller_us,
        answer_raw: Delay::of(back.into_iter().map(|(_, b)| b).collect()).context("the way back")?,
        window_ms: plan.window.as_secs_f64() * 1e3,
        requests: natural.called.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_leaves_out_the_slowest_percent() {
        // 1..=100 µs and one 5 ms preemption: 1 % of 101 samples is one, the preemption; the
        // table spans 1..=100 and the maximum is kept apart.
        let mut xs: Vec<f64> = (1..=100).map(f64::from).collect();
        xs.push(5000.0);
        let d = Delay::of(xs).unwrap();
        assert_eq!(d.quantiles_us.len(), QUANTILES);
        assert_eq!(d.quantiles_us[0], 1.0);
        assert_eq!(d.at(1.0), 100.0);
        assert_eq!(d.at(0.5), 51.0);
        assert_eq!(d.max_us, 5000.0);
        assert!(d.quantiles_us.windows(2).all(|w| w[0] <= w[1]));
        assert!(Delay::of(Vec::new()).is_err());
    }

    #[test]
    fn a_bus_counts_only_when_its_policy_released_it() {
        // Requests at 0, 10 and 20 µs; bus A (requests 0, 1) sealed at 15 µs and running to
        // 100 µs, bus B (request 2) sealed at 27 µs while A is in flight.
        let t0 = Instant::now();
        let at = |us: u64| t0 + Duration::from_micros(us);
        let called = [at(0), at(10), at(20)];
        let bus = |sealed, finished, passengers: Vec<u64>| Bus { sealed: at(sealed), started: at(sealed + 2), finished: at(finished), passengers };
        let buses = [bus(15, 100, vec![0, 1]), bus(27, 120, vec![2])];
        // Natural: only A found nothing in flight when its first passenger called.
        assert_eq!(reactions(&called, &buses), vec![15.0]);
        // A 5 µs window: A's deadline 5 µs, sealed 10 µs late; B's deadline 25 µs found one in
        // flight, which counts with two places and not with one.
        assert_eq!(timer_reactions(&called, &buses, Duration::from_micros(5), 2), vec![10.0, 2.0]);
        assert_eq!(timer_reactions(&called, &buses, Duration::from_micros(5), 1), vec![10.0]);
        assert_eq!(launches(&buses), vec![2.0, 2.0]);
        // With one place, B's passenger (20 µs) found A in flight: released by A's end at
        // 100 µs; sealed at 27 µs here, before that end, so no release by a completion is seen.
        assert!(completion_reactions(&called, &buses, 1).is_empty());
        let late = [bus(15, 100, vec![0, 1]), bus(112, 200, vec![2])];
        assert_eq!(completion_reactions(&called, &late, 1), vec![12.0]);
        // With two places B never waited for a completion.
        assert!(completion_reactions(&called, &late, 2).is_empty());
        // With two places B's passenger found A in flight and a place free: B's reaction, 7 µs,
        // is a busy one; A's (nothing in flight) is not.
        assert_eq!(busy_reactions(&called, &buses, 2), vec![7.0]);
        assert!(busy_reactions(&called, &buses, 1).is_empty());
    }

    #[test]
    fn the_way_back_grows_with_the_callers_woken_before() {
        // Bus A (requests 0, 1, 2) ends at 100 µs; its callers hold their answers at 105,
        // 107 and 109 µs: 5 µs + 2 µs per caller before. Bus B (request 3) ends at 200 µs and
        // its caller holds the answer at 206 µs.
        let t0 = Instant::now();
        let at = |us: u64| t0 + Duration::from_micros(us);
        let bus = |finished, passengers: Vec<u64>| Bus { sealed: at(0), started: at(1), finished: at(finished), passengers };
        let buses = [bus(100, vec![0, 1, 2]), bus(200, vec![3])];
        let answered = [at(105), at(107), at(109), at(206)];
        let back = ways_back(&answered, &buses);
        assert_eq!(back, vec![(0, 5.0), (1, 7.0), (2, 9.0), (0, 6.0)]);
        let (b, residuals) = way_back_line(&back);
        // The line through them: the three of A on 5 + 2k, B one above its start.
        assert!(b > 1.5 && b < 2.1, "{b}");
        assert_eq!(residuals.len(), 4);
        assert!(residuals.iter().all(|&r| (4.0..=6.5).contains(&r)), "{residuals:?}");
        // One caller per bus: nothing to grow with.
        assert_eq!(way_back_line(&[(0, 3.0), (0, 5.0)]), (0.0, vec![3.0, 5.0]));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_request_is_answered_and_every_bus_measured() {
        let plan = Plan {
            trace: TraceSpec { seed: 3, users: 1000, duration_s: 0.05, background_per_s: 1000.0, spikes: vec![Spike { start_s: 0.02, requests: 50, width_ms: 3.0 }], bursts: Vec::new() },
            window: Duration::from_micros(200),
            max_in_flight: 2,
            base: Duration::from_micros(20),
            per_key: Duration::from_micros(1),
        };
        let n = plan.trace.generate().len();
        let m = measure(&plan, None).await.unwrap();
        assert_eq!(m.requests, n);
        // Every request rode exactly one bus: at most one bus each, and the launch has one
        // sample per bus of both policies.
        assert!(m.launch.samples >= 2 && m.launch.samples <= 2 * n, "{m:?}");
        assert!(m.reaction.samples >= 1 && m.timer_reaction.samples >= 1, "{m:?}");
        assert_eq!(m.answer_raw.samples, 2 * n, "every request's way back, under both policies");
        assert!(m.answer_per_caller_us >= 0.0, "{m:?}");
        for d in [&m.reaction, &m.timer_reaction, &m.launch, &m.answer, &m.answer_raw] {
            assert!(d.quantiles_us.iter().all(|q| q.is_finite() && *q >= 0.0), "{d:?}");
        }
    }
}
