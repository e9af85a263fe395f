//! The node's own work over its state, above `state` (which holds what it updates) and below
//! `app`: the mesh owner task, active health checks of local instances, and the admin API's
//! run-time registration of instances.

pub mod health;
pub mod mesh;
pub mod registry;
