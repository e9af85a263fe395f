//! The owner's side of the QUIC backhaul: accepts connections and serves each bidirectional
//! stream as one backhaul request, through the same admission as the h2 backhaul.

use std::sync::Arc;
use std::time::Duration;

use http::{Response, StatusCode};

use crate::backhaul::frame::{self, Duplex, Framing};
use crate::backhaul::{protocol, SharedCredentials};
use crate::body::empty;
use crate::cluster::Delays;
use crate::http::headers::wants_upgrade;
use crate::http::Side;
use crate::state::NodeState;

/// Owner side: accepts QUIC connections and serves each stream as one backhaul request.
pub async fn serve(
    endpoint: quinn::Endpoint,
    node: Arc<NodeState>,
    creds: SharedCredentials,
    delays: Option<Delays>,
) {
    let delays = Arc::new(delays);
    let mut drain = node.shutdown.drain_signal();
    loop {
        let incoming = tokio::select! {
            biased;
            _ = &mut drain => break,
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
            // One signal for the connection's life, polled only when the drain woke it: no
            // lock per stream.
            let mut drain = node.shutdown.drain_signal();
            loop {
                let (send, recv) = tokio::select! {
                    biased;
                    // Streams already open run on (counted); the connection closes when they end.
                    _ = &mut drain => break,
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
    key: Option<&protocol::AuthKey>,
    delays: Option<&Delays>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let head =
        match tokio::time::timeout(Duration::from_secs(10), frame::read_head(&mut recv)).await {
            Ok(Ok(h)) => h,
            other => {
                if let Ok(Err(e)) = other {
                    if e.starts_with("undecodable") {
                        tracing::warn!(error = %e, "malformed QUIC backhaul request");
                    }
                }
                let _ = send.reset(2u32.into());
                return;
            }
        };
    let upgrade = head.headers.contains_key(http::header::UPGRADE);
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
