//! The load generator: replays an arrival trace, open loop, against one contender.
//!
//! A contender is how `get_user_info(id)` reaches the database: a direct call (car: one query
//! per request, each on its own pooled connection) or a [`busline::Batcher`] under one
//! [`Policy`], whose batch function is the same query with the whole batch's ids.
//!
//! # Open loop
//!
//! An injector thread sleeps until each arrival's instant and spawns that request as its own
//! tokio task, as a server spawns a task per incoming request: a slow database does not slow the
//! arrivals down (no coordinated omission). A request's latency runs from the moment its task
//! calls `get_user_info` to the answer; that moment is also recorded as its *actual* arrival,
//! which the simulator replays (the injector's sleep is late by tens of µs, and the report
//! shows by how much).
//!
//! # What is counted
//!
//! The database's own count of executed queries (before and after, see
//! [`Database::executed_queries`]); the calls our code made (`sent`, for a cross-check); every
//! answer is compared with the row the fill wrote, so a wrong or missing user is counted, not
//! hidden; the time each query waited for a pooled connection.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use busline::{Batcher, Policy};
use busline_sim::stats::Histogram;
use indicatif::ProgressBar;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::db::{Counted, Database, User};
use crate::reaction::{self, Bus, Delay};
use crate::trace::Arrival;

/// How requests reach the database.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Contender {
    /// Direct calls: one query per request (car).
    Direct,
    /// Through a batcher under this policy.
    Batched(Policy),
}

/// A contender with its label in reports.
#[derive(Debug, Clone, PartialEq)]
pub struct ContenderSpec {
    /// `car (direct)`, `window 0.5 ms`, `natural`, ...
    pub label: String,
    /// What it runs.
    pub contender: Contender,
}

/// The gated policy's window and threshold in the demo: the 1 ms budget the adaptive policy
/// gets, waited only from 2 expected passengers on (the simulator's defaults for its gated
/// reference).
pub const GATED_WINDOW: Duration = Duration::from_millis(1);
/// See [`GATED_WINDOW`].
pub const GATED_THRESHOLD: usize = 2;
/// The adaptive policy's latency budget in the demo.
pub const ADAPTIVE_BUDGET: Duration = Duration::from_millis(1);

/// The demo's contenders: direct calls, fixed windows of 0.1, 0.5 and 2 ms, natural, gated and
/// adaptive.
pub fn contenders() -> Vec<ContenderSpec> {
    let c = |label: &str, contender| ContenderSpec { label: label.to_string(), contender };
    let w = |us| Contender::Batched(Policy::window(Duration::from_micros(us)));
    vec![
        c("car (direct)", Contender::Direct),
        c("window 0.1 ms", w(100)),
        c("window 0.5 ms", w(500)),
        c("window 2 ms", w(2000)),
        c("natural", Contender::Batched(Policy::natural())),
        c("gated 1 ms", Contender::Batched(Policy::gated(GATED_WINDOW, GATED_THRESHOLD))),
        c("adaptive 1 ms", Contender::Batched(Policy::adaptive(ADAPTIVE_BUDGET))),
    ]
}

/// What one replay measured.
#[derive(Debug, Clone)]
pub struct Measured {
    /// The contender's label.
    pub label: String,
    /// Requests replayed.
    pub requests: u64,
    /// Requests answered with exactly the row the fill wrote for their id.
    pub correct: u64,
    /// The database's own count of the demo's query during the replay, and its time.
    pub db: Counted,
    /// Queries our code sent (fetch_users calls), for a cross-check with `db`.
    pub sent: u64,
    /// Per request, call to answer, ns.
    pub latency: Histogram,
    /// Per query, time waiting for a pooled connection, ns.
    pub pool_wait: Histogram,
    /// Per request, actual arrival minus the trace's instant, ns (the injector's lateness).
    pub lag: Histogram,
    /// First arrival to last answer, ns.
    pub span_ns: u64,
    /// The actual arrivals (ns from the first), in time order: what the simulator replays.
    pub arrivals: Vec<Arrival>,
    /// A batcher's driver delays during this replay (`None` for direct calls).
    pub driver: Option<ReplayDriver>,
    /// Where each request's latency went.
    pub stages: Stages,
    /// Every request, in trace order: its actual arrival (ns from the replay's start, the
    /// trace's instant 0), its latency and its stages (`None` where its bus was not found):
    /// the segments' table splits them by the part of the trace they arrived in.
    pub rows: Vec<RequestRow>,
    /// The CPU this process used during the replay, and its threads' wait for a core
    /// (`None` where the scheduler's statistics cannot be read).
    pub usage: Option<crate::sched::Usage>,
}

/// Where each request's latency went, per request, ns: the four stages add up to its latency
/// (a request whose bus was not found is left out of every stage).
#[derive(Debug, Clone, Default)]
pub struct Stages {
    /// Call to its bus's seal (the policy's wait and the driver's reaction); 0 for direct calls.
    pub to_seal: Histogram,
    /// Seal (direct calls: the call) to holding a pooled connection (the launch, the pool).
    pub to_connection: Histogram,
    /// Holding the connection to the query's rows decoded (`fetch_users` returning).
    pub query: Histogram,
    /// The query's end to its caller holding the answer (the way back); direct calls: the
    /// caller's own return, nothing in between.
    pub way_back: Histogram,
}

impl Stages {
    /// Adds one request's stages (to seal, to connection, query, way back), ns.
    pub fn record(&mut self, [seal, connection, query, back]: [u64; 4]) {
        self.to_seal.record(seal);
        self.to_connection.record(connection);
        self.query.record(query);
        self.way_back.record(back);
    }

    /// The mean of each stage, ms, in order: to seal, to connection, query, way back.
    pub fn means_ms(&self) -> [f64; 4] {
        [&self.to_seal, &self.to_connection, &self.query, &self.way_back].map(|h| h.mean() / 1e6)
    }
}

/// One request of a replay: see [`Measured::rows`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestRow {
    /// Its call, ns from the replay's start.
    pub at_ns: u64,
    /// Call to answer, ns.
    pub latency_ns: u64,
    /// To seal, to connection, query, way back, ns (as [`Stages`]).
    pub stages: Option<[u64; 4]>,
}

/// The batcher driver's delays as they were in one replay, against the real database (see
/// [`crate::reaction`] for each; a delay its policy does not show is `None`).
#[derive(Debug, Clone)]
pub struct ReplayDriver {
    /// Natural batching: seal − the call of a first passenger who found nothing in flight.
    pub reaction: Option<Delay>,
    /// Natural batching: seal − the call of a first passenger who found other buses in flight
    /// and a place free.
    pub busy_reaction: Option<Delay>,
    /// Natural batching: seal − the end of the bus whose completion released it, for a bus
    /// whose first passenger found every in-flight place taken.
    pub completion_reaction: Option<Delay>,
    /// A fixed window: seal − first call − the window, for buses with a free place then.
    pub timer_reaction: Option<Delay>,
    /// Every bus: its future's first poll − its seal.
    pub launch: Option<Delay>,
    /// Every request: its caller holding the answer − its query's end (the driver publishing
    /// the outcome and the caller's task being woken and polled).
    pub answer: Option<Delay>,
    /// The way back's growth per caller woken before in the same bus, µs (as the calibration
    /// fits it on the mock, [`reaction::way_back_line`]).
    pub answer_per_caller_us: f64,
}

/// One bus of a replay as its batch function saw it.
#[derive(Debug, Clone)]
struct Logged {
    /// The batch function's call.
    sealed: Instant,
    /// Its future's first poll (`fetch_users` asks the pool).
    started: Instant,
    /// The pool handed it a connection.
    acquired: Instant,
    /// `fetch_users` returned.
    finished: Instant,
    ids: Vec<i64>,
}

/// Each bus of a replay, in the order they finished.
type BusLog = Arc<Mutex<Vec<Logged>>>;

impl Measured {
    /// A replay of `rows` alone (every other figure empty), for unit tests of what is computed
    /// from the rows.
    #[cfg(test)]
    pub(crate) fn for_test(rows: Vec<RequestRow>) -> Measured {
        Measured {
            label: "test".into(),
            requests: rows.len() as u64,
            correct: rows.len() as u64,
            db: Counted::default(),
            sent: 0,
            latency: Histogram::new(),
            pool_wait: Histogram::new(),
            lag: Histogram::new(),
            span_ns: 0,
            arrivals: Vec::new(),
            driver: None,
            stages: Stages::default(),
            rows,
            usage: None,
        }
    }

    /// Requests answered per second over the replay.
    pub fn throughput_per_s(&self) -> f64 {
        self.requests as f64 / (self.span_ns.max(1) as f64 / 1e9)
    }

    /// Requests per query the database counted.
    pub fn requests_per_query(&self) -> f64 {
        self.requests as f64 / self.db.queries.max(1) as f64
    }

    /// The database's execution time per query it counted, µs.
    pub fn db_exec_us_per_query(&self) -> f64 {
        self.db.exec_ms * 1e3 / self.db.queries.max(1) as f64
    }
}

#[derive(Debug, Default)]
struct Record {
    arrival_ns: AtomicU64,
    latency_ns: AtomicU64,
    correct: AtomicBool,
    /// Direct calls: the call to holding a connection, and to `fetch_users` returning.
    connected_ns: AtomicU64,
    queried_ns: AtomicU64,
}

/// A direct call's stages: call to connection, call to the query's end.
type DirectStages = Option<(Duration, Duration)>;

#[derive(Debug, Clone)]
enum Target {
    Direct { db: Database, waits: Arc<Mutex<Histogram>>, sent: Arc<AtomicU64> },
    Batched(Batcher<i64, User, sqlx::Error>),
}

impl Target {
    /// The user, and for a direct call its stages (see [`DirectStages`]).
    async fn get_user_info(&self, id: i64) -> (Result<Option<User>, String>, DirectStages) {
        match self {
            Target::Direct { db, waits, sent } => {
                let t0 = Instant::now();
                sent.fetch_add(1, Ordering::Relaxed);
                match db.fetch_users(&[id]).await {
                    Ok(mut f) => {
                        let queried = t0.elapsed();
                        waits.lock().expect("histogram lock").record(nanos(f.pool_wait));
                        (Ok(f.users.remove(&id)), Some((f.pool_wait, queried)))
                    }
                    Err(e) => (Err(e.to_string()), None),
                }
            }
            Target::Batched(b) => (b.load(id).await.map_err(|e| e.to_string()), None),
        }
    }
}

/// The batcher of the demo: `fetch_users` as its batch function, `max_in_flight` batches at
/// once (one per pooled connection), up to 1,024 ids per query.
///
/// # Errors
///
/// If the core rejects the settings, or outside a tokio runtime.
fn batcher(
    db: &Database,
    policy: Policy,
    max_in_flight: usize,
    waits: Arc<Mutex<Histogram>>,
    sent: Arc<AtomicU64>,
    buses: BusLog,
) -> Result<Batcher<i64, User, sqlx::Error>> {
    let db = db.clone();
    Batcher::builder(move |ids: Vec<i64>| {
        let sealed = Instant::now();
        let (db, waits, sent, buses) = (db.clone(), Arc::clone(&waits), Arc::clone(&sent), Arc::clone(&buses));
        async move {
            let started = Instant::now();
            sent.fetch_add(1, Ordering::Relaxed);
            let f = db.fetch_users(&ids).await;
            let finished = Instant::now();
            let acquired = f.as_ref().map_or(finished, |f| started + f.pool_wait);
            buses.lock().expect("bus log lock").push(Logged { sealed, started, acquired, finished, ids });
            let f = f?;
            waits.lock().expect("histogram lock").record(nanos(f.pool_wait));
            Ok(f.users)
        }
    })
    .policy(policy)
    .max_batch_size(1024)
    .max_in_flight(max_in_flight)
    .build()
    .map_err(|e| anyhow!("batcher: {e}"))
}

/// Replays `trace` against `spec` on `db` (batches: at most `max_in_flight` at once). Runs a
/// few unmeasured requests first so every connection and code path is warm; `progress` advances
/// by one per request injected.
///
/// # Errors
///
/// If the database's counters cannot be read or a task panicked. Failed requests are counted
/// (as not `correct`), not errors.
pub async fn replay(
    db: &Database,
    trace: &[Arrival],
    spec: &ContenderSpec,
    max_in_flight: usize,
    progress: Option<&ProgressBar>,
) -> Result<Measured> {
    let waits = Arc::new(Mutex::new(Histogram::new()));
    let sent = Arc::new(AtomicU64::new(0));
    let buses: BusLog = Arc::new(Mutex::new(Vec::new()));
    let target = Arc::new(match spec.contender {
        Contender::Direct => Target::Direct { db: db.clone(), waits: Arc::clone(&waits), sent: Arc::clone(&sent) },
        Contender::Batched(policy) => {
            Target::Batched(batcher(db, policy, max_in_flight, Arc::clone(&waits), Arc::clone(&sent), Arc::clone(&buses))?)
        }
    });
    // Warm-up: one burst as wide as the pool, a few times, unmeasured.
    let mut rng = SmallRng::seed_from_u64(99);
    for _ in 0..8 {
        let calls: Vec<_> = (0..max_in_flight * 4)
            .map(|_| {
                let (t, id) = (Arc::clone(&target), rng.random_range(1..=1000));
                tokio::spawn(async move { t.get_user_info(id).await.0 })
            })
            .collect();
        for c in calls {
            c.await.context("warm-up request panicked")?.map_err(|e| anyhow!("warm-up request failed: {e}"))?;
        }
    }
    *waits.lock().expect("histogram lock") = Histogram::new();
    buses.lock().expect("bus log lock").clear();
    let sent_before = sent.load(Ordering::Relaxed);
    let db_before = db.executed_queries().await?;
    let sched_before = crate::sched::snapshot();

    let records: Arc<Vec<Record>> = Arc::new((0..trace.len()).map(|_| Record::default()).collect());
    let start = Instant::now() + Duration::from_millis(2);
    let at = trace.iter().map(|a| Duration::from_nanos(a.at_ns)).collect();
    let tasks = {
        let (ids, records, target) = (trace.iter().map(|a| a.id).collect::<Vec<_>>(), Arc::clone(&records), Arc::clone(&target));
        inject(start, at, progress.cloned(), move |i| {
            let (target, records, id) = (Arc::clone(&target), Arc::clone(&records), ids[i]);
            async move {
                let t0 = Instant::now();
                let (got, direct) = target.get_user_info(id).await;
                let latency = t0.elapsed();
                let r = &records[i];
                if let Some((connected, queried)) = direct {
                    r.connected_ns.store(nanos(connected), Ordering::Relaxed);
                    r.queried_ns.store(nanos(queried), Ordering::Relaxed);
                }
                r.arrival_ns.store(nanos(t0.saturating_duration_since(start)), Ordering::Relaxed);
                r.latency_ns.store(nanos(latency), Ordering::Relaxed);
                r.correct.store(got == Ok(Some(User::expected(id))), Ordering::Relaxed);
            }
        })
        .await?
    };
    for t in tasks {
        t.await.context("request task panicked")?;
    }
    let usage = crate::sched::usage_since(sched_before);
    if let Target::Batched(b) = &*target {
        b.shutdown().await;
    }
    let db_after = db.executed_queries().await?;

    let mut latency = Histogram::new();
    let mut lag = Histogram::new();
    let mut arrivals = Vec::with_capacity(trace.len());
    let (mut first, mut last, mut correct) = (u64::MAX, 0u64, 0u64);
    for (r, a) in records.iter().zip(trace) {
        let (at, l) = (r.arrival_ns.load(Ordering::Relaxed), r.latency_ns.load(Ordering::Relaxed));
        latency.record(l);
        lag.record(at.saturating_sub(a.at_ns));
        first = first.min(at);
        last = last.max(at + l);
        correct += u64::from(r.correct.load(Ordering::Relaxed));
        arrivals.push(Arrival { at_ns: at, id: a.id });
    }
    arrivals.sort_unstable();
    let (driver, stages, per_request) = match spec.contender {
        Contender::Direct => {
            let mut stages = Stages::default();
            let mut per_request = Vec::with_capacity(records.len());
            for r in records.iter() {
                let (c, q, l) = (r.connected_ns.load(Ordering::Relaxed), r.queried_ns.load(Ordering::Relaxed), r.latency_ns.load(Ordering::Relaxed));
                let row = [0, c, q.saturating_sub(c), l.saturating_sub(q)];
                stages.record(row);
                per_request.push(Some(row));
            }
            (None, stages, per_request)
        }
        Contender::Batched(policy) => {
            let called: Vec<Instant> =
                records.iter().map(|r| start + Duration::from_nanos(r.arrival_ns.load(Ordering::Relaxed))).collect();
            let answered: Vec<Instant> =
                records.iter().zip(&called).map(|(r, &c)| c + Duration::from_nanos(r.latency_ns.load(Ordering::Relaxed))).collect();
            let log = std::mem::take(&mut *buses.lock().expect("bus log lock"));
            let (driver, stages, per_request) = replay_driver(policy, max_in_flight, trace, (&called, &answered), log);
            (Some(driver), stages, per_request)
        }
    };
    let rows = records
        .iter()
        .zip(per_request)
        .map(|(r, stages)| RequestRow {
            at_ns: r.arrival_ns.load(Ordering::Relaxed),
            latency_ns: r.latency_ns.load(Ordering::Relaxed),
            stages,
        })
        .collect();
    let pool_wait = waits.lock().expect("histogram lock").clone();
    Ok(Measured {
        label: spec.label.clone(),
        requests: trace.len() as u64,
        correct,
        db: db_after - db_before,
        sent: sent.load(Ordering::Relaxed) - sent_before,
        latency,
        pool_wait,
        lag,
        span_ns: last.saturating_sub(first),
        arrivals,
        driver,
        stages,
        rows,
        usage,
    })
}

/// The driver's delays in a replay under `policy`: each bus's passengers are found from its
/// ids (for each, the latest request for that id called before the seal: ids repeat across
/// the trace, rarely within a bus), then measured as [`crate::reaction`] measures the mock's.
fn replay_driver(
    policy: Policy,
    max_in_flight: usize,
    trace: &[Arrival],
    (called, answered): (&[Instant], &[Instant]),
    log: Vec<Logged>,
) -> (ReplayDriver, Stages, Vec<Option<[u64; 4]>>) {
    let mut by_id: std::collections::HashMap<i64, Vec<usize>> = std::collections::HashMap::new();
    for (i, a) in trace.iter().enumerate() {
        by_id.entry(a.id).or_default().push(i);
    }
    for requests in by_id.values_mut() {
        requests.sort_unstable_by_key(|&i| called[i]);
    }
    let buses: Vec<Bus> = log
        .iter()
        .map(|l| Bus {
            sealed: l.sealed,
            started: l.started,
            finished: l.finished,
            passengers: l
                .ids
                .iter()
                .filter_map(|id| by_id.get(id)?.iter().rev().find(|&&i| called[i] <= l.sealed).map(|&i| i as u64))
                .collect(),
        })
        .collect();
    let mut stages = Stages::default();
    let mut per_request = vec![None; called.len()];
    for (b, l) in buses.iter().zip(&log) {
        for &i in &b.passengers {
            let i = i as usize;
            let row = [
                nanos(l.sealed.saturating_duration_since(called[i])),
                nanos(l.acquired.saturating_duration_since(l.sealed)),
                nanos(l.finished.saturating_duration_since(l.acquired)),
                nanos(answered[i].saturating_duration_since(l.finished)),
            ];
            stages.record(row);
            per_request[i] = Some(row);
        }
    }
    let table = |xs: Vec<f64>| Delay::of(xs).ok();
    let back = reaction::ways_back(answered, &buses);
    let (answer_per_caller_us, _) = reaction::way_back_line(&back);
    let answer = back.into_iter().map(|(_, b)| b).collect();
    let driver = ReplayDriver {
        reaction: matches!(policy, Policy::Natural).then(|| table(reaction::reactions(called, &buses))).flatten(),
        busy_reaction: matches!(policy, Policy::Natural)
            .then(|| table(reaction::busy_reactions(called, &buses, max_in_flight)))
            .flatten(),
        completion_reaction: matches!(policy, Policy::Natural)
            .then(|| table(reaction::completion_reactions(called, &buses, max_in_flight)))
            .flatten(),
        timer_reaction: match policy {
            Policy::Window { window } => table(reaction::timer_reactions(called, &buses, window, max_in_flight)),
            _ => None,
        },
        launch: table(reaction::launches(&buses)),
        answer: table(answer),
        answer_per_caller_us,
    };
    (driver, stages, per_request)
}

/// A duration in whole ns (saturating).
pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The replays' injector: from a blocking thread that sleeps until each instant, spawns
/// `call(i)` at `start + at[i]` on the current runtime (requests reach the service one by one
/// at their instants, each a task of its own), counting each on `progress`. Returns the
/// tasks' handles once the last is spawned.
///
/// # Errors
///
/// If the injector's thread panicked.
pub(crate) async fn inject<F>(
    start: Instant,
    at: Vec<Duration>,
    progress: Option<ProgressBar>,
    mut call: impl FnMut(usize) -> F + Send + 'static,
) -> Result<Vec<tokio::task::JoinHandle<F::Output>>>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut tasks = Vec::with_capacity(at.len());
        for (i, at) in at.into_iter().enumerate() {
            sleep_until(start + at);
            tasks.push(handle.spawn(call(i)));
            if let Some(p) = &progress {
                p.inc(1);
            }
        }
        tasks
    })
    .await
    .context("the injector panicked")
}

/// Blocks this thread until `due` (the injector's wait for an arrival's instant).
pub(crate) fn sleep_until(due: Instant) {
    let now = Instant::now();
    if due > now {
        std::thread::sleep(due - now);
    }
}
