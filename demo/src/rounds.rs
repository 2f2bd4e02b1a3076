//! Repeated replays: every contender replayed a few times, the rounds interleaved, and each
//! figure reported as the median of its rounds with their spread.
//!
//! On a shared machine one replay can lose milliseconds to another process's time slice, which
//! moves a p99 by tens of percent, and a load that lasts a few seconds spoils every replay made
//! during it. So the contenders are replayed in rounds (round `r` starts at contender `r` and
//! goes round the list, so no contender always follows the same one or always runs at the same
//! point of a round), each replay is simulated on its own actual arrivals, and each error is
//! the median over the rounds of that round's error, the lowest and highest beside it. One
//! spoiled round out of three moves a median by at most the gap between the two others.

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

/// The median errors of a contender's rounds: queries, mean, p99.
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
    /// The median errors as one [`Errors`] (what the goals are judged on).
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
        spread_of(self.rounds.iter().map(Replayed::errors))
    }

    /// The errors of every round, without `[driver]`.
    pub fn instant_errors(&self) -> ErrorSpread {
        spread_of(self.rounds.iter().map(Replayed::instant_errors))
    }

    /// The errors of every round, with the driver's reaction and launch only.
    pub fn reaction_only_errors(&self) -> ErrorSpread {
        spread_of(self.rounds.iter().map(Replayed::reaction_only_errors))
    }

    /// The errors of every round, with one contention for every query size.
    pub fn one_factor_errors(&self) -> ErrorSpread {
        spread_of(self.rounds.iter().map(Replayed::one_factor_errors))
    }

    /// The errors of every round, without `[cpu]`.
    pub fn no_cpu_errors(&self) -> ErrorSpread {
        spread_of(self.rounds.iter().map(Replayed::no_cpu_errors))
    }

    /// The errors of every round, with `[cpu]`'s work queued with the queries.
    pub fn queued_cpu_errors(&self) -> ErrorSpread {
        spread_of(self.rounds.iter().map(Replayed::queued_cpu_errors))
    }

    /// A measured figure over the rounds.
    pub fn measured(&self, figure: impl Fn(&Measured) -> f64) -> Spread {
        Spread::of(self.rounds.iter().map(|r| figure(&r.measured)))
    }

    /// A predicted figure over the rounds.
    pub fn predicted(&self, figure: impl Fn(&Prediction) -> f64) -> Spread {
        Spread::of(self.rounds.iter().map(|r| figure(&r.predicted)))
    }
}

fn spread_of(errors: impl Iterator<Item = Errors> + Clone) -> ErrorSpread {
    ErrorSpread {
        queries: Spread::of(errors.clone().map(|e| e.queries)),
        mean: Spread::of(errors.clone().map(|e| e.mean)),
        p99: Spread::of(errors.map(|e| e.p99)),
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
