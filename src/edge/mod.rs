//! The edge: client listeners, Host → app routing, the proxy handler and WebSocket splicing.

mod body;
mod error;
mod headers;
mod proxy;
mod routes;
mod server;
mod upgrade;

pub use error::ProxyError;
pub use routes::{AppRoute, RouteTable};
pub use server::{serve, ConnCtx};
