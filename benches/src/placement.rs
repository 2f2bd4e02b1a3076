//! Where the benches' tokio worker threads run.
//!
//! On the 2-vCPU VMs these benches run on, Linux sometimes puts both tokio workers on one vCPU
//! and leaves the other idle for milliseconds: a worker that unparks the other (tokio does so
//! whenever it queues work while a worker sleeps) pulls the wakee onto its own CPU (wake-affine
//! placement), the wakee preempts it, finds little to steal, parks, and is woken again a few
//! microseconds later. `perf sched timehist` during a throughput run showed the two workers
//! alternating every ~4 µs on CPU 1 while CPU 0 sat idle for 17 ms, and a worker runnable but
//! not running for 4 ms. Runs caught in that state lose half their CPU, and busline's
//! natural batching fell into small buses (tens of keys instead of hundreds) for the rest of the
//! run: that was the bimodality of window-0 results.
//!
//! [`Placement::Pinned`] gives each worker a CPU of its own (`sched_setaffinity`), as
//! latency-critical services often do; it applies to every contender alike. The compare
//! runner reports throughput under both placements.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Where worker threads run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Wherever the OS schedules them.
    Os,
    /// Worker `i` on the `i`-th CPU this process may use (modulo their number); Linux only,
    /// elsewhere like `Os`.
    Pinned,
}

impl Placement {
    /// Both, the default first.
    pub const ALL: [Placement; 2] = [Placement::Pinned, Placement::Os];

    /// `pinned` or `os`.
    pub fn name(self) -> &'static str {
        match self {
            Placement::Os => "os",
            Placement::Pinned => "pinned",
        }
    }

    /// Parses [`name`](Placement::name).
    pub fn parse(s: &str) -> Option<Placement> {
        Placement::ALL.into_iter().find(|p| p.name() == s)
    }

    /// The placement the criterion benches use: `BUSLINE_BENCH_PLACEMENT` (`pinned` or `os`),
    /// pinned if unset.
    pub fn from_env() -> Placement {
        match std::env::var("BUSLINE_BENCH_PLACEMENT") {
            Ok(s) => Placement::parse(&s).unwrap_or_else(|| panic!("BUSLINE_BENCH_PLACEMENT={s:?}: want pinned or os")),
            Err(_) => Placement::Pinned,
        }
    }
}

/// The name of the benches' runtime threads.
pub const THREAD_NAME: &str = "bench-rt";

/// A multi-thread tokio runtime with `workers` workers placed as asked, and the timer on.
pub fn runtime(workers: usize, placement: Placement) -> tokio::runtime::Runtime {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(workers).thread_name(THREAD_NAME).enable_all();
    let cpus = allowed_cpus();
    if placement == Placement::Pinned && !cpus.is_empty() {
        // Pinned the first time each worker parks: only workers park (blocking-pool threads do
        // not run this hook), and an idle worker parks at once after start.
        let next = Arc::new(AtomicUsize::new(0));
        builder.on_thread_park(move || {
            thread_local!(static PINNED: Cell<bool> = const { Cell::new(false) });
            if !PINNED.replace(true) {
                let n = next.fetch_add(1, Ordering::Relaxed);
                pin_current_thread(cpus[n % cpus.len()]);
            }
        });
    }
    builder.build().expect("tokio runtime")
}

/// The CPUs the calling thread may run on.
#[cfg(target_os = "linux")]
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: all-zeroes is a valid (empty) `cpu_set_t`; sched_getaffinity(0, ..) writes at
    // most `size_of::<cpu_set_t>()` bytes into it; CPU_ISSET reads within it (i < CPU_SETSIZE).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize).filter(|&i| libc::CPU_ISSET(i, &set)).collect()
    }
}

#[cfg(not(target_os = "linux"))]
fn allowed_cpus() -> Vec<usize> {
    Vec::new()
}

/// Lets the calling thread run only on `cpus` (all of which `allowed_cpus` returned).
#[cfg(target_os = "linux")]
fn set_current_thread_affinity(cpus: &[usize]) -> std::io::Result<()> {
    // SAFETY: all-zeroes is a valid (empty) `cpu_set_t`; CPU_SET writes within it (every cpu
    // came from `allowed_cpus`, below CPU_SETSIZE); sched_setaffinity(0, ..) reads the set and
    // changes only the calling thread's affinity.
    let ok = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    };
    if ok { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

#[cfg(target_os = "linux")]
fn pin_current_thread(cpu: usize) {
    if let Err(e) = set_current_thread_affinity(&[cpu]) {
        // Not fatal (a panic here would kill the worker): the run goes on unpinned, and says so.
        eprintln!("warning: pinning a worker to CPU {cpu}: {e}");
    }
}

#[cfg(not(target_os = "linux"))]
fn pin_current_thread(_cpu: usize) {}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The CPUs each of this process's threads named `name` may run on.
    fn affinity_of_threads_named(name: &str) -> Vec<String> {
        let mut found = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
            let path = task.expect("task").path();
            if std::fs::read_to_string(path.join("comm")).is_ok_and(|comm| comm.trim_end() == name) {
                let status = std::fs::read_to_string(path.join("status")).expect("status");
                let cpus = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).expect("Cpus_allowed_list");
                found.push(cpus.trim().to_string());
            }
        }
        found.sort();
        found
    }

    /// Whether this environment lets a thread set its own affinity (a container may forbid it).
    fn pinning_permitted() -> bool {
        std::thread::spawn(|| {
            let cpus = allowed_cpus();
            !cpus.is_empty() && set_current_thread_affinity(&cpus).is_ok()
        })
        .join()
        .expect("probe thread")
    }

    #[test]
    fn pinned_workers_run_on_a_cpu_each() {
        if !pinning_permitted() {
            eprintln!("skipped: this environment does not let threads set their CPU affinity");
            return;
        }
        let cpus = allowed_cpus();
        let rt = runtime(2, Placement::Pinned);
        // Both workers park when idle; give them the chance.
        let mut pinned = Vec::new();
        for _ in 0..1000 {
            rt.block_on(tokio::task::yield_now());
            pinned = affinity_of_threads_named(THREAD_NAME);
            if pinned.iter().filter(|c| c.parse::<usize>().is_ok()).count() == 2 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let expected: Vec<String> = {
            let mut e: Vec<String> = (0..2).map(|i| cpus[i % cpus.len()].to_string()).collect();
            e.sort();
            e
        };
        assert_eq!(pinned, expected, "one CPU each, the first two this process may use");
        drop(rt);

        let rt = runtime(2, Placement::Os);
        let mut all = Vec::new();
        for _ in 0..1000 {
            rt.block_on(tokio::task::yield_now());
            all = affinity_of_threads_named(THREAD_NAME);
            if all.len() == 2 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(all.len(), 2, "both workers started");
        assert!(all.iter().all(|c| c.parse::<usize>().is_err() || cpus.len() == 1), "not pinned: {all:?}");
    }
}
