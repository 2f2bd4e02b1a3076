//! The CPU a batcher costs at light load: 1,000 sparse loads/s through a 1 ms window, with the
//! precise timer's spin on and off, against `Policy::Car` (no batching, no timer).
//!
//! `cargo run --release -p busline --example light_load -- [seconds] [repeats]`
//!
//! Each run drives one batcher on a 2-worker runtime for `seconds` (default 5): a ticker task
//! spawns one load every millisecond (each in its own task, so arrivals do not wait for
//! answers). The figure is the whole process's CPU time (user + system, from
//! `/proc/self/stat`, 10 ms ticks) over the run's wall time, in % of one core; the load
//! generator's own share is the same in every configuration, so compare the differences.
//! Configurations alternate, `repeats` times (default 3); the median is printed. Linux only.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use busline::{Batcher, Policy};

/// CPU time of this process so far (user + system), from `/proc/self/stat`.
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat (Linux only)");
    // Fields after the command name (which is in parentheses and may hold spaces).
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name, in ticks.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let hz = 100; // USER_HZ on every Linux configuration in use.
    Duration::from_millis(ticks * 1000 / hz)
}

fn run(rt: &tokio::runtime::Runtime, policy: Policy, spin: bool, seconds: u64) -> f64 {
    rt.block_on(async {
        let b: Batcher<u64, u64, ()> = Batcher::builder(|keys: Vec<u64>| async move {
            Ok(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>())
        })
        .policy(policy)
        .spin(spin)
        .build()
        .unwrap();
        // Warm up: the timer thread, the runtime's workers.
        for k in 0..10 {
            b.load(k).await.unwrap();
        }
        let mut ticker = tokio::time::interval(Duration::from_millis(1));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let (cpu0, wall0) = (process_cpu(), Instant::now());
        let mut k = 0u64;
        while wall0.elapsed() < Duration::from_secs(seconds) {
            ticker.tick().await;
            k += 1;
            let b = b.clone();
            tokio::spawn(async move { b.load(k).await.is_ok() });
        }
        let (cpu, wall) = (process_cpu() - cpu0, wall0.elapsed());
        b.shutdown().await;
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64()
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let repeats: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let window = Policy::window(Duration::from_millis(1));
    let configs = [("car", Policy::Car, true), ("window 1 ms, spin on", window, true), ("window 1 ms, spin off", window, false)];
    let mut samples = vec![Vec::new(); configs.len()];
    for _ in 0..repeats {
        for (i, &(_, policy, spin)) in configs.iter().enumerate() {
            samples[i].push(run(&rt, policy, spin, seconds));
        }
    }
    let car = median(samples[0].clone());
    println!("1,000 loads/s, {seconds} s per run, median of {repeats} (process CPU, % of one core):");
    for (i, (name, ..)) in configs.iter().enumerate() {
        let m = median(samples[i].clone());
        let all: Vec<String> = samples[i].iter().map(|s| format!("{s:.1}")).collect();
        println!("  {name:<24} {m:5.1} %  (+{:.1} over car; runs: {})", m - car, all.join(", "));
    }
}
