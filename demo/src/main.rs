//! The `busline-demo` command line: `run` (what `make demo` and `make demo-pg` run) and
//! `calibrate`.
#![deny(unsafe_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use busline_demo::calibrate::{Calibration, CostModel, Plan, calibrate};
use busline_demo::db::{Database, redact};
use busline_demo::reaction::{self, DriverModel};
use busline_demo::replay::{Contender, ContenderSpec, contenders, replay};
use busline_demo::report::{self, Provenance, Run};
use busline_demo::rounds::{self, Contended, Replayed};
use busline_demo::segments;
use busline_demo::simcheck::{COST_SENSITIVITY, NO_CPU, NO_DRIVER, QUEUED_CPU, REACTION_ONLY, SENSITIVITY, predict, predict_with};
use busline_demo::trace::{self, TraceSpec};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

/// The article's scenario on a real database, and the simulator checked against it.
#[derive(Debug, Parser)]
#[command(name = "busline-demo", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct DbArgs {
    /// Database URL: `sqlite:PATH` or `postgres://...`. Default: $DATABASE_URL, else the
    /// SQLite file target/busline-demo/users.db (created and filled on first run).
    #[arg(long)]
    db: Option<String>,
    /// Rows in `users` (ids 1..=users).
    #[arg(long, default_value_t = 100_000)]
    users: u32,
    /// Connections in the pool (and batches in flight at once).
    #[arg(long, default_value_t = 4)]
    pool: u32,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Calibrates, replays the burst against every contender, simulates, and writes the report.
    Run {
        #[command(flatten)]
        db: DbArgs,
        /// Output directory.
        #[arg(long, default_value = "reports/db")]
        out: PathBuf,
        /// Replays of each contender, interleaved (see `src/rounds.rs`); each figure is the
        /// median of the rounds.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=99))]
        rounds: u32,
    },
    /// Measures the database's cost model and writes it as a simulator scenario.
    Calibrate {
        #[command(flatten)]
        db: DbArgs,
        /// The scenario file to write; the demo's intended trace is written beside it, in traces/.
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(busline_demo::RUNTIME_WORKERS).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run_cli(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn url(args: &DbArgs) -> String {
    args.db
        .clone()
        .or_else(|| std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "sqlite:target/busline-demo/users.db".into())
}

fn bar(len: u64) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{elapsed:>4} [{bar:40.cyan/blue}] {pos}/{len} {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    pb
}

/// Tells the stage on the bar, or on stderr when the bar is hidden (not a terminal).
fn stage(pb: &ProgressBar, msg: String) {
    if pb.is_hidden() {
        eprintln!("busline-demo: {msg}");
    }
    pb.set_message(msg);
}

async fn setup(args: &DbArgs, pb: &ProgressBar) -> Result<Database> {
    let url = url(args);
    stage(pb, format!("connecting to {}", redact(&url)));
    let db = Database::connect(&url, args.pool).await?;
    stage(pb, format!("checking users (filling {} rows on first run)", args.users));
    if db.ensure_users(args.users).await? {
        pb.println(format!("filled users with {} rows", args.users));
    }
    Ok(db)
}

async fn calibrated(db: &Database, args: &DbArgs, pb: &ProgressBar) -> Result<(CostModel, DriverModel)> {
    stage(pb, "calibrating the cost model".into());
    let model = calibrate(db, &Plan::demo(args.pool, args.users), Some(pb)).await?;
    Ok((model.clone(), driver_of(&model, args, pb).await?))
}

/// The batcher driver's delays against the mock, with `model`'s query costs.
async fn driver_of(model: &CostModel, args: &DbArgs, pb: &ProgressBar) -> Result<DriverModel> {
    stage(pb, "measuring the batcher driver's reaction (mock backend)".into());
    let plan = reaction::Plan::demo(model, args.users);
    pb.inc_length(plan.steps());
    reaction::measure(&plan, Some(pb)).await
}

/// Progress-bar steps of the calibration: the database's cells, then the driver's requests
/// (added when known: their plan needs the cost model).
fn calibration_steps(args: &DbArgs) -> u64 {
    Plan::demo(args.pool, args.users).steps() as u64
}

fn slug(label: &str) -> String {
    label.split(" (").next().unwrap_or(label).replace(' ', "-").replace('.', "_")
}

async fn run_cli(cli: Cli) -> Result<()> {
    let provenance = Provenance::here();
    let started = Instant::now();
    match cli.command {
        Command::Calibrate { db: args, out } => {
            let pb = bar(calibration_steps(&args));
            let db = setup(&args, &pb).await?;
            let (model, driver) = calibrated(&db, &args, &pb).await?;
            let dir = out.parent().unwrap_or(Path::new("."));
            let (rel, _) = write_intended(dir, db.backend(), &TraceSpec::demo(args.users))?;
            model.write_scenario(&out, &format!("db-{}", db.backend()), &rel, &provenance_lines(&provenance), Some(&driver))?;
            pb.finish_and_clear();
            println!(
                "wrote {} (base {:.4} ms + {:.6} ms/key, servers {}, contention {:.3} + {:.3} per key; driver reaction median {:.1} µs, \
                 after a deadline {:.1} µs, launch {:.1} µs)",
                out.display(),
                model.base_ms,
                model.per_key_ms,
                model.servers,
                model.contention,
                model.per_key_contention,
                driver.reaction.at(0.5),
                driver.timer_reaction.at(0.5),
                driver.launch.at(0.5)
            );
            db.close().await;
            Ok(())
        }
        Command::Run { db: args, out, rounds } => {
            let spec = TraceSpec::demo(args.users);
            let arrivals = spec.generate();
            let all = contenders();
            let replays = all.len() * rounds as usize;
            let pb = bar(calibration_steps(&args) + (replays * arrivals.len()) as u64);
            let db = setup(&args, &pb).await?;
            let version = db.version().await?;
            let backend = db.backend().to_string();
            // Each round of replays follows a round of the calibration, so the cost model sees
            // the spells of load the replays see (on a shared machine they change by the
            // minute); the driver's delays are measured against the mock at the end.
            let plan = Plan::demo(args.pool, args.users);
            let mut calibration = Calibration::new(plan.clone());
            let mut measured: Vec<Vec<(usize, busline_demo::replay::Measured)>> = vec![Vec::new(); all.len()];
            for round in 0..rounds as usize {
                if calibration.rounds_done() < plan.rounds {
                    stage(&pb, format!("round {}/{rounds}: calibrating the cost model", round + 1));
                    calibration.round(&db, Some(&pb)).await?;
                }
                for i in rounds::order(round, all.len()) {
                    let c = &all[i];
                    stage(&pb, format!("round {}/{rounds}: replaying {} requests: {}", round + 1, arrivals.len(), c.label));
                    let m = replay(&db, &arrivals, c, args.pool as usize, Some(&pb)).await?;
                    measured[i].push((round, m));
                    // Let the last answers' connections settle before the next contender starts.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            while calibration.rounds_done() < plan.rounds {
                stage(&pb, "calibrating the cost model".into());
                calibration.round(&db, Some(&pb)).await?;
            }
            let model = calibration.finish(db.backend(), db.pool_size())?;
            let driver = driver_of(&model, &args, &pb).await?;
            std::fs::create_dir_all(out.join("traces")).with_context(|| format!("creating {}", out.display()))?;
            let (intended, _) = write_intended(&out, &backend, &spec)?;
            let scenario = out.join(format!("{backend}-calibrated.toml"));
            model.write_scenario(&scenario, &format!("db-{backend}"), &intended, &provenance_lines(&provenance), Some(&driver))?;
            // The first round's arrivals go to the report's traces/; the other rounds' to a
            // scratch directory (absolute paths: the simulator reads them from anywhere).
            let scratch = std::env::temp_dir().join(format!("busline-demo-rounds-{}", std::process::id()));
            std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
            stage(&pb, "simulating the same arrivals".into());
            let mut contended = Vec::new();
            for (c, ms) in all.iter().zip(measured) {
                let mut rounds = Vec::new();
                for (round, m) in ms {
                    let path = if round == 0 {
                        let rel = trace_rel(&backend, c);
                        trace::write_csv(&out.join(&rel), &m.arrivals)?;
                        rel
                    } else {
                        let p = scratch.join(format!("{}-r{round}.csv", slug(&c.label)));
                        trace::write_csv(&p, &m.arrivals)?;
                        p.display().to_string()
                    };
                    let predicted = predict(&scenario, &path, c)?;
                    // The same without the driver's delays: what the simulator predicted before
                    // it modelled them, on the same measurements.
                    let instant = predict_with(&scenario, &path, c, &NO_DRIVER)?;
                    // And with the driver as modelled before the way back and the wake-up.
                    let reaction_only = predict_with(&scenario, &path, c, &REACTION_ONLY)?;
                    // And with one contention for every query size (the model before).
                    let one_factor_sets = model.one_factor_overrides();
                    let one_factor_sets: Vec<&str> = one_factor_sets.iter().map(String::as_str).collect();
                    let one_factor = predict_with(&scenario, &path, c, &one_factor_sets)?;
                    // And without the application's work per request (`[cpu]`).
                    let no_cpu = predict_with(&scenario, &path, c, &NO_CPU)?;
                    // And with it queued ahead of the queries (the model before processor sharing).
                    let queued_cpu = predict_with(&scenario, &path, c, &QUEUED_CPU)?;
                    // And with the calibration's runner-up fit of `servers` and the contention.
                    let runner_up_sets = model.runner_up_overrides();
                    let runner_up_sets: Vec<&str> = runner_up_sets.iter().map(String::as_str).collect();
                    let runner_up =
                        if runner_up_sets.is_empty() { None } else { Some(predict_with(&scenario, &path, c, &runner_up_sets)?) };
                    // A gated contender's count with its window 10 % either way: how much of
                    // timing its gate turns on (a knife's edge where the background sits on the
                    // gate's threshold).
                    let window_sensitivity = match c.contender {
                        Contender::Batched(busline::Policy::Gated { window, .. }) => {
                            let at = |f: f64| format!("policy.window_ms={}", window.as_secs_f64() * 1e3 * f);
                            let (short, long) = (at(1.0 - SENSITIVITY), at(1.0 + SENSITIVITY));
                            Some([predict_with(&scenario, &path, c, &[&short])?, predict_with(&scenario, &path, c, &[&long])?])
                        }
                        _ => None,
                    };
                    // Direct calls' prediction with the queries' cost 5 % either way: how much a
                    // queue on the edge of saturation turns on it.
                    let cost_sensitivity = match c.contender {
                        Contender::Direct => {
                            let at = |f: f64| [format!("db.base_ms={}", model.base_ms * f), format!("db.per_key_ms={}", model.per_key_ms * f)];
                            let (cheaper, dearer) = (at(1.0 - COST_SENSITIVITY), at(1.0 + COST_SENSITIVITY));
                            let (cheaper, dearer) = ([cheaper[0].as_str(), cheaper[1].as_str()], [dearer[0].as_str(), dearer[1].as_str()]);
                            Some([predict_with(&scenario, &path, c, &cheaper)?, predict_with(&scenario, &path, c, &dearer)?])
                        }
                        Contender::Batched(_) => None,
                    };
                    let parts = segments::split(&spec, &arrivals, &m, &scenario, &path, c)?;
                    let tail = segments::tail(&spec, &arrivals, &m);
                    rounds.push(Replayed {
                        measured: m,
                        predicted,
                        instant,
                        reaction_only,
                        one_factor,
                        no_cpu,
                        queued_cpu,
                        runner_up,
                        window_sensitivity,
                        cost_sensitivity,
                        parts,
                        tail,
                    });
                }
                contended.push(Contended { label: c.label.clone(), rounds });
            }
            let _ = std::fs::remove_dir_all(&scratch);
            pb.finish_and_clear();
            db.close().await;
            let run = Run {
                backend: backend.clone(),
                version,
                users: args.users,
                trace: spec,
                requests: arrivals.len(),
                model,
                driver,
                rounds,
                contenders: contended,
                provenance,
                elapsed_s: started.elapsed().as_secs_f64(),
            };
            report::write(&out, &run)?;
            print_summary(&run);
            println!("report written to {}", out.join("README.md").display());
            Ok(())
        }
    }
}

fn trace_rel(backend: &str, c: &ContenderSpec) -> String {
    format!("traces/{backend}-{}.csv", slug(&c.label))
}

/// Writes the demo's intended trace into `dir/traces/`; returns its path relative to `dir`.
fn write_intended(dir: &Path, backend: &str, spec: &TraceSpec) -> Result<(String, usize)> {
    std::fs::create_dir_all(dir.join("traces")).with_context(|| format!("creating {}", dir.display()))?;
    let rel = format!("traces/{backend}-intended.csv");
    let arrivals = spec.generate();
    trace::write_csv(&dir.join(&rel), &arrivals)?;
    Ok((rel, arrivals.len()))
}

fn provenance_lines(p: &Provenance) -> String {
    format!("machine: {}\ncommit: {}\ncommand: {}\ndate: {}", p.machine, p.commit, p.command, p.date)
}

fn print_summary(run: &Run) {
    println!(
        "{} ({}), {} requests, {} rounds; medians of the rounds, the simulator's median error in parentheses",
        run.backend, run.version, run.requests, run.rounds
    );
    println!("{:<16} {:>8} {:>9} {:>10} {:>10} {:>10}", "contender", "queries", "(sim)", "mean ms", "p99 ms", "(sim err)");
    for c in &run.contenders {
        let e = c.errors().median();
        println!(
            "{:<16} {:>8.0} {:>+8.1}% {:>10.3} {:>10.3} {:>+5.0}%/{:+.0}%",
            c.label,
            c.measured(|m| m.db.queries as f64).median,
            e.queries * 100.0,
            c.measured(|m| m.latency.mean() / 1e6).median,
            c.measured(|m| m.latency.quantile(0.99) as f64 / 1e6).median,
            e.mean * 100.0,
            e.p99 * 100.0
        );
    }
}
