//! The PostgreSQL path, small (see `common::exercise`), against `DATABASE_URL`. Compiled only
//! with the `postgres` feature and ignored even then by a plain `cargo test`, which has no
//! server: `demo/pg.sh test` starts a throwaway PostgreSQL with `pg_stat_statements` and runs it
//! with `--features postgres -- --ignored` (CI does, through `.ci/run`).
#![cfg(feature = "postgres")]

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a PostgreSQL server in DATABASE_URL: run `bash demo/pg.sh test`"]
async fn postgres_end_to_end() {
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL=postgres://... (demo/pg.sh sets it)");
    assert!(url.starts_with("postgres"), "DATABASE_URL is not a PostgreSQL URL");
    let dir = std::env::temp_dir().join(format!("busline-demo-pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    common::exercise(&url, &dir).await;
    std::fs::remove_dir_all(&dir).unwrap();
}
