//! [`ShardCore`]: connection states, epochs, timers and counters of one shard.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Instant;

use slab::Slab;

use super::stats::{
    DrainedEpoch, EntityCounters, EntityStats, EpochCounters, EpochStats, EpochStatus, ShardStats, ShardTotals,
    DRAINED_HISTORY,
};
use super::timers::{TimerKey, Timers};
use super::types::{CloseKind, CloseOutcome, CloseReason, ConnId, ConnState, EpochChange, EpochPolicy, Refused, Stale};
use crate::config::model::{EntityRef, Epoch, Side};

/// Internal phase of a connection. The public [`ConnState`] adds `Draining`,
/// which is `Established` under an epoch that is no longer current; deriving
/// it keeps an epoch change O(handshaking connections), not O(connections).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Front end, no byte read, not bound to an epoch.
    Accepted,
    /// Bound to an epoch, handshake under way.
    Handshaking,
    /// Handshake complete (current or retired epoch).
    Established,
    /// The core asked the shell to close it.
    Closing,
}

#[derive(Debug)]
struct Conn {
    /// Index of the entity in `ShardCore::entities`.
    entity: usize,
    epoch: Option<Epoch>,
    phase: Phase,
    /// Handshake deadline, while one is armed.
    deadline: Option<Instant>,
    /// `on_handshake_start` was seen (the timer was re-armed from it).
    started: bool,
}

/// Full state of an epoch that still has (or may get) connections.
#[derive(Debug)]
struct EpochState {
    policy: EpochPolicy,
    handshaking: HashSet<ConnId>,
    established: HashSet<ConnId>,
    closing: HashSet<ConnId>,
    counters: EpochCounters,
    retired_at: Option<Instant>,
    drain_deadline: Option<Instant>,
}

impl EpochState {
    fn new(policy: EpochPolicy) -> Self {
        EpochState {
            policy,
            handshaking: HashSet::new(),
            established: HashSet::new(),
            closing: HashSet::new(),
            counters: EpochCounters::default(),
            retired_at: None,
            drain_deadline: None,
        }
    }

    fn live(&self) -> usize {
        self.handshaking.len() + self.established.len() + self.closing.len()
    }
}

#[derive(Debug)]
struct EntityState {
    entity: EntityRef,
    current: Epoch,
    enabled: bool,
    /// The current epoch and every retired epoch not yet drained. The
    /// current epoch always has an entry.
    epochs: BTreeMap<Epoch, EpochState>,
    /// The last drained epochs, oldest first, at most [`DRAINED_HISTORY`].
    history: VecDeque<DrainedEpoch>,
    /// Counters of drained epochs pushed out of `history`.
    older: EpochCounters,
    epochs_drained: u64,
    /// Open connections not bound to an epoch (accepted, or closing
    /// before their first byte).
    unbound: HashSet<ConnId>,
    /// Every open connection of the entity, for `max_conns`.
    open: usize,
    counters: EntityCounters,
}

impl EntityState {
    fn new(entity: EntityRef, epoch: Epoch, policy: EpochPolicy) -> Self {
        let mut epochs = BTreeMap::new();
        epochs.insert(epoch, EpochState::new(policy));
        EntityState {
            entity,
            current: epoch,
            enabled: true,
            epochs,
            history: VecDeque::new(),
            older: EpochCounters::default(),
            epochs_drained: 0,
            unbound: HashSet::new(),
            open: 0,
            counters: EntityCounters::default(),
        }
    }

    fn current_state(&mut self) -> &mut EpochState {
        self.epochs
            .get_mut(&self.current)
            .expect("the current epoch always has a state")
    }
}

/// The IO-free lifecycle of one shard: which connections exist, under which
/// epoch each handshakes and runs, which must close when, and the counters.
///
/// The shell feeds it events (`on_*`, `set_epoch`, `disable`, ...) with the
/// time they happened and asks it what is due (`poll_timeouts`,
/// `next_deadline`). Every call is O(1) or O(log n) per connection touched.
#[derive(Debug)]
pub struct ShardCore {
    shard: usize,
    /// Zero of the times reported in the stats: the first `now` seen.
    origin: Option<Instant>,
    next_id: ConnId,
    entities: Slab<EntityState>,
    index: HashMap<EntityRef, usize>,
    conns: HashMap<ConnId, Conn>,
    timers: Timers,
}

impl ShardCore {
    /// An empty core for shard number `shard`.
    pub fn new(shard: usize) -> Self {
        ShardCore {
            shard,
            origin: None,
            next_id: 1,
            entities: Slab::new(),
            index: HashMap::new(),
            conns: HashMap::new(),
            timers: Timers::default(),
        }
    }

    /// An empty core whose stats report times relative to `origin`.
    pub fn with_origin(shard: usize, origin: Instant) -> Self {
        let mut c = Self::new(shard);
        c.origin = Some(origin);
        c
    }

    /// The shard number given at creation.
    pub fn shard(&self) -> usize {
        self.shard
    }

    fn touch(&mut self, now: Instant) {
        if self.origin.is_none() {
            self.origin = Some(now);
        }
    }

    fn secs(&self, t: Instant) -> f64 {
        self.origin
            .map_or(0.0, |o| t.saturating_duration_since(o).as_secs_f64())
    }

    // ----- epochs and entities -------------------------------------------

    /// Boot or snapshot: declare `entity`'s current epoch and policy.
    ///
    /// - Unknown entity: it is created, enabled, with `epoch` open.
    /// - `epoch` newer than the current one: `epoch` opens. Connections of
    ///   the old epoch that are mid-handshake are killed (R2) and returned;
    ///   established ones drain (R1), until `now + policy.drain_timeout`
    ///   when the new policy sets one (R12). Connections with no byte read
    ///   will handshake under `epoch`. Epochs retired earlier keep their own
    ///   deadlines.
    /// - Same epoch: only the policy is updated (it applies to connections
    ///   that start after this call).
    /// - Older epoch: ignored (a late snapshot).
    pub fn set_epoch(&mut self, entity: &EntityRef, epoch: Epoch, policy: EpochPolicy, now: Instant) -> EpochChange {
        self.touch(now);
        let Some(&idx) = self.index.get(entity) else {
            let idx = self.entities.insert(EntityState::new(entity.clone(), epoch, policy));
            self.index.insert(entity.clone(), idx);
            return EpochChange {
                opened: true,
                ..EpochChange::default()
            };
        };
        let ent = &mut self.entities[idx];
        if epoch < ent.current {
            return EpochChange::default();
        }
        if epoch == ent.current {
            ent.current_state().policy = policy;
            return EpochChange::default();
        }
        let old = ent.current;
        let drain_timeout = policy.drain_timeout;
        ent.current = epoch;
        ent.epochs.insert(epoch, EpochState::new(policy));
        let st = ent.epochs.get_mut(&old).expect("the current epoch always has a state");
        st.retired_at = Some(now);

        let mut killed: Vec<ConnId> = st.handshaking.drain().collect();
        killed.sort_unstable();
        for &id in &killed {
            if let Some(conn) = self.conns.get_mut(&id) {
                if let Some(at) = conn.deadline.take() {
                    self.timers.cancel(at, TimerKey::Handshake(id));
                }
                conn.phase = Phase::Closing;
            }
            st.closing.insert(id);
        }
        st.counters.killed += killed.len() as u64;

        let draining = st.established.len();
        if let (Some(dt), true) = (drain_timeout, draining > 0) {
            let at = now + dt;
            st.drain_deadline = Some(at);
            self.timers.insert(
                at,
                TimerKey::Drain {
                    entity: idx,
                    epoch: old,
                },
            );
        }
        let retired_drained = st.live() == 0;
        if retired_drained {
            self.finish_drain(idx, old, now);
        }
        EpochChange {
            killed,
            draining,
            opened: true,
            retired: Some(old),
            retired_drained,
        }
    }

    /// R7: close every connection of `entity` now, established ones too,
    /// and refuse new ones until [`enable`](Self::enable). Returns the
    /// connections the shell must close (sorted); connections already
    /// closing are not returned again, so calling it twice is harmless.
    pub fn disable(&mut self, entity: &EntityRef, now: Instant) -> Vec<ConnId> {
        self.touch(now);
        let Some(&idx) = self.index.get(entity) else {
            return Vec::new();
        };
        let ent = &mut self.entities[idx];
        ent.enabled = false;
        let mut out = Vec::new();
        for &id in &ent.unbound {
            if let Some(conn) = self.conns.get_mut(&id) {
                if conn.phase == Phase::Accepted {
                    if let Some(at) = conn.deadline.take() {
                        self.timers.cancel(at, TimerKey::Handshake(id));
                    }
                    conn.phase = Phase::Closing;
                    ent.counters.unbound_closed_by_disable += 1;
                    out.push(id);
                }
            }
        }
        for st in ent.epochs.values_mut() {
            for id in st.handshaking.drain().chain(st.established.drain()) {
                if let Some(conn) = self.conns.get_mut(&id) {
                    if let Some(at) = conn.deadline.take() {
                        self.timers.cancel(at, TimerKey::Handshake(id));
                    }
                    conn.phase = Phase::Closing;
                }
                st.closing.insert(id);
                st.counters.closed_by_disable += 1;
                out.push(id);
            }
        }
        out.sort_unstable();
        out
    }

    /// Accept connections of `entity` again. The snapshot that enables an
    /// entity also opens a new epoch through [`set_epoch`](Self::set_epoch).
    pub fn enable(&mut self, entity: &EntityRef) {
        if let Some(&idx) = self.index.get(entity) {
            self.entities[idx].enabled = true;
        }
    }

    /// Forget `entity` and all its state. Returns its open connections that
    /// were not already closing (sorted), for the shell to close; their later
    /// `on_close` is ignored.
    pub fn remove_entity(&mut self, entity: &EntityRef) -> Vec<ConnId> {
        let Some(idx) = self.index.remove(entity) else {
            return Vec::new();
        };
        let ent = self.entities.remove(idx);
        let mut out = Vec::new();
        let bound = ent.epochs.values().flat_map(|st| {
            st.handshaking
                .iter()
                .chain(st.established.iter())
                .chain(st.closing.iter())
        });
        for &id in ent.unbound.iter().chain(bound) {
            if let Some(conn) = self.conns.remove(&id) {
                if let Some(at) = conn.deadline {
                    self.timers.cancel(at, TimerKey::Handshake(id));
                }
                if conn.phase != Phase::Closing {
                    out.push(id);
                }
            }
        }
        for (&epoch, st) in &ent.epochs {
            if let Some(at) = st.drain_deadline {
                self.timers.cancel(at, TimerKey::Drain { entity: idx, epoch });
            }
        }
        out.sort_unstable();
        out
    }

    /// The epoch new connections of `entity` use, if it is known.
    pub fn current_epoch(&self, entity: &EntityRef) -> Option<Epoch> {
        self.index.get(entity).map(|&i| self.entities[i].current)
    }

    /// Whether `entity` is known and enabled.
    pub fn is_enabled(&self, entity: &EntityRef) -> bool {
        self.index.get(entity).is_some_and(|&i| self.entities[i].enabled)
    }

    /// Where `epoch` of `entity` stands: `None` when the entity is unknown,
    /// the epoch never seen here, or drained so long ago it left the history.
    pub fn epoch_status(&self, entity: &EntityRef, epoch: Epoch) -> Option<EpochStatus> {
        let ent = &self.entities[*self.index.get(entity)?];
        if epoch == ent.current {
            Some(EpochStatus::Current)
        } else if ent.epochs.contains_key(&epoch) {
            Some(EpochStatus::Draining)
        } else if ent.history.iter().any(|d| d.epoch == epoch) {
            Some(EpochStatus::Drained)
        } else {
            None
        }
    }

    /// Move a retired epoch with no connection left to the compact history.
    fn finish_drain(&mut self, idx: usize, epoch: Epoch, now: Instant) {
        let (retired_at, drain_deadline) = {
            let ent = &self.entities[idx];
            let st = &ent.epochs[&epoch];
            (st.retired_at.unwrap_or(now), st.drain_deadline)
        };
        if let Some(at) = drain_deadline {
            self.timers.cancel(at, TimerKey::Drain { entity: idx, epoch });
        }
        let record = DrainedEpoch {
            epoch,
            counters: self.entities[idx].epochs[&epoch].counters,
            retired_at: self.secs(retired_at),
            drain_deadline: drain_deadline.map(|d| self.secs(d)),
            drained_at: self.secs(now),
        };
        let ent = &mut self.entities[idx];
        ent.epochs.remove(&epoch);
        ent.epochs_drained += 1;
        ent.history.push_back(record);
        if ent.history.len() > DRAINED_HISTORY {
            if let Some(old) = ent.history.pop_front() {
                ent.older += old.counters;
            }
        }
    }

    // ----- connection events ---------------------------------------------

    /// A connection of `entity` was accepted (front end) or is being opened
    /// (back end). A front-end connection stays unbound until its first
    /// byte (R2); a back-end one is bound to the current epoch at once. In
    /// both cases the handshake timer starts now (a front end that never
    /// sends a byte times out too). Refused when the entity is unknown or
    /// disabled, or has `max_conns` open connections on this shard.
    pub fn on_accept(&mut self, entity: &EntityRef, now: Instant) -> Result<ConnId, Refused> {
        self.touch(now);
        let &idx = self.index.get(entity).ok_or(Refused)?;
        let ent = &mut self.entities[idx];
        let current = ent.current;
        let st = ent
            .epochs
            .get_mut(&current)
            .expect("the current epoch always has a state");
        let full = st.policy.max_conns.is_some_and(|m| ent.open >= m as usize);
        if !ent.enabled || full {
            ent.counters.refused_accepts += 1;
            return Err(Refused);
        }
        let id = self.next_id;
        self.next_id += 1;
        let deadline = now + st.policy.handshake_timeout;
        let (epoch, phase) = match entity.side() {
            Side::Front => {
                ent.unbound.insert(id);
                (None, Phase::Accepted)
            }
            Side::Back => {
                st.handshaking.insert(id);
                (Some(current), Phase::Handshaking)
            }
        };
        ent.open += 1;
        self.timers.insert(deadline, TimerKey::Handshake(id));
        self.conns.insert(
            id,
            Conn {
                entity: idx,
                epoch,
                phase,
                deadline: Some(deadline),
                started: false,
            },
        );
        Ok(id)
    }

    /// The first handshake byte was read (front end) or the TLS handshake
    /// begins (back end). Binds an unbound connection to the entity's
    /// current epoch and (re)starts its handshake timer from `now`. Returns
    /// the epoch the connection is bound to; for a connection already
    /// closing and never bound, the current epoch; for an unknown id, 0
    /// (never a valid epoch).
    pub fn on_handshake_start(&mut self, id: ConnId, now: Instant) -> Epoch {
        self.touch(now);
        let Some(conn) = self.conns.get_mut(&id) else {
            return 0;
        };
        let ent = &mut self.entities[conn.entity];
        match conn.phase {
            Phase::Accepted => {
                let e = ent.current;
                ent.unbound.remove(&id);
                let st = ent.epochs.get_mut(&e).expect("the current epoch always has a state");
                st.handshaking.insert(id);
                conn.epoch = Some(e);
                conn.phase = Phase::Handshaking;
                conn.started = true;
                if let Some(at) = conn.deadline.take() {
                    self.timers.cancel(at, TimerKey::Handshake(id));
                }
                let at = now + st.policy.handshake_timeout;
                conn.deadline = Some(at);
                self.timers.insert(at, TimerKey::Handshake(id));
                e
            }
            Phase::Handshaking if !conn.started => {
                let e = conn.epoch.unwrap_or(ent.current);
                conn.started = true;
                if let Some(st) = ent.epochs.get(&e) {
                    if let Some(at) = conn.deadline.take() {
                        self.timers.cancel(at, TimerKey::Handshake(id));
                    }
                    let at = now + st.policy.handshake_timeout;
                    conn.deadline = Some(at);
                    self.timers.insert(at, TimerKey::Handshake(id));
                }
                e
            }
            _ => conn.epoch.unwrap_or(ent.current),
        }
    }

    /// The handshake completed (`resumed`: a session was resumed). `Ok`
    /// when the connection's epoch is still current: it is established.
    /// `Err(Stale)` when its epoch retired meanwhile (R2, counted as killed
    /// unless the epoch change already did), when the core already asked for
    /// its close, or for an unknown id: the shell closes it.
    pub fn on_established(&mut self, id: ConnId, resumed: bool, now: Instant) -> Result<(), Stale> {
        self.touch(now);
        let Some(conn) = self.conns.get_mut(&id) else {
            return Err(Stale);
        };
        let ent = &mut self.entities[conn.entity];
        match conn.phase {
            Phase::Established => return Ok(()),
            Phase::Closing => return Err(Stale),
            Phase::Accepted => {
                // Established with no handshake byte seen: bind it now.
                ent.unbound.remove(&id);
                let e = ent.current;
                ent.current_state().handshaking.insert(id);
                conn.epoch = Some(e);
                conn.phase = Phase::Handshaking;
            }
            Phase::Handshaking => {}
        }
        if let Some(at) = conn.deadline.take() {
            self.timers.cancel(at, TimerKey::Handshake(id));
        }
        let e = conn.epoch.unwrap_or(ent.current);
        let fresh = e == ent.current && ent.enabled;
        let Some(st) = ent.epochs.get_mut(&e) else {
            return Err(Stale);
        };
        st.handshaking.remove(&id);
        if fresh {
            st.established.insert(id);
            conn.phase = Phase::Established;
            st.counters.handshakes_completed += 1;
            if resumed {
                st.counters.resumed += 1;
            } else {
                st.counters.full += 1;
            }
            Ok(())
        } else {
            st.closing.insert(id);
            conn.phase = Phase::Closing;
            st.counters.killed += 1;
            Err(Stale)
        }
    }

    /// The connection is gone. Says whether its TLS session must be dropped
    /// from the caches (R8: the connection did not end with our close_notify
    /// and its epoch has strict session cleanup) and which epoch it was
    /// bound to. When it was the last connection of a retired epoch, that
    /// epoch is drained now. An unknown id gets the default outcome.
    pub fn on_close(&mut self, id: ConnId, kind: CloseKind, now: Instant) -> CloseOutcome {
        self.touch(now);
        let Some(conn) = self.conns.remove(&id) else {
            return CloseOutcome::default();
        };
        if let Some(at) = conn.deadline {
            self.timers.cancel(at, TimerKey::Handshake(id));
        }
        let ent = &mut self.entities[conn.entity];
        ent.open -= 1;
        let Some(e) = conn.epoch else {
            ent.unbound.remove(&id);
            // A client that never sent a byte and ran out of time.
            if kind == CloseKind::Timeout {
                ent.counters.unbound_timeouts += 1;
            }
            return CloseOutcome::default();
        };
        let Some(st) = ent.epochs.get_mut(&e) else {
            return CloseOutcome {
                epoch: Some(e),
                ..CloseOutcome::default()
            };
        };
        match conn.phase {
            Phase::Handshaking => st.handshaking.remove(&id),
            Phase::Established => st.established.remove(&id),
            Phase::Closing => st.closing.remove(&id),
            Phase::Accepted => false,
        };
        let drop_session = kind != CloseKind::Clean && st.policy.strict_session_cleanup;
        if kind == CloseKind::Clean {
            st.counters.closed_clean += 1;
        } else {
            st.counters.closed_unclean += 1;
        }
        if drop_session {
            st.counters.sessions_dropped += 1;
        }
        let epoch_drained = st.retired_at.is_some() && st.live() == 0;
        if epoch_drained {
            self.finish_drain(conn.entity, e, now);
        }
        CloseOutcome {
            drop_session,
            epoch: Some(e),
            epoch_drained,
        }
    }

    /// A client of `entity` was closed for its PROXY header (untrusted
    /// source, malformed, oversized or late) before any epoch was bound.
    pub fn on_proxy_header_refused(&mut self, entity: &EntityRef, now: Instant) {
        self.touch(now);
        if let Some(&idx) = self.index.get(entity) {
            self.entities[idx].counters.proxy_header_refused += 1;
        }
    }

    /// R3: a client of `entity` offered a session of another epoch and got
    /// a full handshake under the current one.
    pub fn on_refused_resumption(&mut self, entity: &EntityRef, now: Instant) {
        self.touch(now);
        if let Some(&idx) = self.index.get(entity) {
            self.entities[idx].current_state().counters.refused_resumptions += 1;
        }
    }

    /// A connection of `entity` bound to `epoch`, already closed here, was
    /// reset because its peer did not take the last bytes written within
    /// the linger deadline. Counted on that epoch, drained or not (an epoch
    /// gone from the history counts with the older ones).
    pub fn on_closed_unflushed(&mut self, entity: &EntityRef, epoch: Epoch, now: Instant) {
        self.touch(now);
        let Some(&idx) = self.index.get(entity) else {
            return;
        };
        let ent = &mut self.entities[idx];
        if let Some(st) = ent.epochs.get_mut(&epoch) {
            st.counters.closed_unflushed += 1;
        } else if let Some(d) = ent.history.iter_mut().find(|d| d.epoch == epoch) {
            d.counters.closed_unflushed += 1;
        } else {
            ent.older.closed_unflushed += 1;
        }
    }

    // ----- timers ------------------------------------------------------------

    /// Every timer due at `now` (deadline <= now): handshake timeouts and
    /// drain deadlines (R12), in deadline order. The shell closes each
    /// returned connection (with close_notify where a session exists) and
    /// reports it through `on_close`.
    pub fn poll_timeouts(&mut self, now: Instant) -> Vec<(ConnId, CloseReason)> {
        self.touch(now);
        let mut out = Vec::new();
        while let Some((_, key)) = self.timers.pop_due(now) {
            match key {
                TimerKey::Handshake(id) => {
                    let Some(conn) = self.conns.get_mut(&id) else {
                        continue;
                    };
                    conn.deadline = None;
                    let ent = &mut self.entities[conn.entity];
                    match (conn.phase, conn.epoch) {
                        (Phase::Accepted, _) => ent.counters.unbound_timeouts += 1,
                        (Phase::Handshaking, Some(e)) => {
                            if let Some(st) = ent.epochs.get_mut(&e) {
                                st.handshaking.remove(&id);
                                st.closing.insert(id);
                                st.counters.handshake_timeouts += 1;
                            }
                        }
                        _ => continue,
                    }
                    conn.phase = Phase::Closing;
                    out.push((id, CloseReason::HandshakeTimeout));
                }
                TimerKey::Drain { entity, epoch } => {
                    let Some(st) = self.entities.get_mut(entity).and_then(|e| e.epochs.get_mut(&epoch)) else {
                        continue;
                    };
                    let mut ids: Vec<ConnId> = st.established.drain().collect();
                    ids.sort_unstable();
                    st.counters.closed_by_drain += ids.len() as u64;
                    for &id in &ids {
                        st.closing.insert(id);
                        if let Some(conn) = self.conns.get_mut(&id) {
                            conn.phase = Phase::Closing;
                        }
                        out.push((id, CloseReason::DrainTimeout));
                    }
                }
            }
        }
        out
    }

    /// The earliest pending deadline, for the shell's timer.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.next()
    }

    // ----- queries -----------------------------------------------------------

    /// The state of a connection; `None` for an unknown (or closed) id.
    pub fn conn_state(&self, id: ConnId) -> Option<ConnState> {
        let conn = self.conns.get(&id)?;
        let ent = &self.entities[conn.entity];
        Some(match (conn.phase, conn.epoch) {
            (Phase::Accepted, _) => ConnState::Accepted,
            (Phase::Closing, _) => ConnState::Closing,
            (Phase::Handshaking, Some(epoch)) => ConnState::Handshaking { epoch },
            (Phase::Established, Some(epoch)) if epoch == ent.current => ConnState::Established { epoch },
            (Phase::Established, Some(epoch)) => ConnState::Draining { epoch },
            (_, None) => ConnState::Closing,
        })
    }

    /// The entity a connection belongs to.
    pub fn conn_entity(&self, id: ConnId) -> Option<&EntityRef> {
        self.conns.get(&id).map(|c| &self.entities[c.entity].entity)
    }

    /// R4: whether an established (idle) connection may carry a new
    /// client: established under the current epoch of an enabled entity.
    pub fn is_reusable(&self, id: ConnId) -> bool {
        self.conns.get(&id).is_some_and(|c| {
            let ent = &self.entities[c.entity];
            c.phase == Phase::Established && c.epoch == Some(ent.current) && ent.enabled
        })
    }

    /// Open connections on this shard, every entity and state.
    pub fn open_conns(&self) -> usize {
        self.conns.len()
    }

    /// Counters and epochs of every entity of this shard.
    pub fn stats(&self) -> ShardStats {
        let mut totals = ShardTotals {
            open: self.conns.len(),
            ..ShardTotals::default()
        };
        let mut entities: Vec<&EntityState> = self.entities.iter().map(|(_, e)| e).collect();
        entities.sort_by(|a, b| a.entity.cmp(&b.entity));
        let entities = entities
            .into_iter()
            .map(|ent| {
                let mut epochs = Vec::with_capacity(ent.epochs.len() + ent.history.len());
                for (&epoch, st) in ent.epochs.iter().rev() {
                    let status = if epoch == ent.current {
                        EpochStatus::Current
                    } else {
                        EpochStatus::Draining
                    };
                    if status == EpochStatus::Draining {
                        totals.epochs_draining += 1;
                    }
                    totals.live_bound += st.live();
                    totals.counters += st.counters;
                    epochs.push(EpochStats {
                        epoch,
                        status,
                        live: st.live(),
                        counters: st.counters,
                        retired_at: st.retired_at.map(|t| self.secs(t)),
                        drain_deadline: st.drain_deadline.map(|t| self.secs(t)),
                        drained_at: None,
                    });
                }
                for d in ent.history.iter().rev() {
                    totals.counters += d.counters;
                    epochs.push(EpochStats {
                        epoch: d.epoch,
                        status: EpochStatus::Drained,
                        live: 0,
                        counters: d.counters,
                        retired_at: Some(d.retired_at),
                        drain_deadline: d.drain_deadline,
                        drained_at: Some(d.drained_at),
                    });
                }
                totals.counters += ent.older;
                totals.entity_counters += ent.counters;
                totals.epochs_drained += ent.epochs_drained;
                totals.unbound += ent.unbound.len();
                EntityStats {
                    kind: ent.entity.kind.keyword(),
                    name: ent.entity.name.to_string(),
                    side: match ent.entity.side() {
                        Side::Front => "front",
                        Side::Back => "back",
                    },
                    enabled: ent.enabled,
                    current_epoch: ent.current,
                    open: ent.open,
                    unbound: ent.unbound.len(),
                    entity_counters: ent.counters,
                    epochs,
                    older_epochs: ent.older,
                }
            })
            .collect();
        ShardStats {
            shard: self.shard,
            totals,
            entities,
        }
    }

    /// Checks the internal bookkeeping agrees with itself; for tests.
    #[cfg(test)]
    pub(super) fn check_consistency(&self) {
        let mut seen = 0;
        for (idx, ent) in self.entities.iter() {
            let mut n = ent.unbound.len();
            for &id in &ent.unbound {
                let c = &self.conns[&id];
                assert_eq!((c.entity, c.epoch), (idx, None));
                assert!(matches!(c.phase, Phase::Accepted | Phase::Closing));
            }
            assert!(ent.epochs.contains_key(&ent.current));
            for (&e, st) in &ent.epochs {
                n += st.live();
                for (set, phase) in [
                    (&st.handshaking, Phase::Handshaking),
                    (&st.established, Phase::Established),
                    (&st.closing, Phase::Closing),
                ] {
                    for id in set {
                        let c = &self.conns[id];
                        assert_eq!((c.entity, c.epoch, c.phase), (idx, Some(e), phase), "conn {id}");
                    }
                }
                if e != ent.current {
                    assert!(st.handshaking.is_empty(), "retired epoch {e} has handshakes");
                    assert!(st.live() > 0, "retired epoch {e} should be drained");
                }
            }
            assert_eq!(n, ent.open);
            seen += n;
        }
        assert_eq!(seen, self.conns.len());
        let armed = self.conns.values().filter(|c| c.deadline.is_some()).count();
        let drains: usize = self
            .entities
            .iter()
            .map(|(_, e)| e.epochs.values().filter(|s| s.drain_deadline.is_some()).count())
            .sum();
        assert!(self.timers.len() <= armed + drains);
        assert!(self.timers.len() >= armed);
    }
}
