//! `petrel status`: this node's view as aligned tables, read from its admin API; and the small
//! admin client `petrel drain` and `petrel reload` use.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::Value;

async fn fetch(admin: SocketAddr, token: Option<&str>, path: &str) -> Result<Value> {
    call(admin, token, http::Method::GET, path).await
}

/// Sends `method path` to the admin API at `admin` (with the bearer `token`, if any) and returns
/// its JSON answer; a non-2xx answer, an unreachable node or 5 s of silence is an error.
pub async fn call(
    admin: SocketAddr,
    token: Option<&str>,
    method: http::Method,
    path: &str,
) -> Result<Value> {
    let work = async {
        let stream = tokio::net::TcpStream::connect(admin)
            .await
            .with_context(|| {
                format!("cannot reach the admin API at {admin} (is the node running? use --admin)")
            })?;
        let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let mut req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", admin.to_string());
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req.body(Empty::<Bytes>::new())?;
        let resp = s.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            return Err(anyhow!(
                "{path}: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        Ok(serde_json::from_slice(&body)?)
    };
    tokio::time::timeout(Duration::from_secs(5), work)
        .await
        .map_err(|_| anyhow!("the admin API at {admin} did not answer in 5 s"))?
}

/// Renders rows as columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = width[i]))
            .collect();
        padded.join("  ").trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r.clone()));
    }
    out
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(x) => x.clone(),
        Value::Number(n) => n.as_f64().map_or_else(
            || n.to_string(),
            |f| {
                if f.fract() == 0.0 {
                    format!("{f:.0}")
                } else {
                    format!("{f:.1}")
                }
            },
        ),
        other => other.to_string(),
    }
}

/// Fetches and renders the node's status, members and instances.
pub async fn render(admin: SocketAddr, token: Option<&str>) -> Result<String> {
    let st = fetch(admin, token, "/v1/status").await?;
    let members = fetch(admin, token, "/v1/members").await?;
    let instances = fetch(admin, token, "/v1/instances").await?;
    let mut out = format!(
        "node {} (region {}), version {}, up {} s{}\n\n",
        s(&st["node"]),
        s(&st["region"]),
        s(&st["version"]),
        s(&st["uptime_s"]),
        if st["draining"] == true {
            ", DRAINING"
        } else {
            ""
        }
    );
    let rows: Vec<Vec<String>> = members["members"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| {
                    let loss = m["loss"]
                        .as_f64()
                        .map_or("-".into(), |l| format!("{:.0}%", l * 100.0));
                    vec![
                        s(&m["node"]),
                        s(&m["region"]),
                        s(&m["state"]),
                        s(&m["rtt_ms"]),
                        s(&m["rtt_min_ms"]),
                        s(&m["jitter_ms"]),
                        loss,
                        s(&m["addr"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    out.push_str(&format!("members ({})\n", rows.len()));
    out.push_str(&table(
        &[
            "NODE",
            "REGION",
            "STATE",
            "RTT_MS",
            "MIN_MS",
            "JITTER_MS",
            "LOSS",
            "ADDR",
        ],
        &rows,
    ));
    let rows: Vec<Vec<String>> = instances["instances"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| {
                    vec![
                        s(&i["id"]),
                        s(&i["app"]),
                        s(&i["node"]),
                        s(&i["region"]),
                        format!(
                            "{}/{}/{}",
                            s(&i["load"]),
                            s(&i["soft_limit"]),
                            s(&i["hard_limit"])
                        ),
                        if i["healthy"] == true {
                            "yes".into()
                        } else {
                            "NO".into()
                        },
                        s(&i["age_ms"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    out.push_str(&format!("\ninstances ({})\n", rows.len()));
    out.push_str(&table(
        &[
            "ID",
            "APP",
            "NODE",
            "REGION",
            "LOAD/SOFT/HARD",
            "HEALTHY",
            "AGE_MS",
        ],
        &rows,
    ));
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn tables_align() {
        let t = super::table(
            &["A", "BB"],
            &[
                vec!["xxx".into(), "y".into()],
                vec!["z".into(), "wwww".into()],
            ],
        );
        assert_eq!(t, "A    BB\nxxx  y\nz    wwww\n");
    }
}
