//! libfabric data path (EFA and other RDM providers): the protocol (`proto/`) over rails
//! (`rail.rs`: one RDM endpoint to one peer each), and an in-memory provider for its tests
//! (`fake.rs`). The libfabric bindings implementing `Rail` come separately (`fabric.rs`).

// Not wired into a communicator yet: the Transport implementation comes with fabric.rs.
#[allow(dead_code)]
mod proto;
// `Rail::write_data` takes fi_writedata's arguments (8 with self). rail.rs is left to its
// author's formatting for now (rustfmt would wrap that signature).
#[allow(dead_code, clippy::too_many_arguments)]
#[rustfmt::skip]
mod rail;

#[cfg(test)]
mod fake;
