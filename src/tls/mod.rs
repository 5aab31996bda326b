//! The only module that touches rustls.
//!
//! It turns validated model entities into rustls configurations per epoch
//! (front end: server configs with SNI resolution, client auth, shard-local
//! session caches and per-epoch ticket keys; back end: client configs with
//! verification and per-epoch resumption stores), and it drives rustls
//! connections over buffers. It does no socket IO itself.

pub mod material;
