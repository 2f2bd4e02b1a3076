//! Window precision: a lone caller's added wait, from `load()` to the batch function's start,
//! per configured window, for every contender, with tokio's own sleep for reference.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use busline_benches::adapters::{Contender, Counters, Setup};
use busline_benches::placement;
use busline_benches::report::{self, Run, quantile, us};
use busline_benches::{PRECISION_WINDOWS_US, scenarios, with_loader};

use crate::{Args, Verdict, window_label};

pub(crate) fn section(args: &Args, run: &Run, verdicts: &mut Vec<Verdict>) -> std::io::Result<String> {
    let budget = if args.quick { Duration::from_millis(30) } else { Duration::from_millis(500) };
    let (min_reps, max_reps) = if args.quick { (3, 20) } else { (40, 1000) };
    let rt = placement::runtime(2, args.placements[0]);
    // (implementation, window_us, sorted added waits)
    let mut rows: Vec<(String, u64, Vec<Duration>)> = Vec::new();
    for window_us in PRECISION_WINDOWS_US {
        let window = Duration::from_micros(window_us);
        let reps = scenarios::repetitions(window, budget, min_reps, max_reps);
        for contender in args.contenders.iter().copied().filter(|c| c.supports(window)) {
            // The caller as in a service: a task on a worker. For busline, also a caller outside
            // the runtime (`block_on`), whose load has to wake a parked worker for the driver.
            let outside = if contender == Contender::Busline { &[false, true][..] } else { &[false][..] };
            for &outside in outside {
                let counters = Arc::new(Counters::default());
                let mut waits = rt.block_on(async {
                    with_loader!(contender, Setup::with_window(window), Arc::clone(&counters), |loader| {
                        let mut waits = Vec::with_capacity(reps);
                        for i in 0..reps + 3 {
                            let lone = if outside {
                                scenarios::lone_load(&loader, &counters, i as u64).await
                            } else {
                                let (loader, counters) = (loader.clone(), Arc::clone(&counters));
                                tokio::spawn(async move { scenarios::lone_load(&loader, &counters, i as u64).await })
                                    .await
                                    .expect("lone caller task")
                            };
                            if i >= 3 {
                                waits.push(lone.to_batch);
                            }
                            // Let the batch finish and everything settle before the next lone caller.
                            tokio::time::sleep(Duration::from_micros(200)).await;
                        }
                        waits
                    })
                });
                waits.sort_unstable();
                let name = if outside { format!("{} (caller in block_on)", contender.name()) } else { contender.name().to_string() };
                eprintln!("window {window_us} us {name}: median {:.0} us", us(quantile(&waits, 0.5)));
                rows.push((name, window_us, waits));
            }
        }
        for (name, is_tokio) in [("tokio::time::sleep", true), ("bench clock (mock backend)", false)] {
            let mut waits = rt.block_on(async {
                let mut waits = Vec::with_capacity(reps);
                for _ in 0..reps {
                    let start = Instant::now();
                    if is_tokio {
                        tokio::time::sleep(window).await;
                    } else {
                        busline_benches::clock::sleep(window).await;
                    }
                    waits.push(start.elapsed());
                }
                waits
            });
            waits.sort_unstable();
            rows.push((name.to_string(), window_us, waits));
        }
    }
    drop(rt);

    let target = |w: u64| Duration::from_micros(w) / 10 + Duration::from_micros(20);
    let within = |d: Duration, w: u64| d.abs_diff(Duration::from_micros(w)) <= target(w);
    let mut csv = String::from(
        "implementation,window_us,reps,median_us,p99_us,max_us,median_error_us,p99_error_us,median_within_target,p99_within_target\n",
    );
    for (name, w, waits) in &rows {
        let (m, p99, max) = (quantile(waits, 0.5), quantile(waits, 0.99), *waits.last().expect("reps"));
        let _ = writeln!(
            csv,
            "{name},{w},{},{:.1},{:.1},{:.1},{:.1},{:.1},{},{}",
            waits.len(),
            us(m),
            us(p99),
            us(max),
            us(m) - *w as f64,
            us(p99) - *w as f64,
            within(m, *w),
            within(p99, *w)
        );
    }
    report::write_csv(&args.out, "window_precision.csv", run, &csv)?;

    let names: Vec<String> = {
        let mut n: Vec<String> = Vec::new();
        for (name, ..) in &rows {
            if !n.contains(name) {
                n.push(name.clone());
            }
        }
        n
    };
    let mut s = String::new();
    let _ = writeln!(s, "\n## window precision\n");
    let _ = writeln!(
        s,
        "A lone caller (nothing else running, multi-thread runtime with 2 workers), a spawned task as in a service: the \
         added wait of a batch's first caller, from calling `load()` (timestamped in the task) to the batch function \
         being called (timestamped inside it), per configured window; each load is followed by a 200 µs pause. For \
         busline also a caller outside the runtime (awaiting in `block_on`): its load must wake a parked worker to run \
         the driver, which costs 20–130 µs on these VMs. Repetitions per window: about {} ms of windows, {min_reps}–{max_reps} \
         (the `n` column); with fewer than 100, p99 is close to the maximum. `tokio::time::sleep(window)` and the \
         benches' own condvar clock (used by the policy scenario's mock backend) are shown for reference. Target for \
         busline: within 10 % + 20 µs of the window. Cells: median / p99 in µs. Raw: window_precision.csv.\n",
        budget.as_millis()
    );
    let _ = write!(s, "| window | n | busline target |");
    for n in &names {
        let _ = write!(s, " {n} |");
    }
    let _ = writeln!(s);
    let _ = write!(s, "|---|---:|---|");
    for _ in &names {
        let _ = write!(s, "---:|");
    }
    let _ = writeln!(s);
    for w in PRECISION_WINDOWS_US {
        let busline = rows.iter().find(|(n, ww, _)| n == "busline" && *ww == w);
        let n = busline.map_or(0, |(.., v)| v.len());
        let verdict = busline.map_or("".to_string(), |(.., v)| {
            let (m, p99) = (quantile(v, 0.5), quantile(v, 0.99));
            format!(
                "±{:.0} µs: median {}, p99 {}",
                us(target(w)),
                if within(m, w) { "yes" } else { "**no**" },
                if within(p99, w) { "yes" } else { "**no**" }
            )
        });
        let _ = write!(s, "| {} | {n} | {verdict} |", window_label(w));
        for name in &names {
            match rows.iter().find(|(nn, ww, _)| nn == name && *ww == w) {
                Some((.., v)) => {
                    let _ = write!(s, " {:.0} / {:.0} |", us(quantile(v, 0.5)), us(quantile(v, 0.99)));
                }
                None => {
                    let _ = write!(s, " n/a |");
                }
            }
        }
        let _ = writeln!(s);
    }
    s += &run.caption();
    for w in PRECISION_WINDOWS_US {
        if let Some((.., v)) = rows.iter().find(|(n, ww, _)| n == "busline" && *ww == w) {
            let (m, p99) = (quantile(v, 0.5), quantile(v, 0.99));
            verdicts.push(Verdict::new(
                format!("window precision, {}", window_label(w)),
                format!("median and p99 within ±{:.0} µs of the window", us(target(w))),
                format!("median {:.0} µs, p99 {:.0} µs", us(m), us(p99)),
                within(m, w) && within(p99, w),
            ));
        }
    }
    Ok(s)
}

