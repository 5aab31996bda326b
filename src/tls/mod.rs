//! The only module that builds rustls configurations and connections.
//!
//! It turns validated model entities into rustls configurations per epoch
//! ([`build`]: front end server configs with SNI resolution, client auth,
//! shard-local session caches and per-epoch ticket keys; back end client
//! configs with verification and per-epoch resumption stores), keeps session
//! state ([`session`]), and drives rustls connections over any async byte
//! stream ([`stream`]). It opens no sockets itself. Reading certificate and
//! key files into DER and signing keys is `config::material`'s job: the
//! model holds that material, and this module depends on the model, never
//! the other way.

pub mod build;
pub mod client_hello;
pub mod local;
pub mod session;
pub mod stream;

pub use build::{AnyServerCert, BackendSpec, FrontendSpec, ShardClientConfig, ShardServerConfig};
pub use session::{EpochTicketer, SessionNotes, ShardClientSessions, ShardSessionCache};
