//! A fleet study's report: its CSV, two plots (queries and p99 latency against the number of
//! instances, one panel per routing) and a Markdown section for the report README.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::plots::{Key, color, err, label, register_font, side_legend, write_both};
use crate::fleet::{self, FleetRow, KeyMoves};
use crate::scenario::{Routing, Scenario};
use crate::stats::RunSummary;
use crate::sweep;

/// Requests drawn from the scenario's key model to measure the share that moves.
const KEY_MOVE_SAMPLE: u32 = 200_000;

/// A fleet study with what it measured.
#[derive(Debug, Clone)]
pub struct FleetStudy {
    /// The scenario as run.
    pub scenario: Scenario,
    /// Every run: each routing, policy and fleet size.
    pub rows: Vec<FleetRow>,
    /// The share of keys that move when one instance leaves, per fleet size (2 and up).
    pub moves: Vec<KeyMoves>,
}

/// Runs the study of `scenario` at `instances` with a progress bar, and measures key moves.
///
/// # Errors
///
/// If a run fails.
pub fn study(scenario: &Scenario, instances: &[u32]) -> Result<FleetStudy> {
    let bar = sweep::progress(fleet::variants(scenario, instances).len() as u64, &format!("{} (fleet)", scenario.name));
    let rows = fleet::run_study(scenario, instances, &bar)?;
    bar.finish_and_clear();
    let moves = instances
        .iter()
        .filter(|&&n| n > 1)
        .map(|&n| fleet::key_moves(scenario, n, KEY_MOVE_SAMPLE))
        .collect();
    Ok(FleetStudy { scenario: scenario.clone(), rows, moves })
}

/// Writes `<name>-fleet.csv`, `<name>-fleet-queries` and `<name>-fleet-p99` (PNG and SVG) and
/// `<name>-fleet.md` (the README section) into `dir`.
///
/// # Errors
///
/// If a file cannot be written.
pub fn write(dir: &Path, study: &FleetStudy) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = &study.scenario.name;
    fleet::write_csv(&dir.join(format!("{name}-fleet.csv")), &study.rows)?;
    register_font();
    let stem = |what: &str| dir.join(format!("{name}-fleet-{what}"));
    let t = format!("{name}: database queries per second against the number of instances");
    write_both!(stem("queries"), SIZE, fleet_plot(&t, &study.rows, |r| r.queries_per_s, "database queries/s (log)"))?;
    let t = format!("{name}: p99 latency against the number of instances");
    write_both!(stem("p99"), SIZE, fleet_plot(&t, &study.rows, |r| r.latency_ms.p99, "p99 latency, ms (log)"))?;
    let md = markdown(study, "");
    std::fs::write(dir.join(format!("{name}-fleet.md")), md).with_context(|| format!("writing {name}-fleet.md"))
}

const SIZE: (u32, u32) = (1500, 560);

/// One panel per routing; in each, one line per policy over the fleet sizes.
fn fleet_plot<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    rows: &[FleetRow],
    metric: fn(&RunSummary) -> f64,
    y_desc: &str,
) -> Result<()> {
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(title, ("sans-serif", 22)).map_err(err)?;
    let (w, _) = root.dim_in_pixel();
    let (main, legend_area) = root.split_horizontally(w.saturating_sub(210));
    let panels = main.split_evenly((1, Routing::ALL.len()));
    let n_max = rows.iter().map(|r| r.instances).max().unwrap_or(1);
    let x = 0.8..f64::from(n_max) * 1.25;
    let y = log_range(rows.iter().map(|r| metric(&r.summary)));
    let mut keys: Vec<(String, RGBColor, Key)> = Vec::new();
    for (panel, routing) in panels.iter().zip(Routing::ALL) {
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("{routing} routing"), ("sans-serif", 17))
            .margin(8)
            .x_label_area_size(42)
            .y_label_area_size(if routing == Routing::Random { 70 } else { 48 })
            .build_cartesian_2d(x.clone().log_scale(), y.clone().log_scale())
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("instances (log)")
            .y_desc(if routing == Routing::Random { y_desc } else { "" })
            .x_label_formatter(&|v| format!("{}", v.round()))
            .y_label_formatter(&|v| compact(*v))
            .light_line_style(WHITE.mix(0.0))
            .label_style(("sans-serif", 13))
            .axis_desc_style(("sans-serif", 14))
            .draw()
            .map_err(err)?;
        let mut labels: Vec<String> = Vec::new();
        for r in rows.iter().filter(|r| r.routing == routing) {
            let l = label(&r.summary);
            if !labels.contains(&l) {
                labels.push(l);
            }
        }
        for l in &labels {
            let mut pts: Vec<(f64, f64, &str)> = rows
                .iter()
                .filter(|r| r.routing == routing && &label(&r.summary) == l)
                .map(|r| (f64::from(r.instances), metric(&r.summary), r.summary.policy.as_str()))
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            let Some(policy) = pts.first().map(|p| p.2) else { continue };
            let c = color(policy);
            // Car widest: where a policy sends as many queries as car, car shows around it.
            let w = if policy == "car" { 6 } else { 2 };
            chart
                .draw_series(LineSeries::new(pts.iter().map(|p| (p.0, p.1)), c.stroke_width(w)))
                .map_err(err)?;
            chart.draw_series(pts.iter().map(|p| Circle::new((p.0, p.1), 3, c.filled()))).map_err(err)?;
            if !keys.iter().any(|k| &k.0 == l) {
                keys.push((l.clone(), c, Key::Line(w)));
            }
        }
    }
    side_legend(&legend_area, &keys, 14)
}

/// A tick label without trailing zeros: 0.5, 2, 1500, 45k.
fn compact(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1e3)
    } else if v >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{}", (v * 1e3).round() / 1e3)
    }
}

fn log_range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (mut lo, mut hi) = (f64::INFINITY, 0.0f64);
    for v in values.filter(|v| *v > 0.0 && v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    // Whole decades, so a log axis always has labelled ticks (1, 2, ... 10).
    if lo.is_finite() { 10f64.powf(lo.log10().floor())..10f64.powf(hi.log10().ceil()) } else { 0.001..1.0 }
}

fn find<'a>(rows: &'a [FleetRow], routing: Routing, policy: &str, n: u32) -> Option<&'a RunSummary> {
    rows.iter()
        .find(|r| r.routing == routing && r.instances == n && r.summary.policy == policy)
        .map(|r| &r.summary)
}

/// Distinct keys the database looks up per request: its per-key work, after deduplication.
fn keys_per_request(r: &RunSummary) -> f64 {
    r.mean_distinct_keys * r.queries as f64 / r.requests.max(1) as f64
}

/// The README section of a study; `link_prefix` is prepended to the plots' file names.
pub fn markdown(study: &FleetStudy, link_prefix: &str) -> String {
    let s = &study.scenario;
    let rows = &study.rows;
    let name = &s.name;
    let mut md = String::new();
    let mut sizes: Vec<u32> = rows.iter().map(|r| r.instances).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let (lo, hi) = (sizes.first().copied().unwrap_or(1), sizes.last().copied().unwrap_or(1));
    let b = s.policy.latency_budget_ms;
    let _ = writeln!(md, "## Fleet study: {name}\n");
    let _ = writeln!(
        md,
        "traffic `{:?}`, keys `{:?}` ({} keys), one shared database of {} connection(s) (`{:?}` service {} ms + {} ms/key, \
         contention {}){}; {} to {} instances, each with its own scheduler; B = {b} ms; {} requests per run.\n",
        s.traffic.kind,
        s.keys.kind,
        s.keys.count,
        s.db.servers,
        s.db.service,
        s.db.base_ms,
        s.db.per_key_ms,
        s.db.contention,
        s.db.pool_per_instance.map(|p| format!(", a pool of {p} per instance")).unwrap_or_default(),
        lo,
        hi,
        rows.first().map_or(0, |r| r.summary.requests)
    );
    // The paragraph: what the study shows, from its own figures.
    let get = |routing, policy: &str, n| find(rows, routing, policy, n);
    if let (Some(w1), Some(wn), Some(car), Some(a1), Some(an), Some(nat1), Some(natn), Some(aff), Some(rnd), Some(rr)) = (
        get(Routing::Random, "window", lo),
        get(Routing::Random, "window", hi),
        get(Routing::Random, "car", hi),
        get(Routing::Random, "adaptive", lo),
        get(Routing::Random, "adaptive", hi),
        get(Routing::Random, "natural", lo),
        get(Routing::Random, "natural", hi),
        get(Routing::KeyAffinity, "window", hi),
        get(Routing::Random, "window", hi),
        get(Routing::RoundRobin, "window", hi),
    ) {
        let _ = writeln!(
            md,
            "**What it shows.** Each instance coalesces only what reaches it. Behind a random balancer the fixed \
             window of B = {b} ms collects {:.2} requests per query at {lo} instance(s) but {:.2} at {hi} \
             (the formula 1 + λT/N), so the database's queries/s grow from {:.0} to {:.0} — car sends {:.0}. \
             Adaptive goes from {:.0} to {:.0} queries/s and natural batching from {:.0} to {:.0}: \
             none of them batches at {hi} instances as at one, since none waits longer than B. \
             p99 latency: window {:.3} → {:.3} ms, adaptive {:.3} → {:.3} ms, car {:.3} ms at {hi}. \
             What routing buys back: at {hi} instances key affinity looks up {:.3} distinct keys per request \
             against {:.3} for random routing ({:.3} at one instance), because every request for a key reaches \
             the instance that already holds that key's other requests (requests per query: {:.2} with key \
             affinity, {:.2} with random routing). Database utilisation: window {:.3} → {:.3} \
             (random), {:.3} with key affinity at {hi}. Round robin spaces each instance's requests \
             evenly, which for a window is worse than random once an instance gets about one request \
             per window: at {hi} instances the window catches {:.2} requests per query with round \
             robin against {:.2} with random routing.\n",
            w1.mean_batch,
            wn.mean_batch,
            w1.queries_per_s,
            wn.queries_per_s,
            car.queries_per_s,
            a1.queries_per_s,
            an.queries_per_s,
            nat1.queries_per_s,
            natn.queries_per_s,
            w1.latency_ms.p99,
            wn.latency_ms.p99,
            a1.latency_ms.p99,
            an.latency_ms.p99,
            car.latency_ms.p99,
            keys_per_request(aff),
            keys_per_request(rnd),
            keys_per_request(w1),
            aff.mean_batch,
            rnd.mean_batch,
            w1.db_utilization,
            wn.db_utilization,
            aff.db_utilization,
            rr.mean_batch,
            wn.mean_batch,
        );
    }
    for (what, metric, fmt3) in [
        ("database queries/s", (|r: &RunSummary| r.queries_per_s) as fn(&RunSummary) -> f64, false),
        ("p99 latency (ms)", |r: &RunSummary| r.latency_ms.p99, true),
        ("distinct keys looked up per request", keys_per_request, true),
        ("database utilisation", |r: &RunSummary| r.db_utilization, true),
        ("mean wait the policy added, arrival to release (ms)", |r: &RunSummary| r.added_wait_ms.mean, true),
        ("mean wait for an in-flight place, release to dispatch (ms)", |r: &RunSummary| r.in_flight_wait_ms.mean, true),
        ("mean wait for a connection, dispatch to service (ms)", |r: &RunSummary| r.connection_wait_ms.mean, true),
        ("mean service time (ms)", |r: &RunSummary| r.service_ms.mean, true),
    ] {
        let _ = writeln!(md, "{what} by number of instances:\n");
        let _ = write!(md, "| routing | policy |");
        for n in &sizes {
            let _ = write!(md, " {n} |");
        }
        let _ = write!(md, "\n|---|---|");
        for _ in &sizes {
            let _ = write!(md, "---|");
        }
        let _ = writeln!(md);
        for routing in Routing::ALL {
            let mut labels: Vec<String> = Vec::new();
            for r in rows.iter().filter(|r| r.routing == routing) {
                let l = label(&r.summary);
                if !labels.contains(&l) {
                    labels.push(l);
                }
            }
            for l in labels {
                let _ = write!(md, "| {routing} | {l} |");
                for &n in &sizes {
                    let v = rows
                        .iter()
                        .find(|r| r.routing == routing && r.instances == n && label(&r.summary) == l)
                        .map(|r| metric(&r.summary));
                    let _ = match v {
                        Some(v) if fmt3 => write!(md, " {v:.3} |"),
                        Some(v) => write!(md, " {v:.0} |"),
                        None => write!(md, " |"),
                    };
                }
                let _ = writeln!(md);
            }
        }
        let _ = writeln!(md);
    }
    for (what, caption) in [
        ("queries", "database queries per second against the number of instances"),
        ("p99", "p99 latency against the number of instances"),
    ] {
        let _ = writeln!(md, "![{name}: {caption}]({link_prefix}{name}-fleet-{what}.png)\n");
    }

    let _ = writeln!(md, "### Getting each routing from the load balancer you run\n");
    let _ = writeln!(
        md,
        "- **random**: Envoy `lb_policy: RANDOM`; nginx `random;` in the `upstream`; HAProxy `balance random`. \
         Also what an L4 balancer (a Kubernetes Service through kube-proxy) gives per *connection*: with \
         long-lived HTTP/2 or gRPC connections the per-request spread can be far less even (`instance_skew`).\n\
         - **round_robin**: the default of Envoy (`ROUND_ROBIN`), nginx and HAProxy (`balance roundrobin`).\n\
         - **key_affinity**: consistent hashing on the key the batcher coalesces on (a header or URL argument \
         carrying, say, the user id): Envoy `lb_policy: RING_HASH` (or `MAGLEV`) with a route `hash_policy` on \
         that header; nginx `hash $arg_user_id consistent;` (ketama) in the `upstream`; HAProxy \
         `balance hdr(X-User-Id)` with `hash-type consistent`. The simulator's ring gives each instance \
         `fleet.vnodes` = {} points, as Envoy's ring-hash and nginx's ketama do (Maglev uses a lookup table \
         instead, with about the same share of keys moving).\n",
        s.fleet.vnodes
    );
    let _ = writeln!(md, "### What key affinity costs when an instance leaves or joins\n");
    let _ = writeln!(
        md,
        "When one of N instances leaves, exactly the keys of the ring arcs it owned move (to the next point's \
         owner); when it joins again the same keys move back. Until the moved keys' requests coalesce on \
         their new instance, their duplicates are split across two. Measured on the simulator's ring \
         ({} points per instance) and over {} requests drawn from this scenario's key model:\n",
        s.fleet.vnodes,
        KEY_MOVE_SAMPLE
    );
    let _ = writeln!(md, "| instances N | 1/N | share of the hash space that moves | share of requests whose key moves |\n|---|---|---|---|");
    for m in &study.moves {
        let _ = writeln!(
            md,
            "| {} | {:.4} | {:.4} | {:.4} |",
            m.instances,
            1.0 / f64::from(m.instances),
            m.hash_share,
            m.request_share
        );
    }
    let _ = writeln!(
        md,
        "\nWith skewed keys the share of *requests* that move depends on where the hottest keys sit, so it \
         strays further from 1/N than the hash-space share does.\n"
    );
    md
}
