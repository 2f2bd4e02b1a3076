//! The database behind `get_user_info`: a `users` table behind a sqlx connection pool, SQLite
//! (an embedded file, the default) or PostgreSQL (`DATABASE_URL=postgres://...`).
//!
//! [`Database::fetch_users`] is the one query the demo is about:
//! `SELECT id, name, email FROM users WHERE id IN (...)`, one bind parameter per key. Both the
//! direct calls (car) and every batch function run it, so the database sees the same statement
//! whichever contender sends it, and counts it itself ([`Database::executed_queries`]):
//! SQLite through a statement-profile hook on every pooled connection ([`crate::sqlite_trace`]),
//! PostgreSQL through `pg_stat_statements`.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
#[cfg(feature = "postgres")]
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
#[cfg(feature = "postgres")]
use sqlx::Postgres;
use sqlx::{QueryBuilder, Row, Sqlite};

use crate::sqlite_trace;

/// The statement's text up to its parameter list: what the database-side counters match.
pub const USERS_QUERY_PREFIX: &str = "SELECT id, name, email FROM users WHERE id IN (";

/// One row of `users`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Primary key, `1..=users`.
    pub id: i64,
    /// `user {id}`.
    pub name: String,
    /// `user{id}@example.com`.
    pub email: String,
}

impl User {
    /// The row the demo's fill writes for `id` (so a caller can check what it got).
    pub fn expected(id: i64) -> User {
        User { id, name: format!("user {id}"), email: format!("user{id}@example.com") }
    }
}

/// What one [`Database::fetch_users`] call returned.
#[derive(Debug)]
pub struct Fetched {
    /// The rows found, by id.
    pub users: HashMap<i64, User>,
    /// Time spent waiting for a pooled connection.
    pub pool_wait: Duration,
}

/// The database's own count of the demo's query, and the time it says it spent on them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counted {
    /// Executions of `SELECT id, name, email FROM users WHERE id IN (...)`.
    pub queries: u64,
    /// Execution time the database attributes to them, in ms.
    pub exec_ms: f64,
}

impl std::ops::Sub for Counted {
    type Output = Counted;

    fn sub(self, rhs: Counted) -> Counted {
        Counted { queries: self.queries - rhs.queries, exec_ms: self.exec_ms - rhs.exec_ms }
    }
}

#[derive(Debug, Clone)]
enum Pool {
    Sqlite(SqlitePool),
    #[cfg(feature = "postgres")]
    Postgres(PgPool),
}

/// A pool of connections to the demo's database.
#[derive(Debug, Clone)]
pub struct Database {
    pool: Pool,
    pool_size: u32,
}

impl Database {
    /// Connects to `url` with a pool of `pool_size` connections, all opened now, and no ping
    /// before each checkout (sqlx's `test_before_acquire`, on by default, would add a round trip
    /// to every query the demo counts and times). A
    /// `sqlite:PATH` url (or a plain path) opens or creates that file (WAL, so the pool's
    /// connections read in parallel), with the query-counting hook on every connection;
    /// `postgres://...` connects to PostgreSQL and enables `pg_stat_statements` in the database
    /// (the server must preload it: `shared_preload_libraries = 'pg_stat_statements'`).
    ///
    /// # Errors
    ///
    /// If the database cannot be opened or reached, or PostgreSQL lacks `pg_stat_statements`.
    pub async fn connect(url: &str, pool_size: u32) -> Result<Database> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Self::connect_postgres(url, pool_size).await;
        }
        let path = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or(url);
        if let Some(dir) = Path::new(path).parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))
            .with_context(|| format!("bad SQLite path {path}"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal);
        let pool = SqlitePoolOptions::new()
            .max_connections(pool_size)
            .min_connections(pool_size)
            .test_before_acquire(false)
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    let mut handle = conn.lock_handle().await?;
                    sqlite_trace::install(&mut handle);
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .with_context(|| format!("opening SQLite database {path}"))?;
        let db = Database { pool: Pool::Sqlite(pool), pool_size };
        db.open_all().await?;
        Ok(db)
    }

    #[cfg(feature = "postgres")]
    async fn connect_postgres(url: &str, pool_size: u32) -> Result<Database> {
        let pool = PgPoolOptions::new()
            .max_connections(pool_size)
            .min_connections(pool_size)
            .test_before_acquire(false)
            .connect(url)
            .await
            .with_context(|| format!("connecting to {}", redact(url)))?;
        sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .execute(&pool)
            .await
            .context("enabling pg_stat_statements")?;
        sqlx::query("SELECT count(*) FROM pg_stat_statements").execute(&pool).await.context(
            "pg_stat_statements is not loaded: start PostgreSQL with \
             shared_preload_libraries = 'pg_stat_statements' (demo/pg.sh does)",
        )?;
        let db = Database { pool: Pool::Postgres(pool), pool_size };
        db.open_all().await?;
        Ok(db)
    }

    #[cfg(not(feature = "postgres"))]
    async fn connect_postgres(url: &str, _pool_size: u32) -> Result<Database> {
        bail!(
            "{} is a PostgreSQL URL, but this build has no PostgreSQL driver: build with \
             `--features postgres` (`make demo-pg` and demo/pg.sh do)",
            redact(url)
        )
    }

    /// Holds every connection of the pool at once, so all are open (and hooked) before any
    /// measurement.
    async fn open_all(&self) -> Result<()> {
        match &self.pool {
            Pool::Sqlite(p) => {
                let mut held = Vec::new();
                for _ in 0..self.pool_size {
                    held.push(p.acquire().await?);
                }
            }
            #[cfg(feature = "postgres")]
            Pool::Postgres(p) => {
                let mut held = Vec::new();
                for _ in 0..self.pool_size {
                    held.push(p.acquire().await?);
                }
            }
        }
        Ok(())
    }

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "sqlite",
            #[cfg(feature = "postgres")]
            Pool::Postgres(_) => "postgres",
        }
    }

    /// Connections in the pool.
    pub fn pool_size(&self) -> u32 {
        self.pool_size
    }

    /// The database server's version string.
    ///
    /// # Errors
    ///
    /// If the query fails.
    pub async fn version(&self) -> Result<String> {
        Ok(match &self.pool {
            Pool::Sqlite(p) => format!("SQLite {}", sqlx::query_scalar::<_, String>("SELECT sqlite_version()").fetch_one(p).await?),
            #[cfg(feature = "postgres")]
            Pool::Postgres(p) => sqlx::query_scalar::<_, String>("SELECT version()").fetch_one(p).await?,
        })
    }

    /// Creates `users` with ids `1..=count` unless it already holds exactly those rows
    /// (`user {id}`, `user{id}@example.com`). Returns whether it (re)filled the table.
    ///
    /// # Errors
    ///
    /// If a statement fails.
    pub async fn ensure_users(&self, count: u32) -> Result<bool> {
        // In SQLite only `INTEGER PRIMARY KEY` makes the id the rowid (one B-tree, no separate index).
        const CREATE_SQLITE: &str = "CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL)";
        #[cfg(feature = "postgres")]
        const CREATE_PG: &str = "CREATE TABLE IF NOT EXISTS users (id BIGINT PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL)";
        const COUNT: &str = "SELECT count(*), coalesce(min(id), 0), coalesce(max(id), 0) FROM users";
        // One statement generates the rows inside the database (a recursive CTE in SQLite,
        // generate_series in PostgreSQL): 100,000 rows take well under a second.
        const FILL_SQLITE: &str = "WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < ?1) \
             INSERT INTO users (id, name, email) SELECT i, 'user ' || i, 'user' || i || '@example.com' FROM seq";
        #[cfg(feature = "postgres")]
        const FILL_PG: &str = "INSERT INTO users (id, name, email) \
             SELECT i, 'user ' || i, 'user' || i || '@example.com' FROM generate_series(1::bigint, $1::bigint) AS i";
        let want = (i64::from(count), 1i64.min(i64::from(count)), i64::from(count));
        match &self.pool {
            Pool::Sqlite(p) => {
                sqlx::query(CREATE_SQLITE).execute(p).await?;
                let row = sqlx::query(COUNT).fetch_one(p).await?;
                if (row.try_get::<i64, _>(0)?, row.try_get::<i64, _>(1)?, row.try_get::<i64, _>(2)?) == want {
                    return Ok(false);
                }
                let mut tx = p.begin().await?;
                sqlx::query("DELETE FROM users").execute(&mut *tx).await?;
                sqlx::query(FILL_SQLITE).bind(i64::from(count)).execute(&mut *tx).await?;
                tx.commit().await?;
                sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(p).await?;
                sqlx::query("ANALYZE").execute(p).await?;
            }
            #[cfg(feature = "postgres")]
            Pool::Postgres(p) => {
                sqlx::query(CREATE_PG).execute(p).await?;
                let row = sqlx::query(COUNT).fetch_one(p).await?;
                if (row.try_get::<i64, _>(0)?, row.try_get::<i64, _>(1)?, row.try_get::<i64, _>(2)?) == want {
                    return Ok(false);
                }
                let mut tx = p.begin().await?;
                sqlx::query("TRUNCATE users").execute(&mut *tx).await?;
                sqlx::query(FILL_PG).bind(i64::from(count)).execute(&mut *tx).await?;
                tx.commit().await?;
                sqlx::raw_sql("VACUUM ANALYZE users").execute(p).await?;
            }
        }
        Ok(true)
    }

    /// Runs `SELECT id, name, email FROM users WHERE id IN (...)` for `ids` (one bind
    /// parameter each; at most 1,024 in this demo) on a pooled connection. This is the whole of
    /// `get_user_info` for a direct call, and the batch function for busline.
    ///
    /// # Errors
    ///
    /// Whatever sqlx reports: no connection, a failed statement. `ids` must not be empty.
    pub async fn fetch_users(&self, ids: &[i64]) -> Result<Fetched, sqlx::Error> {
        if ids.is_empty() {
            return Err(sqlx::Error::Protocol("fetch_users: no ids".into()));
        }
        let asked = Instant::now();
        let mut users = HashMap::with_capacity(ids.len());
        let pool_wait;
        match &self.pool {
            Pool::Sqlite(p) => {
                let mut conn = p.acquire().await?;
                pool_wait = asked.elapsed();
                let mut q = in_list::<Sqlite>(ids);
                for row in q.build().fetch_all(&mut *conn).await? {
                    let u = User { id: row.try_get(0)?, name: row.try_get(1)?, email: row.try_get(2)? };
                    users.insert(u.id, u);
                }
            }
            #[cfg(feature = "postgres")]
            Pool::Postgres(p) => {
                let mut conn = p.acquire().await?;
                pool_wait = asked.elapsed();
                let mut q = in_list::<Postgres>(ids);
                for row in q.build().fetch_all(&mut *conn).await? {
                    let u = User { id: row.try_get(0)?, name: row.try_get(1)?, email: row.try_get(2)? };
                    users.insert(u.id, u);
                }
            }
        }
        Ok(Fetched { users, pool_wait })
    }

    /// How many times the database says it executed the demo's query since it started
    /// counting, and the execution time it attributes to them. Take the difference of two
    /// readings around a run.
    ///
    /// # Errors
    ///
    /// If PostgreSQL's `pg_stat_statements` cannot be read.
    pub async fn executed_queries(&self) -> Result<Counted> {
        match &self.pool {
            Pool::Sqlite(_) => {
                let c = sqlite_trace::counted();
                Ok(Counted { queries: c.statements, exec_ms: c.exec_ns as f64 / 1e6 })
            }
            #[cfg(feature = "postgres")]
            Pool::Postgres(p) => {
                // Parameters keep the statement text ($1, $2, ...); each list length is its own
                // entry, so sum over the prefix.
                let row = sqlx::query(
                    "SELECT coalesce(sum(calls), 0)::bigint, coalesce(sum(total_exec_time), 0)::float8 \
                     FROM pg_stat_statements WHERE query LIKE $1 AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
                )
                .bind(format!("{USERS_QUERY_PREFIX}%"))
                .fetch_one(p)
                .await
                .context("reading pg_stat_statements")?;
                let queries: i64 = row.try_get(0)?;
                if queries < 0 {
                    bail!("pg_stat_statements reported {queries} calls");
                }
                Ok(Counted { queries: queries as u64, exec_ms: row.try_get(1)? })
            }
        }
    }

    /// Closes the pool, waiting for its connections to close.
    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(p) => p.close().await,
            #[cfg(feature = "postgres")]
            Pool::Postgres(p) => p.close().await,
        }
    }
}

fn in_list<DB>(ids: &[i64]) -> QueryBuilder<'static, DB>
where
    DB: sqlx::Database,
    <DB as sqlx::Database>::Arguments<'static>: Default,
    i64: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    let mut q = QueryBuilder::<DB>::new(USERS_QUERY_PREFIX);
    let mut list = q.separated(", ");
    for &id in ids {
        list.push_bind(id);
    }
    list.push_unseparated(")");
    q
}

/// `url` without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let cred = &url[s + 3..at];
            match cred.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_only_the_password() {
        assert_eq!(redact("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite:x.db"), "sqlite:x.db");
    }
}
