//! A batch's service time: base + per-key work whose variance grows with its keys
//! (`db.batch_cost = "per_key"`), against the old single scaled draw (`"scaled"`).

use std::path::Path;

use busline_sim::db::ServiceSampler;
use busline_sim::scenario::Scenario;

const N: u64 = 200_000;

fn sampler(db: &str) -> ServiceSampler {
    let text = format!(
        "name = \"cost\"\nseed = 5\nrequests = 1\n[traffic]\nkind = \"poisson\"\nrate_per_s = 1.0\n[db]\n{db}\n"
    );
    ServiceSampler::new(&Scenario::parse_with(&text, Path::new("."), &[]).unwrap())
}

/// Mean and variance (ms, ms²) of `N` batch draws of `keys` keys.
fn moments(s: &mut ServiceSampler, keys: u32) -> (f64, f64) {
    let xs: Vec<f64> = (0..N).map(|i| s.sample_batch(keys, i) as f64 / 1e6).collect();
    let mean = xs.iter().sum::<f64>() / N as f64;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (N - 1) as f64;
    (mean, var)
}

fn close(what: &str, got: f64, want: f64, rel: f64) {
    assert!((got - want).abs() <= rel * want, "{what}: {got:.6} vs {want:.6} (±{:.1} %)", rel * 100.0);
}

#[test]
fn per_key_work_adds_variance_linearly_in_the_keys() {
    // base 0.2 ms constant, 0.1 ms per key with CV 0.5: mean 0.2 + 0.1 k, variance k (0.05)².
    // Sample variances of 2e5 gamma draws are within ~1 % (relative standard error
    // √((κ − 1)/n), κ ≤ 4.5 here); the band is 4 %.
    let mut s = sampler("service = \"const\"\nbase_ms = 0.2\nper_key_ms = 0.1\nper_key_cv = 0.5");
    for k in [1u32, 4, 16, 64] {
        let (mean, var) = moments(&mut s, k);
        let kf = f64::from(k);
        close(&format!("k = {k}: mean"), mean, 0.2 + 0.1 * kf, 0.01);
        close(&format!("k = {k}: variance"), var, kf * 0.05 * 0.05, 0.04);
    }
}

#[test]
fn per_key_cv_zero_is_deterministic_per_key() {
    let mut s = sampler("service = \"const\"\nbase_ms = 0.2\nper_key_ms = 0.1\nper_key_cv = 0.0");
    assert_eq!(s.sample_batch(7, 1), 900_000);
    assert_eq!(s.sample_batch(7, 2), 900_000);
}

#[test]
fn the_scaled_model_keeps_the_old_behaviour() {
    // One exponential draw scaled to the whole mean: variance = mean², growing as k².
    let mut s = sampler("service = \"exp\"\nbase_ms = 0.2\nper_key_ms = 0.1\nbatch_cost = \"scaled\"");
    for k in [1u32, 16] {
        let (mean, var) = moments(&mut s, k);
        let m = 0.2 + 0.1 * f64::from(k);
        close(&format!("k = {k}: mean"), mean, m, 0.01);
        close(&format!("k = {k}: variance"), var, m * m, 0.04);
        // The same draw as `sample` of the whole mean (what the simulator did before).
        for key in 0..100 {
            assert_eq!(s.sample_batch(k, key), s.sample(0.2 * 1e6 + 0.1 * 1e6 * f64::from(k), key));
        }
    }
}

#[test]
fn without_per_key_work_the_models_agree() {
    // The validation scenarios (per_key_ms = 0) draw the same service times under both.
    let mut a = sampler("service = \"lognormal\"\nbase_ms = 1.0");
    let mut b = sampler("service = \"lognormal\"\nbase_ms = 1.0\nbatch_cost = \"scaled\"");
    for key in 0..1000 {
        assert_eq!(a.sample_batch(3, key), b.sample_batch(3, key));
    }
}
