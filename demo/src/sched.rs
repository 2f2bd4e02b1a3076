//! How much of the machine a replay had: the CPU time this process's threads used, and how long
//! they were runnable but waiting for a core (Linux's per-thread scheduler statistics,
//! `/proc/self/task/<tid>/schedstat`: time on a CPU, time waiting on a run queue, in ns).
//!
//! The wait is what the simulator cannot predict from the calibration: on a shared machine it
//! is mostly other processes' time slices (milliseconds each), and it lands in whichever
//! stage of a request was running. The report shows it per replay so a miss can be told apart
//! from a model's fault. Elsewhere than on Linux there are no figures (`None`).

use std::collections::HashMap;

/// Every thread's (CPU, run-queue wait) so far, ns.
#[derive(Debug, Clone, Default)]
pub struct Snapshot(HashMap<String, (u64, u64)>);

/// What the process's threads did between two snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Usage {
    /// CPU time, ms.
    pub cpu_ms: f64,
    /// Runnable but not running (waiting for a core), ms.
    pub waiting_ms: f64,
}

/// This process's threads now; `None` where `/proc/self/task` cannot be read.
pub fn snapshot() -> Option<Snapshot> {
    let mut threads = HashMap::new();
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let Ok(entry) = entry else { continue };
        // A thread may end between the listing and the read: it is left out.
        let Ok(text) = std::fs::read_to_string(entry.path().join("schedstat")) else { continue };
        if let Some(pair) = parse(&text) {
            threads.insert(entry.file_name().to_string_lossy().into_owned(), pair);
        }
    }
    Some(Snapshot(threads))
}

/// `schedstat`'s first two fields: (CPU, run-queue wait), ns.
fn parse(text: &str) -> Option<(u64, u64)> {
    let mut fields = text.split_whitespace().map(str::parse::<u64>);
    Some((fields.next()?.ok()?, fields.next()?.ok()?))
}

/// The usage since `before` was taken (`None` where the statistics cannot be read).
pub fn usage_since(before: Option<Snapshot>) -> Option<Usage> {
    snapshot().zip(before).map(|(after, before)| after.since(&before))
}

impl Snapshot {
    /// The usage from `before` to `self`: a thread started since counts from zero; one that
    /// ended since is lost (the runtime's and the pool's threads live through a replay).
    pub fn since(&self, before: &Snapshot) -> Usage {
        let (mut cpu, mut waiting) = (0u64, 0u64);
        for (tid, &(c, w)) in &self.0 {
            let (c0, w0) = before.0.get(tid).copied().unwrap_or((0, 0));
            cpu += c.saturating_sub(c0);
            waiting += w.saturating_sub(w0);
        }
        Usage { cpu_ms: cpu as f64 / 1e6, waiting_ms: waiting as f64 / 1e6 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedstat_is_read_and_differenced() {
        assert_eq!(parse("260487966 172067008 710\n"), Some((260_487_966, 172_067_008)));
        assert_eq!(parse("12"), None);
        let before = Snapshot([("1".to_string(), (100, 10))].into_iter().collect());
        let after = Snapshot([("1".to_string(), (1_000_100, 2_000_010)), ("2".to_string(), (500_000, 0))].into_iter().collect());
        assert_eq!(after.since(&before), Usage { cpu_ms: 1.5, waiting_ms: 2.0 });
    }
}
