//! The IO-free lifecycle of one shard: connection states, epochs, timers
//! and counters.
//!
//! What it does: for every connection of a shard it decides, from the
//! events the shell reports, which epoch the connection handshakes and runs
//! under and when it must close. It applies the epoch rules of the design
//! brief: established connections keep their epoch and drain (R1),
//! mid-handshake ones are killed while unbound ones pick the new epoch
//! (R2), refused resumptions are counted (R3), `disable` closes everything
//! (R7), sessions of connections that did not end cleanly are flagged for
//! removal (R8), and drain deadlines close what is left of a retired epoch
//! (R12). It keeps per (entity, epoch) counters for the stats.
//!
//! What it does not do: no sockets, no rustls, no caches, no clock. Events
//! come in as `on_*` calls and `set_epoch` / `disable` / `enable`; the
//! decisions go out as return values and through `poll_timeouts`; the shell
//! does the closing, flushes caches and swaps ticket keys. Time is passed in
//! as `now` on every call: nothing here reads the system clock (there is
//! no `Instant::now` or `SystemTime::now` call in this module, which a test
//! checks), so every rule is tested with a fake clock.
//!
//! See `LIFECYCLE.md` beside this file for the states and transitions.

#![cfg_attr(not(test), deny(clippy::disallowed_methods))]

mod lifecycle;
mod stats;
mod timers;
mod types;

pub use lifecycle::ShardCore;
pub use stats::{
    EntityCounters, EntityStats, EpochCounters, EpochStats, EpochStatus, Histogram, HistogramSnapshot, ShardStats,
    ShardTotals, DRAINED_HISTORY, LATENCY_BUCKETS, LIFETIME_BUCKETS,
};
pub use types::{CloseKind, CloseOutcome, CloseReason, ConnId, ConnState, EpochChange, EpochPolicy, Refused, Stale};

#[cfg(test)]
mod storm;
#[cfg(test)]
mod tests;
