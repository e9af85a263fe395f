//! The QUIC backhaul (quinn): one connection per peer, one bidirectional stream per request,
//! mutual TLS with the derived cluster CA. Owner-side admission is shared with the h2 backhaul.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};

use super::frame::{self, Duplex, Framing};
use super::tls::{ClusterTls, SERVER_NAME};
use super::BackhaulError;
use crate::body::{empty, Body};
use crate::cluster::Delays;
use crate::http::headers::wants_upgrade;
use crate::http::Side;
use crate::state::NodeState;
use crate::telemetry::BACKHAUL_CONNECT;
use crate::trace::ConnectMark;

/// Edge side: a client endpoint and a connection per owner node.
pub struct QuicClient {
    endpoint: quinn::Endpoint,
    creds: super::SharedCredentials,
    conns: Mutex<HashMap<SocketAddr, quinn::Connection>>,
    connect_timeout: Duration,
}

/// Transport settings shared by both ends: keep-alives so idle connections survive NATs and
/// dead peers are noticed.
fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(Duration::from_secs(5)));
    t.max_idle_timeout(Some(Duration::from_secs(30).try_into().expect("30 s fits")));
    t.max_concurrent_bidi_streams(10_000u32.into());
    Arc::new(t)
}

/// The QUIC server config for `tls` (ALPN `petrel-bh`, the shared transport settings).
pub fn server_config(tls: &ClusterTls) -> std::io::Result<quinn::ServerConfig> {
    let crypto =
        QuicServerConfig::try_from(tls.quic_server.clone()).map_err(std::io::Error::other)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport());
    Ok(config)
}

impl QuicClient {
    fn client_config(&self) -> std::io::Result<quinn::ClientConfig> {
        let creds = self.creds.load();
        let tls = creds
            .tls
            .as_ref()
            .ok_or_else(|| std::io::Error::other("no backhaul TLS"))?;
        let crypto =
            QuicClientConfig::try_from(tls.quic_client.clone()).map_err(std::io::Error::other)?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(transport());
        Ok(config)
    }

    /// Binds a client endpoint on `bind_ip`; each new connection takes the TLS of `creds` as it
    /// is then (a key rotation applies to the next connection).
    pub fn new(
        creds: super::SharedCredentials,
        bind_ip: std::net::IpAddr,
        connect_timeout: Duration,
    ) -> std::io::Result<Self> {
        let endpoint = quinn::Endpoint::client(SocketAddr::new(bind_ip, 0))?;
        Ok(Self {
            endpoint,
            creds,
            conns: Mutex::new(HashMap::new()),
            connect_timeout,
        })
    }

    async fn connection(&self, to: SocketAddr) -> Result<quinn::Connection, BackhaulError> {
        if let Some(c) = self
            .conns
            .lock()
            .expect("quic pool")
            .get(&to)
            .filter(|c| c.close_reason().is_none())
        {
            return Ok(c.clone());
        }
        let t0 = Instant::now();
        let config = self
            .client_config()
            .map_err(|e| BackhaulError::Connect(to, format!("QUIC TLS: {e}")))?;
        let connecting = self
            .endpoint
            .connect_with(config, to, SERVER_NAME)
            .map_err(|e| BackhaulError::Connect(to, e.to_string()))?;
        let conn = match tokio::time::timeout(self.connect_timeout, connecting).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(BackhaulError::Connect(to, format!("QUIC: {e}"))),
            Err(_) => {
                return Err(BackhaulError::Connect(
                    to,
                    format!("QUIC connect timed out after {:?}", self.connect_timeout),
                ))
            }
        };
        metrics::histogram!(BACKHAUL_CONNECT, "transport" => "quic")
            .record(t0.elapsed().as_secs_f64());
        self.conns
            .lock()
            .expect("quic pool")
            .insert(to, conn.clone());
        Ok(conn)
    }

    /// Sends one request on a new stream; an upgrade answered with 101 returns the raw stream.
    pub async fn send(
        &self,
        to: SocketAddr,
        delay: Duration,
        mut req: Request<Body>,
        upgrade: bool,
        mark: &ConnectMark,
    ) -> Result<(Response<Body>, Option<Side>), BackhaulError> {
        if !upgrade {
            Framing::announce(req.headers_mut());
            let (mut parts, body) = req.into_parts();
            frame::mark_empty(&mut parts.headers, &body);
            req = Request::from_parts(parts, body);
        }
        let conn = self.connection(to).await?;
        let (mut send, mut recv) = match conn.open_bi().await {
            Ok(s) => s,
            Err(e) => {
                self.conns.lock().expect("quic pool").remove(&to);
                return Err(BackhaulError::Connect(to, format!("QUIC stream: {e}")));
            }
        };
        mark.mark();
        if !delay.is_zero() {
            // [simulate]: quinn owns its socket, so the one-way delay is applied per request.
            tokio::time::sleep(delay).await;
        }
        let head = frame::request_head(&req);
        frame::write_head(&mut send, &head)
            .await
            .map_err(|e| BackhaulError::Connect(to, format!("QUIC write: {e}")))?;
        let send = if upgrade {
            Some(send)
        } else {
            tokio::spawn(frame::pump(req.into_body(), send, Framing::Framed));
            None
        };
        let head = frame::read_head(&mut recv)
            .await
            .map_err(|e| BackhaulError::Io(to, e))?;
        if upgrade {
            let switching = head.line == "101";
            if switching {
                let resp =
                    frame::response_from(head, empty()).map_err(|e| BackhaulError::Io(to, e))?;
                let send = send.expect("kept for upgrades");
                return Ok((resp, Some(Side::Stream(Box::new(Duplex { send, recv })))));
            }
            // Refused (a 4xx, a 200 to an upgrade it ignores): its body follows as any body does.
            drop(send);
            let framing = Framing::of(&head);
            let resp = frame::response_from(head, frame::body_from(recv, framing))
                .map_err(|e| BackhaulError::Io(to, e))?;
            return Ok((resp, None));
        }
        let framing = Framing::of(&head);
        let body = frame::body_after(&head, recv, framing);
        let resp = frame::response_from(head, body).map_err(|e| BackhaulError::Io(to, e))?;
        Ok((resp, None))
    }
}

/// Owner side: accepts QUIC connections and serves each stream as one backhaul request.
pub async fn serve(
    endpoint: quinn::Endpoint,
    node: Arc<NodeState>,
    creds: super::SharedCredentials,
    delays: Option<Delays>,
) {
    let delays = Arc::new(delays);
    loop {
        let incoming = tokio::select! {
            biased;
            _ = node.shutdown.draining() => break,
            i = endpoint.accept() => match i {
                Some(i) => i,
                None => break,
            },
        };
        let (node, delays, creds) = (node.clone(), delays.clone(), creds.clone());
        node.clone().shutdown.spawn(async move {
            let peer = incoming.remote_address();
            let conn = match tokio::time::timeout(Duration::from_secs(10), incoming).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    tracing::warn!(%peer, error = %e, "QUIC backhaul handshake refused");
                    crate::telemetry::node_metrics()
                        .backhaul
                        .failure(crate::telemetry::Phase::Auth);
                    return;
                }
                Err(_) => return,
            };
            loop {
                let (send, recv) = tokio::select! {
                    biased;
                    // Streams already open run on (counted); the connection closes when they end.
                    _ = node.shutdown.draining() => break,
                    s = conn.accept_bi() => match s {
                        Ok(s) => s,
                        Err(_) => break,
                    },
                };
                let (node, delays, key) = (node.clone(), delays.clone(), creds.load());
                node.clone().shutdown.spawn(async move {
                    stream(
                        &node,
                        key.auth.as_ref(),
                        delays.as_ref().as_ref(),
                        send,
                        recv,
                    )
                    .await;
                });
            }
        });
    }
    // No new connections; open streams finish on their own (they are counted tasks).
    endpoint.set_server_config(None);
    if node.shutdown.is_handed_over() {
        // The new process reads the shared UDP socket now; this endpoint moves off it so the two
        // never see each other's packets. (Peers' connections to it end: QUIC servers cannot migrate.)
        let ip = endpoint
            .local_addr()
            .map(|a| a.ip())
            .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into());
        match std::net::UdpSocket::bind((ip, 0)).and_then(|s| endpoint.rebind(s)) {
            Ok(()) => tracing::info!("QUIC backhaul socket handed over"),
            Err(e) => {
                tracing::warn!(error = %e, "QUIC endpoint could not move off the handed-over socket")
            }
        }
    }
}

async fn stream(
    node: &NodeState,
    key: Option<&super::protocol::AuthKey>,
    delays: Option<&Delays>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let head =
        match tokio::time::timeout(Duration::from_secs(10), frame::read_head(&mut recv)).await {
            Ok(Ok(h)) => h,
            _ => {
                let _ = send.reset(2u32.into());
                return;
            }
        };
    let upgrade = head
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("upgrade"));
    let framing = Framing::of(&head);
    let (body, recv) = if upgrade {
        (empty(), Some(recv))
    } else {
        (frame::body_after(&head, recv, framing), None)
    };
    let req = match frame::request_from(head, body) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "malformed QUIC backhaul request");
            let _ = send.reset(2u32.into());
            return;
        }
    };
    let upgrade = upgrade && wants_upgrade(req.headers());
    let back = super::server::reply_delay(delays, req.headers());
    let (tx, rx) = tokio::sync::oneshot::channel();
    let edge_side = upgrade.then_some(Side::Later(rx));
    let mut resp = super::server::admit_and_forward(node, key, req, edge_side).await;
    if framing == Framing::Framed {
        Framing::announce(resp.headers_mut());
        let (mut parts, body) = resp.into_parts();
        frame::mark_empty(&mut parts.headers, &body);
        resp = Response::from_parts(parts, body);
    }
    if !back.is_zero() {
        tokio::time::sleep(back).await;
    }
    if frame::write_head(&mut send, &frame::response_head(&resp))
        .await
        .is_err()
    {
        return;
    }
    match recv {
        Some(recv) if resp.status() == StatusCode::SWITCHING_PROTOCOLS => {
            let _ = tx.send(Box::new(Duplex { send, recv }));
        }
        _ => frame::pump(resp.into_body(), send, framing).await,
    }
}

/// Runs the QUIC endpoint on `socket`: UDP on the backhaul address, same port number as the TCP
/// listener (bound by the caller, or taken over from an older process).
pub fn bind(tls: &ClusterTls, socket: std::net::UdpSocket) -> std::io::Result<quinn::Endpoint> {
    let config = server_config(tls)?;
    let runtime = quinn::default_runtime()
        .ok_or_else(|| std::io::Error::other("no async runtime for QUIC"))?;
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(config),
        socket,
        runtime,
    )
}
