//! Local instances: the table of instances hosted on this node, hard-limit admission, pooled connections.

mod forward;
mod h1;
mod instance;
// One reviewed `unsafe` pair: reading into hyper's uninitialized buffer, as tokio itself does.
#[allow(unsafe_code)]
mod io;
mod pool;
mod registry;
mod table;

pub use forward::{send_to_instance, Outcome};
pub use h1::OriginError;
pub use instance::{Instance, Slot};
pub use pool::{ConnectError, SendError, Upstream, UpstreamTimeouts, Wire};
pub use registry::{RegisterError, Registry};
pub use table::LocalTable;
