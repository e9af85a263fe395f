//! Splices an upgraded client connection (WebSocket) to the instance's, for as long as both live.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::local::Slot;
use crate::telemetry::node_metrics;

/// Waits for both sides to finish the upgrade, then copies bytes both ways until either closes.
/// The slot (one unit of the instance's load) is held for the socket's whole life.
pub async fn splice(
    client: OnUpgrade,
    instance: OnUpgrade,
    slot: Option<Slot>,
    request_id: String,
) {
    let (client, instance) = tokio::join!(client, instance);
    let (mut client, mut instance) = match (client, instance) {
        (Ok(c), Ok(i)) => (TokioIo::new(c), TokioIo::new(i)),
        (c, i) => {
            tracing::warn!(
                request_id,
                client_ok = c.is_ok(),
                instance_ok = i.is_ok(),
                "upgrade did not complete on both sides"
            );
            return;
        }
    };
    let gauge = &node_metrics().websockets;
    gauge.increment(1.0);
    match tokio::io::copy_bidirectional(&mut client, &mut instance).await {
        Ok((up, down)) => tracing::debug!(request_id, up, down, "upgraded connection closed"),
        Err(e) => {
            tracing::debug!(request_id, error = %e, "upgraded connection ended with an error")
        }
    }
    gauge.decrement(1.0);
    drop(slot);
}
