//! SQLite's own count of the demo's query: a `sqlite3_trace_v2` profile hook on every pooled
//! connection.
//!
//! SQLite calls an `SQLITE_TRACE_PROFILE` callback each time a prepared statement finishes
//! running, with the statement and the nanoseconds it ran (<https://sqlite.org/c3ref/trace_v2.html>).
//! The callback counts the statements whose SQL begins with
//! [`USERS_QUERY_PREFIX`](crate::db::USERS_QUERY_PREFIX) and adds up their time. The count is
//! the database engine's, not ours: a statement the batcher or a direct call meant to send but
//! that never ran is not in it, and one that ran twice is counted twice.
//!
//! sqlx gives the raw `sqlite3*` only while a [`LockedSqliteHandle`] guarantees that its worker
//! thread makes no call on that connection; the hook is installed then, once per connection
//! (the pool's `after_connect`). The callback itself runs later on that worker thread, inside
//! `sqlite3_step`/`sqlite3_reset`, and touches only the atomics below.
//!
//! This is the crate's only `unsafe`: two FFI calls, each with its `SAFETY` argument.
#![allow(unsafe_code, reason = "FFI to libsqlite3: sqlx exposes no statement trace hook of its own")]

use std::ffi::{CStr, c_int, c_uint, c_void};
use std::sync::atomic::{AtomicU64, Ordering};

use libsqlite3_sys::{SQLITE_TRACE_PROFILE, sqlite3_sql, sqlite3_stmt, sqlite3_trace_v2};
use sqlx::sqlite::LockedSqliteHandle;

use crate::db::USERS_QUERY_PREFIX;

/// Executions of the demo's query, across every hooked connection of the process.
static STATEMENTS: AtomicU64 = AtomicU64::new(0);
/// Their total run time as SQLite measured it, in ns.
static EXEC_NS: AtomicU64 = AtomicU64::new(0);

/// A reading of the process-wide counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    /// Executions of the demo's query.
    pub statements: u64,
    /// Their run time, ns, as SQLite measured it.
    pub exec_ns: u64,
}

/// The counters now (all hooked connections of this process together).
pub fn counted() -> Reading {
    // Relaxed: independent counters read between runs, after every query's answer has been
    // awaited (the await orders the callback's increments before this read).
    Reading { statements: STATEMENTS.load(Ordering::Relaxed), exec_ns: EXEC_NS.load(Ordering::Relaxed) }
}

/// Installs the profile hook on the connection `handle` locks.
pub fn install(handle: &mut LockedSqliteHandle<'_>) {
    let db = handle.as_raw_handle();
    // SAFETY: `db` is a live connection that `handle` keeps locked, so sqlx's worker thread
    // makes no concurrent call on it. `on_profile` matches `sqlite3_trace_v2`'s callback type
    // and is a plain function that lives as long as the process; the context pointer is unused
    // (null). The hook stays with the connection until it closes.
    let rc = unsafe { sqlite3_trace_v2(db.as_ptr(), SQLITE_TRACE_PROFILE as c_uint, Some(on_profile), std::ptr::null_mut()) };
    debug_assert_eq!(rc, 0, "sqlite3_trace_v2 failed");
}

/// SQLite's profile callback: `stmt` is the `sqlite3_stmt*` that finished, `x` points to its run
/// time in ns (an `i64`).
unsafe extern "C" fn on_profile(event: c_uint, _ctx: *mut c_void, stmt: *mut c_void, x: *mut c_void) -> c_int {
    if event != SQLITE_TRACE_PROFILE as c_uint || stmt.is_null() {
        return 0;
    }
    // SAFETY: for SQLITE_TRACE_PROFILE, SQLite passes the finished statement as `stmt` and a
    // pointer to an `sqlite3_int64` of nanoseconds as `x`, both valid for the callback's
    // duration. `sqlite3_sql` returns that statement's NUL-terminated UTF-8 text (owned by the
    // statement, alive as long as `stmt`), or null.
    let (sql, ns) = unsafe {
        let sql = sqlite3_sql(stmt.cast::<sqlite3_stmt>());
        let ns = if x.is_null() { 0 } else { *x.cast::<i64>() };
        (if sql.is_null() { None } else { Some(CStr::from_ptr(sql)) }, ns)
    };
    if sql.is_some_and(|s| s.to_bytes().starts_with(USERS_QUERY_PREFIX.as_bytes())) {
        STATEMENTS.fetch_add(1, Ordering::Relaxed);
        EXEC_NS.fetch_add(u64::try_from(ns).unwrap_or(0), Ordering::Relaxed);
    }
    0
}
