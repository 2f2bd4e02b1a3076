//! Zipf keys without a power function per draw: an alias table for the popular keys, and
//! rejection-inversion for the rest.
//!
//! `rand_distr::Zipf` draws by rejection-inversion (Hörmann and Derflinger 1996) over the whole
//! range, three `powf` calls a try: at θ ≈ 1 that was a fifth of a simulation's time. Most
//! draws land on few keys (with 10^5 keys at θ = 0.99, 85 % on the first 16,384), so this
//! sampler splits the law in two, exactly:
//!
//! - an alias table (Walker, Vose's construction) over the first `head` keys *and* one more
//!   entry for "the rest", each weighted by its exact probability (`k^-θ`; the rest's mass by
//!   Euler–Maclaurin, below). One uniform index and one uniform comparison: O(1), no `powf`.
//! - "the rest": the same rejection-inversion as `rand_distr` (its hat, its acceptance test),
//!   with the uniform confined to the hat's mass above `head`, so the proposal never falls in
//!   the head: it samples the law conditioned on `k > head`. There the hat is tight (the
//!   acceptance is `(b/x)^θ` with `x − 1 ≤ b < x`, ≥ 0.9998 past 16,384), so a try almost
//!   always succeeds, and a bound (Bernoulli's inequality) accepts most tries before `powf`:
//!   one `powf` per tail draw.
//!
//! The rest's mass `Σ_{k=head+1}^{n} k^-θ` is the integral plus Euler–Maclaurin's corrections
//! up to the third derivative; the remainder is of order `head^(−θ−5)` relative, far below a
//! double's precision at the head sizes used. So the law drawn is Zipf's to floating-point
//! rounding, as `rand_distr`'s is; the tests below compare frequencies with the exact law.

use rand::Rng;

/// Keys in the alias table: 16,384 keep it (12 bytes a key: 192 KiB) within a core's L2, and
/// put 71 % (10^6 keys) to 100 % (≤ 16,384 keys) of θ = 0.99 draws there.
const HEAD: u32 = 16_384;

/// Zipf's law over `1..=n` with exponent `s`: `P(k) ∝ k^-s`.
#[derive(Debug, Clone)]
pub struct FastZipf {
    /// Alias table over `0..len`: entry `i < head` is key `i + 1`; entry `head` (if the law has
    /// a tail) stands for every key above `head`.
    prob: Vec<f64>,
    alias: Vec<u32>,
    head: u32,
    n: u32,
    s: f64,
    /// Rejection-inversion's hat: its cumulative mass at `head` and at `n` (`rand_distr`'s `t`).
    hat_head: f64,
    hat_n: f64,
}

impl FastZipf {
    /// Zipf over `1..=n` with exponent `s` (`n >= 1`, `s > 0`).
    pub fn new(n: u32, s: f64) -> FastZipf {
        FastZipf::with_head(n, s, HEAD)
    }

    /// With `head` keys in the alias table (tests use small heads to exercise the tail).
    fn with_head(n: u32, s: f64, head: u32) -> FastZipf {
        let n = n.max(1);
        let head = head.clamp(1, n);
        let mut weights: Vec<f64> = (1..=head).map(|k| f64::from(k).powf(-s)).collect();
        if head < n {
            weights.push(tail_mass(f64::from(head) + 1.0, f64::from(n), s));
        }
        let (prob, alias) = alias_table(&weights);
        FastZipf { prob, alias, head, n, s, hat_head: hat(f64::from(head), s), hat_n: hat(f64::from(n), s) }
    }

    /// A key in `1..=n`.
    #[inline]
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> u32 {
        let i = rng.random_range(0..self.prob.len());
        let i = if rng.random::<f64>() < self.prob[i] { i } else { self.alias[i] as usize };
        if i < self.head as usize { i as u32 + 1 } else { self.sample_tail(rng) }
    }

    /// A key in `head + 1..=n`, by rejection-inversion under `rand_distr`'s hat.
    #[cold]
    fn sample_tail<R: Rng + ?Sized>(&self, rng: &mut R) -> u32 {
        let s = self.s;
        let slope = s.max(1.0);
        loop {
            let u: f64 = rng.random();
            let pt = self.hat_head + u * (self.hat_n - self.hat_head);
            let b = hat_inverse(pt, s);
            let x = (b + 1.0).floor();
            if x <= f64::from(self.head) || x > f64::from(self.n) {
                continue; // rounding at the range's ends: measure zero, draw again
            }
            let y: f64 = rng.random();
            // Accept with probability (b / x)^s. Bernoulli: (1 − z)^s >= 1 − max(s, 1) z.
            let z = 1.0 - b / x;
            if y < 1.0 - slope * z || y < (b / x).powf(s) {
                return x as u32;
            }
        }
    }
}

/// The hat's cumulative mass up to `b >= 1` (`rand_distr::Zipf`: `b` for `b <= 1`, then
/// `1 + ∫_1^b x^-s dx`).
fn hat(b: f64, s: f64) -> f64 {
    if s == 1.0 { 1.0 + b.ln() } else { (b.powf(1.0 - s) - s) / (1.0 - s) }
}

/// The inverse of [`hat`] above 1.
#[inline]
fn hat_inverse(pt: f64, s: f64) -> f64 {
    if s == 1.0 { (pt - 1.0).exp() } else { (pt * (1.0 - s) + s).powf(1.0 / (1.0 - s)) }
}

/// `Σ_{k=a}^{b} k^-s` for integers `1 <= a <= b`, by Euler–Maclaurin: the integral, the mean
/// of the ends, and the first- and third-derivative corrections.
fn tail_mass(a: f64, b: f64, s: f64) -> f64 {
    let integral = if s == 1.0 { (b / a).ln() } else { (b.powf(1.0 - s) - a.powf(1.0 - s)) / (1.0 - s) };
    let f = |x: f64| x.powf(-s);
    let d1 = |x: f64| -s * x.powf(-s - 1.0);
    let d3 = |x: f64| -s * (s + 1.0) * (s + 2.0) * x.powf(-s - 3.0);
    integral + (f(a) + f(b)) / 2.0 + (d1(b) - d1(a)) / 12.0 - (d3(b) - d3(a)) / 720.0
}

/// Vose's alias table of `weights` (all > 0): `(prob, alias)`; entry `i` is drawn with
/// probability `prob[i]` after a uniform index, else `alias[i]`.
fn alias_table(weights: &[f64]) -> (Vec<f64>, Vec<u32>) {
    let len = weights.len();
    let total: f64 = weights.iter().sum();
    let mut scaled: Vec<f64> = weights.iter().map(|w| w * len as f64 / total).collect();
    let mut prob = vec![1.0; len];
    let mut alias: Vec<u32> = (0..len as u32).collect();
    let (mut small, mut large): (Vec<usize>, Vec<usize>) = (0..len).partition(|&i| scaled[i] < 1.0);
    while let (Some(&l), Some(&g)) = (small.last(), large.last()) {
        small.pop();
        prob[l] = scaled[l];
        alias[l] = g as u32;
        scaled[g] -= 1.0 - scaled[l];
        if scaled[g] < 1.0 {
            large.pop();
            small.push(g);
        }
    }
    // What is left has scaled weight 1 up to rounding: always itself.
    (prob, alias)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{Stream, stream};

    /// Frequencies of key groups against the exact law, within 5 binomial standard deviations.
    fn check(n: u32, s: f64, head: u32) {
        let z = FastZipf::with_head(n, s, head);
        let exact: Vec<f64> = (1..=n).map(|k| f64::from(k).powf(-s)).collect();
        let total: f64 = exact.iter().sum();
        let h = head.min(n);
        let mut bounds: Vec<u32> = [1, 2, 3, 10, h / 2, h, h + 1, (h + n) / 2, n].into_iter().filter(|&b| b >= 1 && b <= n).collect();
        bounds.sort_unstable();
        bounds.dedup();
        let draws = 1_000_000u32;
        let mut counts = vec![0u64; bounds.len()];
        let mut rng = stream(17, Stream::Keys);
        for _ in 0..draws {
            let k = z.sample(&mut rng);
            assert!((1..=n).contains(&k));
            counts[bounds.iter().position(|&b| k <= b).unwrap()] += 1;
        }
        let mut lo = 0;
        for (g, &hi) in bounds.iter().enumerate() {
            let p: f64 = exact[lo as usize..hi as usize].iter().sum::<f64>() / total;
            let want = p * f64::from(draws);
            let sd = (want * (1.0 - p)).sqrt().max(1.0);
            let got = counts[g] as f64;
            assert!((got - want).abs() < 5.0 * sd, "n {n} s {s} head {head}: keys ({lo}, {hi}]: {got} vs {want:.0} ± {sd:.0}");
            lo = hi;
        }
    }

    #[test]
    fn draws_follow_the_law() {
        check(20_000, 0.99, 100);
        check(20_000, 1.0, 100);
        check(5_000, 1.5, 50);
        check(5_000, 0.5, 50);
        check(300, 0.99, HEAD); // all in the table
        check(100_000, 0.99, HEAD);
    }

    #[test]
    fn the_tail_mass_is_the_sum() {
        for s in [0.5, 0.99, 1.0, 1.5] {
            let exact: f64 = (101..=20_000).map(|k| f64::from(k).powf(-s)).sum();
            let em = tail_mass(101.0, 20_000.0, s);
            assert!((em - exact).abs() / exact < 1e-12, "s {s}: {em} vs {exact}");
        }
    }
}
