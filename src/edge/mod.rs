//! The edge: client listeners, Host → app routing, the proxy handler and WebSocket splicing.

mod attempt;
mod body;
mod conn;
mod error;
pub mod explain;
pub mod fly_replay;
mod proxy;
mod retry;
mod server;
mod session;

pub use crate::http::{Io, Side};
pub use crate::routes::{normalize_host, AppRoute, RouteTable};
pub use body::Finish;
pub use conn::{ConnCtx, Limits, TlsInfo};
pub use error::ProxyError;
pub use server::serve;

impl crate::state::NodeState {
    /// What a pick for `app` reads on this node now.
    pub fn sources<'a>(
        &'a self,
        app: &str,
        local: &'a crate::local::LocalTable,
        snap: &'a crate::cluster::Snapshot,
        now_ms: u64,
    ) -> crate::pick::Sources<'a> {
        crate::pick::Sources {
            region: &self.region,
            locals: local.for_app(app),
            snap,
            feedback: &self.feedback,
            penalties: &self.penalties,
            now_ms,
        }
    }
}
