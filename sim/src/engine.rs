//! The discrete-event engine: virtual time in integer nanoseconds, events ordered by
//! `(time, sequence)`, the core's own [`Scheduler`] deciding every departure — one scheduler per
//! service instance of the fleet (`[fleet]`; one instance unless the scenario says otherwise).
//!
//! # The loop
//!
//! Each event is one input to the world: an arrival (the load balancer, [`Router`], picks an
//! instance; the request joins that instance's stop and its scheduler hears `on_arrival`), a
//! timeout (an instance's deadline: `on_timeout`), or a database completion (the batch's
//! requests are answered, its instance's pool connection is freed, and that instance's
//! scheduler hears `on_complete`). Every event concerns one instance, and after it the engine
//! *serves* that instance only: it drains `poll_action` — each `Dispatch { requests, ready_at }`
//! takes the oldest `requests` requests from the instance's FIFO, counts their distinct keys
//! and sends one query (through the instance's pool, if any, to the shared database);
//! `ready_at` (when the policy released the bus) splits each request's wait into the policy's
//! part and the backend's (see [`crate::stats`]) — then reads
//! `poll_timeout` and arms a timer event if the deadline changed (older timer events become
//! stale and are skipped). The engine never decides when a batch leaves: that is
//! `busline::policy`.
//!
//! # The driver's delays (`[driver]`, see [`crate::driver`])
//!
//! Without them a bus leaves the instant its scheduler releases it. With them, serving an
//! instance whose scheduler has an action arms a `Depart` event a *reaction* later (one at a
//! time per instance) instead of draining it at once; requests arriving meanwhile are heard by
//! the scheduler as usual and board, and at the `Depart` the engine drains `poll_action` as
//! above (the scheduler's `ready_at` stays the release, so the reaction shows as in-flight
//! wait). A sealed query then reaches its pool after the *launch* delay (a `Launch` event),
//! counted as connection wait; a query sealed while the database has had nothing to do for a
//! while waits a *wake-up* more. When it ends, each caller's latency ends a *way back* later
//! (its answer delivered; the request leaves the system at the query's end).
//!
//! # The application's CPU (`[cpu]`)
//!
//! With a `[cpu]` section each arrival also puts the application's work per request on the
//! database's servers ([`Db::submit_work`]): it queues with the queries and takes a server's
//! time, or runs beside them (`sharing = "processor"`, see `db.rs`), and its completion answers
//! nobody. With `timer_us`, each armed deadline also schedules a `Spin` event that long before
//! it (or at once, for a shorter wait): if the timer is still the instance's (same generation),
//! the stretch left to the deadline goes to the servers as work, the driver's precise timer
//! spinning and the driver yielding through it. Without `[cpu]` there is none, event for event.
//!
//! # Cost per event
//!
//! Nothing per event grows with the fleet: instances live in a `Vec`, one heap holds every
//! event, only an instance with a deadline has a timer in it, and routing is O(1) or
//! O(log instances). The next arrival is held beside the heap rather than in it (there is
//! always exactly one), carrying the sequence number it would have had in the heap, so the
//! order of events is the same as with one heap for all. So are the database's completion
//! event under contention (there is at most one live, [`Db::one_due`]) and the clients' timer:
//! rescheduled, each replaces its one event there, where it would have left a stale event in
//! the heap to pop and ignore.
//!
//! # Clients (`[client]`, see [`crate::client`])
//!
//! With a `[client]` section the arrivals come from the clients' own sans-IO state machine,
//! armed like the scheduler's timer (a `Client` event): it sends attempts (fresh requests and
//! retries, each routed like any arrival) and gives up on them. An attempt given up while still
//! at its instance's stop is marked dropped there: it leaves the system at once (its sojourn
//! ends), and when the scheduler later dispatches it, it boards nothing: the query carries only
//! the live requests, and a batch of dropped requests only sends no query and completes at once
//! (the core's scheduler has no input for a cancellation, so this is how its seat is released).
//! An attempt already sent still runs; its answer goes to the clients as late.
//!
//! # Statistics window
//!
//! Requests arriving before `warmup_s` are simulated but left out of every statistic; the
//! horizon is the end of arrivals (the duration, or the last arrival). Rates are over
//! [warm-up, horizon); what follows the horizon is the drain, reported apart (see
//! [`RunSummary`]).
//!
//! # Checks (always on)
//!
//! Requests carry increasing ids; every dispatch must take its instance's oldest requests in
//! order (so each request boards exactly one batch), every query is answered exactly once (its
//! slot is live until then), and at the end every request that arrived has been answered or
//! dropped, the stops, pools, database, schedulers and clients are idle, and queries sent +
//! batches of dropped requests only = batches dispatched, queries sent = queries completed. A
//! violation is an error, not a silent miscount.

use std::collections::VecDeque;
use std::time::Instant as WallInstant;

use anyhow::{Result, anyhow, bail, ensure};
use busline::policy::{Action, Instant, Scheduler};

use crate::client::{Answer, ClientAction, Clients};
use crate::db::{Db, DbEvent};
use crate::driver::Driver;
use crate::keys::{DistinctCounter, Keys};
use crate::queue::{self, EventQueue};
use crate::routing::Router;
use crate::scenario::{PolicyKind, Scenario};
use crate::stats::{Histogram, LatencySummary, RunSummary, TimeSeries, WaitSummary};
use crate::traffic::Traffic;

/// Optional measurements of a run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Record a [`TimeSeries`] with buckets this wide (ns).
    pub timeseries_bucket_ns: Option<u64>,
    /// Record every request's queue wait (start of service − arrival), in completion order.
    pub record_waits: bool,
}

/// Sample-path totals, for conservation and Little's-law checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathTotals {
    /// Requests that arrived.
    pub arrivals: u64,
    /// Requests answered.
    pub answered: u64,
    /// Requests that boarded a batch.
    pub dispatched_requests: u64,
    /// Queries sent to the database.
    pub queries_sent: u64,
    /// Queries the database completed.
    pub queries_completed: u64,
    /// Batches the scheduler dispatched (its own counter).
    pub scheduler_dispatches: u64,
    /// ∫ (requests in the system) dt, in request-ns, accumulated event by event.
    pub area_ns: u128,
    /// Σ (answer − arrival) over requests, in ns.
    pub sojourn_ns: u128,
    /// Σ (start of service − arrival) over requests, in ns.
    pub queue_wait_ns: u128,
    /// Σ added wait (arrival → the policy's release of the bus) over requests, in ns.
    pub added_wait_ns: u128,
    /// Σ in-flight wait (release → dispatch) over requests, in ns.
    pub in_flight_wait_ns: u128,
    /// Σ connection wait (dispatch → a connection) over requests, in ns.
    pub connection_wait_ns: u128,
    /// Σ service (start of service → answer) over requests, in ns.
    pub service_ns: u128,
    /// Requests dropped at the stop by a client's timeout before the policy sent them (their
    /// sojourn ends at the timeout).
    pub dropped: u64,
    /// Σ sojourn (arrival → the timeout) of the dropped requests, in ns: with the four parts
    /// above it adds up to `sojourn_ns`.
    pub dropped_ns: u128,
    /// Batches the scheduler dispatched that held only dropped requests: no query was sent.
    pub empty_dispatches: u64,
}

/// Everything a run measured.
#[derive(Debug, Clone)]
pub struct RunOutput {
    /// The summary (`run --json`, a sweep's CSV row).
    pub summary: RunSummary,
    /// Arrival to answer, ns, per request.
    pub latency: Histogram,
    /// Arrival to the policy's release of the bus, ns, per request.
    pub added_wait: Histogram,
    /// Release to dispatch (no free in-flight place), ns, per request.
    pub in_flight_wait: Histogram,
    /// Dispatch to a connection, ns, per request.
    pub connection_wait: Histogram,
    /// Release to start of service (in-flight + connection: the backend's wait), ns, per request.
    pub db_wait: Histogram,
    /// Start of service to answer, ns, per request.
    pub service: Histogram,
    /// Time series, if asked for.
    pub timeseries: Option<TimeSeries>,
    /// Per-request queue waits, if asked for.
    pub queue_waits: Vec<u64>,
    /// Sample-path totals.
    pub totals: PathTotals,
    /// Events processed (including stale ones).
    pub events: u64,
    /// Wall-clock seconds the run took.
    pub wall_s: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Arrival,
    Timeout { instance: u32, generation: u32 },
    Done { query: u32, version: u32 },
    /// The clients' next instant (`[client]`).
    Client,
    /// `[driver]`: the instance's driver has reacted; its released buses leave now.
    Depart { instance: u32 },
    /// `[driver]`: the sealed query's batch function runs now; it goes to the pool.
    Launch { query: u32 },
    /// `[cpu] timer_us`: the driver's precise timer starts its last stretch before the
    /// instance's deadline (of the timer's `generation`); its CPU goes to the servers.
    Spin { instance: u32, generation: u32 },
}

#[derive(Debug, Clone, Copy)]
struct Event {
    time: u64,
    kind: Kind,
}

#[derive(Debug, Clone, Copy)]
struct Waiting {
    id: u64,
    arrival: u64,
    key: u32,
    /// Its caller gave up before it was sent: it boards no query.
    dropped: bool,
}

/// One query's requests while it is at the database (or waiting for a connection).
#[derive(Debug, Default)]
struct Slot {
    live: bool,
    instance: u32,
    dispatched_at: u64,
    /// When the policy released the bus (`Action::Dispatch::ready_at`).
    ready_at: u64,
    started_at: u64,
    /// Its distinct keys and first live request, held while it is launched (`[driver]`).
    distinct: u32,
    first_request: u64,
    arrivals: Vec<u64>,
    /// The requests' ids, kept only with `[client]` (to tell the clients of each answer).
    ids: Vec<u64>,
}

/// A query that waits for a connection of its instance's pool.
#[derive(Debug, Clone, Copy)]
struct Pending {
    query: u32,
    distinct: u32,
    first_request: u64,
}

/// One service instance: its own scheduler, stop, timer and connection pool.
#[derive(Debug)]
struct Instance {
    scheduler: Scheduler,
    stop: VecDeque<Waiting>,
    /// The armed timer: its instant and generation.
    timer_at: Option<u64>,
    timer_generation: u32,
    /// The id of the last request that boarded here (FIFO check); `None` before the first.
    last_boarded: Option<u64>,
    /// Connections of the pool in use (queries at the database), and queries waiting for one.
    pool_in_use: u32,
    pool_queue: VecDeque<Pending>,
    /// `[driver]`: a `Depart` event is pending.
    departing: bool,
}

/// Runs `scenario` once.
///
/// # Errors
///
/// If the scenario's policy or limits are rejected by the core, a trace cannot be loaded, or an
/// invariant check fails (a bug).
pub fn run(scenario: &Scenario, opts: &RunOptions) -> Result<RunOutput> {
    let started = WallInstant::now();
    let mut e = Engine::new(scenario, opts)?;
    e.run()?;
    e.finish(scenario, started.elapsed().as_secs_f64())
}

struct Engine {
    heap: EventQueue<Kind>,
    seq: u64,
    now: u64,
    instances: Vec<Instance>,
    router: Router,
    /// Connections per instance (`u32::MAX`: no pool of its own).
    pool_size: u32,
    traffic: Traffic,
    keys: Keys,
    trace_keys: bool,
    /// The next arrival: its queue key (instant and sequence number) and trace key, drawn when it was
    /// scheduled and held beside the heap until it fires.
    next_arrival: Option<(u128, Option<u32>)>,
    /// Under contention, the database's one live completion event (its queue key, query and
    /// version), held beside the heap like the next arrival.
    db_due: Option<(u128, u32, u32)>,
    /// The sequence number of the completion event the database owes ([`Db::owes_due`]),
    /// taken when the completion that owes it happened, as the event itself would have.
    owed_seq: u64,
    /// When the database last finished its last running query (`[driver]`'s wake-up).
    db_idle_since: u64,
    distinct: DistinctCounter,
    db: Db,
    db_out: Vec<DbEvent>,
    /// `[driver]`'s delays; `None`: buses leave the instant they are released.
    driver: Option<Driver>,
    /// `[cpu]`: the application's work per request on the database's servers, ns (0: none).
    work_ns: u64,
    /// `[cpu] timer_us`: the driver's CPU before each deadline, ns (0: none).
    timer_ns: u64,
    slots: Vec<Slot>,
    free_slots: Vec<u32>,
    next_id: u64,
    in_system: u64,
    limit_requests: u64,
    limit_ns: u64,
    last_arrival: u64,
    /// Statistics cover requests arriving in [warm_ns, horizon); `horizon` is set when the
    /// last arrival has been drawn (the duration, or the last arrival's instant).
    warm_ns: u64,
    horizon: Option<u64>,
    measured_arrivals: u64,
    measured_queries: u64,
    drain_queries: u64,
    latency: Histogram,
    added_wait: Histogram,
    in_flight_wait: Histogram,
    connection_wait: Histogram,
    db_wait: Histogram,
    service: Histogram,
    timeseries: Option<TimeSeries>,
    record_waits: bool,
    queue_waits: Vec<u64>,
    totals: PathTotals,
    distinct_sum: u64,
    /// `policy.latency_budget_ms` in ns, and how many added waits exceeded it (exact).
    budget_ns: u64,
    over_budget: u64,
    events: u64,
    /// `[client]`: callers that time out and retry, and their timer.
    clients: Option<Clients>,
    client_at: Option<u64>,
    /// The clients' timer event (its queue key), held beside the heap like the next arrival.
    client_key: Option<u128>,
    client_out: Vec<ClientAction>,
    /// `[client]` only: the instance each request (by id) was routed to, to find an attempt
    /// its caller gives up on.
    routed_to: Vec<u32>,
    /// `[client]` only: instances that heard an arrival during one client event.
    touched: Vec<u32>,
}

impl Engine {
    fn new(scenario: &Scenario, opts: &RunOptions) -> Result<Engine> {
        let policy = scenario.policy().map_err(|e| anyhow!("{e}"))?;
        let scheduler = Scheduler::new(policy, scenario.limits()).map_err(|e| anyhow!("{e}"))?;
        let mut router = Router::new(scenario);
        let n = router.instances() as usize;
        let instances = (0..n)
            .map(|_| Instance {
                scheduler: scheduler.clone(),
                stop: VecDeque::with_capacity(if n == 1 { 1024 } else { 16 }),
                timer_at: None,
                timer_generation: 0,
                last_boarded: None,
                pool_in_use: 0,
                pool_queue: VecDeque::new(),
                departing: false,
            })
            .collect();
        let traffic = Traffic::new(scenario)?;
        let keys = Keys::new(scenario);
        let clients = Clients::new(scenario)?;
        let trace_keys = traffic.trace_keys();
        let key_space = trace_keys.unwrap_or(if keys.all_unique() { 0 } else { keys.key_space() });
        router.remember_owners(key_space);
        Ok(Engine {
            heap: EventQueue::with_capacity(64),
            seq: 0,
            now: 0,
            instances,
            router,
            pool_size: scenario.db.pool_per_instance.unwrap_or(u32::MAX),
            traffic,
            keys,
            trace_keys: trace_keys.is_some(),
            next_arrival: None,
            db_due: None,
            owed_seq: 0,
            db_idle_since: 0,
            distinct: DistinctCounter::new(key_space),
            db: Db::new(scenario),
            db_out: Vec::with_capacity(16),
            driver: Driver::new(scenario),
            work_ns: scenario.cpu.as_ref().map_or(0, |c| c.request_ns(scenario.policy.kind)),
            timer_ns: scenario.cpu.as_ref().map_or(0, |c| (c.timer_us * 1e3).round() as u64),
            slots: Vec::new(),
            free_slots: Vec::new(),
            next_id: 0,
            in_system: 0,
            limit_requests: scenario.requests.unwrap_or(u64::MAX),
            limit_ns: scenario.duration_s.map_or(u64::MAX, |s| (s * 1e9) as u64),
            last_arrival: 0,
            warm_ns: scenario.warmup_ns(),
            horizon: None,
            measured_arrivals: 0,
            measured_queries: 0,
            drain_queries: 0,
            latency: Histogram::new(),
            added_wait: Histogram::new(),
            in_flight_wait: Histogram::new(),
            connection_wait: Histogram::new(),
            db_wait: Histogram::new(),
            service: Histogram::new(),
            timeseries: opts.timeseries_bucket_ns.map(TimeSeries::new),
            record_waits: opts.record_waits,
            queue_waits: Vec::new(),
            totals: PathTotals::default(),
            distinct_sum: 0,
            budget_ns: (scenario.policy.latency_budget_ms * 1e6).round() as u64,
            over_budget: 0,
            events: 0,
            clients,
            client_at: None,
            client_key: None,
            client_out: Vec::new(),
            routed_to: Vec::new(),
            touched: Vec::new(),
        })
    }

    #[inline]
    fn push(&mut self, time: u64, kind: Kind) {
        self.seq += 1;
        self.heap.push(queue::key(time, self.seq), kind);
    }

    /// As [`push`](Engine::push), for an event mostly scheduled in the order such events fire
    /// (see `EventQueue::push_in_order`).
    fn push_in_order(&mut self, time: u64, kind: Kind) {
        self.seq += 1;
        self.heap.push_in_order(queue::key(time, self.seq), kind);
    }

    /// Draws the next arrival, unless the run's request count or duration is reached.
    fn schedule_arrival(&mut self) {
        if self.next_id < self.limit_requests
            && let Some((t, key)) = self.traffic.next_arrival()
            && t < self.limit_ns
        {
            self.seq += 1;
            self.next_arrival = Some((queue::key(t, self.seq), key));
            return;
        }
        self.end_arrivals();
    }

    /// No arrival follows: the horizon is the duration if one was given, else now (the last
    /// arrival). The database's work is counted up to it; what follows is the drain.
    fn end_arrivals(&mut self) {
        if self.horizon.is_none() {
            let horizon = if self.limit_ns == u64::MAX { self.now } else { self.limit_ns };
            self.set_horizon(horizon);
        }
    }

    fn set_horizon(&mut self, horizon: u64) {
        let horizon = horizon.max(self.warm_ns);
        self.horizon = Some(horizon);
        self.db.set_window(self.warm_ns, horizon);
    }

    /// The earliest event: the heap's top or one of the events held beside it (the next
    /// arrival, the database's completion under contention, the clients' timer), by
    /// `(time, seq)` (keys are unique: no ties).
    #[inline]
    fn next_event(&mut self) -> Option<Event> {
        #[derive(Clone, Copy)]
        enum From {
            Heap,
            Arrival,
            Db,
            Clients,
        }
        let mut first = self.heap.peek_key().map(|k| (k, From::Heap));
        let beside = [
            (self.next_arrival.map(|(k, _)| k), From::Arrival),
            (self.db_due.map(|(k, _, _)| k), From::Db),
            (self.client_key, From::Clients),
        ];
        for (key, from) in beside {
            if let Some(k) = key
                && first.is_none_or(|(f, _)| k < f)
            {
                first = Some((k, from));
            }
        }
        let (key, from) = first?;
        let kind = match from {
            From::Heap => self.heap.pop()?.1,
            From::Arrival => Kind::Arrival, // taken by its handler, with its trace key
            From::Db => {
                let (_, query, version) = self.db_due.take()?;
                Kind::Done { query, version }
            }
            From::Clients => {
                self.client_key = None;
                Kind::Client
            }
        };
        Some(Event { time: queue::time_of(key), kind })
    }

    fn run(&mut self) -> Result<()> {
        self.db.set_window(self.warm_ns, u64::MAX);
        if self.clients.is_some() {
            self.arm_client_timer(); // the clients own the arrivals
        } else {
            self.schedule_arrival();
        }
        loop {
            self.settle_db();
            let Some(ev) = self.next_event() else { break };
            self.events += 1;
            debug_assert!(ev.time >= self.now, "event in the past");
            let dt = ev.time - self.now;
            self.totals.area_ns += u128::from(self.in_system) * u128::from(dt);
            self.now = ev.time;
            let now = Instant::from_nanos(ev.time);
            let (instance, by_timer) = match ev.kind {
                Kind::Arrival => {
                    let (_, trace_key) =
                        self.next_arrival.take().ok_or_else(|| anyhow!("arrival without a drawn instant"))?;
                    let (i, _, _) = self.arrive(trace_key.filter(|_| self.trace_keys));
                    self.app_work()?;
                    if let Some(ts) = &mut self.timeseries {
                        ts.at(ev.time).arrivals += 1;
                    }
                    self.instances[i as usize].scheduler.on_arrival(now, 1);
                    self.schedule_arrival();
                    (i, false)
                }
                Kind::Client => {
                    self.client_at = None;
                    self.client_event()?;
                    for k in 0..self.touched.len() {
                        let i = self.touched[k];
                        self.serve(i, false)?;
                    }
                    self.touched.clear();
                    self.arm_client_timer();
                    continue;
                }
                Kind::Timeout { instance, generation } => {
                    let inst = &mut self.instances[instance as usize];
                    if generation != inst.timer_generation {
                        continue; // superseded
                    }
                    inst.timer_at = None;
                    inst.scheduler.on_timeout(now);
                    (instance, true)
                }
                Kind::Depart { instance } => {
                    let inst = &mut self.instances[instance as usize];
                    inst.departing = false;
                    inst.scheduler.on_timeout(now);
                    self.dispatch(instance)?;
                    (instance, false)
                }
                Kind::Spin { instance, generation } => {
                    let inst = &self.instances[instance as usize];
                    if generation == inst.timer_generation
                        && let Some(deadline) = inst.timer_at
                    {
                        // The stretch from here to the deadline, spun (or, by the driver,
                        // yielded through): that long of a core's time.
                        self.db.submit_work(self.now, deadline.saturating_sub(self.now).max(1), &mut self.db_out);
                        self.handle_db_events()?;
                    }
                    continue;
                }
                Kind::Launch { query } => {
                    let slot = &self.slots[query as usize];
                    let p = Pending { query, distinct: slot.distinct, first_request: slot.first_request };
                    self.connect(slot.instance, p)?;
                    continue;
                }
                Kind::Done { query, version } => {
                    if !self.db.complete(ev.time, query, version, &mut self.db_out) {
                        continue; // rescheduled under contention
                    }
                    if self.db.owes_due() {
                        self.seq += 1;
                        self.owed_seq = self.seq;
                    }
                    if Db::is_work(query) {
                        // `[cpu]`'s work answers nobody: its server takes the next in line.
                        self.handle_db_events()?;
                        continue;
                    }
                    let i = self.answer(query)?;
                    if self.db.queries_in() == 0 {
                        self.db_idle_since = ev.time;
                    }
                    self.instances[i as usize].scheduler.on_complete(now);
                    self.handle_db_events()?;
                    self.release_connection(i)?;
                    (i, false)
                }
            };
            self.serve(instance, by_timer)?;
            if self.clients.is_some() {
                self.arm_client_timer();
            }
        }
        Ok(())
    }

    /// A request arrives now, for `key` (a trace's or a retry's), else for a key drawn from
    /// `[keys]`: it joins the stop of the instance the balancer picks. Returns that instance,
    /// the request's id and its key.
    fn arrive(&mut self, key: Option<u32>) -> (u32, u64, u32) {
        let key = key.unwrap_or_else(|| self.keys.next_key());
        let i = self.router.pick(key);
        let id = self.next_id;
        self.instances[i as usize].stop.push_back(Waiting { id, arrival: self.now, key, dropped: false });
        self.next_id += 1;
        self.in_system += 1;
        self.totals.arrivals += 1;
        self.measured_arrivals += u64::from(self.now >= self.warm_ns);
        self.last_arrival = self.now;
        (i, id, key)
    }

    /// The clients' instant: new attempts arrive, callers give up (`[client]`). The instances
    /// that heard an arrival are left in `touched`, to be served.
    fn client_event(&mut self) -> Result<()> {
        let now = self.now;
        let mut actions = std::mem::take(&mut self.client_out);
        if let Some(c) = &mut self.clients {
            c.on_timeout(now, &mut actions);
        }
        for a in actions.drain(..) {
            match a {
                ClientAction::Send { request, key, retry } => {
                    // A retry asks for its request's key; a fresh request for a trace's key, or
                    // else for one drawn from `[keys]`.
                    let (i, id, key) = self.arrive(key.filter(|_| retry || self.trace_keys));
                    self.app_work()?;
                    debug_assert_eq!(self.routed_to.len() as u64, id);
                    self.routed_to.push(i);
                    if let Some(c) = &mut self.clients {
                        c.on_sent(now, request, id, key);
                    }
                    if let Some(ts) = &mut self.timeseries {
                        let b = ts.at(now);
                        if retry {
                            b.retries += 1;
                        } else {
                            b.arrivals += 1;
                        }
                    }
                    self.instances[i as usize].scheduler.on_arrival(Instant::from_nanos(now), 1);
                    if self.touched.last() != Some(&i) {
                        self.touched.push(i);
                    }
                }
                ClientAction::GiveUp { attempt } => self.give_up(attempt)?,
            }
        }
        self.client_out = actions;
        if let Some(h) = self.clients.as_ref().and_then(Clients::horizon)
            && self.horizon.is_none()
        {
            self.set_horizon(h);
        }
        Ok(())
    }

    /// Attempt `id`'s caller gave up: if it is still at its instance's stop it is dropped there
    /// (it leaves the system now and boards no query); if it was sent it still runs.
    fn give_up(&mut self, id: u64) -> Result<()> {
        let i = *self.routed_to.get(id as usize).ok_or_else(|| anyhow!("attempt {id} gave up but never arrived"))?;
        let stop = &mut self.instances[i as usize].stop;
        // Ids at a stop increase from front to back; one no longer there was sent. At one
        // instance (and often in a fleet) they are consecutive: try that place first.
        let Some(front) = stop.front().map(|w| w.id) else { return Ok(()) };
        if id < front {
            return Ok(());
        }
        let guess = usize::try_from(id - front).unwrap_or(usize::MAX);
        let k = match stop.get(guess) {
            Some(w) if w.id == id => guess,
            _ => match stop.binary_search_by_key(&id, |w| w.id) {
                Ok(k) => k,
                Err(_) => return Ok(()),
            },
        };
        let w = &mut stop[k];
        ensure!(!w.dropped, "attempt {id} dropped twice");
        w.dropped = true;
        let waited = self.now - w.arrival;
        self.totals.dropped += 1;
        self.totals.sojourn_ns += u128::from(waited);
        self.totals.dropped_ns += u128::from(waited);
        ensure!(self.in_system >= 1, "a drop with nobody in the system");
        self.in_system -= 1;
        if let Some(c) = &mut self.clients {
            c.on_dropped(id);
        }
        Ok(())
    }

    fn arm_client_timer(&mut self) {
        let Some(c) = &self.clients else { return };
        let next = c.poll_timeout();
        if next == self.client_at {
            return;
        }
        self.client_at = next;
        self.client_key = next.map(|t| {
            self.seq += 1;
            queue::key(t.max(self.now), self.seq)
        });
    }

    /// After an input to instance `i` (`by_timer`: its deadline): its dispatches, or with
    /// `[driver]` a `Depart` a reaction later; then its timer.
    #[inline(always)]
    fn serve(&mut self, i: u32, by_timer: bool) -> Result<()> {
        if self.driver.is_none() {
            self.dispatch(i)?;
        } else {
            let inst = &mut self.instances[i as usize];
            if !inst.departing && inst.scheduler.has_action() {
                inst.departing = true;
                let reaction = self.driver.as_mut().map_or(0, |d| d.reaction(by_timer));
                self.push(self.now + reaction, Kind::Depart { instance: i });
            }
        }
        self.arm_timer(i);
        Ok(())
    }

    fn dispatch(&mut self, i: u32) -> Result<()> {
        while let Some(action) = self.instances[i as usize].scheduler.poll_action() {
            let (requests, ready_at) = match action {
                Action::Dispatch { requests, ready_at } => (requests, ready_at.as_nanos()),
                other => bail!("unknown scheduler action {other:?}"),
            };
            let q = self.free_slots.pop().unwrap_or_else(|| {
                self.slots.push(Slot::default());
                (self.slots.len() - 1) as u32
            });
            let now = self.now;
            let inst = &mut self.instances[i as usize];
            ensure!(
                requests >= 1 && requests <= inst.stop.len(),
                "dispatch of {requests} requests with {} waiting at instance {i}",
                inst.stop.len()
            );
            let slot = &mut self.slots[q as usize];
            ensure!(!slot.live, "query slot {q} reused while live");
            ensure!(ready_at <= now, "bus released at {ready_at} after its dispatch at {now}");
            slot.live = true;
            slot.instance = i;
            slot.dispatched_at = now;
            slot.ready_at = ready_at;
            slot.arrivals.clear();
            slot.ids.clear();
            let keep_ids = self.clients.is_some();
            let warm = self.warm_ns;
            // The query's service draw is keyed by its first request that boards (dropped
            // requests, `[client]` only, board nothing).
            let mut first_live = None;
            for w in inst.stop.iter().take(requests) {
                ensure!(
                    inst.last_boarded.is_none_or(|last| w.id > last),
                    "request {} boarded out of turn at instance {i}",
                    w.id
                );
                inst.last_boarded = Some(w.id);
                if w.dropped {
                    continue;
                }
                first_live.get_or_insert(w.id);
                slot.arrivals.push(w.arrival);
                if keep_ids {
                    slot.ids.push(w.id);
                }
                // Released at `ready_at`, or on boarding if the bus was already released.
                let released = ready_at.max(w.arrival);
                let added = released - w.arrival;
                self.totals.added_wait_ns += u128::from(added);
                self.totals.in_flight_wait_ns += u128::from(now - released);
                if w.arrival >= warm {
                    self.added_wait.record(added);
                    self.in_flight_wait.record(now - released);
                    self.over_budget += u64::from(added > self.budget_ns);
                }
            }
            let Some(first) = first_live else {
                // Every passenger's caller gave up: no query is sent, and the batch is over at
                // once (the scheduler cannot be told of abandonments, only of completions).
                slot.live = false;
                self.free_slots.push(q);
                inst.stop.drain(..requests);
                self.totals.dispatched_requests += requests as u64;
                self.totals.empty_dispatches += 1;
                inst.scheduler.on_complete(Instant::from_nanos(now));
                continue;
            };
            let live = slot.arrivals.len();
            if now >= warm {
                self.measured_queries += 1;
                self.drain_queries += u64::from(self.horizon.is_some_and(|h| now >= h));
            }
            let distinct = if live == 1 || (self.keys.all_unique() && !self.trace_keys) {
                live as u32
            } else {
                self.distinct.count(inst.stop.iter().take(requests).filter(|w| !w.dropped).map(|w| w.key))
            };
            inst.stop.drain(..requests);
            self.totals.dispatched_requests += requests as u64;
            self.totals.queries_sent += 1;
            self.distinct_sum += u64::from(distinct);
            if let Some(ts) = &mut self.timeseries {
                ts.at(now).queries += 1;
            }
            let query = Pending { query: q, distinct, first_request: first };
            // `[driver]`'s wake-up: the database has had nothing to do for this long.
            let idle = if self.db.queries_in() > 0 { 0 } else { now.saturating_sub(self.db_idle_since) };
            match self.driver.as_mut().filter(|d| d.launches_late()).map(|d| d.launch() + d.wake(idle)) {
                Some(launch) => {
                    (slot.distinct, slot.first_request) = (distinct, first);
                    self.push(now + launch, Kind::Launch { query: q });
                }
                None => self.connect(i, query)?,
            }
        }
        Ok(())
    }

    /// Sealed `query` of instance `i` goes to its pool: a connection, or the pool's queue.
    fn connect(&mut self, i: u32, query: Pending) -> Result<()> {
        let inst = &mut self.instances[i as usize];
        if inst.pool_in_use < self.pool_size {
            inst.pool_in_use += 1;
            self.send(query)
        } else {
            inst.pool_queue.push_back(query);
            Ok(())
        }
    }

    /// `[cpu]`: a request arrived now; its work goes to the database's servers.
    #[inline]
    fn app_work(&mut self) -> Result<()> {
        if self.work_ns == 0 {
            return Ok(());
        }
        self.db.submit_work(self.now, self.work_ns, &mut self.db_out);
        self.handle_db_events()
    }

    /// `query` has a connection: it goes to the database.
    fn send(&mut self, p: Pending) -> Result<()> {
        self.db.submit(self.now, p.query, p.distinct, p.first_request, &mut self.db_out);
        self.handle_db_events()
    }

    /// A query of instance `i` completed: its pool connection serves the next query waiting.
    fn release_connection(&mut self, i: u32) -> Result<()> {
        let inst = &mut self.instances[i as usize];
        ensure!(inst.pool_in_use > 0, "instance {i} freed a connection it did not hold");
        match inst.pool_queue.pop_front() {
            Some(next) => self.send(next),
            None => {
                inst.pool_in_use -= 1;
                Ok(())
            }
        }
    }

    fn handle_db_events(&mut self) -> Result<()> {
        for i in 0..self.db_out.len() {
            match self.db_out[i] {
                DbEvent::Started { query, .. } if Db::is_work(query) => {}
                DbEvent::Started { query, at } => {
                    let slot = &mut self.slots[query as usize];
                    ensure!(slot.live, "query {query} started but not live");
                    slot.started_at = at;
                    let n = slot.arrivals.len() as u64;
                    let connection = at - slot.dispatched_at;
                    let warm = self.warm_ns;
                    // One pass over the requests (each histogram still hears its values in
                    // the same order: the connection wait, one value, is recorded after).
                    let mut measured = 0;
                    for &a in &slot.arrivals {
                        if a >= warm {
                            measured += 1;
                            self.db_wait.record(at - slot.ready_at.max(a));
                        }
                        self.totals.queue_wait_ns += u128::from(at - a);
                        if self.record_waits {
                            self.queue_waits.push(at - a);
                        }
                    }
                    self.connection_wait.record_n(connection, measured);
                    self.totals.connection_wait_ns += u128::from(connection) * u128::from(n);
                }
                DbEvent::Due { query, version, at } if self.db.one_due() => {
                    self.seq += 1;
                    self.db_due = Some((queue::key(at, self.seq), query, version));
                }
                DbEvent::Due { query, version, at } => self.push(at, Kind::Done { query, version }),
            }
        }
        self.db_out.clear();
        Ok(())
    }

    /// The completion event the database still owes, if no query started since the completion
    /// that owes it (under car, the next caller's query usually did: its start rescheduled).
    fn settle_db(&mut self) {
        if !self.db.owes_due() {
            return;
        }
        self.db.settle(self.now, &mut self.db_out);
        for e in self.db_out.drain(..) {
            if let DbEvent::Due { query, version, at } = e {
                self.db_due = Some((queue::key(at, self.owed_seq), query, version));
            }
        }
    }

    /// Answers query `q`'s requests; returns its instance.
    fn answer(&mut self, q: u32) -> Result<u32> {
        let now = self.now;
        let slot = &mut self.slots[q as usize];
        ensure!(slot.live, "query {q} answered twice");
        slot.live = false;
        let service = now - slot.started_at;
        let n = slot.arrivals.len() as u64;
        let warm = self.warm_ns;
        self.totals.service_ns += u128::from(service) * u128::from(n);
        // One pass over the requests; the service time, one value, is recorded after.
        let mut measured = 0;
        for (woken_before, &a) in slot.arrivals.iter().enumerate() {
            self.totals.sojourn_ns += u128::from(now - a);
            // `[driver]`: the caller holds its answer a way back after the query's end.
            let l = now - a + self.driver.as_mut().map_or(0, |d| d.answer(woken_before));
            if a >= warm {
                measured += 1;
                self.latency.record(l);
            }
            if let Some(ts) = &mut self.timeseries {
                ts.at(a).latency.record(l);
            }
        }
        if let Some(c) = &mut self.clients {
            for &id in &slot.ids {
                if c.on_answer(now, id) == Answer::Success
                    && let Some(ts) = &mut self.timeseries
                {
                    ts.at(now).goodput += 1;
                }
            }
        }
        self.service.record_n(service, measured);
        self.totals.answered += n;
        self.totals.queries_completed += 1;
        ensure!(self.in_system >= n, "more answers than requests in the system");
        self.in_system -= n;
        self.free_slots.push(q);
        Ok(slot.instance)
    }

    fn arm_timer(&mut self, i: u32) {
        let inst = &mut self.instances[i as usize];
        let next = inst.scheduler.poll_timeout().map(Instant::as_nanos);
        if next == inst.timer_at {
            return;
        }
        inst.timer_generation = inst.timer_generation.wrapping_add(1);
        inst.timer_at = next;
        if let Some(t) = next {
            debug_assert!(t >= self.now, "deadline in the past");
            let generation = inst.timer_generation;
            // Deadlines come mostly in the order they fire (a fixed window's: each the
            // instance's first arrival + the window): the queue's run takes them in O(1).
            self.push_in_order(t.max(self.now), Kind::Timeout { instance: i, generation });
            if self.timer_ns > 0 {
                // `[cpu] timer_us`: the driver's timer is awake through the last stretch.
                self.push(t.saturating_sub(self.timer_ns).max(self.now), Kind::Spin { instance: i, generation });
            }
        }
    }

    fn finish(mut self, scenario: &Scenario, wall_s: f64) -> Result<RunOutput> {
        if let Some(c) = &self.clients {
            // The clients skip the deadlines of attempts answered in time (nothing happens at
            // them), but the run still lasts until the last one, with nobody in the system.
            ensure!(self.in_system == 0, "{} requests in the system at the end", self.in_system);
            self.now = self.now.max(c.last_deadline());
        }
        let t = &mut self.totals;
        for (i, inst) in self.instances.iter().enumerate() {
            let s = &inst.scheduler;
            t.scheduler_dispatches += s.stats().dispatches;
            ensure!(inst.stop.is_empty(), "{} requests left at the stop of instance {i}", inst.stop.len());
            ensure!(s.queued() == 0 && s.in_flight() == 0, "scheduler of instance {i} not idle at the end");
            ensure!(inst.pool_in_use == 0 && inst.pool_queue.is_empty(), "connections of instance {i} held at the end");
        }
        ensure!(self.db.running() == 0 && self.db.waiting() == 0, "queries left in the database");
        ensure!(
            t.answered + t.dropped == t.arrivals,
            "{} requests arrived, {} answered, {} dropped",
            t.arrivals,
            t.answered,
            t.dropped
        );
        ensure!(t.dispatched_requests == t.arrivals, "requests dispatched != arrived");
        ensure!(
            t.queries_sent == t.queries_completed && t.queries_sent + t.empty_dispatches == t.scheduler_dispatches,
            "queries sent {}, completed {}, batches dispatched {} ({} held only dropped requests)",
            t.queries_sent,
            t.queries_completed,
            t.scheduler_dispatches,
            t.empty_dispatches
        );
        if let Some(c) = &self.clients {
            ensure!(c.open_requests() == 0 && c.poll_timeout().is_none(), "clients still waiting at the end");
        }
        ensure!(t.area_ns == t.sojourn_ns, "Little's law on the sample path: area {} != sojourn {}", t.area_ns, t.sojourn_ns);
        let parts = t.added_wait_ns + t.in_flight_wait_ns + t.connection_wait_ns + t.service_ns + t.dropped_ns;
        ensure!(
            parts == t.sojourn_ns,
            "the waits, service and dropped requests' waits add up to {parts} ns, the latencies to {} ns",
            t.sojourn_ns
        );
        let sim_ns = self.now.max(1);
        let horizon = self.horizon.unwrap_or(self.now);
        // The statistics window: at least 1 ns, so an empty run divides by something.
        let window_s = (horizon.saturating_sub(self.warm_ns)).max(1) as f64 / 1e9;
        let servers = f64::from(scenario.db.servers);
        let p = &scenario.policy;
        let queries = t.queries_sent;
        let summary = RunSummary {
            scenario: scenario.name.clone(),
            policy: p.kind.name().to_string(),
            window_ms: matches!(p.kind, PolicyKind::Window | PolicyKind::Gated).then_some(p.window_ms),
            latency_budget_ms: (p.kind == PolicyKind::Adaptive).then_some(p.latency_budget_ms),
            seed: scenario.seed,
            requests: t.answered,
            queries,
            mean_batch: t.answered as f64 / queries.max(1) as f64,
            mean_distinct_keys: self.distinct_sum as f64 / queries.max(1) as f64,
            sim_time_s: sim_ns as f64 / 1e9,
            horizon_s: horizon as f64 / 1e9,
            drain_s: sim_ns.saturating_sub(horizon) as f64 / 1e9,
            drain_queries: self.drain_queries,
            offered_per_s: self.measured_arrivals as f64 / window_s,
            queries_per_s: self.measured_queries as f64 / window_s,
            latency_ms: LatencySummary::of(&self.latency),
            added_wait_ms: WaitSummary::of(&self.added_wait),
            added_wait_over_budget: self.over_budget as f64 / self.measured_arrivals.max(1) as f64,
            in_flight_wait_ms: WaitSummary::of(&self.in_flight_wait),
            connection_wait_ms: WaitSummary::of(&self.connection_wait),
            db_wait_ms: WaitSummary::of(&self.db_wait),
            service_ms: WaitSummary::of(&self.service),
            db_utilization: self.db.window_work_ns() / (self.db.capacity() * window_s * 1e9),
            db_occupancy: self.db.window_busy_ns() / (servers * window_s * 1e9),
            final_window_ms: self.instances.iter().map(|i| i.scheduler.current_window().as_secs_f64()).sum::<f64>()
                / self.instances.len() as f64
                * 1e3,
            client: self.clients.as_ref().map(|c| c.summary(window_s, self.measured_queries)),
        };
        let mut summary = summary;
        if let Some(c) = &summary.client {
            // The offered load is the callers' fresh requests; retries are reported apart.
            summary.offered_per_s = c.requests as f64 / window_s;
        }
        Ok(RunOutput {
            summary,
            latency: self.latency,
            added_wait: self.added_wait,
            in_flight_wait: self.in_flight_wait,
            connection_wait: self.connection_wait,
            db_wait: self.db_wait,
            service: self.service,
            timeseries: self.timeseries,
            queue_waits: self.queue_waits,
            totals: self.totals,
            events: self.events,
            wall_s,
        })
    }
}
