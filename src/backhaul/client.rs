//! Edge side of the backhaul: pooled h2 connections per owner node, fresh h1 ones for upgrades.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use super::delay::Delayed;
use super::protocol;
use super::tls::ClusterTls;
use crate::body::Body;
use crate::cluster::Delays;
use crate::telemetry::BACKHAUL_CONNECT;
use crate::trace::ConnectMark;

/// Why a backhaul exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum BackhaulError {
    /// No connection to the owner could be opened in time; nothing was sent.
    #[error("backhaul connect to {0} failed: {1}")]
    Connect(SocketAddr, String),
    /// The connection was dead before the request went out, or the owner refused the stream
    /// unprocessed (`REFUSED_STREAM`, or above a GOAWAY's last stream id: RFC 9113 §8.7);
    /// nothing reached the owner's instance.
    #[error("backhaul connection to {0} closed before the request was processed")]
    NotSent(SocketAddr),
    /// The request went out and the exchange failed.
    #[error("backhaul exchange with {0} failed: {1}")]
    Failed(SocketAddr, hyper::Error),
    /// The request went out and the QUIC exchange failed.
    #[error("backhaul exchange with {0} failed: {1}")]
    Io(SocketAddr, String),
}

/// Pooled connections to other nodes' backhaul listeners.
pub struct BackhaulClient {
    h2: super::peers::Peers<http2::SendRequest<Body>>,
    connect_timeout: Duration,
    delays: Option<Delays>,
    creds: super::SharedCredentials,
    quic: Option<super::quic::QuicClient>,
}

use crate::http::{Io, Side};

impl BackhaulClient {
    /// A client with no connections yet; with TLS in `creds`, every connection is mutual TLS;
    /// with `quic`, requests go over QUIC instead of h2.
    pub fn new(
        connect_timeout: Duration,
        delays: Option<Delays>,
        creds: super::SharedCredentials,
        quic: Option<super::quic::QuicClient>,
    ) -> Self {
        Self {
            h2: super::peers::Peers::new(),
            connect_timeout,
            delays,
            creds,
            quic,
        }
    }

    /// TCP (delayed under `[simulate]`), then TLS if configured, all within the connect timeout.
    async fn dial(
        &self,
        to: SocketAddr,
        region: &str,
        h2: bool,
    ) -> Result<Box<dyn Io>, BackhaulError> {
        let t0 = Instant::now();
        let work = async {
            let stream = TcpStream::connect(to)
                .await
                .map_err(|e| BackhaulError::Connect(to, e.to_string()))?;
            let _ = stream.set_nodelay(true);
            let tcp: Box<dyn Io> = match self.delays.as_ref().map(|d| d.toward(region)) {
                Some(d) if !d.is_zero() => Box::new(Delayed::new(stream, d)),
                _ => Box::new(stream),
            };
            let creds = self.creds.load();
            let Some(tls) = &creds.tls else {
                return Ok(tcp);
            };
            let cfg = if h2 {
                tls.client_h2.clone()
            } else {
                tls.client_h1.clone()
            };
            let stream = tokio_rustls::TlsConnector::from(cfg)
                .connect(ClusterTls::server_name(), tcp)
                .await
                .map_err(|e| BackhaulError::Connect(to, format!("TLS: {e}")))?;
            Ok(Box::new(stream) as Box<dyn Io>)
        };
        let io = match tokio::time::timeout(self.connect_timeout, work).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(BackhaulError::Connect(
                    to,
                    format!("timed out after {:?}", self.connect_timeout),
                ))
            }
        };
        metrics::histogram!(BACKHAUL_CONNECT, "transport" => "h2")
            .record(t0.elapsed().as_secs_f64());
        Ok(io)
    }

    /// A pooled h2 connection to `to`, or (`fresh`, or none alive) a new one.
    async fn h2_sender(
        &self,
        to: SocketAddr,
        region: &str,
        fresh: bool,
    ) -> Result<http2::SendRequest<Body>, BackhaulError> {
        if !fresh {
            if let Some(s) = self.h2.get(&to, |s| !s.is_closed()) {
                return Ok(s);
            }
        }
        // Boxed: dialing and the handshake are large futures that a pooled request never needs.
        Box::pin(self.new_h2(to, region)).await
    }

    /// Dials `to`, completes the h2 handshake and pools the connection.
    async fn new_h2(
        &self,
        to: SocketAddr,
        region: &str,
    ) -> Result<http2::SendRequest<Body>, BackhaulError> {
        let io = self.dial(to, region, true).await?;
        let mut b = http2::Builder::new(TokioExecutor::new());
        b.timer(TokioTimer::new())
            .initial_stream_window_size(super::H2_STREAM_WINDOW)
            .initial_connection_window_size(super::H2_CONN_WINDOW)
            .max_header_list_size(super::frame::MAX_HEAD as u32)
            .keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        let sender =
            match tokio::time::timeout(self.connect_timeout, b.handshake(TokioIo::new(io))).await {
                Ok(Ok((sender, conn))) => {
                    tokio::spawn(conn);
                    sender
                }
                Ok(Err(e)) => return Err(BackhaulError::Connect(to, e.to_string())),
                Err(_) => return Err(BackhaulError::Connect(to, "h2 handshake timed out".into())),
            };
        self.h2.insert(to, sender.clone());
        Ok(sender)
    }

    fn sign(&self, req: &mut Request<Body>) {
        let creds = self.creds.load();
        let Some(key) = &creds.auth else { return };
        let get = |n: &str| {
            req.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
        };
        let tag = key.tag(get(protocol::INSTANCE), get("petrel-request-id"));
        if let Ok(mut v) = HeaderValue::from_str(&tag) {
            // A credential, new for every request: HPACK must never index it (RFC 7541 §7.1.3),
            // which also spares both ends a table insert and eviction per request.
            v.set_sensitive(true);
            req.headers_mut().insert(protocol::AUTH, v);
        }
    }

    /// An upgrade request to the owner at `to`, on a fresh HTTP/1.1 connection of its own.
    async fn send_upgrade(
        &self,
        to: SocketAddr,
        region: &str,
        mut req: Request<Body>,
        mark: &ConnectMark,
    ) -> Result<Response<Incoming>, BackhaulError> {
        crate::http::for_http1(&mut req);
        let io = self.dial(to, region, false).await?;
        let (mut sender, conn) = http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| BackhaulError::Connect(to, e.to_string()))?;
        mark.mark();
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        sender
            .send_request(req)
            .await
            .map_err(|e| BackhaulError::Failed(to, e))
    }

    /// Sends `req` (already carrying `petrel-internal-instance`/`-version`) to the owner at `to`,
    /// over QUIC or h2. Returns the owner's response and, for an accepted upgrade, its raw side.
    pub async fn send(
        &self,
        to: SocketAddr,
        region: &str,
        mut req: Request<Body>,
        upgrade: bool,
        mark: &ConnectMark,
    ) -> Result<(Response<Body>, Option<Side>), BackhaulError> {
        self.sign(&mut req);
        if let Some(q) = &self.quic {
            let delay = self
                .delays
                .as_ref()
                .map(|d| d.toward(region))
                .unwrap_or_default();
            return q.send(to, delay, req, upgrade, mark).await;
        }
        let mut resp = self.send_h2(to, region, req, upgrade, mark).await?;
        let side = (upgrade && resp.status() == http::StatusCode::SWITCHING_PROTOCOLS)
            .then(|| Side::Hyper(hyper::upgrade::on(&mut resp)));
        Ok((resp.map(crate::body::boxed), side))
    }

    /// Upgrades (`upgrade = true`) go over a fresh HTTP/1.1 connection so the stream can be spliced.
    async fn send_h2(
        &self,
        to: SocketAddr,
        region: &str,
        mut req: Request<Body>,
        upgrade: bool,
        mark: &ConnectMark,
    ) -> Result<Response<Incoming>, BackhaulError> {
        if upgrade {
            // Boxed: a fresh HTTP/1.1 connection per upgrade, a large future most requests skip.
            return Box::pin(self.send_upgrade(to, region, req, mark)).await;
        }
        // The client's Host rides in `:authority`; the owner turns it back into `Host`.
        crate::http::for_h2(&mut req);
        let mut sender = self.h2_sender(to, region, false).await?;
        mark.mark();
        match sender.try_send_request(req).await {
            Ok(r) => Ok(r),
            Err(mut e) => match e.take_message() {
                Some(req) => {
                    // Pooled connection was dead: one fresh try, still nothing sent.
                    let mut fresh = self.h2_sender(to, region, true).await?;
                    mark.mark();
                    match fresh.try_send_request(req).await {
                        Ok(r) => Ok(r),
                        Err(mut e) => match e.take_message() {
                            Some(_) => Err(BackhaulError::NotSent(to)),
                            None => Err(sent_and_failed(to, e.into_error())),
                        },
                    }
                }
                None => Err(sent_and_failed(to, e.into_error())),
            },
        }
    }
}

/// A failed exchange, told apart by whether the owner processed the stream at all: an h2
/// `REFUSED_STREAM`, or a GOAWAY that left the stream out, means it did not (RFC 9113 §8.7), and
/// the request may go to another candidate.
fn sent_and_failed(to: SocketAddr, e: hyper::Error) -> BackhaulError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(c) = cause {
        if let Some(h2e) = c.downcast_ref::<h2::Error>() {
            let refused = h2e.reason() == Some(h2::Reason::REFUSED_STREAM)
                || (h2e.is_go_away() && h2e.is_remote());
            if refused {
                return BackhaulError::NotSent(to);
            }
        }
        cause = c.source();
    }
    BackhaulError::Failed(to, e)
}
