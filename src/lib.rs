//! shardtls: a thread-per-core TLS-terminating proxy with graceful,
//! epoch-based reconfiguration.
//!
//! Data flows one way through the modules:
//! - [`config`] turns ADC-style command text into a validated [`config::Model`];
//! - [`control`] owns the running model, opens epochs, broadcasts immutable
//!   snapshots to every shard and serves the admin API;
//! - [`core`] is the IO-free per-shard lifecycle (connection states, epochs,
//!   timers, stats), tested with a fake clock;
//! - [`rt`] is the thread-per-core io_uring runtime the proxy runs on;
//! - [`snapshot`] is the immutable view of the model that shards serve
//!   (below both `control` and `shard`: neither imports the other's types);
//! - [`shard`] is the thin shell per core: accept, handshake, copy;
//! - [`tls`] is the only module that touches rustls;
//! - [`access_log`] writes one line per client connection, off the shards' threads;
//! - [`test_server`] is the built-in test server (echo, sink, HTTP) for tests, demos and benchmarks;
//! - [`bench`] is the load generator and benchmark CLI.

pub mod access_log;
pub mod bench;
pub mod config;
pub mod control;
pub mod core;
pub mod demo;
pub mod pki;
pub mod rt;
pub mod shard;
pub mod snapshot;
pub mod test_server;
pub mod tls;
