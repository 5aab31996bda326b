//! Counters kept by the core and the serializable report built from them.
//!
//! Counters live per (entity, epoch). A drained epoch keeps only its
//! counters and times ([`DrainedEpoch`]); an entity keeps the last
//! [`DRAINED_HISTORY`] of them and folds older ones into one sum, so memory
//! stays bounded however many changes an entity sees.

use std::ops::AddAssign;

use serde::Serialize;

use crate::config::model::Epoch;

/// Drained epochs kept per entity with their own line in the stats.
pub const DRAINED_HISTORY: usize = 16;

/// Event counters of one epoch of one entity on one shard.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EpochCounters {
    /// Handshakes that completed under this epoch.
    pub handshakes_completed: u64,
    /// ... of which full handshakes.
    pub full: u64,
    /// ... of which resumed a session.
    pub resumed: u64,
    /// R2: handshakes terminated because this epoch retired (including
    /// handshakes that completed just after and were found stale).
    pub killed: u64,
    /// Handshakes that ran past the handshake timeout.
    pub handshake_timeouts: u64,
    /// R3: clients that offered a session of another epoch and got a full
    /// handshake under this one.
    pub refused_resumptions: u64,
    /// R12: connections closed at this epoch's drain deadline.
    pub closed_by_drain: u64,
    /// R7: connections closed by disable or removal.
    pub closed_by_disable: u64,
    /// Connections that ended with our close_notify.
    pub closed_clean: u64,
    /// Connections that ended any other way.
    pub closed_unclean: u64,
    /// R8: sessions the shell was told to drop.
    pub sessions_dropped: u64,
}

impl AddAssign for EpochCounters {
    fn add_assign(&mut self, o: Self) {
        self.handshakes_completed += o.handshakes_completed;
        self.full += o.full;
        self.resumed += o.resumed;
        self.killed += o.killed;
        self.handshake_timeouts += o.handshake_timeouts;
        self.refused_resumptions += o.refused_resumptions;
        self.closed_by_drain += o.closed_by_drain;
        self.closed_by_disable += o.closed_by_disable;
        self.closed_clean += o.closed_clean;
        self.closed_unclean += o.closed_unclean;
        self.sessions_dropped += o.sessions_dropped;
    }
}

/// Counters of an entity not tied to any epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EntityCounters {
    /// Accepts refused: entity disabled or at `max_conns`.
    pub refused_accepts: u64,
    /// Front connections that timed out before their first byte.
    pub unbound_timeouts: u64,
    /// Front connections with no byte read, closed by disable or removal.
    pub unbound_closed_by_disable: u64,
}

impl AddAssign for EntityCounters {
    fn add_assign(&mut self, o: Self) {
        self.refused_accepts += o.refused_accepts;
        self.unbound_timeouts += o.unbound_timeouts;
        self.unbound_closed_by_disable += o.unbound_closed_by_disable;
    }
}

/// Where an epoch stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EpochStatus {
    /// New connections use it.
    Current,
    /// Retired; some of its connections are still open.
    Draining,
    /// Retired and every connection gone.
    Drained,
}

/// The compact record of a drained epoch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct DrainedEpoch {
    pub(super) epoch: Epoch,
    pub(super) counters: EpochCounters,
    pub(super) retired_at: f64,
    pub(super) drain_deadline: Option<f64>,
    pub(super) drained_at: f64,
}

/// One line of the stats: one epoch of one entity. Times are seconds since
/// the shard core's clock origin (its first observed `now`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EpochStats {
    pub epoch: Epoch,
    pub status: EpochStatus,
    /// Open connections bound to this epoch (handshaking, established,
    /// draining or closing).
    pub live: usize,
    #[serde(flatten)]
    pub counters: EpochCounters,
    pub retired_at: Option<f64>,
    pub drain_deadline: Option<f64>,
    pub drained_at: Option<f64>,
}

/// All epochs of one entity on one shard, newest first.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EntityStats {
    pub kind: &'static str,
    pub name: String,
    pub side: &'static str,
    pub enabled: bool,
    pub current_epoch: Epoch,
    /// Every open connection of the entity, bound or not.
    pub open: usize,
    /// Open connections not bound to an epoch yet (no byte read).
    pub unbound: usize,
    #[serde(flatten)]
    pub entity_counters: EntityCounters,
    pub epochs: Vec<EpochStats>,
    /// Sum of the counters of drained epochs too old to keep a line.
    pub older_epochs: EpochCounters,
}

/// Sums over every entity and epoch of the shard.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ShardTotals {
    pub open: usize,
    pub live_bound: usize,
    pub unbound: usize,
    pub epochs_draining: usize,
    pub epochs_drained: u64,
    #[serde(flatten)]
    pub counters: EpochCounters,
    #[serde(flatten)]
    pub entity_counters: EntityCounters,
}

/// The stats of one shard's lifecycle core, ready to serialize.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ShardStats {
    pub shard: usize,
    pub totals: ShardTotals,
    /// Sorted by entity kind, then name.
    pub entities: Vec<EntityStats>,
}
