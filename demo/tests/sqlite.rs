//! The SQLite path, small: a few thousand users in a scratch file, a 0.3 s trace with the
//! article's spike, every contender (see `common::exercise`).

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_end_to_end() {
    let dir = std::env::temp_dir().join(format!("busline-demo-sqlite-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    common::exercise(&format!("sqlite:{}", dir.join("users.db").display()), &dir).await;
    std::fs::remove_dir_all(&dir).unwrap();
}
