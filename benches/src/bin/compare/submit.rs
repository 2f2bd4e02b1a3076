//! What one load costs busline's caller (the submit), and the whole coalesced path per load on
//! one thread for every contender.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use busline_benches::adapters::{Contender, Counters, Setup};
use busline_benches::report::{self, Run, median, quantile};
use busline_benches::floor::{self, FloorRing};
use busline_benches::scenarios::Holding;
use busline_benches::{scenarios, with_loader};

use crate::{Args, Verdict, yes};

/// Issue 9's target for a submit.
const SUBMIT_TARGET_NS: f64 = 20.0;

pub(crate) fn section(args: &Args, run: &Run, verdicts: &mut Vec<Verdict>) -> std::io::Result<String> {
    const CHUNK: usize = 512; // half of a 1,024-seat bus: the driver seals between two chunks.
    let chunks = if args.quick { 50 } else { 4_000 };
    let rt = scenarios::current_thread_runtime();
    // Five measures, interleaved chunk by chunk so that the machine's slow and fast spells fall
    // on all alike: busline's board and the floor, each held both ways, and board + cancel.
    let measures = [
        Measure::Board(Holding::InPlace),
        Measure::Board(Holding::PollThenMove),
        Measure::Cancel,
        Measure::Floor(Holding::InPlace),
        Measure::Floor(Holding::PollThenMove),
    ];
    let samples: Vec<Vec<f64>> = rt.block_on(async {
        let batcher = scenarios::parked_batcher(Arc::new(Counters::default()));
        let floor_ring = FloorRing::new(busline::DEFAULT_MAX_BATCH_SIZE);
        let mut key = 0u64;
        let mut samples = vec![Vec::with_capacity(chunks); measures.len()];
        for i in 0..chunks * measures.len() {
            let d = match measures[i % measures.len()] {
                Measure::Board(holding) => scenarios::board_only(&batcher, key, CHUNK, holding),
                Measure::Cancel => scenarios::board_and_cancel(&batcher, key, CHUNK),
                Measure::Floor(holding) => floor::board_floor(&floor_ring, key, CHUNK, holding),
            };
            key += CHUNK as u64;
            samples[i % measures.len()].push(d.as_secs_f64() * 1e9 / CHUNK as f64);
            scenarios::let_driver_run().await;
        }
        samples
    });
    let of = |m: Measure| &samples[measures.iter().position(|&x| x == m).expect("measured")];
    // One thread, 1,024 loads awaited together with join_all: the whole coalesced path.
    let concurrency = 1024;
    let reps = if args.quick { 5 } else { 300 };
    let mut joined: Vec<(Contender, f64)> = Vec::new();
    for &contender in &args.contenders {
        let counters = Arc::new(Counters::default());
        let per = rt.block_on(async {
            with_loader!(contender, Setup::with_window(Duration::ZERO), Arc::clone(&counters), |loader| {
                let mut per = Vec::with_capacity(reps);
                let mut key = 0u64;
                for i in 0..reps + 2 {
                    let d = scenarios::joined_loads(&loader, key, concurrency).await;
                    key += concurrency as u64;
                    if i >= 2 {
                        per.push(d.as_secs_f64() * 1e9 / concurrency as f64);
                    }
                }
                median(&per)
            })
        });
        eprintln!("submit: {} joined load {per:.0} ns", contender.name());
        joined.push((contender, per));
    }
    drop(rt);

    let seat = busline::seat_bytes::<u64>();
    let future = std::mem::size_of::<busline::Load<'static, u64, u64, Infallible>>();
    let quant = |v: &[f64], q: f64| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        quantile(&v, q)
    };
    let mut csv = String::from("measure,implementation,ns_per_load_median,ns_per_load_p10,ns_per_load_p90,samples\n");
    for (&m, v) in measures.iter().zip(&samples) {
        let (measure, implementation) = m.csv();
        let _ = writeln!(csv, "{measure},{implementation},{:.2},{:.2},{:.2},{}", median(v), quant(v, 0.1), quant(v, 0.9), v.len());
    }
    for (c, per) in &joined {
        let _ = writeln!(csv, "joined_1024_current_thread,{},{per:.2},,,{reps}", c.name());
    }
    let _ = writeln!(csv, "seat_bytes,busline,{seat},,,");
    let _ = writeln!(csv, "load_future_bytes,busline,{future},,,");
    report::write_csv(&args.out, "submit_cost.csv", run, &csv)?;

    let mut s = String::new();
    let _ = writeln!(s, "\n## submit cost\n");
    let _ = writeln!(
        s,
        "Current-thread runtime, one caller, u64 keys. **board**: the first poll of `load(k)` on a batcher whose window \
         (1 h) never closes in time: claim a seat, write the key, register the caller's waker (the bus's first request \
         also stamps the window and wakes the driver; the 1,024th wakes it again); timed over chunks of {CHUNK} polls, \
         the futures dropped untimed after each chunk, then the driver runs and seals the full bus. Held two ways: \
         **in place**, the chunk's futures built into a vector, then each polled where it lies (as a task polls the \
         future it owns; both steps timed), and **poll then move**, each built, polled, then moved into the vector \
         (the move reads the future its poll has just written, a store-forwarding stall that async code never pays). \
         **board + cancel**: the poll, then the future dropped at once (timed): adds marking the seat cancelled and \
         releasing it. **floor**: the least a seat-ring submit costs on this machine (`benches/src/floor.rs`: one \
         `fetch_add` to claim a seat, the key, the waker and a Release flag stored; no capacity check, overflow \
         policy, segment table or driver), held the same two ways. The five measures' chunks are interleaved. Median \
         of {chunks} chunks (p10–p90). Target: submit ≤ 20 ns, held either way.\n"
    );
    let _ = writeln!(s, "| measure | ns per load: median | p10–p90 | target ≤ 20 ns |");
    let _ = writeln!(s, "|---|---:|---:|---|");
    for (&m, v) in measures.iter().zip(&samples) {
        let verdict = if m == Measure::Cancel { String::new() } else { yes(median(v) <= SUBMIT_TARGET_NS).to_string() };
        let _ = writeln!(s, "| {} | {:.1} | {:.1}–{:.1} | {verdict} |", m.name(), median(v), quant(v, 0.1), quant(v, 0.9));
    }
    for holding in Holding::ALL {
        let (board, floor) = (median(of(Measure::Board(holding))), median(of(Measure::Floor(holding))));
        let _ = writeln!(
            s,
            "\nHeld {}: busline's board costs {:.2}× the floor measured beside it ({:+.1} ns).",
            holding.name(),
            board / floor,
            board - floor
        );
    }
    s += &run.caption();
    let (in_place, moved) = (of(Measure::Board(Holding::InPlace)), of(Measure::Board(Holding::PollThenMove)));
    verdicts.push(Verdict::new(
        "submit (board: the first poll of `load`)",
        format!("≤ {SUBMIT_TARGET_NS:.0} ns"),
        format!(
            "{:.1} ns in place, {:.1} ns polled then moved; this machine's floor {:.1} / {:.1} ns",
            median(in_place),
            median(moved),
            median(of(Measure::Floor(Holding::InPlace))),
            median(of(Measure::Floor(Holding::PollThenMove)))
        ),
        median(in_place) <= SUBMIT_TARGET_NS && median(moved) <= SUBMIT_TARGET_NS,
    ));
    let _ = writeln!(
        s,
        "\nThe whole path on one thread: {concurrency} loads of distinct keys awaited together (`join_all`, no spawn) on a \
         current-thread runtime, window 0 (each crate's closest setting; tower-batch-control's `sleep(0)` waits for \
         tokio's next 1 ms tick); wall time ÷ {concurrency}, median of {reps} repetitions. For busline this is board, \
         the driver's seal and collect, the batch function's map, publish, wake, read and release.\n"
    );
    let _ = writeln!(s, "| implementation | ns per load (1,024 joined, one thread) |");
    let _ = writeln!(s, "|---|---:|");
    for (c, per) in &joined {
        let _ = writeln!(s, "| {} | {per:.0} |", c.name());
    }
    s += &run.caption();
    let _ = writeln!(
        s,
        "\nA busline seat is {seat} bytes for u64 keys (`busline::seat_bytes::<u64>()`); the caller's `Load` future is \
         {future} bytes (in the caller's task). What a pending request costs the whole batcher, counted, is in \
         \"bytes per pending request\"."
    );
    Ok(s)
}


/// One of the submit section's measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Measure {
    /// busline's board.
    Board(Holding),
    /// busline's board, then the future dropped.
    Cancel,
    /// The machine's floor (`floor.rs`).
    Floor(Holding),
}

impl Measure {
    /// Its row in the report.
    fn name(self) -> String {
        match self {
            Measure::Board(h) => format!("board, {} (busline)", h.name()),
            Measure::Cancel => "board + cancel, poll then drop (busline)".into(),
            Measure::Floor(h) => format!("floor, {} (one claim + the seat's stores)", h.name()),
        }
    }

    /// Its `measure` and `implementation` columns in the CSV.
    fn csv(self) -> (&'static str, &'static str) {
        match self {
            Measure::Board(Holding::InPlace) => ("board_in_place", "busline"),
            Measure::Board(Holding::PollThenMove) => ("board_poll_then_move", "busline"),
            Measure::Cancel => ("board_and_cancel", "busline"),
            Measure::Floor(Holding::InPlace) => ("board_in_place", "floor"),
            Measure::Floor(Holding::PollThenMove) => ("board_poll_then_move", "floor"),
        }
    }
}
