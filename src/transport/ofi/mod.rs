//! libfabric data path (EFA and every other RDM provider): the protocol (`proto/`) over rails
//! (`rail.rs`: one RDM endpoint to one peer each); libfabric itself behind the `ofi` feature
//! (`fabric/`, bindings generated at build time in `sys.rs`), and an in-memory provider for
//! the protocol's tests (`fake.rs`). The protocol is plain Rust, so its tests run in every build.
#![cfg_attr(not(feature = "ofi"), allow(dead_code))]

#[cfg(feature = "ofi")]
mod fabric;
mod proto;
mod rail;
#[cfg(feature = "ofi")]
mod sys;
#[cfg(feature = "ofi")]
mod transport;

#[cfg(feature = "ofi")]
pub use fabric::{FabricRail, RailsWanted, open_rails};
#[cfg(feature = "ofi")]
pub use rail::Rail;
#[cfg(feature = "ofi")]
pub use transport::OfiTransport;

#[cfg(test)]
mod fake;
