//! Cluster helpers over the admin API: members, instances, and polling with a deadline.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::http::get_json;
use super::Node;

/// `/v1/members` of `n`.
pub async fn members(n: &Node) -> Vec<serde_json::Value> {
    get_json(n.admin, "/v1/members").await["members"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Names of the members `n` sees alive.
pub async fn alive(n: &Node) -> Vec<String> {
    members(n)
        .await
        .iter()
        .filter(|m| m["state"] == "alive")
        .map(|m| m["node"].as_str().unwrap().to_string())
        .collect()
}

/// Instance ids `n` routes to.
pub async fn instance_ids(n: &Node) -> Vec<String> {
    get_json(n.admin, "/v1/instances").await["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect()
}

/// Polls `f` every 20 ms until it is true or `limit` passes; returns the time it took.
pub async fn within<F, Fut>(limit: Duration, mut f: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if f().await {
            return Some(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// The sum of `petrel_mesh_dropped_total` at `admin`, for `reason` (any if empty).
pub async fn dropped_at(admin: SocketAddr, reason: &str) -> f64 {
    let metrics = super::http::get(admin, "localhost", "/metrics")
        .await
        .text();
    metrics
        .lines()
        .filter(|l| l.starts_with("petrel_mesh_dropped_total{"))
        .filter(|l| reason.is_empty() || l.contains(&format!("reason=\"{reason}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
