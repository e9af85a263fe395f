//! petrel: a global edge load balancer — one binary per node, nodes meshed by SWIM gossip, each
//! request sent to the best instance of its app anywhere, full instances rejecting instead of queuing.
//!
//! Module map (see `DESIGN.md` for the path of one request):
//! - [`config`]: `node.toml`, fly.toml app configs and topology files, validated with file:line:key
//!   errors.
//! - [`app`]: binds listeners, wires the parts, runs until the drain signal.
//! - [`shutdown`]: the one drain signal, counted tasks, deadline.
//! - [`handoff`]: `petrel run --upgrade`, listening sockets passed to a new process.
//! - [`reload`]: SIGHUP / `POST /v1/reload`, validated and swapped atomically.
//! - [`routes`]: the route table, Host → app and the app's settings.
//! - [`state`]: the snapshots (`ArcSwap`) the request path reads without locks.
//! - [`cluster`]: the snapshot of the mesh the request path reads.
//! - [`node`]: the node's own tasks over its state: the mesh owner task, health checks, registration.
//! - [`certs`]: edge certificates by SNI, reloaded whole.
//! - [`http`]: what both hops share: a request's form for an instance, replayable requests.
//! - [`edge`]: listeners, Host → app routing, the proxy handler, WebSocket splicing.
//! - [`pick`]: one request's candidates (snapshot, penalties, owners' answers), for edge and sim.
//! - [`balance`]: strategies as pure functions (closest, leastload, routing hints).
//! - [`backhaul`]: node-to-node transports (h2, QUIC), mutual TLS and the wire protocol.
//! - [`owner`]: the owner's side of the backhaul: admission against the hard limit, rejects.
//! - [`session`]: resumable WebSocket sessions: hold, replay, re-attach across a region.
//! - [`local`]: local instances, hard-limit admission, pooled instance connections.
//! - [`admin`]: admin API, `/metrics`, dashboard, on its own runtime.
//! - [`backend`]: the built-in origin used by demo, tests and benches.
//! - [`sim`]: `petrel sim`, the whole topology on a virtual clock with the real mesh core.
//! - [`demo`]: `petrel demo`, a multi-region cluster of child processes on loopback.
//! - [`telemetry`]: logging and every metric name.
//! - [`access`]: the access log, one line per request, written off the request path.
//! - [`trace`]: per-request phase timings, the slow-request log, OTLP export.
//! - [`status`]: `petrel status`, the node's view as tables.
//! - [`systemd`]: readiness, reload and stop notifications for `Type=notify` units.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod access;
pub mod admin;
pub mod app;
pub mod backend;
pub mod backhaul;
pub mod balance;
pub mod body;
pub mod certs;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod edge;
#[doc(hidden)]
pub mod fuzz_targets;
#[allow(unsafe_code)] // descriptors received over SCM_RIGHTS
pub mod handoff;
pub mod http;
pub mod local;
pub mod node;
pub mod owner;
pub mod pick;
pub mod reload;
pub mod routes;
pub mod session;
pub mod shutdown;
pub mod sim;
pub mod state;
pub mod status;
pub mod systemd;
pub mod telemetry;
pub mod trace;
