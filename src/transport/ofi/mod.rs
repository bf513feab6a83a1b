//! libfabric transport (feature `ofi`): rails (`rail.rs`, one RDM endpoint to one peer) over
//! libfabric (`fabric.rs`, bindings in `sys.rs`).
// Nothing drives the rails yet: the protocol (proto.rs) and the Transport come separately.
#![allow(dead_code, unused_imports)]

mod fabric;
// `Rail::write_data` takes the eight arguments of fi_writedata. rail.rs is kept as its author
// wrote it (one signature is longer than rustfmt.toml's lines) until that branch formats it.
#[allow(clippy::too_many_arguments)]
#[rustfmt::skip]
mod rail;
mod sys;

pub use fabric::{FabricRail, RailsWanted, open_rails};
pub use rail::{CqKind, Cqe, Limits, Mr, Posted, Rail};
