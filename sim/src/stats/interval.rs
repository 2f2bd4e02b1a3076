//! Confidence intervals over independent replications.
//!
//! A figure of a scenario (queries, a p99, a ratio between two policies) is measured once per
//! replication; replications use different seeds and are independent, so the figure's mean
//! over `n` replications has the Student-t interval `mean ± t(0.975, n − 1) × s / √n`, `s` the
//! sample standard deviation. Comparisons between two policies use the *paired* differences
//! (replication `r` of both used the same seed: common random numbers), whose spread is far
//! smaller than either figure's.

use std::fmt;

/// Two-sided 95 % quantiles of Student's t, `t(0.975, df)` for df = 1..=30 (any statistics
/// table, e.g. NIST/SEMATECH e-Handbook 1.3.6.7.2).
const T_975: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
    2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
    2.052, 2.048, 2.045, 2.042,
];

/// `t(0.975, df)`: the table up to 30 degrees of freedom, then the first two terms of the
/// Cornish–Fisher expansion around the normal quantile z = 1.95996,
/// `z + (z³ + z)/(4 df) + (5z⁵ + 16z³ + 3z)/(96 df²)` (within 0.0005 for df > 30).
pub fn t_975(df: u32) -> f64 {
    match df {
        0 => f64::INFINITY,
        1..=30 => T_975[df as usize - 1],
        _ => {
            let (z, df) = (1.959_964f64, f64::from(df));
            z + (z.powi(3) + z) / (4.0 * df) + (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / (96.0 * df * df)
        }
    }
}

/// A mean over replications and its 95 % half-width.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// The sample mean.
    pub mean: f64,
    /// Half the width of the 95 % Student-t interval; 0 with one replication (no interval).
    pub half_width: f64,
    /// Replications.
    pub n: usize,
}

impl Estimate {
    /// The estimate of the samples' mean.
    ///
    /// # Panics
    ///
    /// If `samples` is empty.
    pub fn of(samples: &[f64]) -> Estimate {
        assert!(!samples.is_empty(), "an estimate needs at least one sample");
        let n = samples.len();
        let mean = samples.iter().sum::<f64>() / n as f64;
        if n == 1 {
            return Estimate { mean, half_width: 0.0, n };
        }
        let var = samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        let half_width = t_975((n - 1) as u32) * (var / n as f64).sqrt();
        Estimate { mean, half_width, n }
    }

    /// The lower end of the interval.
    pub fn lo(&self) -> f64 {
        self.mean - self.half_width
    }

    /// The upper end of the interval.
    pub fn hi(&self) -> f64 {
        self.mean + self.half_width
    }

    /// The interval widened by `slack` on both sides (a histogram bucket, for quantiles).
    pub fn widened(self, slack: f64) -> Estimate {
        Estimate { half_width: self.half_width + slack.abs(), ..self }
    }

    /// Where the interval lies against `x`: below it, above it, or straddling it.
    pub fn against(&self, x: f64) -> Side {
        if self.hi() < x {
            Side::Below
        } else if self.lo() > x {
            Side::Above
        } else {
            Side::Straddles
        }
    }

    /// Formats the estimate as `mean ± half-width` with `decimals` decimals.
    pub fn show(&self, decimals: usize) -> String {
        if self.n <= 1 {
            format!("{:.decimals$}", self.mean)
        } else {
            format!("{:.decimals$} ± {:.decimals$}", self.mean, self.half_width)
        }
    }
}

impl fmt::Display for Estimate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.show(f.precision().unwrap_or(3)))
    }
}

/// Where an interval lies against a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Entirely below.
    Below,
    /// Entirely above.
    Above,
    /// The value is inside the interval: no decision.
    Straddles,
}

/// The estimate of `f(a_r) − f(b_r)` over paired replications `r`.
///
/// # Panics
///
/// If the two slices are empty or of different lengths.
pub fn paired<T>(a: &[T], b: &[T], f: impl Fn(&T) -> f64) -> Estimate {
    assert_eq!(a.len(), b.len(), "paired replications of different counts");
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| f(x) - f(y)).collect();
    Estimate::of(&d)
}

/// The estimate of `f(a_r) / f(b_r) − 1` over paired replications `r`.
///
/// # Panics
///
/// As [`paired`].
pub fn paired_ratio<T>(a: &[T], b: &[T], f: impl Fn(&T) -> f64) -> Estimate {
    assert_eq!(a.len(), b.len(), "paired replications of different counts");
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| f(x) / f(y) - 1.0).collect();
    Estimate::of(&d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn student_t_interval() {
        // Samples 1..=5: mean 3, s = √2.5, t(0.975, 4) = 2.776: half-width 2.776 × √0.5.
        let e = Estimate::of(&[1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(e.mean, 3.0);
        assert!((e.half_width - 2.776 * 0.5f64.sqrt()).abs() < 1e-12);
        assert_eq!(e.against(0.0), Side::Above);
        assert_eq!(e.against(3.5), Side::Straddles);
        assert_eq!(Estimate::of(&[7.0]).half_width, 0.0);
    }

    #[test]
    fn t_quantiles_join_the_normal() {
        assert!((t_975(30) - 2.042).abs() < 1e-9);
        assert!((t_975(31) - 2.0395).abs() < 0.0005, "{}", t_975(31));
        assert!((t_975(1000) - 1.962).abs() < 0.001);
        assert!(t_975(0).is_infinite());
    }

    #[test]
    fn pairing_removes_the_common_noise() {
        // b = a + 1 exactly: the paired difference is −1 with no spread at all.
        let a = [10.0, 30.0, 20.0, 50.0];
        let b = [11.0, 31.0, 21.0, 51.0];
        let d = paired(&a, &b, |x| *x);
        assert_eq!((d.mean, d.half_width), (-1.0, 0.0));
        assert_eq!(d.against(0.0), Side::Below);
    }
}
