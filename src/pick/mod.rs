//! The pick: candidates for one request from the mesh snapshot, this node's instances and this
//! edge's fresher marks (penalties, owners' answers, requests on the wire), ordered by the app's
//! strategy. The edge and `petrel sim` both call it (one pick, never a copy).

pub mod candidates;
mod feedback;
mod penalty;

pub use candidates::{pick, Ask, Candidate, Picked, Remote, Sources, Target, Unreachable};
pub use feedback::{Feedback, FEEDBACK_TTL_MS};
pub use penalty::Penalties;
