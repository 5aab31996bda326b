//! The control plane: owns the running model, turns accepted changes into
//! snapshots, broadcasts them to every shard and waits for every shard to
//! apply them (R6), and serves the admin API (`/metrics` is rendered by
//! [`metrics`]; who may reach it is [`access`]). [`watch`] is the client
//! side of `ctl show stats --watch`.
//!
//! It never touches a client or back-end connection: shards do, when they
//! apply a snapshot.

pub mod access;
pub mod admin;
pub mod metrics;
pub mod runtime;
pub mod watch;

pub use runtime::{run, set_core_dumps, FileRules, RunOptions, DEFAULT_BATCH_WAIT_US};
