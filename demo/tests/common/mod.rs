//! The end-to-end check both backends run: fill, replay every contender, count, simulate.

use std::path::Path;
use std::time::Duration;

use busline_demo::calibrate::{Plan, calibrate};
use busline_demo::db::Database;
use busline_demo::replay::{Contender, contenders, replay};
use busline_demo::segments::{part, split, tail};
use busline_demo::simcheck::{SEEDS, predict};
use busline_demo::trace::{TraceSpec, write_csv};

/// Users in the small table.
const USERS: u32 = 3_000;

/// Against the database at `url` (its `users` table is replaced by `USERS` rows), with scratch
/// files in `dir`: every contender answers every request with the right row; the database
/// counts exactly the queries our code sent; direct calls send one per request and the fixed
/// windows batch the spike; the calibration yields a scenario the simulator runs, in which
/// direct calls are one query per request too.
pub(crate) async fn exercise(url: &str, dir: &Path) {
    std::fs::create_dir_all(dir.join("traces")).unwrap();
    let db = Database::connect(url, 4).await.unwrap();
    db.ensure_users(USERS).await.unwrap();
    assert!(!db.ensure_users(USERS).await.unwrap(), "a filled table is kept");
    let arrivals = TraceSpec::small(USERS).generate();
    let plan = Plan {
        concurrency: vec![1, 2],
        keys: vec![1, 20],
        rounds: 1,
        per_point: Duration::from_millis(20),
        users: USERS,
        wake_per_round: Duration::from_millis(50),
        bursts: true,
    };
    let model = calibrate(&db, &plan, None).await.unwrap();
    assert!(model.base_ms > 0.0, "{model:?}");
    // ~50 single-id queries open loop; how many found the database idle long enough depends
    // on the machine's load: on a loaded one the injector's tasks bunch up and none may have,
    // and the scenario then carries no wake-up (`calibrate.rs`'s unit tests cover both cases).
    match model.wake.as_ref() {
        Some(wake) => eprintln!("wake-up measured from {} queries", wake.samples),
        None => eprintln!("no query found the database idle long enough: no wake-up measured"),
    }
    let scenario = dir.join("calibrated.toml");
    write_csv(&dir.join("traces/intended.csv"), &arrivals).unwrap();
    let driver_plan = busline_demo::reaction::Plan { trace: TraceSpec::small(USERS), ..busline_demo::reaction::Plan::demo(&model, USERS) };
    let driver = busline_demo::reaction::measure(&driver_plan, None).await.unwrap();
    model.write_scenario(&scenario, "test", "traces/intended.csv", "test", Some(&driver)).unwrap();
    // The application's CPU per request, from the round's two bursts of the article's spike
    // (where Linux's scheduler statistics are there to read): the scenario carries it as
    // `[cpu]` for the embedded database only.
    if std::path::Path::new("/proc/self/task").exists() {
        let cpu = model.app_cpu.as_ref().unwrap_or_else(|| panic!("the application's CPU is not measured: {:?}", model.points));
        assert_eq!(cpu.bursts.len(), 1, "{cpu:?}");
        let (batched, direct) = cpu.bursts[0];
        assert_eq!((batched.requests, direct.requests, direct.queries, direct.keys), (200, 200, 200, 200), "{cpu:?}");
        assert!(batched.queries >= 1 && batched.queries <= 200 && batched.keys <= 200, "{cpu:?}");
        assert!(batched.cpu_ms > 0.0 && direct.cpu_ms > 0.0 && cpu.request_us >= 0.0, "{cpu:?}");
        let s = busline_sim::scenario::Scenario::load(&scenario).unwrap();
        assert_eq!(s.cpu.is_some(), db.backend() == "sqlite", "[cpu] only for the embedded database");
    }
    for c in contenders() {
        let m = replay(&db, &arrivals, &c, 4, None).await.unwrap();
        let n = m.requests;
        assert_eq!(n, arrivals.len() as u64);
        assert_eq!(m.correct, n, "{}: every request gets its own user", c.label);
        assert_eq!(m.db.queries, m.sent, "{}: the database ran exactly what we sent", c.label);
        assert_eq!(m.pool_wait.count(), m.sent, "{}: one pool wait per query", c.label);
        // Every request's latency is split into its stages (a batched request is found in its
        // bus by its id; two requests for one id in one bus share a seat, and the second is
        // not found); a direct call's stages add up to its latency exactly.
        let st = &m.stages;
        let staged = st.query.count();
        assert!(staged <= n && staged * 100 >= n * 95, "{}: {staged} of {n} requests staged", c.label);
        for h in [&st.to_seal, &st.to_connection, &st.way_back] {
            assert_eq!(h.count(), staged, "{}: every stage of every staged request", c.label);
        }
        if c.contender == Contender::Direct {
            assert_eq!(staged, n);
            let parts = st.to_seal.sum() + st.to_connection.sum() + st.query.sum() + st.way_back.sum();
            assert_eq!(parts, m.latency.sum(), "car: the stages add up to the latency");
        }
        match (&c.contender, &m.driver) {
            (Contender::Direct, driver) => assert!(driver.is_none(), "direct calls have no driver"),
            (Contender::Batched(_), Some(d)) => {
                let launched = d.launch.as_ref().map_or(0, |l| l.samples as u64);
                assert_eq!(launched, m.sent, "{}: every bus's seal and first poll are noted", c.label);
            }
            (Contender::Batched(_), None) => panic!("{}: a batcher's driver is measured", c.label),
        }
        match c.contender {
            Contender::Direct => assert_eq!(m.db.queries, n, "car: one query per request"),
            Contender::Batched(p) if p.name() == "window" => {
                assert!(m.db.queries < n, "{}: the 200-request spike rides in shared buses ({} queries)", c.label, m.db.queries)
            }
            Contender::Batched(_) => assert!(m.db.queries <= n, "{}: {} queries", c.label, m.db.queries),
        }
        let rel = format!("traces/{}.csv", c.label.replace([' ', '(', ')', '.'], "_"));
        write_csv(&dir.join(&rel), &m.arrivals).unwrap();
        let p = predict(&scenario, &rel, &c).unwrap();
        if c.contender == Contender::Direct {
            assert_eq!(p.queries, n as f64, "the simulator's car sends one query per request");
        } else {
            assert!(p.queries >= 1.0 && p.queries <= n as f64, "{}: {p:?}", c.label);
        }
        assert!(p.mean_ms > 0.0 && p.p99_ms >= p.mean_ms * 0.5, "{}: {p:?}", c.label);
        // The split by part of the trace: every request in exactly one part, measured and
        // predicted alike (the simulator's every seed), the spike's 200 in the spikes' part.
        let spec = TraceSpec::small(USERS);
        let parts = split(&spec, &arrivals, &m, &scenario, &rel, &c).unwrap();
        assert_eq!(parts.iter().map(|p| p.measured.count()).sum::<u64>(), n, "{}", c.label);
        assert_eq!(parts.iter().map(|p| p.predicted.count()).sum::<u64>(), n * SEEDS, "{}", c.label);
        let in_spike = arrivals.iter().filter(|a| part(&spec, a.at_ns) == 1).count() as u64;
        assert!(in_spike >= 200, "the spike's 200 and any background arrival among them: {in_spike}");
        assert_eq!(parts[1].measured.count(), in_spike, "{}: the spike's requests", c.label);
        // Queries per part: the predicted ones add up to the prediction's; the measured ones to
        // one per request for direct calls, and to at most the requests for a batcher.
        let (q_measured, q_predicted) = parts.iter().fold((0.0, 0.0), |(m, p), x| (m + x.queries.0, p + x.queries.1));
        assert!((q_predicted - p.queries).abs() <= 0.01 * p.queries, "{}: {q_predicted} vs {p:?}", c.label);
        if c.contender == Contender::Direct {
            assert_eq!(q_measured, n as f64);
        } else {
            assert!(q_measured >= 1.0 && q_measured <= n as f64, "{}: {q_measured}", c.label);
        }
        let t = tail(&spec, &arrivals, &m);
        assert_eq!(t.latency.count(), n.div_ceil(100), "{}: the slowest 1 %", c.label);
        assert_eq!(t.from.iter().sum::<u64>(), t.latency.count(), "{}: each in one part", c.label);
        assert!(t.latency.max() == m.latency.max() && t.latency.quantile(0.0) as f64 >= m.latency.quantile(0.98) as f64 * 0.99, "{}", c.label);
    }
    db.close().await;
}
