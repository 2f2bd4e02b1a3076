//! The application's CPU per request: what a request costs the process's cores besides its
//! query, measured on bursts of the article's shape.
//!
//! The calibration's closed loop (`src/calibrate.rs`) times queries with only their own
//! callers running: a few tasks, each sending query after query. A replay's requests are
//! tasks spawned one per request by an injector thread, as a server spawns them; each is
//! polled, calls the batcher (or the pool), is woken when its answer is ready and runs again.
//! Under the article's spike (200 requests within 3 ms) that work competes for the same cores
//! as SQLite, which runs in the process: queries in a burst then queue for a core, which the
//! closed loop never shows. So each calibration round also sends bursts of the article's shape,
//! [`BURST`] requests within [`WIDTH`] (each spawned at its instant from a blocking thread, as
//! the replays' injector spawns them), and Linux's scheduler statistics (`src/sched.rs`) give the CPU the whole process
//! used from the first spawn to the last answer. Set against the CPU of the queries the burst
//! ran (each query's CPU as the closed loop used it, [`QueryCpu`]), the rest, per request, is
//! the application's CPU per request: `request_us`, which the simulator's `[cpu]` puts on the
//! database's `servers` (on SQLite they are the process's cores) as work of its own at each
//! arrival.
//!
//! Two bursts a round: direct calls (each request its own query; `direct_request_us`, what car
//! costs) and natural batching (`request_us`, every batcher: the same task per request, plus
//! the batcher's boarding, waking and answer; its queries' ids come from the burst itself).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use busline::{Batcher, Policy};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::db::Database;

/// Requests per burst: the article's spike.
pub const BURST: usize = 200;

/// The burst's width: the article's spike, 200 requests within 3 ms (`src/trace.rs`).
pub const WIDTH: Duration = Duration::from_millis(3);

/// One burst as measured.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Burst {
    /// Requests sent.
    pub requests: u64,
    /// Queries they ran (our count: each a `fetch_users` call).
    pub queries: u64,
    /// Ids over all those queries.
    pub keys: u64,
    /// The process's CPU from the first spawn to the last answer, ms.
    pub cpu_ms: f64,
    /// First spawn to last answer, ms.
    pub span_ms: f64,
}

/// The CPU of one closed-loop query, `base + per_key × ids`, µs: the process's CPU over a
/// closed-loop cell divided by its queries (one client, so no other request runs), fitted over
/// the single-client cells.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct QueryCpu {
    /// CPU per query, µs.
    pub base_us: f64,
    /// CPU per id, µs.
    pub per_key_us: f64,
}

impl QueryCpu {
    /// The CPU a burst's queries used as the closed loop uses it, ms.
    pub fn of(&self, b: &Burst) -> f64 {
        (self.base_us * b.queries as f64 + self.per_key_us * b.keys as f64) / 1e3
    }

    /// The application's CPU per request of burst `b`, µs: its CPU less its queries', per
    /// request (at least 0).
    pub fn request_us(&self, b: &Burst) -> f64 {
        ((b.cpu_ms - self.of(b)) * 1e3 / b.requests.max(1) as f64).max(0.0)
    }
}

/// Sends [`BURST`] requests for random ids within [`WIDTH`] (uniformly, each spawned as its own
/// task at its instant by a blocking thread, as the replays' injector does), directly (`batched` false: each its own
/// `fetch_users`) or through a natural batcher with `max_in_flight` = the pool, and measures
/// the process's CPU until the last answer. `None` where the scheduler's statistics cannot be
/// read.
///
/// # Errors
///
/// If a query fails or a task panics.
pub async fn burst(db: &Database, users: u32, batched: bool, seed: u64) -> Result<Option<Burst>> {
    let queries = Arc::new(AtomicU64::new(0));
    let keys = Arc::new(AtomicU64::new(0));
    let batcher = if batched {
        let (pool, queries, keys) = (db.clone(), Arc::clone(&queries), Arc::clone(&keys));
        Some(
            Batcher::builder(move |ids: Vec<i64>| {
                let (db, queries, keys) = (pool.clone(), Arc::clone(&queries), Arc::clone(&keys));
                async move {
                    queries.fetch_add(1, Ordering::Relaxed);
                    keys.fetch_add(ids.len() as u64, Ordering::Relaxed);
                    Ok::<_, sqlx::Error>(db.fetch_users(&ids).await?.users)
                }
            })
            .policy(Policy::natural())
            .max_batch_size(1024)
            .max_in_flight(db.pool_size() as usize)
            .build()
            .map_err(|e| anyhow!("batcher: {e}"))?,
        )
    } else {
        None
    };
    let mut rng = SmallRng::seed_from_u64(seed);
    let ids: Vec<i64> = (0..BURST).map(|_| rng.random_range(1..=i64::from(users.max(1)))).collect();
    let mut offsets: Vec<Duration> = (0..BURST).map(|_| WIDTH.mul_f64(rng.random::<f64>())).collect();
    offsets.sort_unstable();
    // A few requests first, unmeasured, so the connections and the code paths are warm.
    for &id in &ids[..8] {
        call(db, batcher.as_ref(), &queries, &keys, id).await?;
    }
    queries.store(0, Ordering::Relaxed);
    keys.store(0, Ordering::Relaxed);
    let before = crate::sched::snapshot();
    let start = Instant::now();
    let tasks = {
        let (db, batcher, queries, keys) = (db.clone(), batcher.clone(), Arc::clone(&queries), Arc::clone(&keys));
        crate::replay::inject(start, offsets, None, move |i| {
            let (db, batcher, queries, keys, id) = (db.clone(), batcher.clone(), Arc::clone(&queries), Arc::clone(&keys), ids[i]);
            async move { call(&db, batcher.as_ref(), &queries, &keys, id).await }
        })
        .await?
    };
    for t in tasks {
        t.await.context("a burst request panicked")??;
    }
    let span_ms = start.elapsed().as_secs_f64() * 1e3;
    let usage = crate::sched::usage_since(before);
    if let Some(b) = batcher {
        b.shutdown().await;
    }
    Ok(usage.map(|u| Burst {
        requests: BURST as u64,
        queries: queries.load(Ordering::Relaxed),
        keys: keys.load(Ordering::Relaxed),
        cpu_ms: u.cpu_ms,
        span_ms,
    }))
}

/// One request of a burst: the user `id`, checked.
async fn call(db: &Database, batcher: Option<&Batcher<i64, crate::db::User, sqlx::Error>>, queries: &AtomicU64, keys: &AtomicU64, id: i64) -> Result<()> {
    let user = match batcher {
        Some(b) => b.load(id).await.map_err(|e| anyhow!("burst request {id}: {e}"))?,
        None => {
            queries.fetch_add(1, Ordering::Relaxed);
            keys.fetch_add(1, Ordering::Relaxed);
            db.fetch_users(&[id]).await?.users.remove(&id)
        }
    };
    anyhow::ensure!(user == Some(crate::db::User::expected(id)), "burst request {id}: wrong answer");
    Ok(())
}
