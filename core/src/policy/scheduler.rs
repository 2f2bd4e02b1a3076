//! The departure state machine shared by the tokio driver and the simulator.

use std::time::Duration;

use super::adaptive::Adaptive;
use super::gated::Gated;
use super::natural::Natural;
use super::{Action, Instant, Limits, Policy};
use crate::ConfigError;

/// Decides when waiting requests depart as one batch: a pure, clock-free state machine.
///
/// # Inputs
/// - [`on_arrival(now, n)`](Scheduler::on_arrival): `n` requests joined the stop.
/// - [`on_complete(now)`](Scheduler::on_complete): one dispatched batch finished (or was skipped
///   because every caller had gone).
/// - [`on_timeout(now)`](Scheduler::on_timeout): the clock reached a deadline returned by
///   [`poll_timeout`](Scheduler::poll_timeout). A spurious or early timeout is a no-op.
///
/// # Outputs
/// - [`poll_action()`](Scheduler::poll_action): the next [`Action`], or `None`. Call it until it
///   returns `None` after every input; each `Dispatch` has already been accounted for (the
///   requests have left the stop, a batch is in flight).
/// - [`poll_timeout()`](Scheduler::poll_timeout): when to call `on_timeout` next, if nothing
///   else happens first. `None` means "no timer": the next input will come from an arrival or a
///   completion.
///
/// # Whose wait is it?
///
/// A passenger's time before its batch leaves has two owners, and the scheduler keeps them
/// apart. The **policy** holds the bus until its rule says "go" (a window closes, a natural bus
/// is due at once, the bus is full): that instant is [`ready_since`](Scheduler::ready_since),
/// latched once reached, and every [`Action::Dispatch`] carries it as `ready_at`. From then on
/// the bus is released, and any further wait is the **backend's**: all `max_in_flight` places
/// are taken, and the bus departs (with everyone who boarded meanwhile) when one frees. So a
/// passenger arriving at `a` on a bus released at `r` and dispatched at `d` waited
/// `max(0, r − a)` for the policy and `d − max(a, r)` for a place. A driver that runs behind
/// (a late timer) shows up in the second part, not the first.
///
/// # Order and time
/// Feed inputs, then drain `poll_action`, then read `poll_timeout`. Time never goes backwards:
/// every input carries an instant at or after the previous one (an earlier one is treated as
/// the latest seen, and flagged by a debug assertion).
///
/// # Examples
///
/// A 1 ms window: the first arrival opens it, the timeout closes it.
///
/// ```
/// use busline::policy::{Action, Instant, Limits, Policy, Scheduler};
/// use std::time::Duration;
///
/// let limits = Limits { max_batch_size: 100, max_in_flight: 1 };
/// let mut s = Scheduler::new(Policy::window(Duration::from_millis(1)), limits).unwrap();
/// let t0 = Instant::from_nanos(0);
/// s.on_arrival(t0, 1);
/// assert_eq!(s.poll_action(), None);
/// assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_millis(1)));
/// s.on_arrival(t0 + Duration::from_micros(300), 2);
/// s.on_timeout(t0 + Duration::from_millis(1));
/// let ready_at = t0 + Duration::from_millis(1);
/// assert_eq!(s.poll_action(), Some(Action::Dispatch { requests: 3, ready_at }));
/// assert_eq!(s.poll_action(), None);
/// ```
#[derive(Debug, Clone)]
pub struct Scheduler {
    rule: Rule,
    limits: Limits,
    /// The latest instant any input carried.
    now: Instant,
    /// Requests at the stop, not yet dispatched.
    queued: usize,
    /// When the oldest waiting request arrived (the window opener); `None` when the stop is empty.
    opened_at: Option<Instant>,
    /// When the policy released the waiting requests (its rule said "go", or the bus filled);
    /// `None` while it holds them. Latched: a released bus is never held again.
    ready_since: Option<Instant>,
    /// Whether the released requests have found every in-flight place taken: their wait since
    /// the release is the backend's queue (else it is the driver's own delay).
    blocked: bool,
    /// Batches dispatched and not yet completed.
    in_flight: usize,
    stats: SchedulerStats,
}

/// Counters a [`Scheduler`] keeps about its own decisions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SchedulerStats {
    /// Requests that arrived.
    pub arrivals: u64,
    /// Batches dispatched.
    pub dispatches: u64,
    /// Batches completed.
    pub completions: u64,
}

/// The per-policy part of the decision: given the common state, when may the stop depart?
#[derive(Debug, Clone)]
enum Rule {
    Car,
    Window(Duration),
    Natural(Natural),
    Gated(Gated),
    Adaptive(Adaptive),
}

/// When the waiting requests may leave, according to a policy's rule (before the hard limits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Due {
    /// Now.
    Now,
    /// At this instant.
    At(Instant),
}

impl Scheduler {
    /// A scheduler applying `policy` within `limits`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] if a limit is zero or the policy's parameters are invalid.
    pub fn new(policy: Policy, limits: Limits) -> Result<Scheduler, ConfigError> {
        if limits.max_batch_size == 0 {
            return Err(ConfigError::new("max_batch_size", "must be at least 1"));
        }
        if limits.max_in_flight == 0 {
            return Err(ConfigError::new("max_in_flight", "must be at least 1"));
        }
        policy.validate()?;
        let rule = match policy {
            Policy::Car => Rule::Car,
            Policy::Window { window } if window.is_zero() => Rule::Natural(Natural::new(limits.max_in_flight)),
            Policy::Window { window } => Rule::Window(window),
            Policy::Natural => Rule::Natural(Natural::new(limits.max_in_flight)),
            Policy::Gated { window, threshold } => Rule::Gated(Gated::new(window, threshold)),
            Policy::Adaptive(cfg) => Rule::Adaptive(Adaptive::new(cfg)),
        };
        Ok(Scheduler {
            rule,
            limits,
            now: Instant::ZERO,
            queued: 0,
            opened_at: None,
            ready_since: None,
            blocked: false,
            in_flight: 0,
            stats: SchedulerStats::default(),
        })
    }

    /// The limits this scheduler obeys; under [`Policy::Car`] the batch size is 1.
    pub fn limits(&self) -> Limits {
        Limits {
            max_batch_size: self.max_batch_size(),
            ..self.limits
        }
    }

    /// Requests waiting at the stop.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Batches in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Counters of arrivals, dispatches and completions.
    pub fn stats(&self) -> SchedulerStats {
        self.stats
    }

    /// The window the policy currently applies when it waits (zero when it would not wait).
    /// For the adaptive policy this is the tuned value, for natural batching the hold it
    /// applies while batches are in flight; useful for reports.
    pub fn current_window(&self) -> Duration {
        match &self.rule {
            Rule::Car => Duration::ZERO,
            Rule::Natural(n) => n.hold(),
            Rule::Window(w) => *w,
            Rule::Gated(g) => g.window(),
            Rule::Adaptive(a) => a.window(),
        }
    }

    /// When the policy released the requests now waiting: the instant its rule let them go (a
    /// window's deadline, the arrival that made a natural bus due) or the bus filled, whichever
    /// came first. `None` while the policy still holds them (or nothing waits). Released
    /// requests that are still here wait for a free in-flight place: the backend's wait, not
    /// the policy's.
    pub fn ready_since(&self) -> Option<Instant> {
        self.ready_since
    }

    /// `n` requests arrived at `now`.
    #[inline]
    pub fn on_arrival(&mut self, now: Instant, n: usize) {
        self.advance(now);
        if n == 0 {
            return;
        }
        if self.queued == 0 {
            self.opened_at = Some(self.now);
        }
        self.queued += n;
        self.stats.arrivals += n as u64;
        self.rule_on_arrival(n);
        self.latch();
    }

    /// Tells the rule that `n` requests arrived (on time, or found late at a seal).
    fn rule_on_arrival(&mut self, n: usize) {
        match &mut self.rule {
            Rule::Gated(g) => g.on_arrival(self.now, n, self.queued),
            Rule::Adaptive(a) => a.on_arrival(self.now, n),
            Rule::Natural(r) => r.on_arrival(n),
            Rule::Car | Rule::Window(_) => {}
        }
    }

    /// One dispatched batch completed at `now`.
    #[inline]
    pub fn on_complete(&mut self, now: Instant) {
        self.advance(now);
        debug_assert!(self.in_flight > 0, "on_complete without a batch in flight");
        self.in_flight = self.in_flight.saturating_sub(1);
        self.stats.completions += 1;
        self.latch();
    }

    /// The clock reached `now` (a deadline from [`poll_timeout`](Scheduler::poll_timeout), or
    /// any other moment: an early or spurious call changes nothing).
    #[inline]
    pub fn on_timeout(&mut self, now: Instant) {
        self.advance(now);
        self.latch();
    }

    /// `n` requests that arrived after the last [`on_arrival`](Scheduler::on_arrival) but
    /// left with the batch just dispatched. A driver that only learns the exact number of
    /// passengers when it seals the batch reports the difference here, so arrival counts and
    /// rate estimates stay exact without queueing anyone.
    pub fn on_late_boarding(&mut self, now: Instant, n: usize) {
        self.advance(now);
        if n == 0 {
            return;
        }
        self.stats.arrivals += n as u64;
        self.rule_on_arrival(n);
        self.latch();
    }

    /// Would [`poll_action`](Scheduler::poll_action) return an action now?
    #[inline]
    pub fn has_action(&self) -> bool {
        self.queued > 0 && self.in_flight < self.limits.max_in_flight && self.ready_since.is_some()
    }

    /// Whether the waiting requests' departure is timed (a window that opened with the first
    /// of them) rather than immediate (a car, natural batching while it holds nothing). A
    /// driver in a cooperative runtime may let callers that are already runnable board before
    /// an immediate departure; a timed one has had its wait.
    pub fn is_timed(&self) -> bool {
        matches!(self.due(), Due::At(_))
    }

    /// The next thing to do, if any.
    #[inline]
    pub fn poll_action(&mut self) -> Option<Action> {
        if !self.has_action() {
            return None;
        }
        Some(self.dispatch())
    }

    /// Dispatches the oldest waiting requests now, whatever the policy and the in-flight limit
    /// say (a driver that shuts down sends what is queued). `None` if nothing waits.
    pub fn flush(&mut self) -> Option<Action> {
        (self.queued > 0).then(|| self.dispatch())
    }

    fn dispatch(&mut self) -> Action {
        let max = self.max_batch_size();
        let requests = self.queued.min(max);
        let opened_at = self.opened_at.unwrap_or(self.now);
        // A flush may send a bus the policy still held: it is released now.
        let ready_at = self.ready_since.unwrap_or(self.now);
        let since_release = self.now - ready_at;
        // The wait for a place is the backend's queue; a released bus that had a place and
        // still left later was delayed by the driver (a late timer): the policy's lateness.
        let late = if self.blocked { Duration::ZERO } else { since_release };
        self.queued -= requests;
        // Whoever is left behind by a full bus starts the next one's window now.
        self.opened_at = (self.queued > 0).then_some(self.now);
        self.in_flight += 1;
        self.stats.dispatches += 1;
        match &mut self.rule {
            Rule::Adaptive(a) => a.on_dispatch(ready_at - opened_at, late),
            Rule::Natural(n) => n.on_dispatch(),
            Rule::Car | Rule::Window(_) | Rule::Gated(_) => {}
        }
        // Left behind by a full bus under an immediate rule (a car, natural batching), the
        // rest were released with it; under a timed rule their own window starts now.
        if self.queued == 0 || self.due() != Due::Now {
            self.ready_since = None;
            self.blocked = false;
        }
        self.latch();
        Action::Dispatch { requests, ready_at }
    }

    /// When [`on_timeout`](Scheduler::on_timeout) should be called next, if nothing else
    /// happens first.
    #[inline]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.queued == 0 || self.in_flight >= self.limits.max_in_flight || self.ready_since.is_some() {
            // Nothing waits, only a completion can let it go, or it goes now: no timer.
            return None;
        }
        match self.due() {
            Due::At(t) if t > self.now => Some(t),
            // Due now: the latch missed nothing (time has not moved since); no timer.
            _ => None,
        }
    }

    /// Records the moment the policy releases the waiting requests: the deadline its rule
    /// reached (not when it was noticed: a timeout delivered late, or a deadline passed while
    /// every place was busy and no timer ran, is the backend's or the driver's delay), the
    /// present if the rule says "now", or the present if the bus is full.
    fn latch(&mut self) {
        if self.queued == 0 {
            self.ready_since = None;
            self.blocked = false;
            return;
        }
        if self.ready_since.is_some() {
            self.blocked |= self.in_flight >= self.limits.max_in_flight;
            return;
        }
        if self.queued >= self.max_batch_size() {
            self.ready_since = Some(self.now);
            self.blocked |= self.in_flight >= self.limits.max_in_flight;
            return;
        }
        self.ready_since = match self.due() {
            Due::Now => Some(self.now),
            Due::At(t) if t <= self.now => Some(t),
            Due::At(_) => None,
        };
        self.blocked |= self.ready_since.is_some() && self.in_flight >= self.limits.max_in_flight;
    }

    fn max_batch_size(&self) -> usize {
        match self.rule {
            Rule::Car => 1,
            _ => self.limits.max_batch_size,
        }
    }

    fn due(&self) -> Due {
        let opened = self.opened_at.unwrap_or(self.now);
        match &self.rule {
            Rule::Car => Due::Now,
            Rule::Natural(n) => n.due(opened),
            Rule::Window(w) => Due::At(opened + *w),
            Rule::Gated(g) => g.due(self.now, opened, self.queued),
            Rule::Adaptive(a) => a.due(self.now, opened),
        }
    }

    fn advance(&mut self, now: Instant) {
        debug_assert!(now >= self.now, "time went backwards: {now:?} < {:?}", self.now);
        if let Rule::Natural(n) = &mut self.rule {
            // Natural batching measures how busy the places were since the last input.
            n.observe(now - self.now, self.in_flight);
        }
        self.now = self.now.max(now);
        // Up to this input nothing changed: if the requests were released by now (latched, or
        // a deadline passed with no timer running) and every place was taken, they have been
        // queueing for one.
        if self.queued > 0 && self.in_flight >= self.limits.max_in_flight && !self.blocked {
            self.blocked = match self.ready_since {
                Some(_) => true,
                None => matches!(self.due(), Due::At(t) if t <= self.now),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_batch_size: usize, max_in_flight: usize) -> Limits {
        Limits {
            max_batch_size,
            max_in_flight,
        }
    }

    fn ms(x: u64) -> Instant {
        Instant::from_nanos(x * 1_000_000)
    }

    fn dispatch(n: usize) -> Option<Action> {
        Some(Action::Dispatch { requests: n, ready_at: Instant::ZERO })
    }

    /// Compares the batch sizes only: `ready_at` is checked by the tests about waits.
    fn sizes(a: Option<Action>) -> Option<Action> {
        a.map(|Action::Dispatch { requests, .. }| Action::Dispatch { requests, ready_at: Instant::ZERO })
    }

    #[test]
    fn zero_limits_are_config_errors() {
        assert!(Scheduler::new(Policy::Natural, limits(0, 1)).is_err());
        assert!(Scheduler::new(Policy::Natural, limits(1, 0)).is_err());
    }

    #[test]
    fn car_sends_every_request_alone() {
        let mut s = Scheduler::new(Policy::Car, limits(100, 8)).unwrap();
        s.on_arrival(ms(0), 3);
        assert_eq!(sizes(s.poll_action()), dispatch(1));
        assert_eq!(sizes(s.poll_action()), dispatch(1));
        assert_eq!(sizes(s.poll_action()), dispatch(1));
        assert_eq!(s.poll_action(), None);
        assert_eq!(s.in_flight(), 3);
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn windows_time_their_departures_cars_and_natural_batching_do_not() {
        let timed = |policy: Policy| {
            let mut s = Scheduler::new(policy, limits(100, 1)).unwrap();
            s.on_arrival(ms(0), 1);
            s.is_timed()
        };
        assert!(timed(Policy::window(Duration::from_millis(1))));
        assert!(!timed(Policy::window(Duration::ZERO)), "a zero window is natural batching");
        assert!(!timed(Policy::Natural));
        assert!(!timed(Policy::Car));
        // Gated, at one arrival a second against a 1 ms window: a car below its threshold of
        // waiting requests, a window from it on.
        let mut s = Scheduler::new(Policy::gated(Duration::from_millis(1), 4), limits(100, 1)).unwrap();
        for second in 0..3 {
            s.on_arrival(ms(1000 * second), 1);
        }
        assert!(!s.is_timed());
        s.on_arrival(ms(3000), 1);
        assert!(s.is_timed());
    }

    #[test]
    fn window_waits_from_the_first_arrival() {
        let mut s = Scheduler::new(Policy::window(Duration::from_millis(2)), limits(100, 1)).unwrap();
        s.on_arrival(ms(10), 1);
        s.on_arrival(ms(11), 1);
        assert_eq!(s.poll_action(), None);
        assert_eq!(s.poll_timeout(), Some(ms(12)));
        s.on_timeout(ms(11)); // early: nothing happens
        assert_eq!(s.poll_action(), None);
        s.on_timeout(ms(12));
        assert_eq!(sizes(s.poll_action()), dispatch(2));
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn a_full_bus_leaves_before_the_window() {
        let mut s = Scheduler::new(Policy::window(Duration::from_millis(5)), limits(4, 2)).unwrap();
        s.on_arrival(ms(0), 10);
        assert_eq!(sizes(s.poll_action()), dispatch(4));
        assert_eq!(sizes(s.poll_action()), dispatch(4));
        // Both in-flight places taken: the remaining 2 wait, with no timer, for a completion.
        assert_eq!(s.poll_action(), None);
        assert_eq!(s.poll_timeout(), None);
        s.on_complete(ms(1));
        // The leftovers' window opened when the last full bus left, at 0 ms.
        assert_eq!(s.poll_action(), None);
        assert_eq!(s.poll_timeout(), Some(ms(5)));
        s.on_timeout(ms(5));
        assert_eq!(sizes(s.poll_action()), dispatch(2));
    }

    #[test]
    fn zero_window_is_natural_batching() {
        let mut s = Scheduler::new(Policy::window(Duration::ZERO), limits(100, 1)).unwrap();
        s.on_arrival(ms(0), 1);
        assert_eq!(sizes(s.poll_action()), dispatch(1));
        // All busy: accumulate without a timer ...
        s.on_arrival(ms(1), 5);
        s.on_arrival(ms(2), 7);
        assert_eq!(s.poll_action(), None);
        assert_eq!(s.poll_timeout(), None);
        // ... and send everything the moment the batch in flight completes.
        s.on_complete(ms(3));
        assert_eq!(sizes(s.poll_action()), dispatch(12));
    }

    #[test]
    fn natural_never_waits_when_nothing_else_is_coming() {
        let mut s = Scheduler::new(Policy::Natural, limits(100, 4)).unwrap();
        for i in 0..10 {
            s.on_arrival(ms(i * 100), 1);
            assert_eq!(sizes(s.poll_action()), dispatch(1));
            assert_eq!(s.poll_timeout(), None);
            s.on_complete(ms(i * 100 + 1));
        }
    }

    #[test]
    fn late_boarders_are_counted_but_not_queued() {
        let mut s = Scheduler::new(Policy::Natural, limits(100, 1)).unwrap();
        s.on_arrival(ms(0), 2);
        assert_eq!(sizes(s.poll_action()), dispatch(2));
        s.on_late_boarding(ms(0), 3);
        assert_eq!(s.queued(), 0);
        assert_eq!(s.stats().arrivals, 5);
    }

    #[test]
    fn flush_ignores_window_and_in_flight_limit() {
        let mut s = Scheduler::new(Policy::window(Duration::from_secs(1)), limits(100, 1)).unwrap();
        s.on_arrival(ms(0), 1);
        assert_eq!(s.poll_action(), None);
        assert_eq!(sizes(s.flush()), dispatch(1));
        s.on_arrival(ms(1), 4);
        assert!(!s.has_action());
        assert_eq!(sizes(s.flush()), dispatch(4));
        assert_eq!(s.in_flight(), 2);
        assert_eq!(s.flush(), None);
    }

    fn ready_at(a: Option<Action>) -> Instant {
        match a {
            Some(Action::Dispatch { ready_at, .. }) => ready_at,
            None => panic!("no dispatch"),
        }
    }

    #[test]
    fn a_window_released_while_every_place_is_busy_is_released_at_its_deadline() {
        let mut s = Scheduler::new(Policy::window(Duration::from_millis(2)), limits(100, 1)).unwrap();
        s.on_arrival(ms(0), 1);
        s.on_timeout(ms(2));
        assert_eq!(ready_at(s.poll_action()), ms(2));
        // The only place is busy: the next bus's window (opened at 3) closes at 5 with no timer
        // running; the completion at 9 finds it released since 5, and a late passenger (7)
        // boards without any wait of the policy's.
        s.on_arrival(ms(3), 1);
        assert_eq!(s.poll_timeout(), None);
        s.on_arrival(ms(7), 1);
        assert_eq!(s.ready_since(), Some(ms(5)));
        s.on_complete(ms(9));
        let a = s.poll_action();
        assert_eq!(sizes(a), dispatch(2));
        assert_eq!(ready_at(a), ms(5));
        let a = a.unwrap();
        assert_eq!(a.policy_wait(ms(3)), Duration::from_millis(2));
        assert_eq!(a.policy_wait(ms(7)), Duration::ZERO);
        assert_eq!(s.ready_since(), None);
    }

    #[test]
    fn natural_batching_and_cars_add_no_wait_of_their_own() {
        for policy in [Policy::Natural, Policy::Car] {
            let mut s = Scheduler::new(policy, limits(100, 1)).unwrap();
            s.on_arrival(ms(0), 1);
            assert_eq!(ready_at(s.poll_action()), ms(0));
            // Queued behind the busy place: released on arrival, dispatched at the completion.
            s.on_arrival(ms(1), 1);
            s.on_arrival(ms(2), 1);
            assert_eq!(s.ready_since(), Some(ms(1)));
            s.on_complete(ms(4));
            let a = s.poll_action().unwrap();
            assert_eq!(a.policy_wait(ms(1)), Duration::ZERO);
            assert_eq!(a.policy_wait(ms(2)), Duration::ZERO);
        }
        // A car's leftovers stay released: the next car goes at the next completion.
        let mut s = Scheduler::new(Policy::Car, limits(100, 1)).unwrap();
        s.on_arrival(ms(0), 3);
        assert_eq!(ready_at(s.poll_action()), ms(0));
        s.on_complete(ms(1));
        assert_eq!(ready_at(s.poll_action()), ms(0));
    }

    #[test]
    fn a_full_bus_is_released_when_it_fills() {
        let mut s = Scheduler::new(Policy::window(Duration::from_millis(5)), limits(4, 1)).unwrap();
        s.on_arrival(ms(0), 1);
        s.on_arrival(ms(1), 3);
        assert_eq!(ready_at(s.poll_action()), ms(1));
        // A flush releases a held bus at the flush.
        s.on_arrival(ms(2), 1);
        assert_eq!(ready_at(s.flush()), ms(2));
    }

    #[test]
    fn counters_balance() {
        let mut s = Scheduler::new(Policy::window(Duration::from_micros(100)), limits(3, 2)).unwrap();
        let mut t = 0;
        let mut done = 0;
        for _ in 0..50 {
            t += 137_000;
            s.on_arrival(Instant::from_nanos(t), 2);
            s.on_timeout(Instant::from_nanos(t + 100_000));
            while let Some(Action::Dispatch { requests, .. }) = s.poll_action() {
                done += requests;
            }
            if s.in_flight() > 0 {
                s.on_complete(Instant::from_nanos(t + 100_000));
            }
        }
        assert_eq!(done + s.queued(), 100);
        assert_eq!(s.stats().arrivals, 100);
    }
}
