//! A fleet of instances against one database: one instance is the single-instance run, each
//! instance of an even fleet batches like one instance at rate λ/N, and key affinity
//! deduplicates like one instance.

use std::path::Path;

use busline_sim::engine::{RunOptions, RunOutput, run};
use busline_sim::fleet::key_moves;
use busline_sim::scenario::Scenario;

fn scenario(text: &str, sets: &[&str]) -> Scenario {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    Scenario::parse_with(text, Path::new("."), &sets).unwrap()
}

fn go(s: &Scenario) -> RunOutput {
    run(s, &RunOptions::default()).unwrap()
}

const BUSY: &str = r#"
name = "busy"
seed = 9
duration_s = 10.0
[traffic]
kind = "mmpp"
rate_low_per_s = 2000.0
rate_high_per_s = 20000.0
dwell_low_s = 1.0
dwell_high_s = 0.3
[keys]
kind = "zipf"
count = 10000
theta = 0.99
[db]
servers = 4
service = "lognormal"
base_ms = 0.5
per_key_ms = 0.01
contention = 0.1
[policy]
kind = "gated"
window_ms = 1.0
threshold = 2
max_batch = 200
"#;

#[test]
fn one_instance_is_the_single_instance_run() {
    for kind in ["car", "window", "natural", "gated", "adaptive"] {
        let policy = format!("policy.kind={kind}");
        let alone = go(&scenario(BUSY, &[&policy]));
        for routing in ["random", "round_robin", "key_affinity"] {
            let routing = format!("fleet.routing={routing}");
            for extra in [&[][..], &["fleet.instance_skew=1.5"][..], &["db.pool_per_instance=4"][..]] {
                let mut sets = vec![policy.as_str(), "fleet.instances=1", routing.as_str()];
                sets.extend_from_slice(extra);
                let one = go(&scenario(BUSY, &sets));
                assert_eq!(
                    serde_json::to_string(&one.summary).unwrap(),
                    serde_json::to_string(&alone.summary).unwrap(),
                    "{kind}, {sets:?}"
                );
                assert_eq!(one.totals, alone.totals, "{kind}, {sets:?}");
                assert_eq!(one.events, alone.events, "{kind}, {sets:?}");
            }
        }
    }
}

#[test]
fn a_fleet_conserves_requests_under_every_routing_and_policy() {
    // Adaptive is left out for now: with a pool of 2 per instance the core's debug assertion
    // `held <= latency_budget` (core/src/policy/adaptive.rs, on_dispatch) fires at main
    // 6147a52; reported to the lead, to be restored once the core says what holds there.
    for kind in ["car", "window", "natural", "gated"] {
        for routing in ["random", "round_robin", "key_affinity"] {
            let sets = [
                format!("policy.kind={kind}"),
                format!("fleet.routing={routing}"),
                "fleet.instances=16".to_string(),
                "fleet.instance_skew=0.8".to_string(),
                "db.pool_per_instance=2".to_string(),
            ];
            let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
            let out = go(&scenario(BUSY, &sets));
            let t = &out.totals;
            assert!(t.arrivals > 20_000);
            assert_eq!(t.answered, t.arrivals, "{kind} {routing}");
            assert_eq!(t.queries_sent, t.scheduler_dispatches, "{kind} {routing}");
            assert_eq!(t.area_ns, t.sojourn_ns, "{kind} {routing}");
        }
    }
}

#[test]
fn a_pool_per_instance_caps_what_one_instance_sends() {
    // Car at 3,000/s against 8 connections of 1 ms: the database could take 8,000/s, but a pool
    // of 2 caps one instance at 2,000/s: its requests queue for a connection. Two instances of
    // 2 connections each carry
    // the load.
    let text = "name = \"pool\"\nseed = 5\nduration_s = 2.0\n[traffic]\nkind = \"poisson\"\nrate_per_s = 3000.0\n\
                [db]\nservers = 8\nservice = \"const\"\nbase_ms = 1.0\npool_per_instance = 2\n[policy]\nkind = \"car\"\n\
                max_in_flight = 100000\n";
    let one = go(&scenario(text, &[]));
    let two = go(&scenario(text, &["fleet.instances=2", "fleet.routing=round_robin"]));
    assert!(one.summary.db_wait_ms.mean > 100.0, "one instance: {:?}", one.summary.db_wait_ms);
    assert!(two.summary.db_wait_ms.mean < 1.0, "two instances: {:?}", two.summary.db_wait_ms);
}

/// Poisson λ, unique keys, a free database and a fixed window T: a random balancer thins the
/// arrivals into N Poisson streams of λ/N, so each instance's mean batch is 1 + λT/N
/// (REFERENCE.md, the window formula at rate λ/N).
#[test]
fn each_instance_batches_like_one_at_rate_lambda_over_n() {
    let text = "name = \"thin\"\nseed = 77\nrequests = 1000000\n[traffic]\nkind = \"poisson\"\nrate_per_s = 40000.0\n\
                [keys]\nkind = \"unique\"\n[db]\nservice = \"const\"\nbase_ms = 0.0\n\
                [policy]\nkind = \"window\"\nwindow_ms = 1.0\nmax_batch = 100000\n[fleet]\nrouting = \"random\"\n";
    for n in [1u32, 4, 16, 64] {
        let out = go(&scenario(text, &[&format!("fleet.instances={n}")]));
        let want = 1.0 + 40_000.0 * 1e-3 / f64::from(n);
        let got = out.summary.mean_batch;
        assert!((got - want).abs() / want < 0.005, "{n} instances: mean batch {got} vs 1 + λT/N = {want}");
    }
}

/// Zipf keys, each instance always busy with one query of a constant D at a time (natural
/// batching): every batch holds what its instance received during the previous D, whatever
/// the fleet size. With key affinity each key's requests all reach one instance, so per unit
/// of time the fleet looks up the same distinct keys as one instance: the distinct keys per
/// request match. (Per *query* they cannot: each of N instances sends a query per D, so a
/// query holds 1/N of the requests.) A random balancer splits each key's requests over the
/// instances and looks up far more.
#[test]
fn key_affinity_deduplicates_as_one_instance_would() {
    let text = "name = \"dedup\"\nseed = 31\nrequests = 1000000\n[traffic]\nkind = \"poisson\"\nrate_per_s = 1000000.0\n\
                [keys]\nkind = \"zipf\"\ncount = 100000\ntheta = 0.99\n\
                [db]\nservers = 64\nservice = \"const\"\nbase_ms = 1.0\n\
                [policy]\nkind = \"natural\"\nmax_in_flight = 1\nmax_batch = 100000\n";
    let per_request = |o: &RunOutput| o.summary.mean_distinct_keys * o.summary.queries as f64 / o.summary.requests as f64;
    let one = go(&scenario(text, &[]));
    let base = per_request(&one);
    assert!(base < 0.8, "one instance dedups: {base} distinct keys per request");
    for n in [4u32, 16] {
        let aff = go(&scenario(text, &[&format!("fleet.instances={n}"), "fleet.routing=key_affinity"]));
        let rnd = go(&scenario(text, &[&format!("fleet.instances={n}"), "fleet.routing=random"]));
        let (a, r) = (per_request(&aff), per_request(&rnd));
        assert!((a - base).abs() / base < 0.01, "{n} instances, key affinity: {a} vs one instance {base}");
        assert!(r > base * 1.1, "{n} instances, random: {r} vs one instance {base}");
        assert!(aff.summary.mean_batch < one.summary.mean_batch / (f64::from(n) * 0.9));
    }
}

#[test]
fn about_one_key_in_n_moves_when_an_instance_leaves() {
    let s = scenario("name = \"k\"\nrequests = 1\n[traffic]\nkind = \"poisson\"\nrate_per_s = 1.0\n[keys]\nkind = \"uniform\"\ncount = 1000000\n", &[]);
    for n in [2u32, 8, 64] {
        let m = key_moves(&s, n, 100_000);
        let expect = 1.0 / f64::from(n);
        // 100 points per instance: an instance's share is within ~30 % of 1/N (σ ≈ 1/√100 = 10 %).
        assert!((m.hash_share - expect).abs() < 0.3 * expect, "{n}: {m:?}");
        assert!((m.request_share - m.hash_share).abs() < 0.01, "{n}: {m:?}");
    }
}
