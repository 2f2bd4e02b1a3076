//! Repeated replays: every contender replayed a few times, the rounds interleaved, and each
//! figure reported as the median of its rounds with their spread.
//!
//! On a shared machine one replay can lose milliseconds to another process's time slice, which
//! moves a p99 by tens of percent, and a load that lasts a few seconds spoils every replay made
//! during it. So the contenders are replayed in rounds (round `r` starts at contender `r` and
//! goes round the list, so no contender always follows the same one or always runs at the same
//! point of a round), and each replay is simulated on its own actual arrivals. Each figure is
//! then the median of its rounds, with the lowest and highest beside it: the real system's own
//! spread on this machine. An error sets the median prediction against the median measurement
//! (each round's own error, its prediction against its measurement, gives the brackets), and a
//! figure that misses its goal is said to miss *within the spread* when the median prediction
//! lies between the lowest and the highest round measured: the real system itself moved that
//! far from one replay of the same trace to the next. One spoiled round out of three moves a
//! median by at most the gap between the two others.

use serde::Serialize;

use crate::calibrate::median_of_sorted;
use crate::replay::Measured;
use crate::simcheck::{Errors, Prediction};

/// One replay of one contender, and the simulator's predictions on its arrivals.
#[derive(Debug, Clone)]
pub struct Replayed {
    /// What the replay measured.
    pub measured: Measured,
    /// The simulator's prediction, with the driver's measured delays.
    pub predicted: Prediction,
    /// The same without `[driver]` (a bus leaves the instant the policy releases it).
    pub instant: Prediction,
    /// The same with the driver's reaction and launch only (no way back, no wake-up).
    pub reaction_only: Prediction,
    /// The same with one contention for every query size (the model before contention by
    /// size; see [`crate::calibrate::CostModel::one_factor`]).
    pub one_factor: Prediction,
    /// The same without `[cpu]` (no application work per request on the servers).
    pub no_cpu: Prediction,
    /// The same with `[cpu]`'s work queued with the queries, first come first served (the
    /// model before processor sharing).
    pub queued_cpu: Prediction,
    /// The same with the calibration's runner-up fit of `servers` and the contention
    /// ([`crate::calibrate::CostModel::runner_up`]; `None` when there is none).
    pub runner_up: Option<Prediction>,
    /// A gated contender's prediction with its window 10 % shorter and 10 % longer (the
    /// sensitivity of its count to the gate's timing; `None` for other policies).
    pub window_sensitivity: Option<[Prediction; 2]>,
    /// Direct calls' prediction with every query 5 % cheaper and 5 % dearer (`base_ms` and
    /// `per_key_ms`; the sensitivity of a queue on the edge of saturation to the queries' cost;
    /// `None` for batchers).
    pub cost_sensitivity: Option<[Prediction; 2]>,
    /// The requests split by the part of the trace they arrived in, measured and predicted.
    pub parts: Vec<crate::segments::Part>,
    /// The slowest 1 % of the measured requests.
    pub tail: crate::segments::Tail,
}

impl Replayed {
    /// The prediction's errors against this replay.
    pub fn errors(&self) -> Errors {
        Errors::of(&self.predicted, &self.measured)
    }

    /// The errors without `[driver]` against this replay.
    pub fn instant_errors(&self) -> Errors {
        Errors::of(&self.instant, &self.measured)
    }

    /// The errors with the driver's reaction and launch only against this replay.
    pub fn reaction_only_errors(&self) -> Errors {
        Errors::of(&self.reaction_only, &self.measured)
    }

    /// The errors with one contention for every query size against this replay.
    pub fn one_factor_errors(&self) -> Errors {
        Errors::of(&self.one_factor, &self.measured)
    }

    /// The errors without `[cpu]` against this replay.
    pub fn no_cpu_errors(&self) -> Errors {
        Errors::of(&self.no_cpu, &self.measured)
    }

    /// The errors with `[cpu]`'s work queued with the queries against this replay.
    pub fn queued_cpu_errors(&self) -> Errors {
        Errors::of(&self.queued_cpu, &self.measured)
    }
}

/// Every round of one contender.
#[derive(Debug, Clone)]
pub struct Contended {
    /// The contender's label.
    pub label: String,
    /// Its replays, in the order they ran.
    pub rounds: Vec<Replayed>,
}

/// The median of some rounds' figures, with the lowest and the highest.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    /// The median (of an even count, the mean of the two middle figures).
    pub median: f64,
    /// The lowest.
    pub min: f64,
    /// The highest.
    pub max: f64,
}

impl Spread {
    /// The spread of `xs`; NaN everywhere when there are none.
    pub fn of(xs: impl IntoIterator<Item = f64>) -> Spread {
        let mut xs: Vec<f64> = xs.into_iter().collect();
        if xs.is_empty() {
            return Spread { median: f64::NAN, min: f64::NAN, max: f64::NAN };
        }
        xs.sort_unstable_by(f64::total_cmp);
        Spread { median: median_of_sorted(&xs), min: xs[0], max: xs[xs.len() - 1] }
    }
}

/// The errors of a contender's rounds: queries, mean, p99. Each [`Spread`]'s `median` is the
/// median prediction's error against the median measurement (what the goals are judged on);
/// its `min` and `max` are the lowest and highest of the rounds' own errors (each round's
/// prediction against that round's measurement).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ErrorSpread {
    /// Of the query count.
    pub queries: Spread,
    /// Of the mean latency.
    pub mean: Spread,
    /// Of the p99 latency.
    pub p99: Spread,
}

impl ErrorSpread {
    /// The errors of the medians as one [`Errors`] (what the goals are judged on).
    pub fn median(&self) -> Errors {
        Errors { queries: self.queries.median, mean: self.mean.median, p99: self.p99.median }
    }
}

impl Contended {
    /// The round whose measured mean latency is the median (of an even count, the lower
    /// middle one): the replay the report's tables of counts and delays show.
    ///
    /// # Panics
    ///
    /// If there is no round.
    pub fn median_round(&self) -> &Replayed {
        let mut order: Vec<&Replayed> = self.rounds.iter().collect();
        order.sort_by(|a, b| a.measured.latency.mean().total_cmp(&b.measured.latency.mean()));
        order[(order.len() - 1) / 2]
    }

    /// The errors of every round, with the driver's delays.
    pub fn errors(&self) -> ErrorSpread {
        spread_of(&self.rounds, |r| &r.predicted)
    }

    /// The errors of every round, without `[driver]`.
    pub fn instant_errors(&self) -> ErrorSpread {
        spread_of(&self.rounds, |r| &r.instant)
    }

    /// The errors of every round, with the driver's reaction and launch only.
    pub fn reaction_only_errors(&self) -> ErrorSpread {
        spread_of(&self.rounds, |r| &r.reaction_only)
    }

    /// The errors of every round, with one contention for every query size.
    pub fn one_factor_errors(&self) -> ErrorSpread {
        spread_of(&self.rounds, |r| &r.one_factor)
    }

    /// The errors of every round, without `[cpu]`.
    pub fn no_cpu_errors(&self) -> ErrorSpread {
        spread_of(&self.rounds, |r| &r.no_cpu)
    }

    /// The errors of every round, with `[cpu]`'s work queued with the queries.
    pub fn queued_cpu_errors(&self) -> ErrorSpread {
        spread_of(&self.rounds, |r| &r.queued_cpu)
    }

    /// The errors of every round with the runner-up fit (`None` if a round has none).
    pub fn runner_up_errors(&self) -> Option<ErrorSpread> {
        self.rounds.iter().all(|r| r.runner_up.is_some()).then(|| {
            spread_of(&self.rounds, |r| r.runner_up.as_ref().expect("every round has a runner-up prediction"))
        })
    }

    /// A measured figure over the rounds.
    pub fn measured(&self, figure: impl Fn(&Measured) -> f64) -> Spread {
        Spread::of(self.rounds.iter().map(|r| figure(&r.measured)))
    }

    /// A predicted figure over the rounds.
    pub fn predicted(&self, figure: impl Fn(&Prediction) -> f64) -> Spread {
        Spread::of(self.rounds.iter().map(|r| figure(&r.predicted)))
    }

    /// Queries, mean and p99 latency over the rounds, measured against predicted, each judged
    /// against its goal and against the real system's own spread.
    pub fn verdicts(&self) -> [Verdict; 3] {
        use crate::simcheck::{GOAL_MEAN, GOAL_P99, GOAL_QUERIES};
        [
            Verdict::of(self.measured(|m| m.db.queries as f64), self.predicted(|p| p.queries), GOAL_QUERIES),
            Verdict::of(self.measured(mean_ms), self.predicted(|p| p.mean_ms), GOAL_MEAN),
            Verdict::of(self.measured(p99_ms), self.predicted(|p| p.p99_ms), GOAL_P99),
        ]
    }
}

fn spread_of(rounds: &[Replayed], prediction: impl Fn(&Replayed) -> &Prediction) -> ErrorSpread {
    let errors: Vec<Errors> = rounds.iter().map(|r| Errors::of(prediction(r), &r.measured)).collect();
    let median = |f: fn(&Prediction) -> f64| Spread::of(rounds.iter().map(|r| f(prediction(r)))).median;
    let of_medians = Errors {
        queries: rel(median(|p| p.queries), Spread::of(rounds.iter().map(|r| r.measured.db.queries as f64)).median),
        mean: rel(median(|p| p.mean_ms), Spread::of(rounds.iter().map(|r| mean_ms(&r.measured))).median),
        p99: rel(median(|p| p.p99_ms), Spread::of(rounds.iter().map(|r| p99_ms(&r.measured))).median),
    };
    let with = |f: fn(&Errors) -> f64, at_median: f64| Spread { median: at_median, ..Spread::of(errors.iter().map(f)) };
    ErrorSpread {
        queries: with(|e| e.queries, of_medians.queries),
        mean: with(|e| e.mean, of_medians.mean),
        p99: with(|e| e.p99, of_medians.p99),
    }
}

fn rel(predicted: f64, measured: f64) -> f64 {
    if measured > 0.0 { (predicted - measured) / measured } else { f64::NAN }
}

/// A replay's mean latency, ms.
pub fn mean_ms(m: &Measured) -> f64 {
    m.latency.mean() / 1e6
}

/// A replay's p99 latency, ms.
pub fn p99_ms(m: &Measured) -> f64 {
    m.latency.quantile(0.99) as f64 / 1e6
}

/// One figure of a contender over its rounds: measured and predicted, and how they compare.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Verdict {
    /// The rounds' measurements.
    pub measured: Spread,
    /// The rounds' predictions (each on its round's arrivals).
    pub predicted: Spread,
    /// The median prediction against the median measurement, relative.
    pub error: f64,
    /// Whether `error` is within the figure's goal.
    pub met: bool,
    /// Whether the median prediction lies between the lowest and the highest measurement.
    pub within_spread: bool,
}

impl Verdict {
    fn of(measured: Spread, predicted: Spread, goal: f64) -> Verdict {
        let error = rel(predicted.median, measured.median);
        Verdict {
            measured,
            predicted,
            error,
            met: error.abs() <= goal,
            within_spread: predicted.median >= measured.min && predicted.median <= measured.max,
        }
    }
}

/// The order of the contenders (indices into a list of `n`) in round `round`: from contender
/// `round mod n` round the list.
pub fn order(round: usize, n: usize) -> Vec<usize> {
    (0..n).map(|i| (round + i) % n.max(1)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spread_is_the_median_and_the_extremes() {
        let s = Spread::of([3.0, -1.0, 10.0]);
        assert_eq!(s, Spread { median: 3.0, min: -1.0, max: 10.0 });
        assert_eq!(Spread::of([1.0, 2.0, 4.0, 8.0]).median, 3.0);
        assert_eq!(Spread::of([5.0]), Spread { median: 5.0, min: 5.0, max: 5.0 });
        assert!(Spread::of([]).median.is_nan());
    }

    fn prediction(queries: f64) -> Prediction {
        Prediction { queries, mean_ms: 0.0, p99_ms: 0.0, db_wait_ms: 0.0, stages_ms: [0.0; 4] }
    }

    fn round(measured_queries: u64, predicted_queries: f64) -> Replayed {
        let mut measured = Measured::for_test(Vec::new());
        measured.db.queries = measured_queries;
        let p = prediction(predicted_queries);
        Replayed {
            measured,
            predicted: p,
            instant: p,
            reaction_only: p,
            one_factor: p,
            no_cpu: p,
            queued_cpu: p,
            runner_up: None,
            window_sensitivity: None,
            cost_sensitivity: None,
            parts: Vec::new(),
            tail: crate::segments::Tail {
                latency: busline_sim::stats::Histogram::new(),
                stages: crate::replay::Stages::default(),
                from: [0; crate::segments::PARTS.len()],
            },
        }
    }

    #[test]
    fn the_error_sets_the_median_prediction_against_the_median_measurement() {
        // Measured 90, 100, 130; predicted 120, 108, 100: each round's own error +33, +8, −23 %.
        let c = Contended { label: "t".into(), rounds: vec![round(90, 120.0), round(100, 108.0), round(130, 100.0)] };
        let e = c.errors().queries;
        assert!((e.median - 0.08).abs() < 1e-12, "median 108 against median 100: {e:?}");
        assert!((e.min - (100.0 / 130.0 - 1.0)).abs() < 1e-12 && (e.max - (120.0 / 90.0 - 1.0)).abs() < 1e-12, "{e:?}");
        let [q, _, _] = c.verdicts();
        assert_eq!(q.measured, Spread { median: 100.0, min: 90.0, max: 130.0 });
        assert_eq!(q.predicted.median, 108.0);
        assert!(!q.met, "8 % misses the 5 % goal");
        assert!(q.within_spread, "108 lies within 90-130");
        // A prediction beyond every round is outside the spread.
        let c = Contended { label: "t".into(), rounds: vec![round(90, 140.0), round(100, 140.0), round(130, 140.0)] };
        let [q, _, _] = c.verdicts();
        assert!(!q.met && !q.within_spread);
        // One within the goal meets it, whether or not the rounds spread as far (here not at all).
        let c = Contended { label: "t".into(), rounds: vec![round(100, 102.0); 3] };
        let [q, _, _] = c.verdicts();
        assert!(q.met && !q.within_spread);
    }

    #[test]
    fn every_round_visits_every_contender_once_from_a_new_start() {
        for r in 0..9 {
            let o = order(r, 7);
            let mut sorted = o.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..7).collect::<Vec<_>>());
            assert_eq!(o[0], r % 7);
        }
        assert_eq!(order(1, 3), vec![1, 2, 0]);
    }
}
