//! Throughput as a service sees it: 1,000 callers doing sequential loads of unique keys through
//! a fresh batcher (built inside the timed region, so its cold start counts), each load through
//! a handle cloned for it, `max_batch_size` 1,024 and "no limit", in 100k-load bursts and 1M-load
//! runs, windows 0, 100 µs and 1 ms; every contender interleaved, rounds rotated.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use busline_benches::adapters::{Contender, Counters, Setup};
use busline_benches::placement::{self, Placement};
use busline_benches::report::{self, Run, median};
use busline_benches::{NO_LIMIT, THROUGHPUT_WINDOWS_US, scenarios, with_loader};

use crate::{Args, Verdict, batch_label, chart, in_round_order, mega, plural, window_label, yes};

/// The `max_batch_size` settings every contender runs with.
pub(crate) const BATCH_SIZES: [usize; 2] = [busline::DEFAULT_MAX_BATCH_SIZE, NO_LIMIT];

/// A closed-loop workload: `tasks` callers, each doing `per_task` sequential loads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Workload {
    pub(crate) name: &'static str,
    pub(crate) tasks: usize,
    pub(crate) per_task: usize,
}

impl Workload {
    fn loads(self) -> usize {
        self.tasks * self.per_task
    }
}

/// A 100k-load burst and a 1M-load run, both with 1,000 callers.
pub(crate) const WORKLOADS: [Workload; 2] = [
    Workload { name: "100k burst", tasks: 1_000, per_task: 100 },
    Workload { name: "1M run", tasks: 1_000, per_task: 1_000 },
];

/// The share of the cap `tasks / window` busline must reach at 1 ms.
const CAP_SHARE: f64 = 0.95;

struct Row {
    round: usize,
    contender: Contender,
    window_us: u64,
    batch: usize,
    workload: Workload,
    elapsed: Duration,
    batches: u64,
    keys: u64,
}

impl Row {
    fn loads_per_s(&self) -> f64 {
        self.workload.loads() as f64 / self.elapsed.as_secs_f64()
    }
    fn keys_per_batch(&self) -> f64 {
        self.keys as f64 / self.batches.max(1) as f64
    }
}

/// Median, min and max loads/s and median keys per batch of one cell.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cell {
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
    pub(crate) keys_per_batch: f64,
}

struct Rows {
    rows: Vec<Row>,
    rounds: usize,
}

impl Rows {
    fn of(&self, c: Contender, w: u64, b: usize, wl: Workload) -> impl Iterator<Item = &Row> {
        self.rows.iter().filter(move |r| r.contender == c && r.window_us == w && r.batch == b && r.workload == wl)
    }

    fn cell(&self, c: Contender, w: u64, b: usize, wl: Workload) -> Option<Cell> {
        let rates: Vec<f64> = self.of(c, w, b, wl).map(Row::loads_per_s).collect();
        if rates.is_empty() {
            return None;
        }
        let kpb: Vec<f64> = self.of(c, w, b, wl).map(Row::keys_per_batch).collect();
        Some(Cell {
            median: median(&rates),
            min: rates.iter().copied().fold(f64::INFINITY, f64::min),
            max: rates.iter().copied().fold(0.0, f64::max),
            keys_per_batch: median(&kpb),
        })
    }

    /// busline ÷ `c`, within each round, median over rounds.
    fn ratio(&self, c: Contender, w: u64, b: usize, wl: Workload) -> Option<f64> {
        let ratios: Vec<f64> = (0..self.rounds)
            .filter_map(|round| {
                let mine = self.of(Contender::Busline, w, b, wl).find(|r| r.round == round)?;
                let theirs = self.of(c, w, b, wl).find(|r| r.round == round)?;
                Some(mine.loads_per_s() / theirs.loads_per_s())
            })
            .collect();
        (!ratios.is_empty()).then(|| median(&ratios))
    }

    /// The peer busline leads by the least (the best peer), and that ratio.
    fn closest_peer(&self, contenders: &[Contender], w: u64, b: usize, wl: Workload) -> Option<(Contender, f64)> {
        contenders
            .iter()
            .copied()
            .filter(|&c| c != Contender::Busline)
            .filter_map(|c| self.ratio(c, w, b, wl).map(|r| (c, r)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
    }
}

pub(crate) fn section(args: &Args, run: &Run, verdicts: &mut Vec<Verdict>) -> std::io::Result<String> {
    let mut s = String::new();
    for (i, &placement) in args.placements.iter().enumerate() {
        let headline = i == 0;
        s += &placed(args, run, placement, headline, if headline { Some(&mut *verdicts) } else { None })?;
    }
    Ok(s)
}

fn rounds(args: &Args) -> usize {
    args.rounds.unwrap_or(if args.quick { 1 } else { 5 })
}

fn measure(args: &Args, placement: Placement) -> Rows {
    let rounds = rounds(args);
    let rt = placement::runtime(2, placement);
    let mut rows = Vec::new();
    let mut next_key = 0u64;
    for round in 0..rounds {
        for contender in in_round_order(&args.contenders, round) {
            for workload in WORKLOADS {
                for batch in BATCH_SIZES {
                    for window_us in THROUGHPUT_WINDOWS_US {
                        let window = Duration::from_micros(window_us);
                        if !contender.supports(window) {
                            continue;
                        }
                        let counters = Arc::new(Counters::default());
                        let key = next_key;
                        next_key += workload.loads() as u64;
                        let (elapsed, (batches, keys)) = rt.block_on(async {
                            // The clock starts before the build: a fresh batcher's cold start counts.
                            let start = Instant::now();
                            with_loader!(contender, Setup::new(window, batch), Arc::clone(&counters), |loader| {
                                let elapsed =
                                    scenarios::throughput_since(&loader, workload.tasks, workload.per_task, key, start).await;
                                (elapsed, counters.snapshot())
                            })
                        });
                        let row = Row { round, contender, window_us, batch, workload, elapsed, batches, keys };
                        eprintln!(
                            "throughput {} round {round} {:>20} {:>10} batch {:>8} window {window_us:>5} us: {:>10.0} loads/s, \
                             {:>7.1} keys/batch",
                            placement.name(),
                            contender.name(),
                            workload.name,
                            batch_label(batch),
                            row.loads_per_s(),
                            row.keys_per_batch()
                        );
                        rows.push(row);
                    }
                }
            }
        }
    }
    Rows { rows, rounds }
}

fn placed(
    args: &Args,
    run: &Run,
    placement: Placement,
    headline: bool,
    verdicts: Option<&mut Vec<Verdict>>,
) -> std::io::Result<String> {
    let rows = measure(args, placement);
    let csv_name = format!("throughput-{}.csv", placement.name());
    let mut csv = String::from(
        "round,implementation,workload,tasks,loads,max_batch_size,max_batch_size_setting,window_us,seconds,loads_per_s,batches,keys,keys_per_batch\n",
    );
    for r in &rows.rows {
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{},{},{},{:.6},{:.0},{},{},{:.2}",
            r.round,
            r.contender.name(),
            r.workload.name,
            r.workload.tasks,
            r.workload.loads(),
            batch_label(r.batch),
            r.contender.max_batch_size(r.batch),
            r.window_us,
            r.elapsed.as_secs_f64(),
            r.loads_per_s(),
            r.batches,
            r.keys,
            r.keys_per_batch()
        );
    }
    report::write_csv(&args.out, &csv_name, run, &csv)?;

    let mut s = String::new();
    let (title, placed) = match placement {
        Placement::Os => ("workers left to the OS", "worker threads placed by the OS scheduler, as services run"),
        Placement::Pinned => ("workers pinned", "each worker pinned to a CPU of its own"),
    };
    let _ = writeln!(s, "\n## throughput, {title}{}\n", if headline { " (headline)" } else { " (beside the headline)" });
    let _ = writeln!(
        s,
        "1,000 tokio tasks, each doing sequential `load(key)` of its own unique u64 keys (1,000 loads always in flight) \
         on a multi-thread runtime with 2 workers ({placed}; benches/src/placement.rs says why both are shown); the \
         batch function builds a HashMap at once. Every cell is a **fresh batcher**, built inside the timed region (its \
         cold start counts), no warm-up; **each load clones the loader handle** and drops it after its answer, as a \
         request handler does (tower-batch-control's `oneshot` consumes that clone). `max_batch_size` 1,024 and \"no \
         limit\" (each contender's largest setting: benches/README.md). {}, contenders interleaved (order rotated \
         each round). loads/s: median (min–max) over rounds; keys/batch: batch-function calls counted in each adapter, \
         median over rounds; busline ÷ this: the ratio within each round, median over rounds. Raw rows: {csv_name}.",
        plural(rows.rounds, "round")
    );
    for workload in WORKLOADS {
        for batch in BATCH_SIZES {
            let _ = writeln!(
                s,
                "\n### {}, max_batch_size {}, {title}\n",
                workload.name,
                batch_label(batch)
            );
            let _ = writeln!(s, "| implementation | window | loads/s median | min–max | keys/batch | busline ÷ this |");
            let _ = writeln!(s, "|---|---|---:|---:|---:|---:|");
            for w in THROUGHPUT_WINDOWS_US {
                for &c in &args.contenders {
                    let Some(cell) = rows.cell(c, w, batch, workload) else {
                        let _ = writeln!(s, "| {} | {} | n/a (no time window) | | | |", c.name(), window_label(w));
                        continue;
                    };
                    let r = if c == Contender::Busline {
                        "1".into()
                    } else {
                        rows.ratio(c, w, batch, workload).map_or(String::new(), |r| format!("{r:.2}×"))
                    };
                    let _ = writeln!(
                        s,
                        "| {} | {} | {} | {}–{} | {:.1} | {r} |",
                        c.name(),
                        window_label(w),
                        mega(cell.median),
                        mega(cell.min),
                        mega(cell.max),
                        cell.keys_per_batch
                    );
                }
            }
            s += &run.caption();
        }
    }

    // Targets (issue 9): ≥ 2× the best peer at window 0 and 100 µs; at 1 ms ≥ 95 % of the cap
    // tasks / window and above every peer.
    let mut targets: Vec<Verdict> = Vec::new();
    for workload in WORKLOADS {
        for batch in BATCH_SIZES {
            let figure = |w: u64| {
                format!("loads/s, {}, max_batch_size {}, window {}, {}", workload.name, batch_label(batch), window_label(w), placement.name())
            };
            for w in [0, 100] {
                if let Some((peer, r)) = rows.closest_peer(&args.contenders, w, batch, workload) {
                    targets.push(Verdict::new(
                        figure(w),
                        "≥ 2× the best peer",
                        format!("{r:.2}× {}", peer.name()),
                        r >= 2.0,
                    ));
                }
            }
            let w = 1_000;
            if let Some(cell) = rows.cell(Contender::Busline, w, batch, workload) {
                let cap = workload.tasks as f64 / (w as f64 * 1e-6);
                let closest = rows.closest_peer(&args.contenders, w, batch, workload);
                let above = closest.is_none_or(|(_, r)| r > 1.0);
                let vs = closest.map_or(String::new(), |(peer, r)| format!("; {r:.2}× {}", peer.name()));
                targets.push(Verdict::new(
                    figure(w),
                    format!("≥ {:.0} % of the cap {} and above every peer", CAP_SHARE * 100.0, mega(cap)),
                    format!("{} = {:.1} % of the cap{vs}", mega(cell.median), 100.0 * cell.median / cap),
                    cell.median >= CAP_SHARE * cap && above,
                ));
            }
        }
    }
    let _ = writeln!(s, "\n### targets, {title}\n");
    let _ = writeln!(s, "| figure | target | measured | met |");
    let _ = writeln!(s, "|---|---|---|---|");
    for v in &targets {
        let _ = writeln!(s, "| {} | {} | {} | {} |", v.figure, v.target, v.measured, yes(v.met));
    }
    s += &run.caption();

    if headline {
        let panels: Vec<chart::Panel> = WORKLOADS
            .iter()
            .flat_map(|&workload| BATCH_SIZES.iter().map(move |&batch| (workload, batch)))
            .map(|(workload, batch)| chart::Panel {
                title: format!("{}, max_batch_size {}", workload.name, batch_label(batch)),
                groups: THROUGHPUT_WINDOWS_US.iter().map(|&w| format!("window {}", window_label(w))).collect(),
                series: args
                    .contenders
                    .iter()
                    .map(|&c| {
                        let cells = THROUGHPUT_WINDOWS_US.iter().map(|&w| rows.cell(c, w, batch, workload)).collect();
                        (c.name().to_string(), cells)
                    })
                    .collect(),
            })
            .collect();
        let title = format!("loads/s, {title}: median of {}, whiskers min–max (commit {})", plural(rows.rounds, "round"), run.commit);
        match chart::throughput(&args.out, "throughput", &title, &panels) {
            Ok(()) => {
                let _ = writeln!(s, "\n![throughput, {title}](throughput.png)\n\n(also throughput.svg)");
            }
            Err(e) => {
                eprintln!("warning: the throughput chart failed: {e}");
                let _ = writeln!(s, "\n(the bar chart could not be drawn: {e})");
            }
        }
    }
    if let Some(verdicts) = verdicts {
        verdicts.extend(targets);
    }
    Ok(s)
}
