//! The QUIC backhaul (quinn): one connection per peer, one bidirectional stream per request,
//! mutual TLS with the derived cluster CA: the edge's client, the endpoint and its TLS. The
//! owner's side of each stream is in `crate::owner::quic`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};

use super::frame::{self, Duplex, Framing};
use super::tls::{ClusterTls, SERVER_NAME};
use super::BackhaulError;
use crate::body::{empty, Body};
use crate::http::Side;
use crate::telemetry::BACKHAUL_CONNECT;
use crate::trace::ConnectMark;

/// Edge side: a client endpoint and a connection per owner node.
pub struct QuicClient {
    endpoint: quinn::Endpoint,
    creds: super::SharedCredentials,
    conns: super::peers::Peers<quinn::Connection>,
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
            conns: super::peers::Peers::new(),
            connect_timeout,
        })
    }

    async fn connection(&self, to: SocketAddr) -> Result<quinn::Connection, BackhaulError> {
        if let Some(c) = self.conns.get(&to, |c| c.close_reason().is_none()) {
            return Ok(c);
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
        self.conns.insert(to, conn.clone());
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
                self.conns.remove(&to);
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
            let body = req.into_body();
            if http_body::Body::is_end_stream(&body) {
                // No body (a GET): the head said so; end the stream here rather than spawning
                // a task per request to find that out.
                let _ = send.finish();
            } else {
                tokio::spawn(frame::pump(body, send, Framing::Framed));
            }
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
