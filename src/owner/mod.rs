//! The owner's side of the backhaul: a request from another node's edge is authenticated, admitted
//! against the instance's hard limit before the instance sees a byte, and forwarded, or rejected
//! at once (`full`, `down`, `unknown`); a WebSocket session is attached here if this node holds
//! it. Over h2 ([`serve`]) and QUIC ([`serve_quic`]) alike. Sits above `state`, beside `edge`.

mod attach;
mod quic;
mod server;

pub use quic::serve as serve_quic;
pub use server::serve;
