//! The first load on a fresh batcher: what a service pays right after start (or after building a
//! batcher per request scope), per `max_batch_size`. A setting must not cost at start what only
//! a full bus needs.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use busline_benches::adapters::{Contender, Counters, Setup};
use busline_benches::placement;
use busline_benches::report::{self, Run, quantile, us};
use busline_benches::{NO_LIMIT, THROUGHPUT_WINDOWS_US, scenarios, with_loader};

use crate::{Args, Verdict, batch_label, in_round_order, window_label};

/// `max_batch_size` 1,024 (the default), 2^20 and "no limit".
const BATCH_SIZES: [usize; 3] = [busline::DEFAULT_MAX_BATCH_SIZE, 1 << 20, NO_LIMIT];

/// What a first load may add to its window.
const SLACK: Duration = Duration::from_micros(50);

struct Sample {
    contender: Contender,
    batch: usize,
    window_us: u64,
    /// From the builder call to `build()` returning.
    build: Duration,
    /// From the first `load()` to its answer, in a task spawned after the build.
    first: Duration,
}

pub(crate) fn section(args: &Args, run: &Run, verdicts: &mut Vec<Verdict>) -> std::io::Result<String> {
    let reps = args.rounds.unwrap_or(if args.quick { 2 } else { 10 });
    let placement = args.placements[0];
    let rt = placement::runtime(2, placement);
    let mut samples = Vec::new();
    for rep in 0..reps {
        for contender in in_round_order(&args.contenders, rep) {
            for batch in BATCH_SIZES {
                for window_us in THROUGHPUT_WINDOWS_US {
                    let window = Duration::from_micros(window_us);
                    if !contender.supports(window) {
                        continue;
                    }
                    let counters = Arc::new(Counters::default());
                    let (build, first) = rt.block_on(async {
                        let start = Instant::now();
                        with_loader!(contender, Setup::new(window, batch), Arc::clone(&counters), |loader| {
                            let build = start.elapsed();
                            let counters = Arc::clone(&counters);
                            // A caller in a task, as in a service; key 0 is the batcher's first.
                            let lone = tokio::spawn(async move { scenarios::lone_load(&loader, &counters, 0).await })
                                .await
                                .expect("first-load task");
                            (build, lone.round_trip)
                        })
                    });
                    eprintln!(
                        "first load {:>20} batch {:>8} window {window_us:>5} us: build {:.0} us, first load {:.0} us",
                        contender.name(),
                        batch_label(batch),
                        us(build),
                        us(first)
                    );
                    samples.push(Sample { contender, batch, window_us, build, first });
                }
            }
        }
    }
    drop(rt);

    let sorted = |c: Contender, b: usize, w: u64, f: fn(&Sample) -> Duration| -> Vec<Duration> {
        let mut v: Vec<Duration> =
            samples.iter().filter(|s| s.contender == c && s.batch == b && s.window_us == w).map(f).collect();
        v.sort_unstable();
        v
    };
    let mut csv = String::from("implementation,max_batch_size,max_batch_size_setting,window_us,build_us,first_load_us\n");
    for s in &samples {
        let _ = writeln!(
            csv,
            "{},{},{},{},{:.1},{:.1}",
            s.contender.name(),
            batch_label(s.batch),
            s.contender.max_batch_size(s.batch),
            s.window_us,
            us(s.build),
            us(s.first)
        );
    }
    report::write_csv(&args.out, "first_load.csv", run, &csv)?;

    let mut s = String::new();
    let _ = writeln!(s, "\n## first load on a fresh batcher\n");
    let _ = writeln!(
        s,
        "A batcher built fresh (multi-thread runtime with 2 workers, {}), then one load from a spawned task: its time \
         from `load()` to the answer. {reps} repetitions per cell, contenders interleaved. Cells: median (max) in µs; \
         build: the median time of the builder call itself. Target for busline: median first load ≤ window + {} µs, \
         whatever `max_batch_size`. Raw: first_load.csv.\n",
        placement.name(),
        SLACK.as_micros()
    );
    let _ = write!(s, "| implementation | max_batch_size | build µs |");
    for w in THROUGHPUT_WINDOWS_US {
        let _ = write!(s, " first load, window {} |", window_label(w));
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "|---|---|---:|{}", "---:|".repeat(THROUGHPUT_WINDOWS_US.len()));
    for &c in &args.contenders {
        for b in BATCH_SIZES {
            let builds: Vec<Duration> = THROUGHPUT_WINDOWS_US.iter().flat_map(|&w| sorted(c, b, w, |s| s.build)).collect();
            if builds.is_empty() {
                continue;
            }
            let mut builds = builds;
            builds.sort_unstable();
            let _ = write!(s, "| {} | {} | {:.0} |", c.name(), batch_label(b), us(quantile(&builds, 0.5)));
            for w in THROUGHPUT_WINDOWS_US {
                let v = sorted(c, b, w, |s| s.first);
                if v.is_empty() {
                    let _ = write!(s, " n/a |");
                } else {
                    let _ = write!(s, " {:.0} ({:.0}) |", us(quantile(&v, 0.5)), us(*v.last().expect("samples")));
                }
            }
            let _ = writeln!(s);
        }
    }
    s += &run.caption();

    if args.contenders.contains(&Contender::Busline) {
        for b in BATCH_SIZES {
            for w in THROUGHPUT_WINDOWS_US {
                let v = sorted(Contender::Busline, b, w, |s| s.first);
                let median = quantile(&v, 0.5);
                let bound = Duration::from_micros(w) + SLACK;
                verdicts.push(Verdict::new(
                    format!("first load on a fresh batcher, max_batch_size {}, window {}", batch_label(b), window_label(w)),
                    format!("≤ {:.0} µs", us(bound)),
                    format!("median {:.0} µs (max {:.0})", us(median), us(*v.last().expect("samples"))),
                    median <= bound,
                ));
            }
        }
    }
    Ok(s)
}
