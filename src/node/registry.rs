//! Run-time registration of local instances (admin `PUT`/`DELETE /v1/instances/{id}`): the
//! checks against the node's routes and the cluster, and the drain before an instance goes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::local::RegisterError;
use crate::state::NodeState;

/// Adds instance `id` of `app` at `addr` to this node. Refused if the app is unknown here, the
/// id is malformed, or any node of the cluster already has an instance of that id.
pub fn register(
    node: &NodeState,
    id: &str,
    app: &str,
    addr: SocketAddr,
) -> Result<(), RegisterError> {
    if crate::config::valid_name(id) && node.routes.load().by_name(app).is_none() {
        return Err(RegisterError::UnknownApp(app.to_string()));
    }
    let cluster = node.cluster.load();
    let taken_elsewhere = cluster.view.instances.iter().any(|i| &*i.load.id == id);
    node.registry
        .add(&node.local, id, app, addr, taken_elsewhere)?;
    tracing::info!(instance = id, app, %addr, "instance registered");
    Ok(())
}

/// Stops new work to `id` at once; forgets it once its open work has finished (or after
/// `limit`). Returns false if there is no such local instance.
pub fn deregister(node: &Arc<NodeState>, id: &str, limit: Duration) -> bool {
    let Some(inst) = node.local.load().get(id).cloned() else {
        return false;
    };
    inst.start_draining();
    tracing::info!(
        instance = id,
        open = inst.load(),
        "instance deregistering: no new work"
    );
    let (node, id) = (node.clone(), id.to_string());
    std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + limit;
        while inst.load() > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        node.registry.remove(&node.local, &id);
        tracing::info!(instance = %id, left_open = inst.load(), "instance removed");
    });
    true
}
