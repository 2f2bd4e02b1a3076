//! Zipf keys without a power function per draw: one alias table over the popular keys and
//! over blocks of the others, and a uniform draw within a block, corrected by rejection.
//!
//! `rand_distr::Zipf` draws by rejection-inversion (Hörmann and Derflinger 1996) over the whole
//! range, three `powf` calls a try: at θ ≈ 1 that was a fifth of a simulation's time. Most
//! draws land on few keys (with 10^5 keys at θ = 0.99, 85 % on the first 16,384), and the
//! others' probabilities change slowly from one key to the next, so this sampler cuts the
//! law into entries, exactly:
//!
//! - the first `head` keys, an entry each, weighted by its exact probability (`k^-θ`);
//! - above them, blocks of consecutive keys `[m, m + w)` with `w = max(1, m / 128)`: about
//!   `128 ln(n / head)` blocks (526 for 10^6 keys), each weighted by its exact mass
//!   `Σ_{k=m}^{m+w−1} k^-θ` (a direct sum for small `m`, Euler–Maclaurin above, below).
//!
//! One alias table (Walker, Vose's construction) picks an entry: one uniform index and one
//! uniform comparison, O(1). A head entry is its key. In a block, a key is proposed
//! uniformly and accepted with probability `(m / k)^θ` (its weight over the block's largest):
//! that samples the law conditioned on the block, and the acceptance is at least
//! `(1 − 1/128)^θ` ≈ 0.992. Bernoulli's inequality, `(1 − z)^θ ≥ 1 − max(θ, 1) z` with
//! `z = (k − m) / k`, accepts almost every proposal before a `powf` would be needed (for
//! θ = 0.99 all but about one in 10^5): no `powf` per draw anywhere.
//!
//! A block's mass above `m = 4096` is the integral plus Euler–Maclaurin's corrections up to the
//! third derivative; the remainder is of order `m^(−θ−5)` relative, far below a double's
//! precision. So the law drawn is Zipf's to floating-point rounding, as `rand_distr`'s is;
//! the tests below compare frequencies with the exact law, within blocks too.

use rand::Rng;

/// Keys in the alias table's head: 16,384 keep the table (12 bytes an entry: 198 KiB with
/// the blocks of 10^6 keys) within a core's L2, and put 71 % (10^6 keys) to 100 % (≤ 16,384
/// keys) of θ = 0.99 draws there.
const HEAD: u32 = 16_384;

/// A block above key `m` holds `max(1, m >> BLOCK_SHIFT)` keys: its keys' probabilities are
/// within a factor `(1 − 2^−7)^θ` of each other, so a proposal is rejected less than once in
/// 128 (and a `powf` is needed about once in 10^5 at θ ≈ 1).
const BLOCK_SHIFT: u32 = 7;

/// Blocks starting below this have their mass summed key by key (at most this many `powf`
/// calls when the table is built); above it, by Euler–Maclaurin.
const DIRECT_SUM_BELOW: u32 = 4096;

/// Zipf's law over `1..=n` with exponent `s`: `P(k) ∝ k^-s`.
#[derive(Debug, Clone)]
pub struct FastZipf {
    /// Alias table over `0..len`: entry `i < head` is key `i + 1`; entry `head + j` is block
    /// `j` of `blocks`.
    prob: Vec<f64>,
    alias: Vec<u32>,
    head: u32,
    /// The blocks above the head: `(first key, keys)`, in key order, covering `head + 1..=n`.
    blocks: Vec<(u32, u32)>,
    s: f64,
}

impl FastZipf {
    /// Zipf over `1..=n` with exponent `s` (`n >= 1`, `s > 0`).
    pub fn new(n: u32, s: f64) -> FastZipf {
        FastZipf::with_layout(n, s, HEAD, BLOCK_SHIFT)
    }

    /// With `head` keys of their own and blocks of `m >> shift` keys (tests use small heads and
    /// wide blocks to exercise the blocks).
    fn with_layout(n: u32, s: f64, head: u32, shift: u32) -> FastZipf {
        let n = n.max(1);
        let head = head.clamp(1, n);
        let mut weights: Vec<f64> = (1..=head).map(|k| f64::from(k).powf(-s)).collect();
        let mut blocks = Vec::new();
        let mut m = head + 1;
        while m <= n {
            let width = (m >> shift).clamp(1, n - m + 1);
            let last = m + (width - 1);
            let mass = if m < DIRECT_SUM_BELOW {
                (m..=last).map(|k| f64::from(k).powf(-s)).sum()
            } else {
                block_mass(f64::from(m), f64::from(last), s)
            };
            weights.push(mass);
            blocks.push((m, width));
            match last.checked_add(1) {
                Some(next) => m = next,
                None => break,
            }
        }
        let (prob, alias) = alias_table(&weights);
        FastZipf { prob, alias, head, blocks, s }
    }

    /// A key in `1..=n`.
    #[inline]
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> u32 {
        let i = rng.random_range(0..self.prob.len());
        let i = if rng.random::<f64>() < self.prob[i] { i } else { self.alias[i] as usize };
        if i < self.head as usize { i as u32 + 1 } else { self.sample_block(i - self.head as usize, rng) }
    }

    /// A key of block `j`, by a uniform proposal accepted with probability `(m / k)^s`.
    #[cold]
    fn sample_block<R: Rng + ?Sized>(&self, j: usize, rng: &mut R) -> u32 {
        let (m, width) = self.blocks[j];
        if width == 1 {
            return m;
        }
        let s = self.s;
        let slope = s.max(1.0);
        loop {
            let k = m + rng.random_range(0..width);
            let y: f64 = rng.random();
            // Bernoulli: (m / k)^s = (1 − z)^s >= 1 − max(s, 1) z.
            let z = f64::from(k - m) / f64::from(k);
            if y < 1.0 - slope * z || y < (f64::from(m) / f64::from(k)).powf(s) {
                return k;
            }
        }
    }
}

/// `Σ_{k=a}^{b} k^-s` for integers `1 <= a <= b`, by Euler–Maclaurin: the integral, the mean
/// of the ends, and the first- and third-derivative corrections. The integral
/// `(b^(1−s) − a^(1−s)) / (1 − s)` is computed as `a^(1−s) expm1((1 − s) ln(b / a)) / (1 − s)`:
/// over a short block the difference would cancel most of its digits.
fn block_mass(a: f64, b: f64, s: f64) -> f64 {
    let log_ratio = ((b - a) / a).ln_1p();
    let integral = if s == 1.0 { log_ratio } else { a.powf(1.0 - s) * ((1.0 - s) * log_ratio).exp_m1() / (1.0 - s) };
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

    /// Frequencies of key groups against the exact law, within 5 binomial standard deviations:
    /// the groups' bounds cut the head, its end, the blocks, and (`inner`) keys inside blocks.
    fn check(n: u32, s: f64, head: u32, shift: u32, inner: &[u32]) {
        let z = FastZipf::with_layout(n, s, head, shift);
        let exact: Vec<f64> = (1..=n).map(|k| f64::from(k).powf(-s)).collect();
        let total: f64 = exact.iter().sum();
        let h = head.min(n);
        let mut bounds: Vec<u32> = [1, 2, 3, 10, h / 2, h, h + 1, (h + n) / 2, n]
            .into_iter()
            .chain(inner.iter().copied())
            .filter(|&b| b >= 1 && b <= n)
            .collect();
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
            assert!(
                (got - want).abs() < 5.0 * sd,
                "n {n} s {s} head {head} shift {shift}: keys ({lo}, {hi}]: {got} vs {want:.0} ± {sd:.0}"
            );
            lo = hi;
        }
    }

    #[test]
    fn draws_follow_the_law() {
        check(20_000, 0.99, 100, BLOCK_SHIFT, &[]);
        check(20_000, 1.0, 100, BLOCK_SHIFT, &[]);
        check(5_000, 1.5, 50, BLOCK_SHIFT, &[]);
        check(5_000, 0.5, 50, BLOCK_SHIFT, &[]);
        check(300, 0.99, HEAD, BLOCK_SHIFT, &[]); // all in the head
        check(100_000, 0.99, HEAD, BLOCK_SHIFT, &[]);
    }

    #[test]
    fn draws_within_a_block_follow_the_law() {
        // Blocks of m / 2 keys from m = 11: [11, 16), [16, 24), [24, 36), [36, 54), ...;
        // a block's keys' probabilities differ by up to (2/3)^s, so a wrong acceptance shows.
        let inner = [12, 13, 17, 19, 21, 26, 30, 33, 40, 45, 50];
        for s in [0.5, 0.99, 1.0, 1.5, 2.5] {
            check(2_000, s, 10, 1, &inner);
        }
        let z = FastZipf::with_layout(2_000, 1.0, 10, 1);
        assert_eq!(&z.blocks[..4], &[(11, 5), (16, 8), (24, 12), (36, 18)]);
        assert_eq!(z.blocks.last().map(|&(m, w)| m + w - 1), Some(2_000), "the blocks end at n");
    }

    #[test]
    fn a_block_mass_is_the_sum() {
        for s in [0.5, 0.99, 1.0, 1.5] {
            let exact: f64 = (16_385..=16_512).map(|k| f64::from(k).powf(-s)).sum();
            let em = block_mass(16_385.0, 16_512.0, s);
            assert!((em - exact).abs() / exact < 1e-13, "s {s}: {em} vs {exact}");
        }
    }

    #[test]
    fn the_euler_maclaurin_sum_is_the_sum() {
        for s in [0.5, 0.99, 1.0, 1.5] {
            let exact: f64 = (101..=20_000).map(|k| f64::from(k).powf(-s)).sum();
            let em = block_mass(101.0, 20_000.0, s);
            assert!((em - exact).abs() / exact < 1e-12, "s {s}: {em} vs {exact}");
        }
    }
}
