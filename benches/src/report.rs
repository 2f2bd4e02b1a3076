//! Small helpers for the reports: quantiles, the machine/commit header, file output.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The `q` quantile (nearest rank) of sorted values.
pub fn quantile<T: Copy>(sorted: &[T], q: f64) -> T {
    assert!(!sorted.is_empty(), "quantile of nothing");
    let rank = ((sorted.len() as f64) * q).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// Median of unsorted floats.
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// Microseconds, as a float.
pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Milliseconds, as a float.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn run(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// What every table and CSV of one run states: the machine, commit, command and date.
#[derive(Debug, Clone)]
pub struct Run {
    /// CPUs, model, rustc, and the load average when the run began.
    pub machine: String,
    /// Short commit hash, with a note if core/ or benches/ had uncommitted changes.
    pub commit: String,
    /// The command line.
    pub command: String,
    /// UTC date and time the run began.
    pub date: String,
}

impl Run {
    /// Reads the machine, commit and date now; `command` is the command line to record.
    pub fn now(command: &str) -> Run {
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
        let model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).map(|m| m.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let commit = run("git", &["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
        let dirty = run("git", &["status", "--porcelain", "--", "core", "benches"]).is_some_and(|s| !s.is_empty());
        let date = run("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_else(|| "unknown".into());
        let rustc = run("rustc", &["--version"]).unwrap_or_else(|| "unknown".into());
        // Other work on the machine skews every figure: record how busy it was when the run began.
        let load = std::fs::read_to_string("/proc/loadavg")
            .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|_| "unknown".into());
        Run {
            machine: format!("{cpus} CPUs ({model}), {rustc}; load average at start: {load}"),
            commit: format!("{commit}{}", if dirty { " with uncommitted changes in core/ or benches/" } else { "" }),
            command: command.to_string(),
            date,
        }
    }

    /// Markdown lines for a report's header.
    pub fn header(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "- machine: {}", self.machine);
        let _ = writeln!(s, "- commit: `{}`", self.commit);
        let _ = writeln!(s, "- command: `{}`", self.command);
        let _ = writeln!(s, "- date: {}", self.date);
        s
    }

    /// One Markdown line to put under a table.
    pub fn caption(&self) -> String {
        format!("\n*{}; commit `{}`; `{}`; {}.*\n", self.machine, self.commit, self.command, self.date)
    }

    /// `#`-prefixed lines to put on top of a CSV (read it with a comment character of `#`).
    pub fn csv_preamble(&self) -> String {
        format!("# machine: {}\n# commit: {}\n# command: {}\n# date: {}\n", self.machine, self.commit, self.command, self.date)
    }
}

/// The machine, commit, command and date, as Markdown lines for a report header.
pub fn header(command: &str) -> String {
    Run::now(command).header()
}

/// Writes `contents` to `dir/name`, creating `dir`.
pub fn write(dir: &Path, name: &str, contents: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(name), contents)
}

/// Writes a CSV to `dir/name` with `run`'s preamble on top.
pub fn write_csv(dir: &Path, name: &str, run: &Run, csv: &str) -> std::io::Result<()> {
    write(dir, name, &(run.csv_preamble() + csv))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_takes_the_nearest_rank() {
        let v = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        assert_eq!(quantile(&v, 0.5), 5);
        assert_eq!(quantile(&v, 0.99), 10);
        assert_eq!(quantile(&v, 0.0), 1);
        assert_eq!(quantile(&[7], 0.5), 7);
    }

    #[test]
    fn median_of_even_and_odd_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn every_csv_line_of_the_preamble_is_a_comment() {
        let run = Run { machine: "m".into(), commit: "c".into(), command: "x".into(), date: "d".into() };
        let pre = run.csv_preamble();
        assert_eq!(pre.lines().count(), 4);
        assert!(pre.lines().all(|l| l.starts_with("# ")), "{pre}");
        assert!(run.caption().contains("commit `c`"));
    }
}
