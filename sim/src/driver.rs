//! The batcher's driver (`[driver]`): how long a real one takes to carry out a departure.
//!
//! The core's `Scheduler` decides when a bus may leave; in the simulator's engine it then
//! leaves at that instant unless `[driver]` says otherwise. A real batcher's driver is a task
//! that must be woken and scheduled first (its **reaction**: requests arriving meanwhile still
//! board, so under load the real buses are fewer and fuller), and the batch function's future
//! is a task of its own that runs a little after the bus is sealed (its **launch**: nobody
//! boards, the query has not started). `busline-demo` measures both on the machine it runs on
//! (`demo/src/reaction.rs`) and writes them here.
//!
//! When the query ends, the driver publishes its outcome and wakes the callers in the order
//! they boarded; each caller's task must then run before its caller holds the answer (the
//! **way back**). The `k`-th caller woken (from 0) waits a draw from `answer_us` plus
//! `k × answer_per_caller_us`: the callers before it are run first, on the same few workers.
//! Only the caller's latency ends later; the request leaves the simulated system (and frees
//! nothing else) at the query's end, as the core counts the batch complete when it publishes.
//!
//! A query sealed when the database has run nothing for at least `wake_after_us` starts a
//! **wake-up** later (a draw from `wake_us`, added to its launch): the pool's and the
//! runtime's threads have parked, and a quiet machine's cores have gone idle. This one applies
//! to direct calls too, which have no other driver delay.
//!
//! Each delay is an empirical distribution given by quantiles at equal steps,
//! `q[0] <= q[1] <= ... <= q[n − 1]` at probabilities `0, 1/(n − 1), ..., 1`: a draw takes `u`
//! uniform on [0, 1) and interpolates linearly between the two quantiles around `u (n − 1)`
//! (the inverse of the piecewise-linear distribution function through them). One value is a
//! constant; none is no delay. Draws come from their own random stream (`Stream::Driver`), so
//! the arrivals, keys and service times of a run are the same with and without `[driver]`.

use rand::Rng;
use rand::rngs::SmallRng;

use crate::rng::{Stream, stream};
use crate::scenario::Scenario;

/// One delay's quantiles, in ns.
#[derive(Debug, Clone)]
struct Table(Vec<f64>);

impl Table {
    fn new(quantiles_us: &[f64]) -> Table {
        Table(quantiles_us.iter().map(|us| us * 1e3).collect())
    }

    fn is_zero(&self) -> bool {
        self.0.iter().all(|&q| q == 0.0)
    }

    /// A draw, ns (see the module docs).
    fn draw(&self, rng: &mut SmallRng) -> u64 {
        match self.0.as_slice() {
            [] => 0,
            [only] => crate::rng::round_ns(*only),
            q => {
                let x = rng.random::<f64>() * (q.len() - 1) as f64;
                let i = (x as usize).min(q.len() - 2);
                crate::rng::round_ns(q[i] + (x - i as f64) * (q[i + 1] - q[i]))
            }
        }
    }
}

/// The driver's delays of one run (shared by every instance of a fleet: one machine's driver).
#[derive(Debug, Clone)]
pub struct Driver {
    reaction: Table,
    timer_reaction: Table,
    launch: Table,
    answer: Table,
    /// ns per caller woken before.
    answer_per_caller: f64,
    wake: Table,
    /// ns of the database's idleness from which a query pays `wake`.
    wake_after: u64,
    rng: SmallRng,
}

impl Driver {
    /// The scenario's driver, or `None` when every delay is zero (a bus leaves the instant it
    /// is released, and the engine runs exactly as without `[driver]`).
    pub fn new(scenario: &Scenario) -> Option<Driver> {
        let d = &scenario.driver;
        if d.is_instant() {
            return None;
        }
        let timer = if d.timer_reaction_us.is_empty() { &d.reaction_us } else { &d.timer_reaction_us };
        Some(Driver {
            reaction: Table::new(&d.reaction_us),
            timer_reaction: Table::new(timer),
            launch: Table::new(&d.launch_us),
            answer: Table::new(&d.answer_us),
            answer_per_caller: d.answer_per_caller_us * 1e3,
            wake: Table::new(&d.wake_us),
            wake_after: crate::rng::round_ns(d.wake_after_us * 1e3),
            rng: stream(scenario.seed, Stream::Driver),
        })
    }

    /// The delay from a release to the seal, ns: `timer` when a deadline released the bus.
    pub fn reaction(&mut self, timer: bool) -> u64 {
        if timer { self.timer_reaction.draw(&mut self.rng) } else { self.reaction.draw(&mut self.rng) }
    }

    /// Whether a sealed bus's query may start later than its seal.
    pub fn launches_late(&self) -> bool {
        !self.launch.is_zero() || !self.wake.is_zero()
    }

    /// The wake-up of a query sealed after the database has had nothing to do for `idle_ns`,
    /// ns (zero below `wake_after_us`).
    pub fn wake(&mut self, idle_ns: u64) -> u64 {
        if idle_ns >= self.wake_after && !self.wake.is_zero() { self.wake.draw(&mut self.rng) } else { 0 }
    }

    /// The delay from the seal to the query's start, ns.
    pub fn launch(&mut self) -> u64 {
        self.launch.draw(&mut self.rng)
    }

    /// The way back of the caller woken `woken_before`-th in its bus (from 0): from the
    /// query's end to that caller holding its answer, ns.
    pub fn answer(&mut self, woken_before: usize) -> u64 {
        self.answer.draw(&mut self.rng) + crate::rng::round_ns(self.answer_per_caller * woken_before as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draws(q: &[f64], n: usize) -> Vec<u64> {
        let t = Table::new(q);
        let mut rng = stream(7, Stream::Driver);
        (0..n).map(|_| t.draw(&mut rng)).collect()
    }

    #[test]
    fn a_table_is_drawn_between_its_quantiles() {
        assert_eq!(draws(&[], 3), vec![0, 0, 0]);
        assert_eq!(draws(&[12.5], 3), vec![12_500; 3]);
        // Uniform on [10, 30] µs: mean 20, median 20, nothing outside.
        let mut xs = draws(&[10.0, 20.0, 30.0], 100_000);
        assert!(xs.iter().all(|&x| (10_000..=30_000).contains(&x)));
        let mean = xs.iter().sum::<u64>() as f64 / xs.len() as f64;
        assert!((mean - 20_000.0).abs() < 100.0, "{mean}");
        // Half the mass on [0, 1] µs, half on [1, 100] µs: the median is at 1 µs.
        xs = draws(&[0.0, 1.0, 100.0], 100_000);
        xs.sort_unstable();
        assert!((xs[xs.len() / 2] as f64 - 1_000.0).abs() < 1_000.0, "{}", xs[xs.len() / 2]);
    }

    /// Runs `policy` on a trace of `n` arrivals every `gap_us`, one connection at a time and a
    /// constant 1 ms query, with `[driver]` settings `sets`.
    fn run_trace(name: &str, n: u32, gap_us: u32, sets: &[&str]) -> crate::engine::RunOutput {
        let dir = std::env::temp_dir().join(format!("busline-sim-driver-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let csv: String = (0..n).map(|i| format!("{}\n", i * gap_us)).collect();
        std::fs::write(dir.join("t.csv"), csv).unwrap();
        let text = "name = \"t\"\n[traffic]\nkind = \"trace\"\npath = \"t.csv\"\ntime_unit = \"us\"\n\
                    [db]\nservers = 4\nservice = \"const\"\nbase_ms = 1.0\nper_key_cv = 0.0\n";
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        let scenario = Scenario::parse_with(text, &dir, &sets).unwrap();
        let out = crate::engine::run(&scenario, &crate::engine::RunOptions::default()).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        out
    }

    #[test]
    fn a_lone_request_waits_the_reaction_and_the_launch() {
        // Requests 10 ms apart never meet: each waits exactly its policy, the driver and the
        // query, and the timer's reaction applies to a window, the other to a car.
        let car = run_trace("car", 20, 10_000, &["policy.kind=car", "driver.reaction_us=[100]", "driver.launch_us=[50]"]);
        let l = &car.summary.latency_ms;
        assert!((l.mean - 1.15).abs() < 1e-9 && (l.max - 1.15).abs() < 1e-9, "{l:?}");
        let window = run_trace(
            "window",
            20,
            10_000,
            &["policy.kind=window", "policy.window_ms=1", "driver.reaction_us=[100]", "driver.timer_reaction_us=[300]", "driver.launch_us=[50]"],
        );
        let l = &window.summary.latency_ms;
        assert!((l.mean - 2.35).abs() < 1e-9 && (l.max - 2.35).abs() < 1e-9, "{l:?}");
        // The policy's wait is the window alone; the driver's is in-flight and connection wait.
        assert!((window.summary.added_wait_ms.mean - 1.0).abs() < 1e-9, "{:?}", window.summary.added_wait_ms);
    }

    #[test]
    fn each_caller_holds_its_answer_a_way_back_after_the_query() {
        // Two requests 0.1 ms apart in one 1 ms window, a 1 ms query: the bus ends at 2 ms.
        // The first caller woken holds its answer 30 µs later, the second 30 + 5 µs later.
        let out = run_trace(
            "back",
            2,
            100,
            &["policy.kind=window", "policy.window_ms=1", "driver.answer_us=[30]", "driver.answer_per_caller_us=5"],
        );
        let l = &out.summary.latency_ms;
        assert!((l.max - 2.03).abs() < 1e-9, "{l:?}");
        assert!((l.mean - (2.03 + 1.935) / 2.0).abs() < 1e-9, "{l:?}");
        // The requests leave the system at the query's end: the engine's own checks (Little's
        // law on the sample path) hold, and nothing else moved.
        assert_eq!(out.summary.queries, 1);
        assert_eq!(out.totals.answered, 2);
    }

    #[test]
    fn a_query_after_a_quiet_spell_pays_the_wake_up() {
        // Cars 10 ms apart, a 1 ms query: each after the first (the database idle since the
        // start, 0 µs) finds it idle 9 ms, over the 5 ms threshold, and pays 40 µs; 2 ms apart
        // (1 ms idle) none does.
        let sets = ["policy.kind=car", "driver.wake_us=[40]", "driver.wake_after_us=5000"];
        let l = run_trace("wake0", 20, 10_000, &sets).summary.latency_ms;
        assert!((l.mean - (1.0 + 19.0 * 1.04) / 20.0).abs() < 1e-9 && (l.max - 1.04).abs() < 1e-9, "{l:?}");
        let l = run_trace("wake1", 20, 2_000, &sets).summary.latency_ms;
        assert!((l.mean - 1.0).abs() < 1e-9 && (l.max - 1.0).abs() < 1e-9, "{l:?}");
    }

    #[test]
    fn requests_arriving_during_the_reaction_board() {
        // Every 0.3 ms, a 1 ms window: 4 requests per bus (0, 0.3, 0.6, 0.9 ms). With 0.45 ms
        // between the deadline and the seal, the one at 1.2 ms boards too: 5 per bus.
        let sets = ["policy.kind=window", "policy.window_ms=1"];
        let instant = run_trace("board0", 100, 300, &sets);
        assert_eq!(instant.summary.queries, 25);
        let late = run_trace("board1", 100, 300, &[sets[0], sets[1], "driver.timer_reaction_us=[450]"]);
        assert_eq!(late.summary.queries, 20);
        assert_eq!(late.totals.answered, 100);
    }
}
