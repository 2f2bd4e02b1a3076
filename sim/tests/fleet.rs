//! A fleet of instances against one database: one instance is the single-instance run, each
//! instance of an even fleet batches like one instance at rate λ/N, and key affinity
//! deduplicates like one instance.

mod common;

use busline_sim::engine::RunOutput;
use std::path::Path;

use busline_sim::fleet::key_moves;
use busline_sim::scenario::Scenario;
use common::{busy, go, scenario};

#[test]
fn one_instance_is_the_single_instance_run() {
    for kind in ["car", "window", "natural", "gated", "adaptive"] {
        let policy = format!("policy.kind={kind}");
        let alone = go(&busy(&[&policy, "duration_s=10"]));
        for routing in ["random", "round_robin", "key_affinity"] {
            let routing = format!("fleet.routing={routing}");
            for extra in [&[][..], &["fleet.instance_skew=1.5"][..], &["db.pool_per_instance=4"][..]] {
                let mut sets = vec![policy.as_str(), "duration_s=10", "fleet.instances=1", routing.as_str()];
                sets.extend_from_slice(extra);
                let one = go(&busy(&sets));
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
                "duration_s=10".to_string(),
            ];
            let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
            let out = go(&busy(&sets));
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
/// batching, one query in flight): every instance sends a query every D holding what it
/// received during the previous D, whatever the fleet size, and the instances start within
/// microseconds of each other, so cycle c of every instance covers the same span as cycle c
/// of a lone instance. With key affinity each key's requests all reach one instance: the N
/// queries of a cycle hold disjoint keys, and together they look up exactly the distinct keys
/// the lone instance's one query of that cycle looks up. Checked per query: the fleet's
/// distinct keys per query, times the N queries that stand for one of the lone instance's,
/// match the lone instance's distinct keys per query within 1 % (and the cycles do line up:
/// N times the queries, within 1 %). A single fleet query cannot match a lone one by itself,
/// as it holds 1/N of the requests. A random balancer splits each key's requests over the
/// instances, so its N queries of a cycle look the same hot keys up N times.
#[test]
fn key_affinity_deduplicates_each_query_as_one_instance_would() {
    let text = "name = \"dedup\"\nseed = 31\nrequests = 1000000\n[traffic]\nkind = \"poisson\"\nrate_per_s = 1000000.0\n\
                [keys]\nkind = \"zipf\"\ncount = 100000\ntheta = 0.99\n\
                [db]\nservers = 64\nservice = \"const\"\nbase_ms = 1.0\n\
                [policy]\nkind = \"natural\"\nmax_in_flight = 1\nmax_batch = 100000\n";
    let per_request = |o: &RunOutput| o.summary.mean_distinct_keys * o.summary.queries as f64 / o.summary.requests as f64;
    let one = go(&scenario(text, &[]));
    let lone = one.summary.mean_distinct_keys;
    assert!(per_request(&one) < 0.8, "one instance dedups: {} distinct keys per request", per_request(&one));
    for n in [4u32, 16] {
        let nf = f64::from(n);
        let aff = go(&scenario(text, &[&format!("fleet.instances={n}"), "fleet.routing=key_affinity"]));
        let rnd = go(&scenario(text, &[&format!("fleet.instances={n}"), "fleet.routing=random"]));
        let cycles = aff.summary.queries as f64 / (nf * one.summary.queries as f64);
        assert!((cycles - 1.0).abs() < 0.01, "{n} instances: {cycles} × N queries per lone query");
        let a = aff.summary.mean_distinct_keys * nf;
        assert!((a - lone).abs() / lone < 0.01, "{n} instances, key affinity: {a} distinct keys per lone query vs {lone}");
        let r = rnd.summary.mean_distinct_keys * nf;
        assert!(r > lone * 1.1, "{n} instances, random: {r} distinct keys per lone query vs {lone}");
        let (pa, pr) = (per_request(&aff), per_request(&rnd));
        assert!((pa - per_request(&one)).abs() / per_request(&one) < 0.01, "{n}: per request {pa}");
        assert!(pr > per_request(&one) * 1.1, "{n}: random per request {pr}");
    }
}

/// Clients that time out and retry in front of a fleet: an attempt given up is found and
/// dropped at its own instance's stop, and every request is accounted for (the engine's
/// checks) under every routing.
#[test]
fn clients_retry_through_a_fleet() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/retry-storm.toml");
    for routing in ["random", "round_robin", "key_affinity"] {
        for kind in ["car", "adaptive"] {
            let sets = [
                "duration_s=20".to_string(),
                format!("policy.kind={kind}"),
                "fleet.instances=8".to_string(),
                format!("fleet.routing={routing}"),
            ];
            let s = Scenario::load_with(&path, &sets).unwrap();
            let out = go(&s);
            let t = &out.totals;
            let c = out.summary.client.as_ref().unwrap();
            assert_eq!(t.answered + t.dropped, t.arrivals, "{kind} {routing}");
            assert_eq!(c.attempts, t.arrivals, "{kind} {routing}");
            assert_eq!(c.dropped_unsent, t.dropped, "{kind} {routing}");
            if kind == "car" {
                assert!(c.retries > 0 && t.dropped > 0, "{kind} {routing}: the storm happens: {c:?}");
            }
        }
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
