//! petrel's own HTTP/1.1 client for instance connections, used for requests without a body or an
//! upgrade (most of them): the codec is sans-IO (`codec`), the exchange runs in the request's task
//! (`conn`). Other requests go through hyper's client (`super::pool`).

mod codec;
mod conn;
#[cfg(test)]
mod tests;

pub use codec::{OriginError, RequestHead};
pub use conn::{Checkin, Conn};
