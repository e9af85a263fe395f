//! A bounded background load: workers send GETs on fresh connections and classify every outcome.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;

/// Counts of what happened to the requests sent.
#[derive(Default, Debug)]
pub struct Tally {
    /// Answered 2xx.
    pub ok: AtomicU64,
    /// The TCP connect failed, refused or reset (the listener was closed): the request never started.
    pub refused: AtomicU64,
    /// Started (connected and sent) but got no 2xx answer: a non-2xx status, a reset, a timeout.
    pub failed: AtomicU64,
}

impl Tally {
    pub fn get(&self) -> (u64, u64, u64) {
        (
            self.ok.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// Running workers; `stop` ends them after their current request.
pub struct Load {
    pub tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

impl Load {
    /// `workers` loops of `GET path` with `Host: host` against `edge`, each at most `limit` requests.
    pub fn start(edge: SocketAddr, host: &str, path: &str, workers: usize, limit: usize) -> Self {
        let tally = Arc::new(Tally::default());
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..workers)
            .map(|_| {
                let (tally, stop) = (tally.clone(), stop.clone());
                let (host, path) = (host.to_string(), path.to_string());
                tokio::spawn(async move {
                    let mut errors = Vec::new();
                    for _ in 0..limit {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        match one(edge, &host, &path).await {
                            Outcome::Ok => tally.ok.fetch_add(1, Ordering::Relaxed),
                            Outcome::Refused => {
                                tokio::time::sleep(Duration::from_millis(5)).await;
                                tally.refused.fetch_add(1, Ordering::Relaxed)
                            }
                            Outcome::Failed(e) => {
                                errors.push(e);
                                tally.failed.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                    }
                    errors
                })
            })
            .collect();
        Self {
            tally,
            stop,
            workers,
        }
    }

    /// Stops the workers; returns the counts and every failure message.
    pub async fn stop(self) -> Summary {
        self.stop.store(true, Ordering::Relaxed);
        let mut errors = Vec::new();
        for w in self.workers {
            errors.extend(
                tokio::time::timeout(Duration::from_secs(30), w)
                    .await
                    .expect("load worker stops")
                    .expect("worker"),
            );
        }
        let (ok, refused, failed) = self.tally.get();
        Summary {
            ok,
            refused,
            failed,
            errors,
        }
    }
}

/// What a load run saw.
#[derive(Debug)]
pub struct Summary {
    pub ok: u64,
    pub refused: u64,
    pub failed: u64,
    pub errors: Vec<String>,
}

enum Outcome {
    Ok,
    Refused,
    Failed(String),
}

async fn one(edge: SocketAddr, host: &str, path: &str) -> Outcome {
    let stream = match tokio::net::TcpStream::connect(edge).await {
        Ok(s) => s,
        // A connect that fails never sent a byte. Refused: the listener was closed. Reset: the
        // handshake finished in the kernel in the microseconds between the drain emptying the
        // accept queue and the listener closing; the client still saw its connect fail.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
            ) =>
        {
            return Outcome::Refused
        }
        Err(e) => return Outcome::Failed(format!("connect: {e}")),
    };
    let work = async {
        let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(conn);
        let req = super::http::request("GET", host, path, &[]);
        let resp = s
            .send_request(req)
            .await
            .map_err(|e| format!("send: {e}"))?;
        let status = resp.status();
        resp.into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("status {status}"))
        }
    };
    match tokio::time::timeout(Duration::from_secs(10), work).await {
        Ok(Ok(())) => Outcome::Ok,
        Ok(Err(e)) => Outcome::Failed(e),
        Err(_) => Outcome::Failed("timed out".into()),
    }
}
