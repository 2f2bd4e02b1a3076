//! The `busline-sim` command line: `run`, `sweep`, `fleet`, `report` and `speed`.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use anyhow::{Context, Result};
use busline_sim::engine::{RunOptions, run};
use busline_sim::report;
use busline_sim::scenario::Scenario;
use busline_sim::speed::{self, thread_cpu_ns};
use clap::{Parser, Subcommand};

/// Simulates burst traffic against a modelled database under busline's batching policies.
#[derive(Debug, Parser)]
#[command(name = "busline-sim", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs one scenario once and prints its figures.
    Run {
        /// The scenario file (TOML).
        scenario: PathBuf,
        /// Override a key: `--set traffic.rate_per_s=800 --set policy.kind=car`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Runs one scenario under every window and the reference policies: CSV and plots.
    Sweep {
        /// The scenario file (TOML).
        scenario: PathBuf,
        /// Override a key, as for `run`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Windows to try, in ms (default: the scenario's `sweep.windows_ms`, else
        /// 0,0.05,0.1,0.5,1,2,5,10,50,100,500).
        #[arg(long, value_delimiter = ',')]
        windows_ms: Option<Vec<f64>>,
        /// Output directory.
        #[arg(long, default_value = "sweep-out")]
        out: PathBuf,
    },
    /// Runs one scenario with 1, 2, 4, ... service instances under every routing and the
    /// reference policies: CSV, plots and a Markdown summary.
    Fleet {
        /// The scenario file (TOML).
        scenario: PathBuf,
        /// Override a key, as for `run`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Fleet sizes to try.
        #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16,32,64,128,256")]
        instances: Vec<u32>,
        /// Output directory.
        #[arg(long, default_value = "fleet-out")]
        out: PathBuf,
    },
    /// Sweeps every scenario of a directory and writes the report (what `make sim` runs).
    Report {
        /// Directory of scenario files.
        #[arg(long, default_value = "sim/scenarios")]
        scenarios: PathBuf,
        /// A fleet study to include (a scenario file run at 1 to 256 instances); repeatable.
        #[arg(long = "fleet", value_name = "SCENARIO")]
        fleet: Vec<PathBuf>,
        /// Output directory.
        #[arg(long, default_value = "reports/sim")]
        out: PathBuf,
    },
    /// Times every scenario of a directory under every policy, one run at a time on one
    /// thread: simulated requests per CPU-second (and a fleet scenario at each `--instances`).
    Speed {
        /// Directory of scenario files.
        #[arg(long, default_value = "sim/scenarios")]
        scenarios: PathBuf,
        /// A fleet scenario to time at each of `--instances` under every routing; repeatable.
        #[arg(long = "fleet", value_name = "SCENARIO")]
        fleet: Vec<PathBuf>,
        /// Fleet sizes to time.
        #[arg(long, value_delimiter = ',', default_value = "1,256")]
        instances: Vec<u32>,
        /// Override a key in every scenario, as for `run`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Measurements of each variant (each repeats the scenario for at least 0.5 s of CPU
        /// time); the fastest is kept (other work only ever adds time).
        #[arg(long, default_value_t = 3)]
        repeat: u32,
    },
}

fn main() -> std::process::ExitCode {
    match run_cli(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // The cause chain, without a backtrace: a bad scenario is a user's error, not a bug.
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_cli(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run { scenario, set, json } => {
            let s = Scenario::load_with(&scenario, &set)?;
            let cpu_before = thread_cpu_ns();
            let out = run(&s, &RunOptions::default())
                .with_context(|| format!("running {}", scenario.display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&out.summary)?);
            } else {
                let m = &out.summary;
                println!("scenario {} / policy {}", m.scenario, m.policy);
                println!("requests {}  queries {}  mean batch {:.2}  distinct keys/query {:.2}", m.requests, m.queries, m.mean_batch, m.mean_distinct_keys);
                println!(
                    "queries/s {:.1}  offered/s {:.1}  horizon {:.3} s  drain {:.3} s ({} queries)",
                    m.queries_per_s, m.offered_per_s, m.horizon_s, m.drain_s, m.drain_queries
                );
                let l = &m.latency_ms;
                println!("latency ms: mean {:.4} p50 {:.4} p99 {:.4} p99.9 {:.4} max {:.4}", l.mean, l.p50, l.p99, l.p999, l.max);
                let w = |name: &str, w: &busline_sim::stats::WaitSummary| {
                    println!("{name:<44} mean {:.4} p50 {:.4} p99 {:.4} max {:.4}", w.mean, w.p50, w.p99, w.max);
                };
                w("added wait ms (the policy's: arrival → release)", &m.added_wait_ms);
                w("db wait ms (the backend's: release → service)", &m.db_wait_ms);
                w("  of which: in-flight place (release → dispatch)", &m.in_flight_wait_ms);
                w("  of which: connection (dispatch → connection)", &m.connection_wait_ms);
                w("service ms", &m.service_ms);
                println!("db utilization {:.3}  occupancy {:.3}", m.db_utilization, m.db_occupancy);
                if let Some(c) = &m.client {
                    println!(
                        "clients: {} requests, goodput {:.1}/s ({:.2} % in time), {} timeouts ({:.2} % of attempts), {} retries, {} failed",
                        c.requests, c.goodput_per_s, c.success_fraction * 100.0, c.timeouts, c.timeout_fraction * 100.0, c.retries, c.failed
                    );
                    println!(
                        "  {} dropped unsent, {} answered late; {:.3} attempts/request, {:.3} queries/success; p99 to success {:.4} ms",
                        c.dropped_unsent, c.answered_late, c.attempts_per_request, c.queries_per_success, c.success_latency_ms.p99
                    );
                }
                if s.fleet.instances > 1 {
                    println!("fleet: {} instances, {} routing", s.fleet.instances, s.fleet.routing);
                }
            }
            let cpu_s = cpu_before.zip(thread_cpu_ns()).map(|(a, b)| b.saturating_sub(a) as f64 / 1e9);
            eprintln!(
                "{} requests in {:.3} s wall: {:.2} M simulated requests/s ({} events){}",
                out.summary.requests,
                out.wall_s,
                out.summary.requests as f64 / out.wall_s / 1e6,
                out.events,
                cpu_s.map_or(String::new(), |c| format!(
                    "; {c:.3} s on the CPU: {:.2} M simulated requests per CPU-second",
                    out.summary.requests as f64 / c / 1e6
                ))
            );
            Ok(())
        }
        Command::Sweep { scenario, set, windows_ms, out } => {
            let s = Scenario::load_with(&scenario, &set)?;
            let a = report::sweep_command(&s, windows_ms.as_deref(), &out)?;
            eprintln!("{} runs of {} written to {}", a.rows.len(), s.name, out.display());
            for c in &a.checks {
                eprintln!("{}: {} ({})", c.verdict(), c.name, c.detail);
            }
            Ok(())
        }
        Command::Fleet { scenario, set, instances, out } => {
            let s = Scenario::load_with(&scenario, &set)?;
            let study = report::fleet::study(&s, &instances)?;
            report::fleet::write(&out, &study)?;
            eprintln!("{} fleet runs of {} written to {}", study.rows.len(), s.name, out.display());
            Ok(())
        }
        Command::Report { scenarios, fleet, out } => {
            let command = std::env::args().collect::<Vec<_>>().join(" ");
            let all = report::report_command(&scenarios, &fleet, &out, &command)?;
            for a in &all {
                for c in &a.checks {
                    eprintln!("{}: {}: {} ({})", a.scenario.name, c.verdict(), c.name, c.detail);
                }
            }
            eprintln!("report written to {}", out.display());
            Ok(())
        }
        Command::Speed { scenarios, fleet, instances, set, repeat } => {
            let mut rows = Vec::new();
            for path in report::scenario_files(&scenarios)? {
                let s = Scenario::load_with(&path, &set)?;
                rows.extend(speed::policies(&s, repeat.max(1))?);
                eprint!(".");
            }
            for path in &fleet {
                let s = Scenario::load_with(path, &set)?;
                rows.extend(speed::fleet(&s, &instances, repeat.max(1))?);
                eprint!(".");
            }
            eprintln!();
            print!("{}", speed::table(&rows));
            Ok(())
        }
    }
}
