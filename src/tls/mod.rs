//! The only module that touches rustls.
//!
//! It turns validated model entities into rustls configurations per epoch
//! ([`build`]: front end server configs with SNI resolution, client auth,
//! shard-local session caches and per-epoch ticket keys; back end client
//! configs with verification and per-epoch resumption stores), keeps session
//! state ([`session`]), and drives rustls connections over any async byte
//! stream ([`stream`]). It opens no sockets itself.

pub mod build;
pub mod local;
pub mod material;
pub mod session;
pub mod stream;

pub use build::{AnyServerCert, BackendSpec, FrontendSpec, ShardClientConfig, ShardServerConfig};
pub use session::{EpochTicketer, SessionNotes, ShardClientSessions, ShardSessionCache};
