//! `get_user_info(id)` in an axum service, through a busline batcher, with its metrics exported
//! as Prometheus text. See examples/README.md.
//!
//! Each HTTP request calls `users.load(id)`, the caller's API unchanged; under a burst, the
//! batcher turns the concurrent requests into a few `WHERE id IN (...)` calls (simulated here by
//! a function that costs 5 ms + 5 µs per key). tower's `load_shed` and `timeout` layers sit
//! around the batcher as around any service: its readiness reflects its capacity.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use busline::{Batcher, Policy};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower05::{Service, ServiceBuilder, ServiceExt};

#[derive(Clone, Debug)]
struct User {
    id: u64,
    name: String,
}

type Users = Batcher<u64, User, std::io::Error>;

/// The backend: one query for a whole batch of ids, as `SELECT ... WHERE id IN (...)` would be,
/// costing 5 ms + 5 µs per key (a round trip to a busy database).
async fn fetch_users(ids: Vec<u64>) -> Result<HashMap<u64, User>, std::io::Error> {
    tokio::time::sleep(Duration::from_micros(5_000 + 5 * ids.len() as u64)).await;
    Ok(ids.into_iter().filter(|&id| id < 100_000).map(|id| (id, User { id, name: format!("user {id}") })).collect())
}

#[derive(Clone)]
struct App {
    users: Users,
    prometheus: PrometheusHandle,
}

async fn get_user(State(app): State<App>, Path(id): Path<u64>) -> Result<serde_like::UserJson, StatusCode> {
    // The batcher as a tower service: shed load instead of queueing past capacity, and bound
    // each request's wait.
    let mut service = ServiceBuilder::new().load_shed().timeout(Duration::from_secs(1)).service(app.users.clone());
    let ready = service.ready().await.map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    match ready.call(id).await {
        Ok(Some(user)) => Ok(serde_like::UserJson::from(&user)),
        Ok(None) => Err(StatusCode::NOT_FOUND),
        Err(e) if e.is::<tower05::load_shed::error::Overloaded>() => Err(StatusCode::SERVICE_UNAVAILABLE),
        Err(e) if e.is::<tower05::timeout::error::Elapsed>() => Err(StatusCode::GATEWAY_TIMEOUT),
        Err(_) => Err(StatusCode::INTERNAL_SERVER_ERROR),
    }
}

async fn metrics(State(app): State<App>) -> String {
    app.prometheus.render()
}

/// Just enough JSON for the example without a serde dependency.
mod serde_like {
    use axum::response::{IntoResponse, Response};

    pub(crate) struct UserJson(String);

    impl From<&super::User> for UserJson {
        fn from(user: &super::User) -> Self {
            UserJson(format!(r#"{{"id":{},"name":"{}"}}"#, user.id, user.name))
        }
    }

    impl IntoResponse for UserJson {
        fn into_response(self) -> Response {
            ([("content-type", "application/json")], self.0).into_response()
        }
    }
}

/// `GET path` over a fresh connection; returns the status and the body.
async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Install the recorder before building batchers: they register their series at build.
    let prometheus = PrometheusBuilder::new()
        .set_buckets(&[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0])?
        .install_recorder()?;
    let users: Users = Batcher::builder(fetch_users)
        .name("users")
        .policy(Policy::Natural)
        .batch_timeout(Duration::from_secs(2))
        .build()?;
    let app = App { users: users.clone(), prometheus };
    let router = Router::new().route("/users/{id}", get(get_user)).route("/metrics", get(metrics)).with_state(app);

    let serve_at = std::env::args().skip_while(|a| a != "--serve").nth(1);
    let listener = tokio::net::TcpListener::bind(serve_at.as_deref().unwrap_or("127.0.0.1:0")).await?;
    let addr = listener.local_addr()?;
    if serve_at.is_some() {
        println!("serving on http://{addr}/users/{{id}} and http://{addr}/metrics");
        axum::serve(listener, router).await?;
        return Ok(());
    }

    // Self-test: a burst of 200 concurrent requests, as in the article.
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let requests = (0..200u64).map(|i| tokio::spawn(async move { (i, http_get(addr, &format!("/users/{i}")).await) }));
    for request in requests {
        let (i, answer) = request.await?;
        let (status, body) = answer?;
        assert_eq!(status, 200, "request {i}: {body}");
        assert_eq!(body, format!(r#"{{"id":{i},"name":"user {i}"}}"#));
    }
    let (status, _) = http_get(addr, "/users/123456").await?;
    assert_eq!(status, 404);
    let stats = users.stats();
    println!(
        "200 requests -> {} batch calls ({:.1} requests per call)",
        stats.batches,
        stats.requests as f64 / stats.batches.max(1) as f64
    );
    let (status, text) = http_get(addr, "/metrics").await?;
    assert_eq!(status, 200);
    assert!(text.contains("busline_requests_total{batcher=\"users\"}"), "{text}");
    println!("--- /metrics ---\n{text}");
    server.abort();
    Ok(())
}
