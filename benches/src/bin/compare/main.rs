//! The comparison runner: every contender, the same scenarios, interleaved in one process,
//! measured the way users run a batcher (workers left to the OS, a fresh batcher per round with
//! its cold start timed, a handle cloned per request, `max_batch_size` 1,024 and "no limit").
//! Writes `reports/bench/README.md`, its CSVs and the throughput bar chart.
//!
//! ```text
//! cargo run --release -p busline-benches --bin compare -- --out reports/bench   # make bench
//! cargo run --release -p busline-benches --bin compare -- --quick               # a look
//! ```
//! Options: `--quick`, `--rounds N` (throughput rounds), `--out DIR` (default `reports/bench`),
//! `--only throughput,first-load,memory,submit,window,policies`, `--contenders a,b`,
//! `--placement os|pinned|both`.
//!
//! One file per section; `alloc.rs` is the counting global allocator the memory section reads.

mod alloc;
mod chart;
mod first_load;
mod memory;
mod policies;
mod submit;
mod throughput;
mod window;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use busline_benches::adapters::Contender;
use busline_benches::placement::Placement;
use busline_benches::report::{self, Run};

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

/// The sections, in the order they run and appear.
const SECTIONS: [&str; 6] = ["throughput", "first-load", "memory", "submit", "window", "policies"];

struct Args {
    quick: bool,
    rounds: Option<usize>,
    out: PathBuf,
    only: Option<Vec<String>>,
    /// Contenders to run, in `Contender::ALL`'s order; all by default. For quick looks: a
    /// filtered run's tables lack the peers the targets compare with.
    contenders: Vec<Contender>,
    /// Worker placements the throughput section runs under, the headline's first (the other
    /// sections use the first).
    placements: Vec<Placement>,
}

impl Args {
    fn parse() -> Args {
        let mut args = Args {
            quick: false,
            rounds: None,
            out: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../reports/bench"),
            only: None,
            contenders: Contender::ALL.to_vec(),
            // Left to the OS is how services run: the headline. Pinned is reported beside it.
            placements: vec![Placement::Os, Placement::Pinned],
        };
        let mut placement_given = false;
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--quick" => args.quick = true,
                "--rounds" => {
                    let n = it.next().and_then(|n| n.parse().ok()).filter(|&n| n > 0);
                    args.rounds = Some(n.unwrap_or_else(|| fail("--rounds wants a positive integer")));
                }
                "--out" => args.out = it.next().map(PathBuf::from).unwrap_or_else(|| fail("--out wants a directory")),
                "--only" => {
                    let list = it.next().unwrap_or_else(|| fail("--only wants a list"));
                    let only: Vec<String> = list.split(',').map(str::to_string).collect();
                    if let Some(bad) = only.iter().find(|s| !SECTIONS.contains(&s.as_str())) {
                        fail(&format!("--only: unknown section {bad:?}; known: {}", SECTIONS.join(", ")));
                    }
                    args.only = Some(only);
                }
                "--contenders" => {
                    let names = it.next().unwrap_or_else(|| fail("--contenders wants a list"));
                    let mut picked = Vec::new();
                    for name in names.split(',') {
                        match Contender::parse(name) {
                            Some(c) => picked.push(c),
                            None => {
                                let known: Vec<&str> = Contender::ALL.iter().map(|c| c.name()).collect();
                                fail(&format!("--contenders: unknown {name:?}; built in: {}", known.join(", ")));
                            }
                        }
                    }
                    args.contenders = Contender::ALL.iter().copied().filter(|c| picked.contains(c)).collect();
                }
                "--placement" => {
                    placement_given = true;
                    let p = it.next().unwrap_or_else(|| fail("--placement wants os, pinned or both"));
                    args.placements = match p.as_str() {
                        "both" => vec![Placement::Os, Placement::Pinned],
                        p => vec![Placement::parse(p).unwrap_or_else(|| fail(&format!("--placement {p:?}: want os, pinned or both")))],
                    };
                }
                "-h" | "--help" => {
                    println!(
                        "compare [--quick] [--rounds N] [--out DIR] [--only {}] [--contenders busline,dataloader,...] \
                         [--placement os|pinned|both]",
                        SECTIONS.join(",")
                    );
                    std::process::exit(0);
                }
                other => fail(&format!("unknown argument {other:?}; see --help")),
            }
        }
        if args.quick && !placement_given {
            args.placements.truncate(1);
        }
        args
    }

    fn wants(&self, section: &str) -> bool {
        self.only.as_ref().is_none_or(|only| only.iter().any(|s| s == section))
    }
}

/// `items` in round `round`'s order: rotated by one place a round, so that none always runs
/// first (or just after another).
pub(crate) fn in_round_order<T: Clone>(items: &[T], round: usize) -> Vec<T> {
    let mut order = items.to_vec();
    if !order.is_empty() {
        let n = order.len();
        order.rotate_left(round % n);
    }
    order
}

fn fail(message: &str) -> ! {
    eprintln!("compare: {message}");
    std::process::exit(2)
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let command = {
        let rest: Vec<String> = std::env::args().skip(1).collect();
        let mut c = "cargo run --release -p busline-benches --bin compare".to_string();
        if !rest.is_empty() {
            c += " -- ";
            c += &rest.join(" ");
        }
        c
    };
    let run = Run::now(&command);
    let started = Instant::now();
    let mut readme = String::new();
    let _ = writeln!(readme, "# busline benchmark report\n");
    let _ = writeln!(readme, "Generated by the `compare` runner (benches/src/bin/compare/); do not edit by hand.");
    let _ = writeln!(readme, "Scenarios and peer configurations: benches/README.md.\n");
    readme += &run.header();
    if args.quick {
        let _ = writeln!(
            readme,
            "\n**Quick mode (`--quick`): one round, few repetitions, workers left to the OS only; for a look, not the \
             figures to quote.**"
        );
    }
    if !cfg!(feature = "peers") {
        let _ = writeln!(readme, "\n**Built without the `peers` feature: only busline and the naive port ran.**");
    }
    // busline asks its builder once whether it takes `usize::MAX` for "no limit"; ask now, so no
    // section counts or times the question.
    let no_limit = {
        let rt = busline_benches::scenarios::current_thread_runtime();
        rt.block_on(async { Contender::Busline.max_batch_size(busline_benches::NO_LIMIT) })
    };
    let mut sections = String::new();
    let mut verdicts = Vec::new();
    if args.wants("throughput") {
        sections += &throughput::section(&args, &run, &mut verdicts)?;
    }
    if args.wants("first-load") {
        sections += &first_load::section(&args, &run, &mut verdicts)?;
    }
    if args.wants("memory") {
        sections += &memory::section(&args, &run, &mut verdicts)?;
    }
    if args.wants("submit") {
        sections += &submit::section(&args, &run, &mut verdicts)?;
    }
    if args.wants("window") {
        sections += &window::section(&args, &run, &mut verdicts)?;
    }
    if args.wants("policies") {
        sections += &policies::section(&args, &run)?;
    }
    let placements: Vec<&str> = args.placements.iter().map(|p| p.name()).collect();
    let _ = writeln!(
        readme,
        "- tokio workers: {} (throughput: each, the first is the headline; the other sections: {}; see \
         benches/src/placement.rs)",
        placements.join(" and "),
        args.placements[0].name()
    );
    let _ = writeln!(
        readme,
        "- busline's \"no limit\" `max_batch_size`: {}",
        if no_limit == usize::MAX { "`usize::MAX`".to_string() } else { format!("{no_limit} (its builder refuses `usize::MAX`)") }
    );
    let _ = writeln!(readme, "- total run time: {:.0} s", started.elapsed().as_secs_f64());
    if !verdicts.is_empty() {
        let met = verdicts.iter().filter(|v: &&Verdict| v.met).count();
        let _ = writeln!(readme, "\n## targets\n");
        let _ = writeln!(
            readme,
            "Every target of issue 9, as measured in this run ({met} of {} met; the sections below hold the details). \
             Ratios are taken within each round and their median over rounds is shown.\n",
            verdicts.len()
        );
        let _ = writeln!(readme, "| figure | target | measured | met |");
        let _ = writeln!(readme, "|---|---|---|---|");
        for v in &verdicts {
            let _ = writeln!(readme, "| {} | {} | {} | {} |", v.figure, v.target, v.measured, yes(v.met));
        }
        readme += &run.caption();
    }
    readme += &sections;
    report::write(&args.out, "README.md", &readme)?;
    eprintln!("wrote {} ({:.0} s)", args.out.join("README.md").display(), started.elapsed().as_secs_f64());
    Ok(())
}

/// One target, measured: a row of the report's summary.
struct Verdict {
    figure: String,
    target: String,
    measured: String,
    met: bool,
}

impl Verdict {
    fn new(figure: impl Into<String>, target: impl Into<String>, measured: impl Into<String>, met: bool) -> Verdict {
        Verdict { figure: figure.into(), target: target.into(), measured: measured.into(), met }
    }
}

fn window_label(us: u64) -> String {
    match us {
        0 => "0".into(),
        us if us % 1000 == 0 => format!("{} ms", us / 1000),
        us => format!("{us} µs"),
    }
}

fn mega(x: f64) -> String {
    format!("{:.2} M", x / 1e6)
}

fn yes(ok: bool) -> &'static str {
    if ok { "yes" } else { "**no**" }
}

/// "1 round", "5 rounds".
fn plural(n: usize, what: &str) -> String {
    if n == 1 { format!("1 {what}") } else { format!("{n} {what}s") }
}

/// `max_batch_size` as the reports name it.
fn batch_label(max_batch_size: usize) -> String {
    match max_batch_size {
        busline_benches::NO_LIMIT => "no limit".into(),
        n if n.is_power_of_two() && n > 1 << 16 => format!("2^{}", n.trailing_zeros()),
        n => format!("{n}"),
    }
}
