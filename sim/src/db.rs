//! The database: `servers` connections, a FIFO of queries waiting for one, service times drawn
//! around `base + per_key × distinct keys`, and contention between running queries.
//!
//! # Contention
//!
//! With `k` queries running, each progresses at rate `1 / (1 + contention × (k - 1))`: every
//! extra concurrent query slows every running one by that fraction (the congestion of the car
//! analogy). A query's service time is its *work* at rate 1. This is processor sharing
//! restricted to the running set, kept in *virtual time*: a clock `v` of work done by each
//! running query, advancing at the current rate. A query that starts at `v0` with work `w`
//! finishes when `v` reaches `v0 + w`, whatever the rates in between, so the running queries
//! finish in the order of those marks and only the first of them needs a completion event.
//! Whenever `k` changes, that one event is rescheduled at the new rate (the old one becomes
//! stale: its version no longer matches): O(1) events per change instead of O(k).
//! With `contention = 0` the rate is always 1: each query gets its completion event when it
//! starts, and nothing is ever rescheduled.
//!
//! # Contention by size
//!
//! With `per_key_contention` (`c_k`) beside `contention` (`c_b`), a query's two parts contend
//! differently: run alone it takes `base + per_key × keys`, with `k` running
//! `base (1 + c_b (k − 1)) + per_key × keys (1 + c_k (k − 1))` (on SQLite a single-id query
//! is mostly hand-offs between threads and slows its neighbours less than a 1,000-id one, which
//! keeps a core busy). The query's own factor is the mean of the two weighted by its parts'
//! means, `c_q = (c_b base + c_k per_key × keys) / (base + per_key × keys)`, and it progresses
//! at rate `1 / (1 + c_q (k − 1))`. The running queries' rates then differ and no longer share
//! one clock: each keeps the work it has left, all of them are brought up to date when `k`
//! changes (at most `servers` of them), and the one due first gets the completion event. Left
//! out (`per_key_contention` absent or equal to `contention`), the model is the one above,
//! event for event.
//!
//! # The application's work
//!
//! An embedded database runs its queries on the application's own cores, and the application's
//! work competes with them for the same `servers` (`[cpu]`, [`Db::submit_work`]): a job of a
//! fixed work, contended as a query's base, that answers nobody. Its ids carry [`APP_WORK`], so
//! the engine tells it from a query; without `[cpu]` there is none. By default
//! (`sharing = "queue"`) it joins the same first-come-first-served queue as the queries and
//! holds a server while it runs. Under `sharing = "processor"` it is processor sharing, as a
//! kernel time-slices threads: the work starts the moment it arrives, running beside whatever
//! runs, and holds no server (the `servers` limit counts queries only: `holding_servers`), so
//! a query never waits for it to start; it slows the running queries, and they it, through the
//! same rate `1 / (1 + c (k − 1))` over all `k` jobs running. Its end then frees no server: a
//! waiting query still waits for a query to end.
//!
//! # Cost per event
//!
//! A completion finds its query's place among the running ones through an index by query id
//! (not a scan of the `servers` running queries), and the rate is computed once per change of
//! `k`, not at every use. Under contention the engine keeps the one live completion event
//! beside its heap ([`Db::one_due`]): a rescheduled event replaces it there instead of
//! leaving a stale event in the heap to be popped and ignored.

use std::collections::VecDeque;

use rand::rngs::SmallRng;
use rand_distr::{Distribution, Exp1, Gamma, StandardNormal};

use crate::rng::{Stream, ceil_ns, keyed_stream, round_ns};
use crate::scenario::{BatchCost, CpuSharing, Scenario, ServiceKind};

/// Draws service times (in ns) around a mean.
///
/// Common random numbers: a query's draw is keyed by the id of the first request it carries
/// (from the scenario's service stream, re-seeded per key), not by the order queries reach the
/// database. So two policies that send the same batch get the same service time for it, and a
/// policy that sends one more or one fewer query early on does not shift every later draw:
/// comparisons between policies measure the policies, not the noise of a shifted stream.
/// Draws for distinct keys are independent, so the service times are still i.i.d.
///
/// # A batch's cost
///
/// Under `batch_cost = "per_key"` (the default) a query of `k` distinct keys costs
/// `base + W_k`: `base` drawn from `service` around `base_ms`, and `W_k` the sum of `k`
/// independent per-key works of mean `per_key_ms` and coefficient of variation `per_key_cv`,
/// drawn at once as a gamma of shape `k / cv²` and scale `per_key_ms × cv²` (mean
/// `k × per_key_ms`, variance `k × (cv × per_key_ms)²`; exact for a sum of exponential or
/// gamma works, the moment match otherwise). So a big batch's per-key part is relatively
/// steadier than a small one's. Under `batch_cost = "scaled"` one draw from `service` is
/// scaled to the whole mean (variance growing as `k²`).
#[derive(Debug, Clone)]
pub struct ServiceSampler {
    kind: ServiceKind,
    sigma: f64,
    seed: u64,
    batch_cost: BatchCost,
    base_ns: f64,
    per_key_ns: f64,
    per_key_cv: f64,
    /// The per-key work's distribution by number of keys, built on first use (`None`: the
    /// mean is taken as is). Building a `Gamma` costs divisions (and a square root above
    /// shape 1) that every query of the same size would repeat; the draws are the same.
    per_key: Vec<Option<Gamma<f64>>>,
}

/// Query sizes (distinct keys) whose per-key distribution [`ServiceSampler`] keeps.
const KEPT_SIZES: usize = 4096;

impl ServiceSampler {
    /// The sampler of `scenario`'s `[db]`.
    pub fn new(scenario: &Scenario) -> ServiceSampler {
        let c = &scenario.db;
        ServiceSampler {
            kind: c.service,
            sigma: c.lognormal_sigma,
            seed: scenario.seed,
            batch_cost: c.batch_cost,
            base_ns: c.base_ms * 1e6,
            per_key_ns: c.per_key_ms * 1e6,
            per_key_cv: c.per_key_cv,
            per_key: Vec::new(),
        }
    }

    /// The distribution of the per-key work of a query of `keys` keys (mean `> 0`,
    /// `per_key_cv > 0`): a gamma of shape `keys / cv²` and scale `per_key_ms × cv²`.
    #[inline]
    fn per_key(&mut self, keys: u32) -> Option<Gamma<f64>> {
        let cv2 = self.per_key_cv * self.per_key_cv;
        let scale = self.per_key_ns * cv2;
        let of = |k: u32| Gamma::new(f64::from(k) / cv2, scale).ok();
        let i = keys as usize;
        if i >= KEPT_SIZES {
            return of(keys);
        }
        if i >= self.per_key.len() {
            self.per_key.extend((self.per_key.len()..=i).map(|k| of(k as u32)));
        }
        self.per_key[i]
    }

    /// The work, in ns at rate 1, of a query of `distinct_keys` keys whose first request is
    /// `key` (see the type's doc for the two cost models).
    pub fn sample_batch(&mut self, distinct_keys: u32, key: u64) -> u64 {
        let keys = f64::from(distinct_keys);
        match self.batch_cost {
            BatchCost::Scaled => self.sample(self.base_ns + self.per_key_ns * keys, key),
            BatchCost::PerKey => {
                let mut rng: SmallRng = keyed_stream(self.seed, Stream::Service, key);
                let base = self.draw(&mut rng, self.base_ns);
                let mean = self.per_key_ns * keys;
                let per_key = if mean <= 0.0 || self.per_key_cv == 0.0 {
                    mean
                } else {
                    // Shape and scale are finite and > 0 here, so `new` cannot fail.
                    self.per_key(distinct_keys).map_or(mean, |g| g.sample(&mut rng))
                };
                round_ns(base + per_key)
            }
        }
    }

    /// The service time, of mean `mean_ns` and rounded to the nanosecond, of the query whose
    /// first request is `key`: one draw from `service` (the `scaled` cost model).
    #[inline]
    pub fn sample(&mut self, mean_ns: f64, key: u64) -> u64 {
        let mut rng: SmallRng = keyed_stream(self.seed, Stream::Service, key);
        round_ns(self.draw(&mut rng, mean_ns))
    }

    /// One draw from `service` with mean `mean_ns`.
    #[inline(always)]
    fn draw(&self, rng: &mut SmallRng, mean_ns: f64) -> f64 {
        match self.kind {
            ServiceKind::Const => mean_ns,
            ServiceKind::Exp => {
                let e: f64 = Exp1.sample(rng);
                e * mean_ns
            }
            ServiceKind::Lognormal => {
                let z: f64 = StandardNormal.sample(rng);
                mean_ns * (self.sigma * z - self.sigma * self.sigma / 2.0).exp()
            }
        }
    }
}

/// What the database tells the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbEvent {
    /// `query` got a connection at `at`.
    Started {
        /// The query.
        query: u32,
        /// When.
        at: u64,
    },
    /// `query` will finish at `at` unless rescheduled; deliver `complete(at, query, version)`.
    /// Under contention ([`Db::one_due`]) each `Due` supersedes every earlier one.
    Due {
        /// The query.
        query: u32,
        /// Its schedule's version.
        version: u32,
        /// When.
        at: u64,
    },
}

/// `Db::place` of a query that is not running.
const NOT_RUNNING: u32 = u32::MAX;

/// The bit of a job's id that marks the application's work ([`Db::submit_work`]), not a query
/// (the engine's query ids are far below it).
pub const APP_WORK: u32 = 1 << 31;

#[derive(Debug, Clone, Copy)]
struct Running {
    query: u32,
    /// Under contention: the virtual time at which the query's work is done (contention by
    /// size: the work it has left, at rate 1).
    done_at_v: f64,
    version: u32,
    /// Contention by size: the query's own contention `c_q`.
    contention: f64,
}

/// `[db]`'s contention by size (see the module's doc): what a query's own contention is
/// computed from.
#[derive(Debug, Clone, Copy)]
struct BySize {
    base_ns: f64,
    per_key_ns: f64,
    per_key_contention: f64,
}

impl BySize {
    /// `c_q` of a query of `keys` keys, given the base's contention `c_b`.
    fn of(&self, c_b: f64, keys: u32) -> f64 {
        let per_key = self.per_key_ns * f64::from(keys);
        let total = self.base_ns + per_key;
        if total > 0.0 { (c_b * self.base_ns + self.per_key_contention * per_key) / total } else { c_b }
    }
}

/// The database model. Queries are identified by the engine's `u32` ids.
#[derive(Debug)]
pub struct Db {
    servers: usize,
    contention: f64,
    /// Contention by size, when `per_key_contention` differs from `contention`.
    by_size: Option<BySize>,
    service: ServiceSampler,
    running: Vec<Running>,
    /// The place in `running` of each running query, by query id (`NOT_RUNNING` otherwise).
    place: Vec<u32>,
    /// The same for the application's work, by its id without [`APP_WORK`].
    work_place: Vec<u32>,
    /// Ids of the application's work free for reuse, and the next never used.
    work_free: Vec<u32>,
    work_next: u32,
    /// The application's jobs running or waiting.
    work_jobs: usize,
    /// `[cpu] sharing = "processor"`: the work holds no server (see [`Db::submit_work`]).
    work_shares: bool,
    /// The application's jobs running (under `work_shares`, beside the `servers` queries).
    work_running: usize,
    /// The rate of every running query, `1 / (1 + contention × (k − 1))` for the `k` running now.
    rate: f64,
    waiting: VecDeque<(u32, u32, u64)>,
    /// Virtual time: work done by each running query since the start (under contention).
    v: f64,
    /// Under contention: the running query whose completion event is live, if any.
    due: Option<u32>,
    /// [`Db::one_due`], fixed by the scenario (asked several times per event).
    one_due: bool,
    /// Under contention: a completion left the running queries without a live event, to be
    /// given by [`settle`](Db::settle) unless a start reschedules first.
    owed: bool,
    last_update: u64,
    busy_ns: u128,
    next_version: u32,
    /// The statistics window [start, end) (warm-up to the end of arrivals), and the work
    /// done and connection time busy inside it.
    window: (u64, u64),
    window_work_ns: f64,
    window_busy_ns: f64,
}

impl Db {
    /// The database of `scenario`.
    pub fn new(scenario: &Scenario) -> Db {
        let c = &scenario.db;
        let by_size = c.per_key_contention.filter(|&k| k != c.contention).map(|per_key_contention| BySize {
            base_ns: c.base_ms * 1e6,
            per_key_ns: c.per_key_ms * 1e6,
            per_key_contention,
        });
        Db {
            servers: c.servers as usize,
            contention: c.contention,
            by_size,
            service: ServiceSampler::new(scenario),
            running: Vec::with_capacity(c.servers as usize),
            place: Vec::new(),
            work_place: Vec::new(),
            work_free: Vec::new(),
            work_next: 0,
            work_jobs: 0,
            work_shares: scenario.cpu.as_ref().is_some_and(|c| c.sharing == CpuSharing::Processor),
            work_running: 0,
            rate: 1.0,
            waiting: VecDeque::new(),
            v: 0.0,
            due: None,
            one_due: c.contention > 0.0 || by_size.is_some(),
            owed: false,
            last_update: 0,
            busy_ns: 0,
            next_version: 0,
            window: (0, u64::MAX),
            window_work_ns: 0.0,
            window_busy_ns: 0.0,
        }
    }

    /// Restricts [`window_work_ns`](Db::window_work_ns) and
    /// [`window_busy_ns`](Db::window_busy_ns) to `[start_ns, end_ns)`.
    pub fn set_window(&mut self, start_ns: u64, end_ns: u64) {
        self.window = (start_ns, end_ns);
    }

    /// Work done (service at rate 1) inside the window, in ns, up to the last update.
    pub fn window_work_ns(&self) -> f64 {
        self.window_work_ns
    }

    /// Connection time busy inside the window, in connection-ns, up to the last update.
    pub fn window_busy_ns(&self) -> f64 {
        self.window_busy_ns
    }

    /// The most work the database does per ns: all connections busy, each at the contended
    /// rate, `servers / (1 + contention × (servers − 1))` (the rate only grows with the
    /// number running, so the maximum is at `servers`). By size: with the smaller of the two
    /// contentions (the queries that contend least).
    pub fn capacity(&self) -> f64 {
        let c = self.by_size.map_or(self.contention, |b| b.per_key_contention.min(self.contention));
        self.servers as f64 / (1.0 + c * (self.servers.saturating_sub(1)) as f64)
    }

    /// Whether at most one completion event is live at a time (under contention): each
    /// [`DbEvent::Due`] then supersedes the earlier ones, which [`complete`](Db::complete)
    /// would ignore, so the engine may keep only the latest.
    #[inline]
    pub fn one_due(&self) -> bool {
        self.one_due
    }

    /// Queries running or waiting, the application's work left out.
    pub fn queries_in(&self) -> usize {
        self.running.len() + self.waiting.len() - self.work_jobs
    }

    /// Whether job `id` is the application's work ([`Db::submit_work`]), not a query.
    #[inline]
    pub fn is_work(id: u32) -> bool {
        id & APP_WORK != 0
    }

    /// The application's work: `work_ns` of it arrives at `now` (contended as a query's base).
    /// By default it joins the queue as a query would and takes a server's time when its turn
    /// comes; under `[cpu] sharing = "processor"` it starts at once beside whatever runs,
    /// holding no server, and slows the running queries as one more running job would. Its
    /// events carry an id with [`APP_WORK`]; its completion answers nobody.
    pub fn submit_work(&mut self, now: u64, work_ns: u64, out: &mut Vec<DbEvent>) {
        let id = self.work_free.pop().unwrap_or_else(|| {
            self.work_next += 1;
            self.work_next - 1
        });
        self.work_jobs += 1;
        if self.work_shares {
            self.start(now, APP_WORK | id, 0, work_ns, out);
            return;
        }
        self.waiting.push_back((APP_WORK | id, 0, work_ns));
        if self.holding_servers() < self.servers {
            self.start_next(now, out);
        }
    }

    /// Servers held: every job running, but the application's work under `work_shares`.
    #[inline]
    fn holding_servers(&self) -> usize {
        self.running.len() - self.work_running
    }

    /// Job `id`'s place in `running` (`NOT_RUNNING` if it is not running), `None` for an id
    /// never seen.
    #[inline]
    fn place_of(&self, id: u32) -> Option<u32> {
        if Db::is_work(id) { self.work_place.get((id & !APP_WORK) as usize) } else { self.place.get(id as usize) }.copied()
    }

    #[inline]
    fn set_place(&mut self, id: u32, at: u32) {
        let (places, i) =
            if Db::is_work(id) { (&mut self.work_place, (id & !APP_WORK) as usize) } else { (&mut self.place, id as usize) };
        if i >= places.len() {
            places.resize(i + 1, NOT_RUNNING);
        }
        places[i] = at;
    }

    /// Queries running now (and the application's work running, if any).
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Queries waiting for a connection.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Connection-nanoseconds spent serving, up to the last update.
    pub fn busy_ns(&self) -> u128 {
        self.busy_ns
    }

    /// `query`, asking for `distinct_keys` keys, is sent at `now`. It starts at once if a
    /// connection is free, else waits its turn.
    /// `first_request` keys the query's service time (see [`ServiceSampler`]).
    pub fn submit(&mut self, now: u64, query: u32, distinct_keys: u32, first_request: u64, out: &mut Vec<DbEvent>) {
        if self.holding_servers() < self.servers && self.waiting.is_empty() {
            self.start(now, query, distinct_keys, first_request, out); // the queue's next
            return;
        }
        self.waiting.push_back((query, distinct_keys, first_request));
        if self.holding_servers() < self.servers {
            self.start_next(now, out);
        }
    }

    /// Delivers a `Due` event. Returns `false` (and does nothing) if it is stale: the query was
    /// rescheduled since. Otherwise the query is done, its connection serves the next waiting
    /// query, and the rest are rescheduled under contention.
    #[inline]
    pub fn complete(&mut self, now: u64, query: u32, version: u32, out: &mut Vec<DbEvent>) -> bool {
        // Under contention only the query first to finish holds a live event; the versions
        // tell its latest event from those it had before being rescheduled.
        let Some(i) = self.place_of(query) else { return false };
        if i == NOT_RUNNING || self.running[i as usize].version != version {
            return false;
        }
        if self.one_due() && self.due != Some(query) {
            return false;
        }
        self.advance(now);
        self.running.swap_remove(i as usize);
        self.set_place(query, NOT_RUNNING);
        if let Some(moved) = self.running.get(i as usize).map(|r| r.query) {
            self.set_place(moved, i);
        }
        if Db::is_work(query) {
            self.work_free.push(query & !APP_WORK);
            self.work_jobs -= 1;
            if self.work_shares {
                self.work_running -= 1;
            }
        }
        self.rate = self.rate_of_running();
        self.due = None;
        // Without `work_shares` every completion frees a server; with it, work's frees none.
        if self.waiting.is_empty() || self.holding_servers() >= self.servers {
            if self.one_due && !self.running.is_empty() {
                // Owed: the engine often starts a query at this instant (the next of a car's
                // callers), whose start reschedules; an event given now would be replaced.
                self.owed = true;
            } else {
                self.reschedule(now, out);
            }
        } else {
            self.start_next(now, out);
        }
        true
    }

    /// Whether a completion owes the running queries their next completion event
    /// ([`settle`](Db::settle) gives it).
    #[inline]
    pub fn owes_due(&self) -> bool {
        self.owed
    }

    /// The completion event a [`complete`](Db::complete) at `now` left owed, if no query has
    /// started since (a start gives its own): the same event the completion would have given,
    /// nothing having changed since. Call it before time moves on.
    pub fn settle(&mut self, now: u64, out: &mut Vec<DbEvent>) {
        if self.owed {
            self.reschedule(now, out);
        }
    }

    fn start_next(&mut self, now: u64, out: &mut Vec<DbEvent>) {
        let Some((query, keys, first_request)) = self.waiting.pop_front() else { return };
        self.start(now, query, keys, first_request, out);
    }

    /// Job `query` starts running at `now`.
    fn start(&mut self, now: u64, query: u32, keys: u32, first_request: u64, out: &mut Vec<DbEvent>) {
        self.advance(now);
        if self.work_shares && Db::is_work(query) {
            self.work_running += 1;
        }
        // The application's work carries its own (fixed) work where a query has its first request.
        let work = if Db::is_work(query) { first_request } else { self.service.sample_batch(keys, first_request) };
        out.push(DbEvent::Started { query, at: now });
        let version = self.bump();
        self.set_place(query, self.running.len() as u32);
        let (done_at_v, contention) = match self.by_size {
            Some(b) => (work as f64, b.of(self.contention, keys)),
            None => (self.v + work as f64, self.contention),
        };
        self.running.push(Running { query, done_at_v, version, contention });
        self.rate = self.rate_of_running();
        if !self.one_due() {
            out.push(DbEvent::Due { query, version, at: now + work });
        } else {
            self.reschedule(now, out);
        }
    }

    /// Brings virtual time and busy time up to `now` at the current rate.
    fn advance(&mut self, now: u64) {
        if now == self.last_update {
            // Nothing to add (a start at the instant of a completion); the sums gain +0.0.
            return;
        }
        let dt = now.saturating_sub(self.last_update);
        self.busy_ns += u128::from(dt) * self.running.len() as u128;
        let (start, end) = self.window;
        let inside = now.min(end).saturating_sub(self.last_update.max(start));
        if self.by_size.is_some() {
            // Each running query at its own rate: its work left shrinks by `dt` × that rate.
            let extra = self.running.len().saturating_sub(1) as f64;
            let mut rates = 0.0;
            for r in &mut self.running {
                let rate = 1.0 / (1.0 + r.contention * extra);
                rates += rate;
                r.done_at_v -= dt as f64 * rate;
            }
            if inside > 0 {
                self.window_busy_ns += inside as f64 * self.running.len() as f64;
                self.window_work_ns += inside as f64 * rates;
            }
            self.last_update = now;
            return;
        }
        // Unconditional sums: nothing outside the window or with nothing running adds +0.0,
        // which leaves them as they were (they are >= 0), and costs no mispredicted branch.
        let k = self.running.len() as f64;
        self.window_busy_ns += inside as f64 * k;
        self.window_work_ns += inside as f64 * k * self.rate;
        if self.contention > 0.0 {
            self.v += dt as f64 * self.rate;
        }
        self.last_update = now;
    }

    /// Under contention: a new completion event for the running query that finishes first, at
    /// the current rate (the previous event, if any, becomes stale).
    fn reschedule(&mut self, now: u64, out: &mut Vec<DbEvent>) {
        if !self.one_due() {
            return;
        }
        self.owed = false;
        if self.running.is_empty() {
            self.due = None;
            return;
        }
        let (first, left_ns) = if self.by_size.is_some() {
            // The query whose work left, at its own rate, runs out first.
            let extra = self.running.len().saturating_sub(1) as f64;
            let time_left = |r: &Running| r.done_at_v.max(0.0) * (1.0 + r.contention * extra);
            let first = first_of(self.running.iter().map(time_left));
            (first, time_left(&self.running[first]))
        } else {
            // The first of the earliest marks, all at the one rate.
            let first = first_of(self.running.iter().map(|r| r.done_at_v));
            (first, (self.running[first].done_at_v - self.v).max(0.0) / self.rate)
        };
        let version = self.bump();
        let r = &mut self.running[first];
        r.version = version;
        self.due = Some(r.query);
        out.push(DbEvent::Due { query: r.query, version, at: now + ceil_ns(left_ns) });
    }

    /// The rate for the queries running now (kept in `rate` as `k` changes).
    fn rate_of_running(&self) -> f64 {
        let extra = self.running.len().saturating_sub(1) as f64;
        1.0 / (1.0 + self.contention * extra)
    }

    fn bump(&mut self) -> u32 {
        self.next_version = self.next_version.wrapping_add(1);
        self.next_version
    }
}

/// The index of the first of the smallest of `marks` (finite and >= +0: `<` orders them as
/// `total_cmp` would, in a plain comparison each), chosen by selects rather than branches:
/// which query finishes first is a coin toss the branch predictor loses.
fn first_of(marks: impl Iterator<Item = f64>) -> usize {
    let mut marks = marks.enumerate();
    let Some((mut first, mut least)) = marks.next() else { return 0 };
    for (i, mark) in marks {
        let earlier = mark < least;
        first = if earlier { i } else { first };
        least = if earlier { mark } else { least };
    }
    first
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn db(extra: &str) -> Db {
        let text = format!(
            "name = \"d\"\nrequests = 1\n[traffic]\nkind = \"poisson\"\nrate_per_s = 1.0\n[db]\nservice = \"const\"\n{extra}\n"
        );
        Db::new(&Scenario::parse_with(&text, Path::new("."), &[]).unwrap())
    }

    fn due(out: &[DbEvent], q: u32) -> (u32, u64) {
        out.iter()
            .rev()
            .find_map(|e| match *e {
                DbEvent::Due { query, version, at } if query == q => Some((version, at)),
                _ => None,
            })
            .expect("a due event")
    }

    #[test]
    fn fifo_beyond_the_servers() {
        let mut d = db("servers = 1\nbase_ms = 1.0");
        let mut out = Vec::new();
        d.submit(0, 1, 1, 1, &mut out);
        d.submit(0, 2, 1, 2, &mut out);
        assert_eq!((d.running(), d.waiting()), (1, 1));
        let (v, at) = due(&out, 1);
        assert_eq!(at, 1_000_000);
        out.clear();
        assert!(d.complete(at, 1, v, &mut out));
        assert_eq!(out[0], DbEvent::Started { query: 2, at: 1_000_000 });
        assert_eq!(due(&out, 2).1, 2_000_000);
        assert_eq!(d.busy_ns(), 1_000_000);
    }

    #[test]
    fn contention_slows_and_reschedules() {
        // Two 1 ms queries with 100 % contention: each runs at half speed while both run.
        let mut d = db("servers = 2\nbase_ms = 1.0\ncontention = 1.0");
        let mut out = Vec::new();
        d.submit(0, 1, 1, 1, &mut out);
        let (v1_old, at1_old) = due(&out, 1);
        assert_eq!(at1_old, 1_000_000);
        d.submit(500_000, 2, 1, 2, &mut out);
        // Query 1 has 0.5 ms of work left at half speed: done at 1.5 ms. Query 2 at 2.5 ms
        // unless query 1's departure speeds it up.
        let (v1, at1) = due(&out, 1);
        assert_eq!(at1, 1_500_000);
        assert!(!d.complete(at1_old, 1, v1_old, &mut Vec::new()), "stale event ignored");
        out.clear();
        assert!(d.complete(at1, 1, v1, &mut out));
        assert!(d.owes_due(), "no query started: query 2's event is owed");
        d.settle(at1, &mut out);
        // Query 2 did 0.5 ms of work at half speed in [0.5, 1.5]; 0.5 ms left alone: 2.0 ms.
        assert_eq!(due(&out, 2).1, 2_000_000);
    }

    #[test]
    fn contention_by_size_weighs_each_part() {
        // base 1 ms uncontended, 1 ms per key fully contended: a 1-key query has c_q = 1/2, a
        // 3-key one 3/4. Both start at 0: the 1-key one (2 ms of work) runs at 1/1.5 and is
        // done at 3 ms; the 3-key one did 3/1.75 ms of its 4 ms by then, the rest alone.
        let mut d = db("servers = 2\nbase_ms = 1.0\nper_key_ms = 1.0\nper_key_cv = 0.0\ncontention = 0.0\nper_key_contention = 1.0");
        assert!(d.one_due());
        let mut out = Vec::new();
        d.submit(0, 1, 1, 1, &mut out);
        assert_eq!(due(&out, 1).1, 2_000_000, "alone, a query takes its work");
        d.submit(0, 2, 3, 2, &mut out);
        let (v1, at1) = due(&out, 1);
        assert_eq!(at1, 3_000_000);
        out.clear();
        assert!(d.complete(at1, 1, v1, &mut out));
        d.settle(at1, &mut out);
        assert_eq!(due(&out, 2).1, 3_000_000 + (4_000_000.0 - 3_000_000.0 / 1.75_f64).ceil() as u64);
        // The capacity is that of the queries contending least (the base alone: none).
        assert_eq!(d.capacity(), 2.0);
    }

    #[test]
    fn the_applications_work_queues_with_the_queries_and_answers_nobody() {
        // One server: 0.5 ms of the application's work, then a 1 ms query, both at 0. The query
        // starts when the work is done (0.5 ms) and ends at 1.5 ms; the work's id is no query's.
        let mut d = db("servers = 1\nbase_ms = 1.0");
        let mut out = Vec::new();
        d.submit_work(0, 500_000, &mut out);
        d.submit(0, 0, 1, 1, &mut out);
        assert_eq!((d.running(), d.waiting(), d.queries_in()), (1, 1, 1));
        let (work, version, at) = match out[..] {
            [DbEvent::Started { query, at: 0 }, DbEvent::Due { query: q, version, at }] if q == query => (query, version, at),
            _ => panic!("{out:?}"),
        };
        assert!(Db::is_work(work) && at == 500_000, "{work:#x} {at}");
        out.clear();
        assert!(d.complete(at, work, version, &mut out));
        assert_eq!(out[0], DbEvent::Started { query: 0, at: 500_000 });
        assert_eq!(due(&out, 0).1, 1_500_000);
        // Its id is free again for the next work.
        d.submit_work(600_000, 1, &mut out);
        assert_eq!(d.waiting(), 1);
        assert!(matches!(d.waiting.back(), Some(&(id, 0, 1)) if id == work));
    }

    #[test]
    fn shared_work_runs_beside_the_queries_and_holds_no_server() {
        // One server, contention 1 (k running, each at 1/k), `[cpu] sharing = "processor"`.
        // Query 1 (1 ms) at 0; 0.5 ms of work and query 2 at 0.25 ms: the work starts at once
        // (queued, it would wait for query 1), query 2 waits for the server. Both running at
        // 1/2, the work is done at 1.25 ms, query 1 (0.25 left) at 1.5 ms; the work's end
        // starts nothing (it held no server), query 1's starts query 2: done at 2.5 ms.
        let mut d = db("servers = 1\nbase_ms = 1.0\ncontention = 1.0\n[cpu]\nsharing = \"processor\"");
        let mut out = Vec::new();
        d.submit(0, 1, 1, 1, &mut out);
        out.clear();
        d.submit_work(250_000, 500_000, &mut out);
        d.submit(250_000, 2, 1, 2, &mut out);
        assert_eq!((d.running(), d.waiting(), d.queries_in()), (2, 1, 2));
        let work = match out[0] {
            DbEvent::Started { query, at: 250_000 } if Db::is_work(query) => query,
            _ => panic!("{out:?}"),
        };
        let (v, at) = due(&out, work);
        assert_eq!(at, 1_250_000, "the work, at half speed beside query 1");
        out.clear();
        assert!(d.complete(at, work, v, &mut out));
        d.settle(at, &mut out);
        assert_eq!((d.running(), d.waiting()), (1, 1), "the work's end frees no server: {out:?}");
        let (v1, at1) = due(&out, 1);
        assert_eq!(at1, 1_500_000);
        out.clear();
        assert!(d.complete(at1, 1, v1, &mut out));
        assert_eq!(out[0], DbEvent::Started { query: 2, at: 1_500_000 });
        assert_eq!(due(&out, 2).1, 2_500_000);
    }

    #[test]
    fn per_key_contention_equal_to_contention_is_the_one_factor_model() {
        let events = |extra: &str| {
            let mut d = db(&format!("servers = 3\nbase_ms = 1.0\nper_key_ms = 0.5\ncontention = 0.4\n{extra}"));
            let mut out = Vec::new();
            for q in 0..5u32 {
                d.submit(u64::from(q) * 300_000, q, q + 1, u64::from(q), &mut out);
            }
            while let Some((q, v, at)) = out.iter().rev().find_map(|e| match *e {
                DbEvent::Due { query, version, at } => Some((query, version, at)),
                _ => None,
            }) {
                if !d.complete(at, q, v, &mut out) {
                    break;
                }
                d.settle(at, &mut out);
            }
            out
        };
        assert_eq!(events("per_key_contention = 0.4"), events(""));
    }
}
