//! `GET /v1/explain?host=H[&region=R]` (SPEC §4): what this node would do now for a request to a
//! host: every candidate of its app with its tier, RTT, load and the load's age, the order the
//! app's strategy chooses (the same pick the proxy runs), and a reason for each place.

use serde_json::{json, Value};

use crate::balance::Hints;
use crate::config::Strategy;
use crate::pick::candidates::{self, Ask, Candidate, Target};
use crate::routes::normalize_host;
use crate::state::NodeState;

/// Where a candidate stands for a new request.
fn tier(node: &NodeState, c: &Candidate, now_ms: u64) -> &'static str {
    if !c.healthy {
        "unhealthy"
    } else if node.penalties.active(c.target.id(), now_ms) {
        "penalised"
    } else if c.load >= c.hard {
        "full"
    } else if c.load >= c.soft {
        "below_hard"
    } else {
        "below_soft"
    }
}

fn reason(
    strategy: Strategy,
    hinted: bool,
    tier: &str,
    place: Option<usize>,
    budget: usize,
) -> String {
    match place {
        Some(0) if hinted => "first: the request's routing hints name it or its region".into(),
        Some(0) => match (strategy, tier) {
            (Strategy::Closest, "below_soft") => {
                "first: the closest instance below its soft limit".into()
            }
            (Strategy::Closest, _) => {
                "first: the closest below its hard limit (none is below its soft limit)".into()
            }
            (Strategy::Leastload, _) => {
                "first: among the least loaded (load / soft limit), the closer of two sampled"
                    .into()
            }
        },
        Some(k) => format!(
            "try {}: if the ones before it are full or unreachable",
            k + 1
        ),
        None => match tier {
            "full" => "not tried: at its hard limit".into(),
            "unhealthy" => {
                "not tried: failing its health checks, unreachable or being removed".into()
            }
            "penalised" => "not tried: refused a connection or answered full moments ago".into(),
            _ => format!("not tried: farther or busier than the first {budget}"),
        },
    }
}

/// The explanation as SPEC §4 shapes it; `Err` is a message for a 404 (no app for the host).
pub fn explain(node: &NodeState, host: &str, region: Option<&str>) -> Result<Value, String> {
    let name = normalize_host(host).ok_or_else(|| format!("invalid host {host:?}"))?;
    let routes = node.routes.load();
    let app = routes
        .lookup(&name)
        .cloned()
        .ok_or_else(|| format!("no app for host {name:?}"))?;
    drop(routes);
    let hints = Hints {
        prefer_regions: region
            .map(|r| vec![r.to_ascii_lowercase()])
            .unwrap_or_default(),
        ..Hints::default()
    };
    let now_ms = node.now_ms();
    let (local, snap) = (node.local.load(), node.cluster.load());
    let src = node.sources(&app.name, &local, &snap, now_ms);
    let ask = Ask::of(&app);
    let budget = 1 + app.retries as usize;
    let every = candidates::every(&src, ask);
    let picked = candidates::pick(&src, ask, &hints, budget, &mut rand::rng());
    let order: Vec<String> = match &picked {
        Ok(p) => p
            .order
            .iter()
            .map(|&i| p.candidates[i].target.id().to_string())
            .collect(),
        Err(_) => Vec::new(),
    };
    let since_publish = snap.at.elapsed();
    let list: Vec<Value> = every
        .iter()
        .map(|c| {
            let id = c.target.id();
            let (owner, age_ms) = match &c.target {
                Target::Local(_) => (node.name.to_string(), 0),
                Target::Remote(r) => {
                    let age = snap
                        .view
                        .instances
                        .iter()
                        .find(|i| i.load.id == *id)
                        .map_or(0, |i| {
                            (snap.view.built_at.saturating_sub(i.received_at) + since_publish)
                                .as_millis() as u64
                        });
                    (r.node.to_string(), age)
                }
            };
            let t = tier(node, c, now_ms);
            let place = order.iter().position(|o| **o == **id);
            // The hint explains the first place only when the first is in the region hinted.
            let hinted = region.is_some_and(|r| r.eq_ignore_ascii_case(&c.region));
            json!({
                "id": &**id,
                "node": owner,
                "region": &*c.region,
                "tier": t,
                "rtt_ms": (c.rtt_ms * 10.0).round() / 10.0,
                "load": c.load,
                "load_age_ms": age_ms,
                "reason": reason(app.strategy, hinted, t, place, budget),
            })
        })
        .collect();
    let mut out = json!({
        "app": &*app.name,
        "strategy": app.strategy.as_str(),
        "candidates": list,
        "order": order,
    });
    if let Err(e) = picked {
        out["empty"] = json!(format!("{e:?}"));
    }
    Ok(out)
}
