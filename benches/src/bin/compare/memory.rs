//! Bytes per pending request, counted rather than estimated: N loads held pending behind a
//! window that does not close (one hour) with "no limit" on the batch size, the whole batcher's
//! heap read from the counting global allocator (`alloc.rs`), for busline and every peer alike.
//!
//! Each load's future is boxed and polled once, outside tokio's cooperative budget (else, after
//! 128 polls in one task, tokio's channels and locks answer `Pending` without doing anything), so
//! it has done what a first poll does: claimed a seat, queued a message, inserted into a map,
//! spawned a timer task; then it is left pending. The runtime (current-thread) then runs until the
//! heap stops changing, so background workers take in what was sent to them. Heap bytes = live bytes now − live bytes before the build − the boxes of the futures
//! themselves (their size is the caller's, shown apart) − the vector holding them. Per pending
//! request: heap bytes ÷ N, so a batcher's fixed cost is spread over N (its empty size is shown).

use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use busline_benches::adapters::{Contender, Counters, Loader, Setup};
use busline_benches::report::{self, Run};
use busline_benches::{NO_LIMIT, scenarios, with_loader};

use crate::{Args, Verdict, alloc};

/// How many requests are held pending.
const PENDING: [usize; 3] = [1_000, 100_000, 1_000_000];

/// The key type's own size: the target counts bytes beyond it.
const KEY_BYTES: usize = std::mem::size_of::<u64>();

/// What one pending request may cost beyond its key.
const TARGET_BEYOND_KEY: f64 = 64.0;

/// A window that does not close while the measurement runs.
const NEVER: Duration = Duration::from_secs(3600);

/// How often the heap is read while the runtime settles: it has settled when two readings this
/// far apart agree (a worker draining its channel changes the count between any two).
const SETTLE_STEP: Duration = Duration::from_millis(10);

/// The longest the runtime is given to settle.
const SETTLE_MAX: Duration = Duration::from_secs(5);

struct Measured {
    contender: Contender,
    pending: usize,
    /// The built, empty batcher's heap bytes.
    empty: isize,
    /// Heap bytes with `pending` loads pending (the empty batcher included).
    held: isize,
    /// The size of one load's future (lives in the caller's task, not counted in `held`).
    future: usize,
}

impl Measured {
    fn per_request(&self) -> f64 {
        self.held as f64 / self.pending as f64
    }
}

fn element_size<T>(_: &[T]) -> usize {
    std::mem::size_of::<T>()
}

/// Holds `n` loads of `loader` pending; returns (heap bytes now since `base`, future size).
async fn hold<L: Loader>(loader: &L, n: usize, base: isize) -> (isize, usize) {
    let mut pending = Vec::with_capacity(n);
    let mut future_size = 0;
    for key in 0..n as u64 {
        let mut load = Box::pin(tokio::task::unconstrained(loader.load(key)));
        future_size = std::mem::size_of_val(&*load);
        std::future::poll_fn(|cx| {
            let polled = load.as_mut().poll(cx);
            assert!(polled.is_pending(), "a load answered although its window cannot have closed");
            Poll::Ready(())
        })
        .await;
        pending.push(load);
    }
    settle().await;
    let held = alloc::live() - base;
    let holder = pending.capacity() * element_size(&pending);
    let boxes = n * future_size;
    drop(pending);
    (held - holder as isize - boxes as isize, future_size)
}

/// Lets the runtime run until the heap stops changing (at most `SETTLE_MAX`).
async fn settle() {
    let start = std::time::Instant::now();
    let mut last = alloc::live();
    loop {
        tokio::time::sleep(SETTLE_STEP).await;
        let now = alloc::live();
        if now == last || start.elapsed() > SETTLE_MAX {
            return;
        }
        last = now;
    }
}

fn measure(contender: Contender, n: usize) -> Measured {
    let rt = scenarios::current_thread_runtime();
    let measured = rt.block_on(async {
        let counters = Arc::new(Counters::default());
        alloc::start();
        let base = alloc::live();
        let (empty, held, future) = with_loader!(contender, Setup::new(NEVER, NO_LIMIT), counters, |loader| {
            settle().await;
            let empty = alloc::live() - base;
            let (held, future) = hold(&loader, n, base).await;
            (empty, held, future)
        });
        alloc::stop();
        Measured { contender, pending: n, empty, held, future }
    });
    drop(rt);
    measured
}

pub(crate) fn section(args: &Args, run: &Run, verdicts: &mut Vec<Verdict>) -> std::io::Result<String> {
    let mut rows = Vec::new();
    for &contender in &args.contenders {
        for n in PENDING {
            let m = measure(contender, n);
            eprintln!(
                "memory {:>20} {n:>8} pending: empty {} B, {:.1} B per pending request",
                contender.name(),
                m.empty,
                m.per_request()
            );
            rows.push(m);
        }
    }
    let mut csv = String::from("implementation,pending,empty_batcher_bytes,heap_bytes,bytes_per_pending,beyond_key,future_bytes\n");
    for m in &rows {
        let _ = writeln!(
            csv,
            "{},{},{},{},{:.1},{:.1},{}",
            m.contender.name(),
            m.pending,
            m.empty,
            m.held,
            m.per_request(),
            m.per_request() - KEY_BYTES as f64,
            m.future
        );
    }
    report::write_csv(&args.out, "memory.csv", run, &csv)?;

    let mut s = String::new();
    let _ = writeln!(s, "\n## bytes per pending request\n");
    let _ = writeln!(
        s,
        "N loads of distinct u64 keys held pending behind a one-hour window with \"no limit\" on the batch size (each \
         contender's largest setting), on a current-thread runtime; the whole batcher's heap counted by a counting \
         global allocator (benches/src/bin/compare/alloc.rs): live bytes with N pending minus live bytes before the \
         build, less the boxes holding the futures (their size, the caller's, is the last column) and the vector \
         holding them. Cells: heap bytes ÷ N **beyond the 8-byte key** (the batcher's fixed cost is spread over N; its \
         empty size is shown). Target: ≤ {TARGET_BEYOND_KEY:.0} bytes beyond the key. Raw: memory.csv.\n"
    );
    let _ = write!(s, "| implementation | empty batcher, bytes |");
    for n in PENDING {
        let _ = write!(s, " {} pending |", thousands(n));
    }
    let _ = writeln!(s, " load future, bytes |");
    let _ = writeln!(s, "|---|---:|{}---:|", "---:|".repeat(PENDING.len()));
    for &c in &args.contenders {
        let mine: Vec<&Measured> = rows.iter().filter(|m| m.contender == c).collect();
        let _ = write!(s, "| {} | {} |", c.name(), mine[0].empty);
        for m in &mine {
            let _ = write!(s, " {:.1} |", m.per_request() - KEY_BYTES as f64);
        }
        let _ = writeln!(s, " {} |", mine[0].future);
    }
    s += &run.caption();

    for m in rows.iter().filter(|m| m.contender == Contender::Busline) {
        let beyond = m.per_request() - KEY_BYTES as f64;
        verdicts.push(Verdict::new(
            format!("bytes per pending request beyond the key, {} pending", thousands(m.pending)),
            format!("≤ {TARGET_BEYOND_KEY:.0}"),
            format!("{beyond:.1}"),
            beyond <= TARGET_BEYOND_KEY,
        ));
    }
    Ok(s)
}

fn thousands(n: usize) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}
