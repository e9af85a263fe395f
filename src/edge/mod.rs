//! The edge: client listeners, Host → app routing, the proxy handler and WebSocket splicing.

mod attempt;
pub mod auth;
mod body;
pub mod candidates;
mod error;
pub mod explain;
pub mod fly_replay;
mod penalty;
pub mod per_client;
mod proxy;
mod retry;
mod routes;
mod server;
mod session;

pub use crate::http::{Io, Side};
pub use body::{Finish, Tracked};
pub use error::ProxyError;
pub use penalty::Penalties;
pub use routes::{normalize_host, AppRoute, RouteTable};
pub use server::{serve, ConnCtx, Limits, TlsInfo};
