//! How fast the pool turns its connections over while direct calls queue for one.
//!
//! Under the article's spike direct calls arrive faster than single-id queries complete, so a
//! queue of callers forms at the pool, and their latency is set by how often a connection passes
//! from one caller to the next: the pool's *cycle*, `pool` × the spell's length / the
//! connections handed out in it. The simulator's cycle is the query's service time alone (a
//! place is free the instant its query ends). The real one also holds the hand-back: sqlx
//! returns a released connection from a task it spawns, which first pings it (a round trip to
//! the connection's worker thread, unconditional in sqlx 0.8's `return_to_pool`), and the
//! connection then goes to the next waiting caller, whose task a runtime worker must poll
//! beside the spike's freshly spawned ones. The closed loop the cost model is fitted on has
//! `pool` clients each acquiring again at once, so its cell with `pool` clients and one id is
//! a cycle too, with its hand-backs but without a queue of tasks: the three set side by side
//! say where a direct call's wait under the spike comes from.
//!
//! A *spell* is the union of the waits `[call, connection]` of the requests that waited at
//! least [`WAITED_NS`], kept when it handed out at least [`SPELL_MIN`] connections (a queue,
//! not one slow acquire).

use crate::replay::Measured;

/// A wait for a connection this long is a wait behind other callers (an acquire from an idle
/// pool takes a few µs).
pub const WAITED_NS: u64 = 50_000;

/// Connections a spell must hand out to count: a queue, not one slow acquire.
pub const SPELL_MIN: usize = 20;

/// The pool's turnover over one replay's spells.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Turnover {
    /// Spells found.
    pub spells: usize,
    /// Their total length, ms.
    pub busy_ms: f64,
    /// Connections handed out within them.
    pub handed_out: usize,
    /// `pool` × `busy_ms` / `handed_out`, µs: how long each connection took from one caller's
    /// acquisition to the next.
    pub cycle_us: f64,
    /// The mean *query* stage (holding the connection to `fetch_users` returning) of those
    /// acquisitions, µs.
    pub query_us: f64,
}

impl Turnover {
    /// The part of the cycle outside the query: the hand-back and the next caller's pickup, µs.
    pub fn gap_us(&self) -> f64 {
        self.cycle_us - self.query_us
    }
}

/// The turnover of a direct-call replay (`None` for a batcher's replay, when no spell formed,
/// or when the replay has no stages).
pub fn of(m: &Measured, pool: usize) -> Option<Turnover> {
    if m.driver.is_some() {
        return None;
    }
    // (call, acquisition, query) of every request, ns from the replay's start (a direct call's
    // seal is its call).
    let mut reqs: Vec<(u64, u64, u64)> = m
        .rows
        .iter()
        .filter_map(|r| r.stages.map(|[seal, conn, query, _]| (r.at_ns + seal, r.at_ns + seal + conn, query)))
        .collect();
    if reqs.is_empty() {
        return None;
    }
    reqs.sort_unstable_by_key(|&(_, acquired, _)| acquired);
    let mut waits: Vec<(u64, u64)> =
        reqs.iter().filter(|(at, acquired, _)| acquired - at >= WAITED_NS).map(|&(at, acquired, _)| (at, acquired)).collect();
    waits.sort_unstable();
    let mut spells: Vec<(u64, u64)> = Vec::new();
    for (from, to) in waits {
        match spells.last_mut() {
            Some(last) if from <= last.1 => last.1 = last.1.max(to),
            _ => spells.push((from, to)),
        }
    }
    let (mut n, mut busy_ns, mut handed_out, mut query_ns) = (0, 0u64, 0usize, 0u64);
    for (from, to) in spells {
        let inside: Vec<u64> = reqs.iter().filter(|(_, a, _)| (from..=to).contains(a)).map(|&(_, _, q)| q).collect();
        if inside.len() < SPELL_MIN {
            continue;
        }
        n += 1;
        busy_ns += to - from;
        handed_out += inside.len();
        query_ns += inside.iter().sum::<u64>();
    }
    (handed_out > 0).then(|| Turnover {
        spells: n,
        busy_ms: busy_ns as f64 / 1e6,
        handed_out,
        cycle_us: pool as f64 * busy_ns as f64 / 1e3 / handed_out as f64,
        query_us: query_ns as f64 / 1e3 / handed_out as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::RequestRow;

    fn direct(at_ns: u64, conn: u64, query: u64) -> RequestRow {
        RequestRow { at_ns, latency_ns: conn + query, stages: Some([0, conn, query, 0]) }
    }

    #[test]
    fn a_queue_served_by_one_connection_every_100_us_has_a_cycle_of_pool_times_that() {
        // 40 callers at once; a connection handed out every 100 µs from 100 µs on; each query 60 µs.
        let mut rows: Vec<RequestRow> = (1..=40).map(|i| direct(0, i * 100_000, 60_000)).collect();
        // A caller that did not wait is no part of the spell.
        rows.push(direct(10_000_000, 2_000, 60_000));
        let m = Measured::for_test(rows);
        let t = of(&m, 4).expect("a spell");
        assert_eq!(t.spells, 1);
        assert_eq!(t.handed_out, 40);
        assert!((t.busy_ms - 4.0).abs() < 1e-9, "{t:?}");
        assert!((t.cycle_us - 400.0).abs() < 1e-9, "{t:?}");
        assert!((t.query_us - 60.0).abs() < 1e-9 && (t.gap_us() - 340.0).abs() < 1e-9, "{t:?}");
    }

    #[test]
    fn a_few_slow_acquires_are_no_spell() {
        let rows: Vec<RequestRow> = (0..10).map(|i| direct(i * 1_000_000, 80_000, 50_000)).collect();
        assert_eq!(of(&Measured::for_test(rows), 4), None);
    }
}
