//! HTTP plumbing that both hops share, the edge and the backhaul owner: accepting connections,
//! the header rules of a proxy (RFC 9110), how a request is framed for an instance (target, Host,
//! version) and how it is kept so it can be sent again.
//! Imports neither `edge/` nor `backhaul/`.

mod accept;
mod answer;
mod boxed;
mod buffering;
pub mod headers;
mod replay;
mod side;
mod splice;
mod target;
mod tracked;
mod wsframe;

pub use accept::{next_conn, Limited};
pub use answer::{plain, ExchangeError};
pub use boxed::pin_boxed;
pub use buffering::{read_ahead, Buffering, OnCancel};
pub use replay::{is_idempotent, Replayable, ReplayableRequest, REPLAY_LIMIT};
pub use side::{read_some, Io, Side, RELAY_BUF};
pub use splice::{splice, Ending};
pub use target::{
    authority_host, declare_unsized_body, for_h2, for_http1, origin_form, to_fly_names,
    InstanceForm,
};
pub use tracked::{OnEnd, Tracked};
