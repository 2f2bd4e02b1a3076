//! Callers that give up: per-attempt timeouts, capped retries with jittered exponential
//! backoff, and open- or closed-loop arrivals (the `[client]` section).
//!
//! # The model
//!
//! A *request* is what a caller wants answered; an *attempt* is one try at it, one request at
//! the stop. A caller waits `timeout_ms` for an attempt's answer. On the timeout it stops
//! waiting: an attempt the policy has not yet sent is dropped from the stop (the database never
//! sees it); one already sent still runs (a database does not know its caller left), and its
//! answer, when it comes, is wasted. Then, while it has retries left, the caller waits a backoff
//! (`backoff_ms × 2^(k−1)` before retry `k`, less a random `jitter` fraction of it) and sends
//! the next attempt, for the same key. A request succeeds when one of its attempts is answered
//! within its timeout; it fails when its last attempt times out.
//!
//! Open loop: fresh requests arrive from `[traffic]` whatever became of earlier ones, so
//! retries add to the load (the sustaining effect of a retry storm: Bronson et al., HotOS
//! 2021; shared/DESIGN_NOTES.md §5). Closed loop: `population` callers each think (exponential,
//! mean `think_ms`), send one request and wait for it, retries included, before thinking again.
//!
//! # Interface (sans-IO, like `busline::policy::Scheduler`)
//!
//! Time comes in as arguments; the engine reads [`poll_timeout`](Clients::poll_timeout), calls
//! [`on_timeout`](Clients::on_timeout) at that instant and carries out the [`ClientAction`]s
//! it returns: `Send` puts a new attempt at the stop (and the engine reports its id with
//! [`on_sent`](Clients::on_sent)); `GiveUp` drops an attempt if it is still at the stop. The
//! engine reports every answer with [`on_answer`](Clients::on_answer). Time never goes
//! backwards; an early or repeated `on_timeout` is a no-op.

use std::collections::VecDeque;

use anyhow::Result;
use rand::Rng;
use rand::rngs::SmallRng;
use rand_distr::{Distribution, Exp1};
use serde::Serialize;

use crate::queue::{self, EventQueue};
use crate::rng::{Stream, stream};
use crate::scenario::{ClientConfig, Scenario};
use crate::stats::{Histogram, LatencySummary};
use crate::traffic::Traffic;

/// What the engine must do for the clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAction {
    /// A new attempt of `request` arrives at the stop now, for `key` (`None`: draw a fresh key
    /// from `[keys]`). Report its id with [`Clients::on_sent`].
    Send {
        /// The request (the caller's, across its attempts).
        request: u32,
        /// The key of earlier attempts, or a trace's key.
        key: Option<u32>,
        /// Whether this is a retry (not a fresh request).
        retry: bool,
    },
    /// The caller of attempt `attempt` stopped waiting: drop the attempt if it is unsent.
    GiveUp {
        /// The attempt's id (the engine's request id).
        attempt: u64,
    },
}

/// What became of an answered attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Answered within its timeout: its request succeeded.
    Success,
    /// Answered after its caller gave up: wasted work.
    Late,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    /// The next fresh request of the open loop.
    Fresh,
    /// Caller `caller` of the closed loop starts a request.
    Issue { caller: u32 },
    /// The next attempt of `request`.
    Retry { request: u32 },
    /// The timeout of attempt `attempt`.
    Deadline { attempt: u64 },
}

/// What the clients still expect of an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempt {
    /// Nothing: answered, or given up and then dropped or answered late.
    Settled,
    /// Its caller waits for it: the request it belongs to.
    Awaited(u32),
    /// Its caller gave up; it may still be dropped or answered late.
    Abandoned { measured: bool },
}

/// One request across its attempts.
#[derive(Debug, Clone, Copy)]
struct Request {
    /// When its first attempt was sent.
    started: u64,
    /// Attempts sent so far.
    attempts: u32,
    key: Option<u32>,
    /// Closed loop: the caller waiting for it.
    caller: Option<u32>,
    measured: bool,
}

/// Figures of the clients over a run (requests started after the warm-up).
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct ClientSummary {
    /// Requests started.
    pub requests: u64,
    /// Requests answered within their timeout (at some attempt).
    pub successes: u64,
    /// Successes per second of the horizon after the warm-up.
    pub goodput_per_s: f64,
    /// Successes over requests.
    pub success_fraction: f64,
    /// Attempts sent (first attempts and retries).
    pub attempts: u64,
    /// Retries sent.
    pub retries: u64,
    /// Attempts whose caller timed out.
    pub timeouts: u64,
    /// Timeouts over attempts.
    pub timeout_fraction: f64,
    /// Timed-out attempts dropped before the policy sent them.
    pub dropped_unsent: u64,
    /// Timed-out attempts that were sent and answered anyway (wasted work).
    pub answered_late: u64,
    /// Requests whose every attempt timed out.
    pub failed: u64,
    /// Database queries per successful request: the work amplification.
    pub queries_per_success: f64,
    /// Attempts per request.
    pub attempts_per_request: f64,
    /// First attempt to the successful answer, ms (successes only).
    pub success_latency_ms: LatencySummary,
}

/// The clients of a scenario with a `[client]` section.
#[derive(Debug)]
pub struct Clients {
    timeout_ns: Option<u64>,
    max_retries: u32,
    backoff_ns: f64,
    jitter: f64,
    think_ns: f64,
    closed: bool,
    rng: SmallRng,
    traffic: Option<Traffic>,
    /// The next fresh arrival of the open loop, drawn when its event was scheduled.
    next_fresh: Option<Option<u32>>,
    /// Fresh arrivals, closed-loop issues and retries, by (instant, sequence).
    events: EventQueue<Event>,
    /// The attempts' deadlines, in the order they were set: with one timeout for all and time
    /// never going backwards, that is their order in time (a FIFO, not a heap). Each carries
    /// its sequence number, so the two queues merge in the order one heap would give.
    /// Deadlines of attempts no longer awaited (answered in time) are taken off its front as
    /// soon as they get there: they would wake the engine for nothing.
    deadlines: VecDeque<(u64, u64, u64)>,
    /// The latest deadline set: the instant the last caller would stop waiting.
    last_deadline: u64,
    seq: u64,
    requests: Vec<Request>,
    free_requests: Vec<u32>,
    /// The state of attempts `attempt_base..`: ids are the engine's request ids, consecutive;
    /// settled attempts at the front are trimmed, so this spans the attempts still in flight.
    attempts: VecDeque<Attempt>,
    attempt_base: u64,
    limit_requests: u64,
    limit_ns: u64,
    warm_ns: u64,
    started: u64,
    horizon: Option<u64>,
    stats: Counters,
    success_latency: Histogram,
}

#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    requests: u64,
    successes: u64,
    attempts: u64,
    retries: u64,
    timeouts: u64,
    dropped_unsent: u64,
    answered_late: u64,
    failed: u64,
}

impl Clients {
    /// The clients of `scenario`, or `None` without a `[client]` section.
    ///
    /// # Errors
    ///
    /// If the open loop's traffic cannot be built (a trace that cannot be loaded).
    pub fn new(scenario: &Scenario) -> Result<Option<Clients>> {
        let Some(c) = &scenario.client else { return Ok(None) };
        Ok(Some(Clients::with_config(scenario, c)?))
    }

    fn with_config(scenario: &Scenario, c: &ClientConfig) -> Result<Clients> {
        let closed = c.population.is_some();
        let mut clients = Clients {
            timeout_ns: c.timeout_ms.map(|t| (t * 1e6).round() as u64),
            max_retries: c.max_retries,
            backoff_ns: c.backoff_ms * 1e6,
            jitter: c.jitter,
            think_ns: c.think_ms * 1e6,
            closed,
            rng: stream(scenario.seed, Stream::Client),
            traffic: if closed { None } else { Some(Traffic::new(scenario)?) },
            next_fresh: None,
            events: EventQueue::with_capacity(16),
            deadlines: VecDeque::new(),
            last_deadline: 0,
            seq: 0,
            requests: Vec::new(),
            free_requests: Vec::new(),
            attempts: VecDeque::new(),
            attempt_base: 0,
            limit_requests: scenario.requests.unwrap_or(u64::MAX),
            limit_ns: scenario.duration_s.map_or(u64::MAX, |s| (s * 1e9) as u64),
            warm_ns: scenario.warmup_ns(),
            started: 0,
            horizon: None,
            stats: Counters::default(),
            success_latency: Histogram::new(),
        };
        match c.population {
            Some(n) => {
                for caller in 0..n {
                    let t = clients.think(0);
                    clients.push(t, Event::Issue { caller });
                }
            }
            None => clients.schedule_fresh(0),
        }
        Ok(clients)
    }

    /// The next instant the clients act at, if any.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.peek().map(|(t, _)| t)
    }

    /// The next event (its instant and sequence), and whether it is a deadline.
    #[inline]
    fn peek(&self) -> Option<(u64, bool)> {
        let heap = self.events.peek_key().map(|k| (queue::time_of(k), queue::seq_of(k)));
        let deadline = self.deadlines.front().map(|&(t, seq, _)| (t, seq));
        match (heap, deadline) {
            (Some(h), Some(d)) => Some(if d < h { (d.0, true) } else { (h.0, false) }),
            (Some(h), None) => Some((h.0, false)),
            (None, Some(d)) => Some((d.0, true)),
            (None, None) => None,
        }
    }

    /// The state of `attempt`, if it is still tracked.
    fn attempt(&mut self, attempt: u64) -> Option<&mut Attempt> {
        let i = attempt.checked_sub(self.attempt_base)?;
        self.attempts.get_mut(usize::try_from(i).ok()?)
    }

    /// Settles `attempt` and trims the settled front.
    fn settle(&mut self, attempt: u64) {
        if let Some(a) = self.attempt(attempt) {
            *a = Attempt::Settled;
        }
        while self.attempts.front() == Some(&Attempt::Settled) {
            self.attempts.pop_front();
            self.attempt_base += 1;
        }
    }

    /// The end of fresh arrivals, once it is known: `duration_s`, or the instant of the last
    /// fresh request.
    pub fn horizon(&self) -> Option<u64> {
        self.horizon
    }

    /// Whether the traffic of the open loop has a key column (its keys then come with `Send`).
    pub fn trace_keys(&self) -> Option<u32> {
        self.traffic.as_ref().and_then(Traffic::trace_keys)
    }

    /// Everything due at `now`, as actions for the engine (appended to `out`).
    pub fn on_timeout(&mut self, now: u64, out: &mut Vec<ClientAction>) {
        while let Some((t, deadline)) = self.peek() {
            if t > now {
                break;
            }
            let ev = if deadline {
                let (_, _, attempt) = self.deadlines.pop_front().unwrap_or_default();
                Event::Deadline { attempt }
            } else {
                let Some((_, ev)) = self.events.pop() else { break };
                ev
            };
            match ev {
                Event::Fresh => {
                    let key = self.next_fresh.take().flatten();
                    let request = self.open(now, key, None);
                    out.push(ClientAction::Send { request, key, retry: false });
                    self.schedule_fresh(now);
                }
                Event::Issue { caller } => {
                    if self.started >= self.limit_requests || now >= self.limit_ns {
                        self.end(now);
                        continue; // the run is over for this caller
                    }
                    let request = self.open(now, None, Some(caller));
                    out.push(ClientAction::Send { request, key: None, retry: false });
                    if self.started >= self.limit_requests {
                        self.end(now);
                    }
                }
                Event::Retry { request } => {
                    let key = self.requests[request as usize].key;
                    out.push(ClientAction::Send { request, key, retry: true });
                }
                Event::Deadline { attempt } => {
                    let Some(&mut Attempt::Awaited(request)) = self.attempt(attempt) else { continue }; // answered
                    let r = self.requests[request as usize];
                    if let Some(state) = self.attempt(attempt) {
                        *state = Attempt::Abandoned { measured: r.measured };
                    }
                    self.count(r.measured, |c| c.timeouts += 1);
                    out.push(ClientAction::GiveUp { attempt });
                    if r.attempts <= self.max_retries {
                        let t = now + self.backoff(r.attempts);
                        self.push(t, Event::Retry { request });
                    } else {
                        self.count(r.measured, |c| c.failed += 1);
                        self.close(now, request);
                    }
                }
            }
        }
        self.skip_answered_deadlines();
    }

    /// Takes the deadlines of attempts no longer awaited off the front of the FIFO: at their
    /// instant nothing would happen (an attempt never becomes awaited again).
    fn skip_answered_deadlines(&mut self) {
        while let Some(&(_, _, attempt)) = self.deadlines.front() {
            if let Some(Attempt::Awaited(_)) = self.attempt(attempt) {
                break;
            }
            self.deadlines.pop_front();
        }
    }

    /// The instant the last caller would stop waiting (0 without a timeout): the run lasts
    /// until then, as if the answered attempts' deadlines had been waited for.
    pub fn last_deadline(&self) -> u64 {
        self.last_deadline
    }

    /// The engine put attempt `attempt` of `request` at the stop at `now`, for `key`.
    pub fn on_sent(&mut self, now: u64, request: u32, attempt: u64, key: u32) {
        let r = &mut self.requests[request as usize];
        r.attempts += 1;
        r.key = Some(key);
        let (measured, retry) = (r.measured, r.attempts > 1);
        self.count(measured, |c| {
            c.attempts += 1;
            c.retries += u64::from(retry);
        });
        let i = attempt.saturating_sub(self.attempt_base) as usize;
        // Attempts are sent in id order: this one is almost always the next at the back
        // (`resize` is a call that costs more than the rest of this function).
        if i < self.attempts.len() {
            self.attempts[i] = Attempt::Awaited(request);
        } else {
            if i > self.attempts.len() {
                self.attempts.resize(i, Attempt::Settled);
            }
            self.attempts.push_back(Attempt::Awaited(request));
        }
        if let Some(t) = self.timeout_ns {
            self.seq += 1;
            debug_assert!(self.deadlines.back().is_none_or(|&(last, _, _)| last <= now + t), "time went backwards");
            self.deadlines.push_back((now + t, self.seq, attempt));
            self.last_deadline = now + t;
        }
    }

    /// The engine dropped attempt `attempt` (given up) before sending it.
    pub fn on_dropped(&mut self, attempt: u64) {
        if let Some(&mut Attempt::Abandoned { measured }) = self.attempt(attempt) {
            self.settle(attempt);
            self.count(measured, |c| c.dropped_unsent += 1);
        }
    }

    /// Attempt `attempt` was answered at `now`.
    pub fn on_answer(&mut self, now: u64, attempt: u64) -> Answer {
        let state = self.attempt(attempt).map(|a| *a);
        if let Some(Attempt::Awaited(request)) = state {
            self.settle(attempt);
            let r = self.requests[request as usize];
            if r.measured {
                self.stats.successes += 1;
                self.success_latency.record(now - r.started);
            }
            self.close(now, request);
            self.skip_answered_deadlines();
            Answer::Success
        } else {
            if let Some(Attempt::Abandoned { measured }) = state {
                self.settle(attempt);
                self.count(measured, |c| c.answered_late += 1);
            }
            Answer::Late
        }
    }

    /// Requests still open (none at the end of a run).
    pub fn open_requests(&self) -> usize {
        self.requests.len() - self.free_requests.len()
    }

    /// The clients' figures; `window_s` is the horizon after the warm-up, `queries` the
    /// queries sent from the warm-up on.
    pub fn summary(&self, window_s: f64, queries: u64) -> ClientSummary {
        let s = &self.stats;
        let per = |a: u64, b: u64| a as f64 / b.max(1) as f64;
        ClientSummary {
            requests: s.requests,
            successes: s.successes,
            goodput_per_s: s.successes as f64 / window_s,
            success_fraction: per(s.successes, s.requests),
            attempts: s.attempts,
            retries: s.retries,
            timeouts: s.timeouts,
            timeout_fraction: per(s.timeouts, s.attempts),
            dropped_unsent: s.dropped_unsent,
            answered_late: s.answered_late,
            failed: s.failed,
            queries_per_success: per(queries, s.successes),
            attempts_per_request: per(s.attempts, s.requests),
            success_latency_ms: LatencySummary::of(&self.success_latency),
        }
    }

    fn push(&mut self, t: u64, ev: Event) {
        self.seq += 1;
        self.events.push(queue::key(t, self.seq), ev);
    }

    /// As [`push`](Clients::push), for an event no earlier than every one pushed in order
    /// before it (`EventQueue::push_in_order`).
    fn push_in_order(&mut self, t: u64, ev: Event) {
        self.seq += 1;
        self.events.push_in_order(queue::key(t, self.seq), ev);
    }

    fn count(&mut self, measured: bool, f: impl FnOnce(&mut Counters)) {
        if measured {
            f(&mut self.stats);
        }
    }

    /// No fresh request follows: the horizon is the duration, else now.
    fn end(&mut self, now: u64) {
        if self.horizon.is_none() {
            self.horizon = Some(if self.limit_ns == u64::MAX { now } else { self.limit_ns });
        }
    }

    /// Draws the open loop's next fresh arrival after `now`, unless the run's end is reached.
    fn schedule_fresh(&mut self, now: u64) {
        if self.started < self.limit_requests
            && let Some(traffic) = &mut self.traffic
            && let Some((t, key)) = traffic.next_arrival()
            && t < self.limit_ns
        {
            self.next_fresh = Some(key);
            // Fresh arrivals come in time order: the queue's run takes them in O(1), and the
            // heap holds only the retries (and the closed loop's issues).
            self.push_in_order(t, Event::Fresh);
            return;
        }
        self.end(now);
    }

    fn open(&mut self, now: u64, key: Option<u32>, caller: Option<u32>) -> u32 {
        self.started += 1;
        let measured = now >= self.warm_ns;
        self.count(measured, |c| c.requests += 1);
        let r = Request { started: now, attempts: 0, key, caller, measured };
        match self.free_requests.pop() {
            Some(i) => {
                self.requests[i as usize] = r;
                i
            }
            None => {
                self.requests.push(r);
                (self.requests.len() - 1) as u32
            }
        }
    }

    /// `request` is over (answered or out of retries): a closed-loop caller thinks again.
    fn close(&mut self, now: u64, request: u32) {
        self.free_requests.push(request);
        if let Some(caller) = self.requests[request as usize].caller {
            let t = self.think(now);
            self.push(t, Event::Issue { caller });
        }
    }

    fn think(&mut self, now: u64) -> u64 {
        if !self.closed || self.think_ns == 0.0 {
            return now;
        }
        let e: f64 = Exp1.sample(&mut self.rng);
        now + (e * self.think_ns).round() as u64
    }

    /// The wait before the retry that follows attempt `attempts` (1-based): exponential
    /// backoff, less a uniformly drawn `jitter` fraction.
    fn backoff(&mut self, attempts: u32) -> u64 {
        let b = self.backoff_ns * 2f64.powi(attempts.saturating_sub(1).min(60) as i32);
        let u: f64 = self.rng.random();
        (b * (1.0 - self.jitter * u)).round() as u64
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn clients(client: &str) -> Clients {
        let text = format!(
            "name = \"c\"\nseed = 3\nrequests = 10\n[traffic]\nkind = \"poisson\"\nrate_per_s = 100.0\n[client]\n{client}\n"
        );
        Clients::new(&Scenario::parse_with(&text, Path::new("."), &[]).unwrap()).unwrap().unwrap()
    }

    #[test]
    fn backoff_doubles_and_jitter_only_shortens_it() {
        let mut c = clients("timeout_ms = 1.0\nmax_retries = 5\nbackoff_ms = 2.0\njitter = 0.0");
        assert_eq!([1, 2, 3].map(|k| c.backoff(k)), [2_000_000, 4_000_000, 8_000_000]);
        let mut c = clients("timeout_ms = 1.0\nmax_retries = 5\nbackoff_ms = 2.0\njitter = 0.5");
        let draws: Vec<u64> = (0..1000).map(|_| c.backoff(2)).collect();
        assert!(draws.iter().all(|&b| (2_000_000..=4_000_000).contains(&b)), "within [b/2, b]");
        assert!(draws.iter().any(|&b| b < 2_500_000) && draws.iter().any(|&b| b > 3_500_000), "spread");
    }

    #[test]
    fn an_attempt_answered_in_time_wakes_nobody_at_its_deadline() {
        let mut c = clients("timeout_ms = 1.0\nmax_retries = 1\nbackoff_ms = 0.0");
        let mut out = Vec::new();
        let t0 = c.poll_timeout().unwrap();
        c.on_timeout(t0, &mut out);
        let [ClientAction::Send { request, .. }] = out[..] else { panic!("{out:?}") };
        c.on_sent(t0, request, 0, 7);
        let deadline = t0 + 1_000_000;
        assert!(c.deadlines.front().is_some_and(|d| d.0 == deadline), "awaited: its deadline is set");
        assert_eq!(c.on_answer(t0 + 5, 0), Answer::Success);
        assert!(c.deadlines.is_empty(), "answered: its deadline is skipped");
        assert_ne!(c.poll_timeout(), Some(deadline), "the next wake-up is the next fresh request's");
        assert_eq!(c.last_deadline(), deadline, "the run still lasts until it");
    }

    #[test]
    fn an_attempt_answered_in_time_succeeds_and_a_late_one_is_wasted() {
        let mut c = clients("timeout_ms = 1.0\nmax_retries = 1\nbackoff_ms = 0.0");
        let mut out = Vec::new();
        let t0 = c.poll_timeout().unwrap();
        c.on_timeout(t0, &mut out);
        let [ClientAction::Send { request, key: None, retry: false }] = out[..] else { panic!("{out:?}") };
        c.on_sent(t0, request, 0, 7);
        out.clear();
        // The timeout fires before the next fresh arrival only if it is earlier: step to it.
        let deadline = t0 + 1_000_000;
        while c.poll_timeout().is_some_and(|t| t < deadline) {
            let t = c.poll_timeout().unwrap();
            c.on_timeout(t, &mut out);
            out.retain(|a| !matches!(a, ClientAction::Send { retry: false, .. }));
        }
        c.on_timeout(deadline, &mut out);
        assert!(out.contains(&ClientAction::GiveUp { attempt: 0 }), "{out:?}");
        assert!(out.contains(&ClientAction::Send { request, key: Some(7), retry: true }), "{out:?}");
        assert_eq!(c.on_answer(deadline + 5, 0), Answer::Late);
        c.on_sent(deadline, request, 1, 7);
        assert_eq!(c.on_answer(deadline + 10, 1), Answer::Success);
        assert_eq!((c.stats.timeouts, c.stats.retries, c.stats.answered_late, c.stats.successes), (1, 1, 1, 1));
    }
}
