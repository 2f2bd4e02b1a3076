//! What a demo run writes to `reports/db/`: per backend a CSV, a plot and a section of the
//! README (tables of the database's counts, the cost model, the simulator against the
//! measurements), and the README assembled from every backend's section present.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result, anyhow};
use plotters::prelude::*;
use serde::Serialize;

use crate::calibrate::CostModel;
use crate::reaction::DriverModel;
use crate::rounds::{Contended, ErrorSpread, Spread};
use crate::segments;
use crate::simcheck::{GOAL_MEAN, GOAL_P99, GOAL_QUERIES};
use crate::trace::TraceSpec;

/// Where and how a run was made.
#[derive(Debug, Clone, Serialize)]
pub struct Provenance {
    /// CPU model, cores, kernel, and the load average when the run started.
    pub machine: String,
    /// `git rev-parse --short HEAD` (+dirty).
    pub commit: String,
    /// The command line.
    pub command: String,
    /// UTC date and time.
    pub date: String,
}

impl Provenance {
    /// This machine, this checkout, this process's command line, now.
    pub fn here() -> Provenance {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string()))
            .unwrap_or_else(|| "unknown CPU".into());
        let cores = std::thread::available_parallelism().map_or(0, usize::from);
        let kernel = sh("uname", &["-sr"]).unwrap_or_default();
        let load = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default();
        let dirty = sh("git", &["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
        let commit = sh("git", &["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
        Provenance {
            machine: format!("{cpu}, {cores} cores, {kernel}; load average at start {load}"),
            commit: if dirty { format!("{commit}+dirty") } else { commit },
            command: std::env::args().collect::<Vec<_>>().join(" "),
            date: sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default(),
        }
    }
}

fn sh(cmd: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(cmd).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// One backend's run: everything its report shows.
#[derive(Debug)]
pub struct Run {
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// The server's version string.
    pub version: String,
    /// Rows in `users`.
    pub users: u32,
    /// The trace replayed.
    pub trace: TraceSpec,
    /// Requests in it.
    pub requests: usize,
    /// The measured cost model.
    pub model: CostModel,
    /// The batcher driver's measured delays (the scenario's `[driver]`).
    pub driver: DriverModel,
    /// Replays of each contender.
    pub rounds: u32,
    /// Per contender, every round: what was measured, and what the simulator predicted with
    /// and without `[driver]`.
    pub contenders: Vec<Contended>,
    /// Where and how.
    pub provenance: Provenance,
    /// Wall time of the whole run, s.
    pub elapsed_s: f64,
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn pct(x: f64) -> String {
    format!("{:+.1} %", x * 100.0)
}

fn spread_pct(x: &Spread) -> String {
    format!("{:+.1} % [{:+.0}, {:+.0}]", x.median * 100.0, x.min * 100.0, x.max * 100.0)
}

/// `median [min–max]` with `decimals`.
fn range(x: &Spread, decimals: usize) -> String {
    if x.min == x.max {
        format!("{:.*}", decimals, x.median)
    } else {
        format!("{:.*} [{:.*}–{:.*}]", decimals, x.median, decimals, x.min, decimals, x.max)
    }
}

fn yes_no(ok: bool) -> &'static str {
    if ok { "yes" } else { "no" }
}

fn mark(ok: bool) -> &'static str {
    if ok { "yes" } else { "**no**" }
}

/// Writes `<backend>.csv`, `<backend>.png`/`.svg` and `<backend>.md` into `dir`, then
/// `README.md` from every backend section there.
///
/// # Errors
///
/// If a file cannot be written or the plot fails.
pub fn write(dir: &Path, run: &Run) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let b = &run.backend;
    std::fs::write(dir.join(format!("{b}.csv")), csv(run)).context("writing the CSV")?;
    plot(&dir.join(format!("{b}.png")), run)?;
    plot(&dir.join(format!("{b}.svg")), run)?;
    std::fs::write(dir.join(format!("{b}.md")), section(run)).context("writing the section")?;
    readme(dir)
}

/// One line per replay (every round of every contender).
fn csv(run: &Run) -> String {
    let mut s = String::from(
        "backend,contender,round,requests,correct,db_queries,sent_queries,requests_per_query,db_exec_us_per_query,throughput_per_s,\
         latency_mean_ms,latency_p50_ms,latency_p99_ms,latency_p999_ms,latency_max_ms,pool_wait_mean_ms,pool_wait_p99_ms,\
         arrival_lag_p99_ms,sim_queries,sim_latency_mean_ms,sim_latency_p99_ms,err_queries,err_mean,err_p99,\
         sim_no_driver_queries,sim_no_driver_latency_mean_ms,sim_no_driver_latency_p99_ms,\
         to_seal_mean_ms,to_connection_mean_ms,query_mean_ms,way_back_mean_ms,\
         sim_to_seal_mean_ms,sim_to_connection_mean_ms,sim_query_mean_ms,sim_way_back_mean_ms,cpu_ms,waiting_for_a_core_ms,\
         sim_one_factor_queries,sim_one_factor_latency_mean_ms,sim_one_factor_latency_p99_ms,\
         sim_no_cpu_queries,sim_no_cpu_latency_mean_ms,sim_no_cpu_latency_p99_ms,\
         sim_queued_cpu_queries,sim_queued_cpu_latency_mean_ms,sim_queued_cpu_latency_p99_ms\n",
    );
    for c in &run.contenders {
        for (round, r) in c.rounds.iter().enumerate() {
            let (m, p, i) = (&r.measured, &r.predicted, &r.instant);
            let e = r.errors();
            let l = &m.latency;
            let _ = write!(
                s,
                "{},{},{},{},{},{},{},{:.3},{:.2},{:.1},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4},{:.1},{:.4},{:.4},{:.4},{:.4},{:.4},{:.1},{:.4},{:.4}",
                run.backend,
                m.label,
                round + 1,
                m.requests,
                m.correct,
                m.db.queries,
                m.sent,
                m.requests_per_query(),
                m.db_exec_us_per_query(),
                m.throughput_per_s(),
                l.mean() / 1e6,
                ms(l.quantile(0.5)),
                ms(l.quantile(0.99)),
                ms(l.quantile(0.999)),
                ms(l.max()),
                m.pool_wait.mean() / 1e6,
                ms(m.pool_wait.quantile(0.99)),
                ms(m.lag.quantile(0.99)),
                p.queries,
                p.mean_ms,
                p.p99_ms,
                e.queries,
                e.mean,
                e.p99,
                i.queries,
                i.mean_ms,
                i.p99_ms
            );
            for x in m.stages.means_ms().iter().chain(&p.stages_ms) {
                let _ = write!(s, ",{x:.4}");
            }
            match m.usage {
                Some(u) => {
                    let _ = write!(s, ",{:.1},{:.1}", u.cpu_ms, u.waiting_ms);
                }
                None => s.push_str(",,"),
            }
            let o = &r.one_factor;
            let _ = write!(s, ",{:.1},{:.4},{:.4}", o.queries, o.mean_ms, o.p99_ms);
            let n = &r.no_cpu;
            let _ = write!(s, ",{:.1},{:.4},{:.4}", n.queries, n.mean_ms, n.p99_ms);
            let q = &r.queued_cpu;
            let _ = write!(s, ",{:.1},{:.4},{:.4}", q.queries, q.mean_ms, q.p99_ms);
            s.push('\n');
        }
    }
    s
}

fn title(backend: &str) -> &'static str {
    match backend {
        "sqlite" => "SQLite (embedded file)",
        "postgres" => "PostgreSQL (loopback)",
        _ => "database",
    }
}

fn section(run: &Run) -> String {
    let mut s = String::new();
    let p = &run.provenance;
    let _ = writeln!(s, "## {}\n", title(&run.backend));
    let _ = writeln!(
        s,
        "{}, {} users, a pool of {} connections; every batcher with `max_in_flight` = {} and \
         `max_batch_size` = 1024. Trace: {} requests ({} s of a {}/s Poisson background, {} spikes of {} requests within {} ms, \
         a {} ms surge at {}/s; seed {}).\n",
        run.version,
        run.users,
        run.model.pool_size,
        run.model.pool_size,
        run.requests,
        run.trace.duration_s,
        run.trace.background_per_s,
        run.trace.spikes.len(),
        run.trace.spikes.first().map_or(0, |x| x.requests),
        run.trace.spikes.first().map_or(0.0, |x| x.width_ms),
        run.trace.bursts.first().map_or(0.0, |x| x.duration_s * 1e3),
        run.trace.bursts.first().map_or(0.0, |x| x.rate_per_s),
        run.trace.seed
    );
    let _ = writeln!(s, "- machine: {}\n- commit: {}\n- command: `{}`\n- date: {}; the whole run took {:.1} s\n", p.machine, p.commit, p.command, p.date, run.elapsed_s);
    let counter = match run.backend.as_str() {
        "postgres" => "`pg_stat_statements` (sum of `calls` of the statement, every IN-list length)",
        _ => "SQLite's own statement-profile hook (`sqlite3_trace_v2`, `SQLITE_TRACE_PROFILE`) on every pooled connection",
    };
    let _ = writeln!(
        s,
        "### What the database counted\n\nEach contender was replayed {} times, the rounds interleaved (round `r` starts at \
         the `r`-th contender and goes round the list); this table shows each contender's median round by mean latency. \
         Queries as counted by {counter}; \"sent\" is our own count of calls, for a cross-check. \
         Latency runs from the call of `get_user_info` to its answer; pool wait is per query. Timings were taken on a shared, busy machine: read them as ratios within this run.\n",
        run.rounds
    );
    let _ = writeln!(s, "| contender | queries (database) | sent | requests/query | DB time/query | throughput | p50 | p99 | p99.9 | pool wait mean / p99 | correct |");
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for c in &run.contenders {
        let m = &c.median_round().measured;
        let l = &m.latency;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.1} | {:.0} µs | {:.0}/s | {:.3} ms | {:.3} ms | {:.3} ms | {:.3} / {:.3} ms | {}/{} |",
            m.label,
            m.db.queries,
            m.sent,
            m.requests_per_query(),
            m.db_exec_us_per_query(),
            m.throughput_per_s(),
            ms(l.quantile(0.5)),
            ms(l.quantile(0.99)),
            ms(l.quantile(0.999)),
            m.pool_wait.mean() / 1e6,
            ms(m.pool_wait.quantile(0.99)),
            m.correct,
            m.requests
        );
    }
    let _ = writeln!(s, "\n![queries and p99 per contender]({}.png)\n", run.backend);
    let worst_lag = run.contenders.iter().flat_map(|c| &c.rounds).map(|r| r.measured.lag.quantile(0.99)).max().unwrap_or(0);
    let _ = writeln!(
        s,
        "The injector's lateness (actual arrival − the trace's instant) was at most {:.3} ms at the p99 in any replay; \
         the simulator replays the actual arrivals, so it does not enter the comparison below.\n",
        ms(worst_lag)
    );

    let m = &run.model;
    let _ = writeln!(s, "### The cost model (measured)\n");
    let _ = writeln!(
        s,
        "Closed loop, `n` queries at once (`n` ≤ the pool, so none waits for a connection), each of `k` random ids; \
         the mean time of a `fetch_users` call, the median of {} rounds (each round visits every cell once, so a burst of \
         load elsewhere spoils one round, not the cell; each round ran just before a round of replays, so the model sees \
         the spells of load they saw), and per `n` a line `base + per_key × k` fitted on relative errors \
         (so the single-id queries, what direct calls and small batches cost, are fitted as well as the 1,000-id ones):\n",
        m.points.first().map_or(1, |p| p.round_means_ms.len())
    );
    let ks: Vec<u32> = {
        let mut k: Vec<u32> = m.points.iter().map(|p| p.keys).collect();
        k.sort_unstable();
        k.dedup();
        k
    };
    let _ = write!(s, "| queries at once |");
    for k in &ks {
        let _ = write!(s, " k = {k} |");
    }
    let _ = writeln!(s, " base | per key |");
    let _ = writeln!(s, "|---|{}---:|---:|", "---:|".repeat(ks.len()));
    for l in &m.lines {
        let _ = write!(s, "| {} |", l.concurrency);
        for k in &ks {
            match m.points.iter().find(|p| p.concurrency == l.concurrency && p.keys == *k) {
                Some(p) => {
                    let _ = write!(s, " {:.3} ms |", p.mean_ms);
                }
                None => s.push_str(" |"),
            }
        }
        let _ = writeln!(s, " {:.1} µs | {:.2} µs |", l.base_ms * 1e3, l.per_key_ms * 1e3);
    }
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let _ = writeln!(
        s,
        "\n`servers` (queries that really run at once) and the contention (with `m` running, a query progresses at rate \
         1 / (1 + c (m − 1))) are fitted together to every cell with `n` > 1: `n` clients always busy take \
         `(n / m) (1 + c (m − 1))` times as long as one alone, `m = min(n, servers)`. A query's `c` depends on its size: \
         its base contends by `contention`, its per-key part by `per_key_contention`, and `c` is the two weighted by the \
         parts' means at `n` = 1 (`sim/src/db.rs`). Beside it, the best single factor for every size (the model before). \
         The machine has {cores} cores (an embedded database runs on the application's threads, so its queries cannot all \
         run at once beyond them):\n"
    );
    let _ = writeln!(s, "| servers | contention (base) | per-key contention | mean abs. log error | one factor | its error |");
    let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|");
    for f in &m.server_fits {
        let chosen = if f.servers == m.servers { " (chosen)" } else { "" };
        let _ = writeln!(
            s,
            "| {}{chosen} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
            f.servers, f.contention, f.per_key_contention, f.mean_abs_log_error, f.one_factor.0, f.one_factor.1
        );
    }
    let _ = writeln!(
        s,
        "\nScenario [`{b}-calibrated.toml`]({b}-calibrated.toml): `servers` = {}, `base_ms` = {:.4}, `per_key_ms` = {:.6}, \
         `contention` = {:.3}, `per_key_contention` = {:.3}, lognormal with `sigma` = {:.3} (from the single-key spread); \
         the batchers keep `max_in_flight` = {} (the pool), so batches beyond `servers` wait in the simulator as they wait \
         for a core here.\n",
        m.servers,
        m.base_ms,
        m.per_key_ms,
        m.contention,
        m.per_key_contention,
        m.lognormal_sigma,
        m.pool_size,
        b = run.backend
    );

    if let Some(w) = &m.wake {
        let hot = m.points.iter().find(|p| p.concurrency == 1 && p.keys == 1).map_or(m.base_ms, |p| p.mean_ms);
        let _ = writeln!(
            s,
            "**Wake-up.** The closed loop keeps every thread busy; the replays' background does not. {} single-id queries \
             sent open loop (Poisson, 1,000/s, as the background) found the database idle for at least {} µs: each took \
             {:.1} µs more than the closed loop's single-id mean ({:.1} µs) at the median, {:.1} µs on average (p5 {:.1}, \
             p95 {:.1} µs; the slowest 1 % left out). The scenario's `[driver]` carries them as `wake_us`, added to the \
             launch of any query (direct calls too) sealed after the database had been idle that long; in the stage \
             table below it shows as *to connection* in the simulator and inside *query* here.\n",
            w.samples,
            crate::calibrate::WAKE_AFTER_US,
            w.at(0.5),
            hot * 1e3,
            w.mean_us,
            w.at(0.05),
            w.at(0.95)
        );
    }
    app_cpu_section(&mut s, run);
    driver_section(&mut s, run);
    let _ = writeln!(s, "### The simulator against the database\n");
    let _ = writeln!(
        s,
        "`busline-sim` with that scenario replays each replay's actual arrivals (the first round's are in \
         `traces/{}-*.csv`) under the same policy (direct calls as `car`, with no driver between the caller and the pool) \
         and the batcher driver's measured delays (`[driver]`), mean of {} seeds. Each measured figure is the median of \
         the {} rounds with the lowest and highest round in brackets: the real system's own spread from one replay of \
         the same trace to the next. Each predicted figure is the median of the rounds' predictions (each on its \
         round's arrivals), its lowest and highest likewise. The error sets the median prediction against the median \
         measurement (in brackets, the lowest and highest of the rounds' own errors, each round's prediction against \
         that round's measurement). Goals, judged on that error: queries within {:.0} %, mean latency within {:.0} %, \
         p99 within {:.0} %. *In the spread*: the median prediction lies between the lowest and highest round \
         measured, so a miss there is no larger than the real system's own from one replay to the next.\n",
        run.backend,
        crate::simcheck::SEEDS,
        run.rounds,
        GOAL_QUERIES * 100.0,
        GOAL_MEAN * 100.0,
        GOAL_P99 * 100.0
    );
    let _ = writeln!(
        s,
        "| contender | queries measured | predicted | error | mean measured (ms) | predicted | error | p99 measured (ms) | predicted | error | goals met (q / mean / p99) | in the spread (q / mean / p99) | waited for a core, each round |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|");
    for c in &run.contenders {
        let e = c.errors();
        let [q, me, p9] = c.verdicts();
        let waited: Vec<String> =
            c.rounds.iter().map(|r| r.measured.usage.map_or_else(|| "?".into(), |u| format!("{:.0}", u.waiting_ms))).collect();
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} / {} | {} / {} / {} | {} ms |",
            c.label,
            range(&q.measured, 0),
            range(&q.predicted, 0),
            spread_pct(&e.queries),
            range(&me.measured, 3),
            range(&me.predicted, 3),
            spread_pct(&e.mean),
            range(&p9.measured, 3),
            range(&p9.predicted, 3),
            spread_pct(&e.p99),
            mark(q.met),
            mark(me.met),
            mark(p9.met),
            yes_no(q.within_spread),
            yes_no(me.within_spread),
            yes_no(p9.within_spread),
            waited.join(", ")
        );
    }
    let _ = writeln!(
        s,
        "\n*Waited for a core*: over each round's replay, the time this process's threads were runnable but not \
         running (Linux's scheduler statistics, `demo/src/sched.rs`), summed over the threads: on this 2-core machine \
         shared with other work, mostly other processes' time slices, which the simulator cannot know of. A round \
         that waited tens of ms lost whole milliseconds in some requests' latency.\n"
    );
    stages_section(&mut s, run);
    let _ = writeln!(
        s,
        "The same predictions, against the same measurements, as the simulator made them before: without `[driver]` \
         (a bus leaves the instant the policy releases it), then with the driver's reaction and launch only (no way \
         back, no wake-up), then with everything above. Errors of queries / mean / p99 (the median prediction against the median measurement).\n"
    );
    let _ = writeln!(s, "| contender | queries error | mean error | p99 error |");
    let _ = writeln!(s, "|---|---:|---:|---:|");
    for c in &run.contenders {
        let (e, e1, e0) = (c.errors().median(), c.reaction_only_errors().median(), c.instant_errors().median());
        let _ = writeln!(
            s,
            "| {} | {} → {} → {} | {} → {} → {} | {} → {} → {} |",
            c.label,
            pct(e0.queries),
            pct(e1.queries),
            pct(e.queries),
            pct(e0.mean),
            pct(e1.mean),
            pct(e.mean),
            pct(e0.p99),
            pct(e1.p99),
            pct(e.p99)
        );
    }
    s.push('\n');
    let (servers, c) = run.model.one_factor();
    let _ = writeln!(
        s,
        "The same predictions with one contention for every query size (the model before: `servers` = {servers}, \
         `contention` = {c:.3} for the whole query, the best single factor in the calibration's table) → with the \
         contention by size above. Errors of queries / mean / p99 (the median prediction against the median measurement).\n"
    );
    errors_before_after(&mut s, run, |c| c.one_factor_errors());
    if run.model.app_cpu.is_some() && run.backend == "sqlite" {
        let _ = writeln!(
            s,
            "The same predictions without the application's CPU (`[cpu]` left out: the model before) → with it. \
             Errors of queries / mean / p99 (the median prediction against the median measurement).\n"
        );
        errors_before_after(&mut s, run, |c| c.no_cpu_errors());
        let _ = writeln!(
            s,
            "The same predictions with the application's CPU queued with the queries, first come first served, each \
             job holding a server, and no driver's CPU before a deadline (`[cpu] sharing = \"queue\"`, no \
             `timer_us`: the model before) → shared with them as the kernel time-slices threads (`sharing = \
             \"processor\"`), with the driver's timer (`timer_us`). Errors of queries / mean / p99 (the median prediction against the median measurement).\n"
        );
        errors_before_after(&mut s, run, |c| c.queued_cpu_errors());
    }
    if let Some(f) = run.model.runner_up() {
        let chosen = run.model.server_fits.iter().find(|f| f.servers == run.model.servers);
        let _ = writeln!(
            s,
            "The same predictions with the calibration's runner-up fit (`servers` = {}, `contention` = {:.3}, \
             `per_key_contention` = {:.3}: mean abs. log error {:.3} against the chosen fit's {}) → with the chosen fit. \
             The closed loop often fits two or three `servers` almost equally well with very different contentions, \
             and the contention is also how much the application's shared CPU (`[cpu]`) slows the queries: where \
             the two columns differ, the prediction turns on a choice the calibration's cells hardly make. Errors \
             of queries / mean / p99 (the median prediction against the median measurement).\n",
            f.servers,
            f.contention,
            f.per_key_contention,
            f.mean_abs_log_error,
            chosen.map_or_else(|| "?".into(), |c| format!("{:.3}", c.mean_abs_log_error))
        );
        if run.contenders.iter().all(|c| c.runner_up_errors().is_some()) {
            errors_before_after(&mut s, run, |c| c.runner_up_errors().expect("checked: every contender has them"));
        }
    }
    parts_section(&mut s, run);
    turnover_section(&mut s, run);
    why_misses(&mut s, run);
    s
}

/// Where in the trace the latency goes: per part, measured against predicted, and the
/// measured stages.
/// A table of each contender's errors (queries / mean / p99; median against median) under an older model
/// (`before`) → under the current one.
fn errors_before_after(s: &mut String, run: &Run, before: impl Fn(&Contended) -> ErrorSpread) {
    let _ = writeln!(s, "| contender | queries error | mean error | p99 error |");
    let _ = writeln!(s, "|---|---:|---:|---:|");
    for c in &run.contenders {
        let (e, e0) = (c.errors().median(), before(c).median());
        let _ = writeln!(
            s,
            "| {} | {} → {} | {} → {} | {} → {} |",
            c.label,
            pct(e0.queries),
            pct(e.queries),
            pct(e0.mean),
            pct(e.mean),
            pct(e0.p99),
            pct(e.p99)
        );
    }
    s.push('\n');
}

fn parts_section(s: &mut String, run: &Run) {
    let _ = writeln!(
        s,
        "Where in the trace: each contender's median round, its requests split by the part of the trace they arrived \
         in (by their instant in the trace; the spikes' part runs 0.1 ms past each spike's last arrival), the \
         queries sent for them (measured: each request one over the size of its bus, the requests sealed at one \
         instant; predicted: the simulator's queries dispatched in the part's buckets), the \
         simulator's latency for the same requests beside the measured one (its time series by arrival instant, \
         {bucket} µs buckets, histograms of 1/16 precision: its p99 is good to a few percent), and the measured stages \
         (as above). Last, the slowest 1 % of the measured requests, the parts they arrived in, and their stages: \
         where the p99 comes from (their predicted counterpart is not known request by request: the row shows the \
         predicted p99 of the whole replay). ms.\n",
        bucket = segments::BUCKET_NS / 1000
    );
    let _ = writeln!(
        s,
        "| contender | part | requests | queries measured / predicted | mean measured / predicted | p99 measured / predicted | to seal | to connection | query | way back |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for c in &run.contenders {
        let r = c.median_round();
        for (name, p) in segments::PARTS.iter().zip(&r.parts) {
            let st = p.stages.means_ms();
            let _ = writeln!(
                s,
                "| {} | {name} | {} | {:.0} / {:.0} | {:.3} / {:.3} | {:.3} / {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
                c.label,
                p.measured.count(),
                p.queries.0,
                p.queries.1,
                p.measured.mean() / 1e6,
                p.predicted.mean() / 1e6,
                ms(p.measured.quantile(0.99)),
                ms(p.predicted.quantile(0.99)),
                st[0],
                st[1],
                st[2],
                st[3]
            );
        }
        let t = &r.tail;
        let st = t.stages.means_ms();
        let from: Vec<String> =
            segments::PARTS.iter().zip(t.from).filter(|(_, n)| *n > 0).map(|(p, n)| format!("{n} {p}")).collect();
        let _ = writeln!(
            s,
            "| {} | slowest 1 % ({}) | {} | – | {:.3} / – | {:.3} / {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
            c.label,
            from.join(", "),
            t.latency.count(),
            t.latency.mean() / 1e6,
            ms(r.measured.latency.quantile(0.99)),
            r.predicted.p99_ms,
            st[0],
            st[1],
            st[2],
            st[3]
        );
    }
    s.push('\n');
}

/// Where the latency goes: each stage's mean, measured against predicted.
fn stages_section(s: &mut String, run: &Run) {
    let _ = writeln!(
        s,
        "Where the mean latency goes, per request, in each contender's median round: *to seal*, from the call to its \
         bus's seal (the policy's wait and the driver's reaction); *to connection*, from the seal (direct calls: the \
         call) to holding a pooled connection (the launch and the pool; in the simulator also a wait for one of the \
         `servers`, which here is a wait for a core inside the query); *query*, holding the connection to \
         `fetch_users` returning; *way back*, from there to the caller holding its answer. Measured / predicted, ms; \
         the stages add up to the mean latency. Direct calls wait for a connection before their seal in the \
         simulator (its car holds them at the stop while the pool is busy) and after it here: read their first two \
         stages together.\n"
    );
    let _ = writeln!(s, "| contender | to seal | to connection | query | way back | mean |");
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|");
    for c in &run.contenders {
        let r = c.median_round();
        let m = r.measured.stages.means_ms();
        let p = r.predicted.stages_ms;
        let _ = write!(s, "| {} |", c.label);
        for (m, p) in m.iter().zip(p) {
            let _ = write!(s, " {m:.3} / {p:.3} |");
        }
        let _ = writeln!(s, " {:.3} / {:.3} |", r.measured.latency.mean() / 1e6, r.predicted.mean_ms);
    }
    s.push('\n');
}

/// The application's CPU per request, as the scenario's `[cpu]` carries it.
fn app_cpu_section(s: &mut String, run: &Run) {
    let Some(c) = &run.model.app_cpu else { return };
    let rounds: Vec<String> = c
        .bursts
        .iter()
        .map(|(b, d)| {
            let q = crate::app_cpu::QueryCpu { base_us: c.query_base_us, per_key_us: c.query_per_key_us };
            format!(
                "{:.1} ms of CPU for {} queries ({:.1} µs per request) / {:.1} ms ({:.1} µs)",
                b.cpu_ms,
                b.queries,
                q.request_us(b),
                d.cpu_ms,
                q.request_us(d)
            )
        })
        .collect();
    let used = if run.backend == "sqlite" {
        format!(
            "SQLite runs in the process, so its `servers` ({}) are the process's cores ({}): the scenario's `[cpu]` puts \
             `request_us` = {:.2} µs (direct calls: `direct_request_us` = {:.2} µs) on them at each arrival, shared with \
             the queries as the kernel time-slices threads (`sharing = \"processor\"`): the work starts at once, \
             holds no connection's server, and every job running, work or query, slows the others by the \
             contention (`sim/README.md`, `[cpu]`).",
            run.model.servers, c.cores, c.request_us, c.direct_request_us
        )
    } else {
        "A server database runs its queries on its own processes: the scenario carries no `[cpu]`.".to_string()
    };
    let _ = writeln!(
        s,
        "**The application's CPU.** The closed loop times queries with only their own callers running; a replay's \
         requests are tasks spawned one by one, each polled, boarding, woken and answered. Each calibration round \
         also sends bursts of the article's shape ({} requests within {} ms, spawned at their instants as the replays' \
         injector spawns them; `demo/src/app_cpu.rs`), through a natural batcher and directly, and reads the whole \
         process's CPU from the first spawn to the last answer (Linux's scheduler statistics). Less the CPU of the \
         queries the burst ran, each as the closed loop's single-client cells used it ({:.1} µs + {:.2} µs per id, \
         a line through those cells' CPU per query), what is left per request is the application's CPU per request. \
         Each round, batched / direct: {}; the median is kept. {}\n",
        crate::app_cpu::BURST,
        crate::app_cpu::WIDTH.as_millis(),
        c.query_base_us,
        c.query_per_key_us,
        rounds.join("; "),
        used
    );
    if run.backend == "sqlite"
        && let Some(check) = timer_cpu_check(run, c.query_base_us)
    {
        let _ = writeln!(
            s,
            "**The driver's timer.** A timed departure costs the driver's CPU through the last stretch before its \
             deadline (the core's precise timer spins, then the driver stays runnable); the scenario's `[cpu]` puts \
             `timer_us` = {:.0} µs of it on the servers before each deadline (or the whole window if shorter; the \
             core's design, `DRIVER_TIMER_US` in `demo/src/calibrate.rs`). What the replays' CPU says, each fixed \
             window's median round against natural's (every window bus is timed; less the CPU of the queries one \
             contender sent more than the other, {:.1} µs each): {}.\n",
            crate::calibrate::DRIVER_TIMER_US,
            c.query_base_us,
            check.join(", ")
        );
    }
}

/// Per fixed window, the replays' CPU beyond natural's per bus, µs: `(cpu − cpu_natural −
/// (queries − queries_natural) × query_base_us) / queries`, each contender's median round.
fn timer_cpu_check(run: &Run, query_base_us: f64) -> Option<Vec<String>> {
    let figures = |label: &str| {
        let c = run.contenders.iter().find(|c| c.label == label)?;
        let m = &c.median_round().measured;
        Some((m.usage?.cpu_ms * 1e3, m.db.queries as f64))
    };
    let (natural_us, natural_q) = figures("natural")?;
    let lines: Vec<String> = run
        .contenders
        .iter()
        .filter(|c| c.label.starts_with("window"))
        .filter_map(|c| {
            let (cpu_us, q) = figures(&c.label)?;
            let per_bus = (cpu_us - natural_us - (q - natural_q) * query_base_us) / q.max(1.0);
            Some(format!("{} {per_bus:.0} µs per bus", c.label))
        })
        .collect();
    (!lines.is_empty()).then_some(lines)
}

/// The batcher driver's measured delays, as the scenario's `[driver]` carries them.
fn driver_section(s: &mut String, run: &Run) {
    let d = &run.driver;
    let _ = writeln!(s, "### The batcher's driver (measured)\n");
    let _ = writeln!(
        s,
        "How long the batcher's driver takes to carry out the policy's decision, on this machine, against a mock \
         backend (`demo/src/reaction.rs`: one spinning thread per pooled connection for each query's calibrated time, no \
         database), under a burst of the demo's shape ({} requests, its own seed) replayed as the replay's injector does. \
         *Reaction*: natural batching, each bus whose first passenger found nothing in flight (released on that \
         arrival): the seal (the batch function's call) − that passenger's call; requests arriving meanwhile still \
         board. *After a deadline*: a {} ms window, each bus with a free place at its deadline: seal − first call − the \
         window. *Launch*: every bus, its future's first poll − the seal (nobody boards). The scenario's `[driver]` \
         carries each as 21 quantiles of the samples without their slowest 1 % (another process's time slice on this \
         shared machine). Timings on a busy machine, taken just after the replays: the replays' own driver ran \
         under whatever load the machine had then.\n",
        d.requests,
        d.window_ms
    );
    let _ = writeln!(s, "| delay | samples | p5 | p50 | p95 | p99 (table's top) | mean (table) | max (left out) |");
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|");
    let mock = [
        ("mock: reaction (due on arrival)".to_string(), &d.reaction),
        ("mock: after a deadline".into(), &d.timer_reaction),
        ("mock: launch".into(), &d.launch),
        ("mock: way back (per request)".into(), &d.answer_raw),
        (format!("mock: way back − {:.2} µs per caller woken before (`answer_us`)", d.answer_per_caller_us), &d.answer),
    ];
    let mut rows: Vec<(String, &crate::reaction::Delay)> = mock.into_iter().collect();
    if let Some(c) = &d.completion_reaction {
        rows.insert(1, ("mock: reaction (due on a completion; not in the scenario)".into(), c));
    }
    if let Some(c) = &d.busy_reaction {
        rows.insert(1, ("mock: reaction (due on arrival, buses in flight; not in the scenario)".into(), c));
    }
    let mut per_caller = Vec::new();
    for c in &run.contenders {
        let m = &c.median_round().measured;
        let Some(r) = &m.driver else { continue };
        for (what, x) in [
            ("reaction (due on arrival)", &r.reaction),
            ("reaction (due on arrival, buses in flight)", &r.busy_reaction),
            ("reaction (due on a completion)", &r.completion_reaction),
            ("after a deadline", &r.timer_reaction),
            ("launch", &r.launch),
            ("way back (per request)", &r.answer),
        ] {
            if let Some(x) = x {
                rows.push((format!("replay, {}: {what}", m.label), x));
            }
        }
        per_caller.push(format!("{} {:.2} µs", m.label, r.answer_per_caller_us));
    }
    for (name, x) in rows {
        let _ = writeln!(
            s,
            "| {name} | {} | {:.1} µs | {:.1} µs | {:.1} µs | {:.1} µs | {:.1} µs | {:.0} µs |",
            x.samples,
            x.at(0.05),
            x.at(0.5),
            x.at(0.95),
            x.at(1.0),
            x.mean_us,
            x.max_us
        );
    }
    let _ = writeln!(
        s,
        "\nThe rows \"replay\" are the same delays as they were in each replay against the database (its batch \
         function noted each seal, first poll and end; a bus's passengers are found from its ids): not used by the \
         simulator, they show how well the mock's tables stand for the driver under the real load (each contender's \
         median round). *Way back*: per request, from its bus's end (the batch function's future returning) to its \
         caller holding the answer (the outcome published, the caller's task woken and run). The callers of a bus are \
         woken in the order they boarded, so the way back grows with a caller's place in its bus: the calibration fits \
         a line over every request against the mock, {:.2} µs per caller woken before, and the scenario carries that \
         (`answer_per_caller_us`) and the table of what is left (`answer_us`). The same fit on the replays: {}.\n",
        d.answer_per_caller_us,
        per_caller.join(", ")
    );
}

/// The figures that missed their goals in this run, and what the model lacks that moves each.
/// The simulator's cycle of a connection under a queue of single-id queries: its service time
/// with `min(pool, servers)` running (the wake-up and `[cpu]` aside), times `pool / m`, µs.
fn simulated_cycle_us(m: &CostModel) -> f64 {
    let running = m.pool_size.min(m.servers).max(1);
    let c = crate::calibrate::sized_contention(m.contention, m.per_key_contention, m.base_ms, m.per_key_ms, 1);
    (m.base_ms + m.per_key_ms) * 1e3 * (1.0 + c * f64::from(running - 1)) * f64::from(m.pool_size) / f64::from(running)
}

/// Direct calls under the spikes: how fast the pool handed its connections on, measured against
/// the closed loop the model is fitted on and the simulator's service (`src/turnover.rs`).
fn turnover_section(s: &mut String, run: &Run) {
    let pool = run.model.pool_size as usize;
    let Some(direct) = run.contenders.iter().find(|c| c.rounds.iter().any(|r| crate::turnover::of(&r.measured, pool).is_some()))
    else {
        return;
    };
    let closed = run.model.points.iter().find(|p| p.concurrency == run.model.pool_size && p.keys == 1);
    let _ = writeln!(
        s,
        "**Direct calls: the pool's turnover under a queue** (`demo/src/turnover.rs`). Where direct calls queue for \
         a connection (spells of waits of at least {} µs handing out at least {} connections: the spikes), the pool's \
         *cycle* is {pool} × the spells' length / the connections handed out in them, set against the *query* stage of \
         those calls (holding the connection to `fetch_users` returning); the rest of the cycle is the hand-back (sqlx \
         returns a released connection from a task it spawns, which pings it first: a round trip to the connection's \
         worker thread) and the next caller's pickup (its task, woken, polled by one of the runtime's {} workers beside \
         the spike's newly spawned ones). The closed loop's cell with {pool} clients and one id is such a cycle too \
         (each client's call, its wait for a connection being the hand-back), with no queue of tasks; the \
         simulator's cycle is its service time of a single-id query with {} running (a place is free the instant its \
         query ends, the wake-up and `[cpu]` aside).\n",
        crate::turnover::WAITED_NS / 1000,
        crate::turnover::SPELL_MIN,
        crate::RUNTIME_WORKERS,
        run.model.pool_size.min(run.model.servers),
    );
    let _ = writeln!(s, "| where | spells | their length | connections handed out | cycle | query | hand-back and pickup | latency mean / p99 |");
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|");
    if let Some(p) = closed {
        let _ = writeln!(
            s,
            "| closed loop, {pool} clients, 1 id | – | – | {} | {:.1} µs | {:.1} µs | {:.1} µs | – |",
            p.samples,
            p.mean_ms * 1e3,
            (p.mean_ms - p.pool_wait_ms) * 1e3,
            p.pool_wait_ms * 1e3
        );
    }
    let cycle = simulated_cycle_us(&run.model);
    let _ = writeln!(s, "| simulator | – | – | – | {cycle:.1} µs | {cycle:.1} µs | 0 | – |");
    for (i, r) in direct.rounds.iter().enumerate() {
        if let Some(t) = crate::turnover::of(&r.measured, pool) {
            let _ = writeln!(
                s,
                "| replay, round {} | {} | {:.2} ms | {} | {:.1} µs | {:.1} µs | {:.1} µs | {:.3} / {:.3} ms |",
                i + 1,
                t.spells,
                t.busy_ms,
                t.handed_out,
                t.cycle_us,
                t.query_us,
                t.gap_us(),
                crate::rounds::mean_ms(&r.measured),
                crate::rounds::p99_ms(&r.measured)
            );
        }
    }
    s.push('\n');
}

fn why_misses(s: &mut String, run: &Run) {
    let mut missed = Vec::new();
    for c in &run.contenders {
        for (v, what, decimals, unit) in c.verdicts().iter().zip([("queries", 0, ""), ("mean", 3, " ms"), ("p99", 3, " ms")]).map(|(v, (w, d, u))| (v, w, d, u)) {
            if !v.met {
                missed.push(format!(
                    "{} {what} ({}; measured {}{unit}, predicted {}{unit}: {})",
                    c.label,
                    pct(v.error),
                    range(&v.measured, decimals),
                    range(&v.predicted, decimals),
                    if v.within_spread { "within the real system's own spread" } else { "outside the real system's spread" }
                ));
            }
        }
    }
    let _ = writeln!(s, "### Where the simulator misses, and why\n");
    if missed.is_empty() {
        let _ = writeln!(s, "Every figure met its goal in this run.\n");
    } else {
        let _ = writeln!(s, "Missed in this run (median prediction against median measurement; the rounds' range in brackets):\n");
        for m in &missed {
            let _ = writeln!(s, "- {m}");
        }
        s.push('\n');
    }
    let gated_sensitivity = gated_sensitivity(run);
    let turnover_summary = turnover_summary(run);
    let cost_sensitivity = cost_sensitivity(run);
    let fit_ambiguity = fit_ambiguity(run);
    let _ = writeln!(
        s,
        "What the model lacks (`sim/README.md`, \"What it does not model\"), and which way each moves a prediction:\n\n\
         - **The driver's delays, drawn regardless of the moment, and their tail.** The scenario's `[driver]` \
         (measured above against the mock) delays each departure by a draw from one table, whatever the load at \
         that moment. The replays' own delays (the \"replay\" rows) match the mock's in their body, so the tables \
         stand for the driver as it ran; without them (the comparison just above) every bus leaves the instant it is \
         released and natural's and gated's buses come out far more numerous than measured: a reaction of a few \
         microseconds is what lets the callers of a burst board the same bus. The tables leave out the slowest 1 % \
         (milliseconds: another process's time slice on this shared machine); the adaptive policy shortens its \
         window after exactly such late departures, so its real query count follows the machine's load from run to \
         run (`demo/README.md` gives the spread seen) while the simulator's stays put. The way back is drawn the \
         same way (its table, plus its measured growth per caller woken before): the *way back* stage above sets it \
         against each replay's.\n\
         - **Other processes' time slices** (every latency, most the p99). On a shared machine a thread of the \
         replay that is runnable can wait milliseconds for a core (the \"waited for a core\" column): a query, a \
         driver's reaction or a way back stretched by a few ms, and every request in flight with it. Each calibration \
         round ran just before a round of replays, so the cost model saw the same spells of load; the rounds and their \
         medians keep one spoiled replay out of a figure, not a load that lasts the whole run: then every round waited \
         and the errors of all of them lean the same way (the brackets).\n\
         - **The application's CPU, as the kernel schedules it** (the *query* stage above, most under the spikes \
         and for the shortest windows: the part table shows the spikes' query stage against the background's). The \
         scenario's `[cpu]` puts each request's measured CPU (above: the article's spike, less its queries' CPU) on \
         the servers beside the queries: the work runs on threads (the runtime's {} workers, sqlx's worker thread per \
         connection, the injector) that the kernel time-slices on {} cores, so it is modelled as processor sharing \
         (it starts at once and slows the running queries by the contention) rather than a queue the queries wait \
         behind; the tables comparing the predictions without it, and with it queued, show what each explains. \
         What it leaves out: the kernel's slices are not the fitted contention (with fewer jobs running than cores \
         nothing slows a real thread, a woken thread is favoured over one that has run, and with many jobs running \
         the contended rates add up to more than the {} cores); a request's CPU is one constant, whatever the load (a \
         request that wakes parked threads in the quiet background costs more than one inside a spike, which is what \
         the bursts measure); the driver's CPU before a deadline (`timer_us`) is the core's design figure set against \
         the replays' CPU above, not fitted, and is put on the servers as work though the real spin ends at the \
         deadline whatever its share; and on a busy machine the CPU of a burst, hence `request_us`, moves from round \
         to round (with it every prediction under the spikes: a run whose calibration read a high `request_us` \
         over-predicts every contender there).\n\
         - **Gated on the edge of its band.** The gate closes when the estimated rate times the window falls below \
         half the threshold: here 1,000/s × 1 ms = 1 = 2 / 2, the background's own rate. So in the background each \
         bus's wait turns on the estimate's noise, and the query count on a few percent of timing: {gated_sensitivity}. The \
         simulator runs the same policy code on the same arrivals; where the real driver's readings of the gate \
         differ (it hears passengers after the first of a bus only when it next wakes, and reads the gate at \
         each of its wake-ups) the count moves, and the part table shows the excess in the background.\n\
         - **Direct calls: the pool's hand-back under a queue.** Under the article's spike (200 requests within \
         3 ms, one every 15 µs) single-id queries arrive about as fast as the pool turns its connections over, so \
         the queue that builds, and with it direct calls' mean and p99, moves several percent for every percent of \
         the cycle, and the real figures swing between rounds (the brackets above). The turnover table above \
         measures the cycle under the spikes: {turnover_summary}.{cost_sensitivity} The simulator frees a place the instant its query \
         ends; the real pool holds the connection through sqlx's hand-back (a spawned task that pings it) and gives \
         it to the next caller only when that caller's task is polled, beside the spike's newly spawned tasks on the \
         runtime's workers. The closed loop's cycle has the hand-backs but no queue of tasks, so the calibration \
         does not see the difference, and the simulator has no hold of a connection after its query \
         (`sim/README.md`). The part table shows it: direct calls' misses are in the spikes.\n\
         - **`servers` and the contention, barely told apart by the closed loop.** {fit_ambiguity}\n\
         - **Contention between queries of different sizes.** A query's contention depends on its own size (the \
         calibration's closed loops run equal queries), not on its neighbours': a single-id query beside a \
         1,000-id one slows as beside another single-id one. The table comparing one factor with the contention by \
         size shows what the sizes change here.\n\
         - **Statement preparation.** Each IN-list length is its own statement; a length not yet in a connection's \
         cache costs a prepare, which the linear `base + per_key × k` does not carry. The fewer and larger the batches, \
         the more distinct lengths per query.\n",
        crate::RUNTIME_WORKERS,
        std::thread::available_parallelism().map_or(0, usize::from),
        std::thread::available_parallelism().map_or(0, usize::from)
    );
}

/// How close the calibration's runner-up fit came, and what it changes, in words.
fn fit_ambiguity(run: &Run) -> String {
    let m = &run.model;
    let (Some(f), Some(chosen)) = (m.runner_up(), m.server_fits.iter().find(|f| f.servers == m.servers)) else {
        return "This run's calibration had one candidate only.".into();
    };
    let moved: Vec<String> = run
        .contenders
        .iter()
        .filter_map(|c| {
            let (e, r) = (c.errors().median(), c.runner_up_errors()?.median());
            ((e.mean - r.mean).abs() > GOAL_MEAN / 3.0 || (e.p99 - r.p99).abs() > GOAL_P99 / 3.0)
                .then(|| format!("{} {} / {} → {} / {}", c.label, pct(r.mean), pct(r.p99), pct(e.mean), pct(e.p99)))
        })
        .collect();
    format!(
        "The calibration chose `servers` = {} with contentions {:.3} (base) and {:.3} (per key), mean abs. log error \
         {:.3}; the runner-up, `servers` = {} with {:.3} and {:.3}, erred {:.3}. The base contention is also how much \
         the requests' shared CPU (`[cpu]`) slows the queries, so the predictions of the contenders whose queries and \
         requests overlap turn on a choice the closed loop's cells hardly make. Mean / p99 errors with the runner-up → \
         with the chosen fit, where they differ by more than a third of a goal: {}. `demo/README.md` gives the \
         chosen fits of several runs.",
        m.servers,
        m.contention,
        m.per_key_contention,
        chosen.mean_abs_log_error,
        f.servers,
        f.contention,
        f.per_key_contention,
        f.mean_abs_log_error,
        if moved.is_empty() { "none".to_string() } else { moved.join("; ") }
    )
}

/// The gated count's sensitivity to its window, in words (medians of the rounds).
fn gated_sensitivity(run: &Run) -> String {
    let Some(c) = run.contenders.iter().find(|c| c.rounds.iter().all(|r| r.window_sensitivity.is_some())) else {
        return "no gated contender ran".into();
    };
    let of = |i: usize| Spread::of(c.rounds.iter().filter_map(|r| r.window_sensitivity.map(|w| w[i].queries))).median;
    let (short, long, set) = (of(0), of(1), c.predicted(|p| p.queries).median);
    format!(
        "on the same arrivals the simulator sends {short:.0}, {set:.0} and {long:.0} queries with its window {p:.0} % \
         shorter, as set and {p:.0} % longer ({:+.1} % and {:+.1} %; medians of the rounds; measured {})",
        (short / set - 1.0) * 100.0,
        (long / set - 1.0) * 100.0,
        range(&c.measured(|m| m.db.queries as f64), 0),
        p = crate::simcheck::SENSITIVITY * 100.0
    )
}

/// Direct calls' predicted mean and p99 with the queries' cost either way, in words (medians
/// of the rounds).
fn cost_sensitivity(run: &Run) -> String {
    let Some(c) = run.contenders.iter().find(|c| c.rounds.iter().all(|r| r.cost_sensitivity.is_some())) else {
        return String::new();
    };
    let of = |i: usize, f: fn(&crate::simcheck::Prediction) -> f64| {
        Spread::of(c.rounds.iter().filter_map(|r| r.cost_sensitivity.map(|w| f(&w[i])))).median
    };
    let (mean, p99) = (c.predicted(|p| p.mean_ms).median, c.predicted(|p| p.p99_ms).median);
    let change = |x: f64, at: f64| pct(x / at - 1.0);
    format!(
        " With the queries {p:.0} % cheaper, as fitted and {p:.0} % dearer the simulator predicts a mean of {:.3}, {mean:.3} \
         and {:.3} ms ({} and {}) and a p99 of {:.3}, {p99:.3} and {:.3} ms ({} and {}; medians of the rounds): a cycle \
         off by a few percent (the calibration's own noise) moves the prediction that much, one off by the hand-back's \
         excess far more.",
        of(0, |p| p.mean_ms),
        of(1, |p| p.mean_ms),
        change(of(0, |p| p.mean_ms), mean),
        change(of(1, |p| p.mean_ms), mean),
        of(0, |p| p.p99_ms),
        of(1, |p| p.p99_ms),
        change(of(0, |p| p.p99_ms), p99),
        change(of(1, |p| p.p99_ms), p99),
        p = crate::simcheck::COST_SENSITIVITY * 100.0
    )
}

/// The direct calls' turnover under the spikes, in words (medians of the rounds).
fn turnover_summary(run: &Run) -> String {
    let pool = run.model.pool_size as usize;
    let turnovers: Vec<crate::turnover::Turnover> =
        run.contenders.iter().flat_map(|c| &c.rounds).filter_map(|r| crate::turnover::of(&r.measured, pool)).collect();
    if turnovers.is_empty() {
        return "no queue formed in this run".into();
    }
    let cycle = Spread::of(turnovers.iter().map(|t| t.cycle_us));
    let query = Spread::of(turnovers.iter().map(|t| t.query_us)).median;
    let closed = run.model.points.iter().find(|p| p.concurrency == run.model.pool_size && p.keys == 1);
    format!(
        "a connection passed from one caller to the next every {} µs (the rounds' median and range; the query {:.1} µs of \
         it, the hand-back and pickup {:.1} µs), against {} in the closed loop the model is fitted on and {:.1} µs in the \
         simulator",
        range(&cycle, 1),
        query,
        cycle.median - query,
        closed.map_or_else(
            || "an unmeasured cycle".into(),
            |p| format!("{:.1} µs (the hand-back {:.1} µs of it)", p.mean_ms * 1e3, p.pool_wait_ms * 1e3)
        ),
        simulated_cycle_us(&run.model)
    )
}

/// Assembles `README.md` from the backend sections in `dir` (SQLite first).
///
/// # Errors
///
/// If a file cannot be read or written.
pub fn readme(dir: &Path) -> Result<()> {
    let mut s = String::from(
        "# The demo on a real database\n\n\
         Regenerated by `make demo` (SQLite) and `make demo-pg` (PostgreSQL); never edited by hand. \
         `get_user_info(id)` runs `SELECT id, name, email FROM users WHERE id IN (...)` through sqlx's pool, \
         either directly (car: one query per request) or through a `busline::Batcher` under each policy. \
         The same arrival trace (a Poisson background with spikes, among them the article's case of 200 requests \
         within 3 ms) is replayed, open loop, against each. The query counts are the database's own. \
         Then the simulator, given the database's measured cost model, replays the same arrivals and its \
         predictions are set against the measurements. See [`demo/README.md`](../../demo/README.md) for how, \
         and why the simulator misses where it does.\n\n\
         Files per backend: `<backend>.csv` (every figure below), `<backend>.png`/`.svg` (the plot), \
         `<backend>-calibrated.toml` (the simulator scenario the calibration wrote), `traces/` (the arrivals \
         each contender had, as the simulator replays them).\n\n",
    );
    let mut found = false;
    for b in ["sqlite", "postgres"] {
        let p = dir.join(format!("{b}.md"));
        if p.exists() {
            s.push_str(&std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?);
            found = true;
        }
    }
    if !found {
        return Err(anyhow!("no backend section in {}", dir.display()));
    }
    std::fs::write(dir.join("README.md"), s).context("writing README.md")
}

fn perr<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("plotting: {e:?}")
}

/// Two panels: queries per contender (the database's count, the simulator's prediction as a
/// marker) and p99 latency per contender (likewise).
fn plot(path: &Path, run: &Run) -> Result<()> {
    busline_sim::report::plots::register_font();
    let size = (1100, 520);
    if path.extension().is_some_and(|e| e == "svg") {
        let root = SVGBackend::new(path, size).into_drawing_area();
        draw(&root, run)?;
        root.present().map_err(perr)?;
    } else {
        busline_sim::report::png::render(path, size, |root| draw(root, run))?;
    }
    Ok(())
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, plotters::coord::Shift>, run: &Run) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(perr)?;
    let root = root
        .titled(&format!("{}: {} requests, pool of {}", title(&run.backend), run.requests, run.model.pool_size), ("sans-serif", 22))
        .map_err(perr)?;
    let (left, right) = root.split_horizontally(550);
    let labels: Vec<String> = run.contenders.iter().map(|c| short(&c.label)).collect();
    let queries: Vec<(f64, f64)> =
        run.contenders.iter().map(|c| (c.measured(|m| m.db.queries as f64).median, c.predicted(|p| p.queries).median)).collect();
    let p99: Vec<(f64, f64)> = run
        .contenders
        .iter()
        .map(|c| (c.measured(|m| ms(m.latency.quantile(0.99))).median, c.predicted(|p| p.p99_ms).median))
        .collect();
    panel(&left, "queries the database ran", "queries", &labels, &queries)?;
    panel(&right, "p99 latency", "ms", &labels, &p99)?;
    Ok(())
}

fn short(label: &str) -> String {
    label.replace(" (direct)", "").replace("window ", "w ").replace(" ms", "ms")
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    caption: &str,
    unit: &str,
    labels: &[String],
    values: &[(f64, f64)],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let n = values.len();
    let top = values.iter().map(|v| v.0.max(v.1)).fold(0.0, f64::max).max(1e-9) * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5..(n as f64 - 0.5), 0.0..top)
        .map_err(perr)?;
    let labels = labels.to_vec();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&move |x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 { labels.get(i as usize).cloned().unwrap_or_default() } else { String::new() }
        })
        .y_desc(unit)
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(perr)?;
    let bar = RGBColor(30, 90, 200);
    chart
        .draw_series(values.iter().enumerate().map(|(i, v)| {
            let x = i as f64;
            Rectangle::new([(x - 0.35, 0.0), (x + 0.35, v.0)], bar.mix(0.75).filled())
        }))
        .map_err(perr)?
        .label("measured")
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], bar.mix(0.75).filled()));
    let sim = RGBColor(230, 130, 0);
    chart
        .draw_series(values.iter().enumerate().map(|(i, v)| {
            let x = i as f64;
            PathElement::new(vec![(x - 0.42, v.1), (x + 0.42, v.1)], sim.stroke_width(4))
        }))
        .map_err(perr)?
        .label("simulator")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 12, y)], sim.stroke_width(4)));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(perr)?;
    Ok(())
}
