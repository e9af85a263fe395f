//! petrel-mesh: the sans-IO mesh core — SWIM membership (foca), an RTT/loss table to every peer,
//! load gossip and datagram authentication. No tokio, no sockets, no clock reads: the caller passes
//! time in and sends what comes out, so the node, the simulator, tests and benches share this code.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
mod core;
mod gossip;
mod identity;
pub mod lifeguard;
pub mod load;
pub mod prober;
mod replay;
mod view;
pub mod wire;

pub use crate::config::{MeshConfig, Profile};
pub use crate::core::{Counters, Event, Mesh, Transmit};
pub use crate::identity::NodeId;
pub use crate::lifeguard::LifeguardConfig;
pub use crate::load::{InstanceLoad, LoadRecord};
pub use crate::prober::RttSummary;
pub use crate::replay::ReplayGuard;
pub use crate::view::{ClusterView, MemberState, MemberView, RemoteInstance};
