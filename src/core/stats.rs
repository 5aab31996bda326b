//! Counters kept by the core, the serializable report built from them, and
//! the latency histograms a shard keeps beside them.
//!
//! Counters live per (entity, epoch). A drained epoch keeps only its
//! counters and times ([`DrainedEpoch`]); an entity keeps the last
//! [`DRAINED_HISTORY`] of them and folds older ones into one sum, so memory
//! stays bounded however many changes an entity sees.
//!
//! A [`Histogram`] counts durations into fixed buckets held in `Cell`s: it
//! belongs to one thread (a shard, or the control thread), and an
//! observation is a bucket search and three stores, with no lock and no
//! allocation. A [`HistogramSnapshot`] is its sendable copy; snapshots of
//! the same buckets from every shard are merged when metrics are scraped.
//! Nothing here reads a clock: durations are measured by the caller.

use std::cell::Cell;
use std::ops::AddAssign;
use std::time::Duration;

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
    /// Connections whose peer did not take what was written to it within
    /// the linger deadline after the close: reset, the rest dropped.
    pub closed_unflushed: u64,
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
        self.closed_unflushed += o.closed_unflushed;
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
    /// Front connections closed for their PROXY header: from an untrusted
    /// source, malformed or oversized, or not complete within the
    /// handshake timeout.
    pub proxy_header_refused: u64,
}

impl AddAssign for EntityCounters {
    fn add_assign(&mut self, o: Self) {
        self.refused_accepts += o.refused_accepts;
        self.unbound_timeouts += o.unbound_timeouts;
        self.unbound_closed_by_disable += o.unbound_closed_by_disable;
        self.proxy_header_refused += o.proxy_header_refused;
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

/// Most finite bucket bounds a [`Histogram`] may have.
pub const MAX_BUCKETS: usize = 24;

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

const fn us(n: u64) -> Duration {
    Duration::from_micros(n)
}

/// Bucket bounds for a latency (a TLS handshake, a back-end connect, a
/// change's propagation to every shard): 25 us to 10 s.
pub const LATENCY_BUCKETS: &[Duration] = &[
    us(25),
    us(50),
    us(100),
    us(250),
    us(500),
    ms(1),
    us(2500),
    ms(5),
    ms(10),
    ms(25),
    ms(50),
    ms(100),
    ms(250),
    ms(500),
    ms(1000),
    ms(2500),
    ms(5000),
    ms(10000),
];

/// Bucket bounds for a client connection's lifetime: 1 ms to 1 day.
pub const LIFETIME_BUCKETS: &[Duration] = &[
    ms(1),
    ms(10),
    ms(100),
    ms(1000),
    ms(10_000),
    ms(60_000),
    ms(300_000),
    ms(1_800_000),
    ms(3_600_000),
    ms(21_600_000),
    ms(86_400_000),
];

/// Durations counted into fixed buckets, for one thread.
pub struct Histogram {
    bounds: &'static [Duration],
    /// Observations per bucket (not cumulative); the one after the last
    /// bound counts what exceeded every bound.
    counts: [Cell<u64>; MAX_BUCKETS + 1],
    sum_ns: Cell<u64>,
}

impl Histogram {
    /// An empty histogram over `bounds` (ascending, at most [`MAX_BUCKETS`]).
    pub fn new(bounds: &'static [Duration]) -> Self {
        assert!(bounds.len() <= MAX_BUCKETS, "at most {MAX_BUCKETS} buckets");
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]), "bounds ascend");
        Histogram {
            bounds,
            counts: Default::default(),
            sum_ns: Cell::new(0),
        }
    }

    /// Count one duration.
    pub fn observe(&self, d: Duration) {
        let i = self.bounds.partition_point(|b| *b < d);
        let c = &self.counts[i];
        c.set(c.get() + 1);
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.set(self.sum_ns.get().saturating_add(ns));
    }

    /// A sendable copy of the counts so far.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds: self.bounds,
            counts: self.counts[..=self.bounds.len()].iter().map(Cell::get).collect(),
            sum_ns: self.sum_ns.get(),
        }
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.snapshot().fmt(f)
    }
}

/// A copy of a [`Histogram`]'s counts, which can cross threads and merge
/// with copies of histograms over the same bounds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistogramSnapshot {
    pub bounds: &'static [Duration],
    /// Observations per bucket, not cumulative; one more than `bounds`.
    pub counts: Vec<u64>,
    pub sum_ns: u64,
}

impl HistogramSnapshot {
    /// An empty snapshot over `bounds`.
    pub fn empty(bounds: &'static [Duration]) -> Self {
        HistogramSnapshot {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum_ns: 0,
        }
    }

    /// Observations in all.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The sum of every observation, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_ns as f64 / 1e9
    }

    /// Add `other`'s observations (same bounds, else nothing is added).
    pub fn merge(&mut self, other: &HistogramSnapshot) {
        if self.bounds != other.bounds {
            debug_assert!(false, "merging histograms over different buckets");
            return;
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
    }

    /// (upper bound in seconds, observations in that bucket) for every
    /// bucket, the last one's bound infinite.
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        self.bounds
            .iter()
            .map(Duration::as_secs_f64)
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.counts.iter().copied())
            .collect()
    }
}

#[cfg(test)]
mod histogram_tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_whose_bound_holds_them() {
        let h = Histogram::new(LATENCY_BUCKETS);
        h.observe(Duration::from_micros(25)); // on a bound: that bucket (le)
        h.observe(Duration::from_micros(26));
        h.observe(Duration::ZERO);
        h.observe(Duration::from_secs(60)); // past every bound: +Inf
        let s = h.snapshot();
        assert_eq!(s.count(), 4);
        assert_eq!(s.counts.len(), LATENCY_BUCKETS.len() + 1);
        assert_eq!(s.counts[0], 2);
        assert_eq!(s.counts[1], 1);
        assert_eq!(*s.counts.last().unwrap(), 1);
        assert_eq!(s.sum_ns, 25_000 + 26_000 + 60_000_000_000);
        let b = s.buckets();
        assert_eq!(b.first(), Some(&(0.000025, 2)));
        assert_eq!(b.last(), Some(&(f64::INFINITY, 1)));
    }

    #[test]
    fn snapshots_of_the_same_buckets_merge() {
        let (a, b) = (Histogram::new(LIFETIME_BUCKETS), Histogram::new(LIFETIME_BUCKETS));
        a.observe(Duration::from_millis(5));
        b.observe(Duration::from_millis(5));
        b.observe(Duration::from_secs(2));
        let mut m = HistogramSnapshot::empty(LIFETIME_BUCKETS);
        m.merge(&a.snapshot());
        m.merge(&b.snapshot());
        assert_eq!(m.count(), 3);
        assert_eq!(m.counts[1], 2);
        assert_eq!(m.counts[4], 1);
        assert!((m.sum_seconds() - 2.01).abs() < 1e-9);
    }

    #[test]
    fn every_bucket_layout_fits_and_ascends() {
        for b in [LATENCY_BUCKETS, LIFETIME_BUCKETS] {
            assert!(b.len() <= MAX_BUCKETS);
            assert!(b.windows(2).all(|w| w[0] < w[1]));
        }
    }
}
