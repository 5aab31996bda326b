//! Seeded "epoch storm" simulation: thousands of random events over several
//! entities (accepts, handshakes, closes of every kind, epoch changes,
//! disable/enable, removals, time jumps), with a shadow model of what the
//! shell knows and the invariants checked after every step:
//!
//! - an epoch change never closes an established connection: only a drain
//!   deadline or disable/removal does;
//! - a connection is established only under the epoch current at that time;
//! - once time passes a retired epoch's drain deadline, none of its
//!   connections is still running, and a retired epoch with no connection
//!   left is drained;
//! - per (entity, epoch) live counts, and the totals, equal the number of
//!   open connections;
//! - R8: every close says to drop the session exactly when it should.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use super::tests::{at, t0};
use super::*;
use crate::config::model::{EntityKind, EntityRef, Epoch, Side};

/// xorshift64*: small, deterministic, good enough to pick events.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        (!items.is_empty()).then(|| items[self.below(items.len() as u64) as usize])
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sh {
    Accepted,
    Handshaking,
    Established,
    /// The core asked for its close, for this reason.
    Closing(CloseReason),
}

#[derive(Clone, Copy, Debug)]
struct ShConn {
    entity: usize,
    epoch: Option<Epoch>,
    state: Sh,
    /// Handshake deadline the shadow expects.
    deadline: Option<Instant>,
    started: bool,
}

struct Retired {
    deadline: Option<Instant>,
}

struct Model {
    entities: Vec<EntityRef>,
    current: Vec<Option<Epoch>>,
    enabled: Vec<bool>,
    policies: HashMap<(usize, Epoch), EpochPolicy>,
    retired: BTreeMap<(usize, Epoch), Retired>,
    conns: BTreeMap<ConnId, ShConn>,
    /// Conns the shell must still report closed (killed, timed out,
    /// drained, disabled, or orphaned by a removal).
    last_id: ConnId,
    now: Instant,
    seen: Coverage,
}

/// How often the storm went through the paths it checks.
#[derive(Debug, Default)]
struct Coverage {
    drained: u64,
    killed: u64,
    drain_closes: u64,
    stale: u64,
    disable_closes: u64,
    timeouts: u64,
}

fn random_policy(rng: &mut Rng) -> EpochPolicy {
    EpochPolicy {
        drain_timeout: rng
            .chance(70)
            .then(|| Duration::from_millis(200 + rng.below(6_000))),
        handshake_timeout: Duration::from_millis(2000 + rng.below(20_000)),
        strict_session_cleanup: rng.chance(80),
        max_conns: rng.chance(30).then(|| 5 + rng.below(40) as u32),
    }
}

impl Model {
    fn open_of(&self, e: usize) -> usize {
        self.conns.values().filter(|c| c.entity == e).count()
    }

    fn live_of(&self, e: usize, epoch: Epoch) -> usize {
        self.conns
            .values()
            .filter(|c| c.entity == e && c.epoch == Some(epoch))
            .count()
    }

    fn ids_where(&self, f: impl Fn(&ShConn) -> bool) -> Vec<ConnId> {
        self.conns
            .iter()
            .filter(|(_, c)| f(c))
            .map(|(&id, _)| id)
            .collect()
    }

    /// Open a newer epoch of entity `e` and check what the core did.
    fn bump(&mut self, core: &mut ShardCore, e: usize, policy: EpochPolicy) {
        let Some(old) = self.current[e] else { return };
        let new = old + 1;
        let ch = core.set_epoch(&self.entities[e], new, policy.clone(), self.now);
        let handshaking = self.ids_where(|c| c.entity == e && c.state == Sh::Handshaking);
        assert!(handshaking
            .iter()
            .all(|id| self.conns[id].epoch == Some(old)));
        // Invariant: only mid-handshake connections are killed by a change.
        assert_eq!(
            ch.killed,
            handshaking,
            "killed set at {:?}",
            self.now - t0()
        );
        let est =
            self.ids_where(|c| c.entity == e && c.epoch == Some(old) && c.state == Sh::Established);
        assert_eq!(ch.draining, est.len());
        assert!(ch.opened);
        assert_eq!(ch.retired, Some(old));
        self.seen.killed += ch.killed.len() as u64;
        self.seen.drained += u64::from(ch.retired_drained);
        for id in &ch.killed {
            let c = self.conns.get_mut(id).unwrap();
            c.state = Sh::Closing(CloseReason::EpochChanged);
            c.deadline = None;
        }
        let deadline = policy
            .drain_timeout
            .filter(|_| !est.is_empty())
            .map(|d| self.now + d);
        assert_eq!(ch.retired_drained, self.live_of(e, old) == 0);
        if !ch.retired_drained {
            self.retired.insert((e, old), Retired { deadline });
        }
        self.current[e] = Some(new);
        self.policies.insert((e, new), policy);
    }

    fn close(&mut self, core: &mut ShardCore, id: ConnId, kind: CloseKind) {
        let out = core.on_close(id, kind, self.now);
        let Some(c) = self.conns.remove(&id) else {
            assert_eq!(out, CloseOutcome::default(), "orphan {id}");
            return;
        };
        assert_eq!(out.epoch, c.epoch);
        let strict = c
            .epoch
            .is_some_and(|ep| self.policies[&(c.entity, ep)].strict_session_cleanup);
        assert_eq!(
            out.drop_session,
            strict && kind != CloseKind::Clean,
            "R8 for {id} {kind:?}"
        );
        if let Some(ep) = c.epoch {
            let last =
                self.retired.contains_key(&(c.entity, ep)) && self.live_of(c.entity, ep) == 0;
            assert_eq!(out.epoch_drained, last, "drained flag of {id}");
            if last {
                self.seen.drained += 1;
                self.retired.remove(&(c.entity, ep));
                assert_ne!(
                    core.epoch_status(&self.entities[c.entity], ep),
                    Some(EpochStatus::Draining)
                );
            }
        }
    }

    fn poll(&mut self, core: &mut ShardCore) {
        let due = core.poll_timeouts(self.now);
        for (id, reason) in due {
            let c = self
                .conns
                .get_mut(&id)
                .expect("poll returns open connections");
            match reason {
                CloseReason::HandshakeTimeout => {
                    assert!(
                        matches!(c.state, Sh::Accepted | Sh::Handshaking),
                        "{id} {:?}",
                        c.state
                    );
                    assert!(
                        c.deadline.is_some_and(|d| d <= self.now),
                        "handshake timer of {id} early"
                    );
                    self.seen.timeouts += 1;
                }
                CloseReason::DrainTimeout => {
                    // Invariant: an established connection is closed only here
                    // (its epoch retired and past its deadline) or by disable.
                    assert_eq!(c.state, Sh::Established);
                    let r = &self.retired[&(c.entity, c.epoch.unwrap())];
                    assert!(
                        r.deadline.is_some_and(|d| d <= self.now),
                        "drain of {id} early"
                    );
                    self.seen.drain_closes += 1;
                }
                other => panic!("poll_timeouts returned {other:?}"),
            }
            c.state = Sh::Closing(reason);
            c.deadline = None;
        }
        // Nothing due is left running.
        for (id, c) in &self.conns {
            if matches!(c.state, Sh::Accepted | Sh::Handshaking) {
                assert!(
                    c.deadline.is_some_and(|d| d > self.now),
                    "{id} missed its handshake timeout"
                );
            }
            if c.state == Sh::Established {
                if let Some(r) = self.retired.get(&(c.entity, c.epoch.unwrap())) {
                    assert!(
                        r.deadline.is_none_or(|d| d > self.now),
                        "{id} outlived its drain deadline"
                    );
                }
            }
        }
    }

    fn check(&self, core: &ShardCore) {
        core.check_consistency();
        assert_eq!(core.open_conns(), self.conns.len());
        for (&id, c) in &self.conns {
            let want = match (c.state, c.epoch) {
                (Sh::Accepted, _) => ConnState::Accepted,
                (Sh::Closing(_), _) => ConnState::Closing,
                (Sh::Handshaking, Some(epoch)) => ConnState::Handshaking { epoch },
                (Sh::Established, Some(epoch)) if Some(epoch) == self.current[c.entity] => {
                    ConnState::Established { epoch }
                }
                (Sh::Established, Some(epoch)) => ConnState::Draining { epoch },
                (s, None) => panic!("{id} {s:?} without epoch"),
            };
            assert_eq!(core.conn_state(id), Some(want), "state of {id}");
        }
        let stats = core.stats();
        assert_eq!(stats.totals.open, self.conns.len());
        let mut draining = 0;
        for (e, ent) in self.entities.iter().enumerate() {
            let Some(cur) = self.current[e] else { continue };
            let line = stats
                .entities
                .iter()
                .find(|s| s.name == *ent.name && s.kind == ent.kind.keyword())
                .unwrap();
            assert_eq!(line.current_epoch, cur);
            assert_eq!(line.enabled, self.enabled[e]);
            assert_eq!(line.open, self.open_of(e));
            let bound: usize = line.epochs.iter().map(|l| l.live).sum();
            assert_eq!(line.open - bound, line.unbound);
            for l in &line.epochs {
                assert_eq!(
                    l.live,
                    self.live_of(e, l.epoch),
                    "live of {ent} epoch {}",
                    l.epoch
                );
                match l.status {
                    EpochStatus::Current => assert_eq!(l.epoch, cur),
                    EpochStatus::Draining => {
                        assert!(self.retired.contains_key(&(e, l.epoch)));
                        draining += 1;
                    }
                    EpochStatus::Drained => assert_eq!(l.live, 0),
                }
            }
        }
        assert_eq!(
            draining,
            self.retired.len(),
            "every retired epoch with connections is draining, no other"
        );
        assert_eq!(stats.totals.epochs_draining, self.retired.len());
    }
}

fn storm(seed: u64, steps: usize) -> Coverage {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let entities = vec![
        EntityRef::new(EntityKind::Vserver, "v0"),
        EntityRef::new(EntityKind::Vserver, "v1"),
        EntityRef::new(EntityKind::Vserver, "v2"),
        EntityRef::new(EntityKind::Service, "s0"),
        EntityRef::new(EntityKind::ServiceGroup, "g0"),
    ];
    let n = entities.len();
    let mut core = ShardCore::with_origin(7, t0());
    let mut m = Model {
        entities,
        current: vec![None; n],
        enabled: vec![true; n],
        policies: HashMap::new(),
        retired: BTreeMap::new(),
        conns: BTreeMap::new(),
        last_id: 0,
        now: at(0),
        seen: Coverage::default(),
    };
    for e in 0..n {
        let p = random_policy(&mut rng);
        assert!(core.set_epoch(&m.entities[e], 1, p.clone(), m.now).opened);
        m.current[e] = Some(1);
        m.policies.insert((e, 1), p);
    }
    let mut orphans: Vec<ConnId> = Vec::new();

    for _ in 0..steps {
        let e = rng.below(n as u64) as usize;
        let action = rng.below(100);
        if m.current[e].is_none() {
            if rng.chance(20) {
                let p = random_policy(&mut rng);
                assert!(core.set_epoch(&m.entities[e], 1, p.clone(), m.now).opened);
                m.current[e] = Some(1);
                m.enabled[e] = true;
                m.policies.retain(|&(x, _), _| x != e);
                m.policies.insert((e, 1), p);
            }
            m.check(&core);
            continue;
        }
        match action {
            // accept
            0..=24 => {
                if m.current[e].is_none() {
                    continue;
                }
                let cur = m.current[e].unwrap();
                let policy = m.policies[&(e, cur)].clone();
                let full = policy.max_conns.is_some_and(|x| m.open_of(e) >= x as usize);
                let res = core.on_accept(&m.entities[e], m.now);
                if !m.enabled[e] || full {
                    assert_eq!(res, Err(Refused));
                    continue;
                }
                let id = res.expect("accept");
                assert!(id > m.last_id, "ids are never reused");
                m.last_id = id;
                let back = m.entities[e].side() == Side::Back;
                m.conns.insert(
                    id,
                    ShConn {
                        entity: e,
                        epoch: back.then_some(cur),
                        state: if back { Sh::Handshaking } else { Sh::Accepted },
                        deadline: Some(m.now + policy.handshake_timeout),
                        started: false,
                    },
                );
            }
            // first byte / handshake start
            25..=39 => {
                let ids = m
                    .ids_where(|c| !c.started && matches!(c.state, Sh::Accepted | Sh::Handshaking));
                let Some(id) = rng.pick(&ids) else { continue };
                let c = m.conns[&id];
                let epoch = c.epoch.unwrap_or(m.current[c.entity].unwrap());
                assert_eq!(core.on_handshake_start(id, m.now), epoch);
                let hs = m.policies[&(c.entity, epoch)].handshake_timeout;
                let c = m.conns.get_mut(&id).unwrap();
                c.epoch = Some(epoch);
                c.state = Sh::Handshaking;
                c.started = true;
                c.deadline = Some(m.now + hs);
            }
            // handshake completes (sometimes for a connection already closing)
            40..=54 => {
                let ids = m.ids_where(|c| {
                    matches!(c.state, Sh::Handshaking | Sh::Closing(_)) && c.epoch.is_some()
                });
                let Some(id) = rng.pick(&ids) else { continue };
                let c = m.conns[&id];
                let resumed = rng.chance(40);
                let res = core.on_established(id, resumed, m.now);
                if c.state == Sh::Handshaking {
                    // Invariant: established only under the epoch current now.
                    assert_eq!(
                        c.epoch, m.current[c.entity],
                        "handshaking under a retired epoch"
                    );
                    assert_eq!(res, Ok(()));
                    let c = m.conns.get_mut(&id).unwrap();
                    c.state = Sh::Established;
                    c.deadline = None;
                } else {
                    assert_eq!(res, Err(Stale));
                    m.seen.stale += 1;
                }
            }
            // the peer or the shell closes a running connection
            55..=66 => {
                let ids = m.ids_where(|c| !matches!(c.state, Sh::Closing(_)));
                let Some(id) = rng.pick(&ids) else { continue };
                let kind = rng.pick(&CloseKind::ALL).unwrap();
                m.close(&mut core, id, kind);
            }
            // the shell finishes closing what the core asked for
            67..=76 => {
                let ids = m.ids_where(|c| matches!(c.state, Sh::Closing(_)));
                for id in ids {
                    if rng.chance(60) {
                        let kind = match m.conns[&id].state {
                            Sh::Closing(CloseReason::EpochChanged) => CloseKind::Killed,
                            Sh::Closing(CloseReason::HandshakeTimeout) => CloseKind::Timeout,
                            _ if rng.chance(80) => CloseKind::Clean,
                            _ => CloseKind::PeerReset,
                        };
                        m.close(&mut core, id, kind);
                    }
                }
                for id in std::mem::take(&mut orphans) {
                    assert_eq!(
                        core.on_close(id, CloseKind::Clean, m.now),
                        CloseOutcome::default()
                    );
                }
            }
            // configuration change
            77..=84 => {
                let p = random_policy(&mut rng);
                m.bump(&mut core, e, p);
            }
            // same epoch, new policy
            85 => {
                let Some(cur) = m.current[e] else { continue };
                let p = random_policy(&mut rng);
                assert_eq!(
                    core.set_epoch(&m.entities[e], cur, p.clone(), m.now),
                    EpochChange::default()
                );
                m.policies.insert((e, cur), p);
            }
            // disable, or enable with a new epoch
            86..=87 => {
                if m.enabled[e] && rng.chance(25) {
                    let want = m.ids_where(|c| c.entity == e && !matches!(c.state, Sh::Closing(_)));
                    assert_eq!(core.disable(&m.entities[e], m.now), want);
                    m.seen.disable_closes += want.len() as u64;
                    for id in want {
                        let c = m.conns.get_mut(&id).unwrap();
                        c.state = Sh::Closing(CloseReason::Disabled);
                        c.deadline = None;
                    }
                    m.enabled[e] = false;
                } else if !m.enabled[e] {
                    let p = random_policy(&mut rng);
                    m.bump(&mut core, e, p);
                    core.enable(&m.entities[e]);
                    m.enabled[e] = true;
                }
            }
            // removal (the entity comes back a few steps later)
            88 if rng.chance(20) => {
                let want = m.ids_where(|c| c.entity == e && !matches!(c.state, Sh::Closing(_)));
                assert_eq!(core.remove_entity(&m.entities[e]), want);
                orphans.extend(m.ids_where(|c| c.entity == e));
                m.conns.retain(|_, c| c.entity != e);
                m.retired.retain(|&(x, _), _| x != e);
                m.current[e] = None;
            }
            // a refused resumption
            89 => core.on_refused_resumption(&m.entities[e], m.now),
            // time passes
            _ => {
                let step = if rng.chance(5) {
                    rng.below(10_000)
                } else {
                    rng.below(300)
                };
                m.now += Duration::from_millis(step);
                m.poll(&mut core);
                // Whatever is left is due later.
                assert!(core.next_deadline().is_none_or(|d| d > m.now));
            }
        }
        m.check(&core);
    }

    // Time passes every deadline and the shell closes what it was told to.
    m.now += Duration::from_secs(3600);
    m.poll(&mut core);
    for id in m.ids_where(|c| matches!(c.state, Sh::Closing(_))) {
        m.close(&mut core, id, CloseKind::Clean);
    }
    m.check(&core);
    // Every retired epoch with a drain deadline is drained by now.
    assert!(
        m.retired.values().all(|r| r.deadline.is_none()),
        "an epoch outlived its drain deadline"
    );
    // And once the remaining connections close, every retired epoch drains.
    for id in m.ids_where(|_| true) {
        m.close(&mut core, id, CloseKind::Clean);
    }
    m.check(&core);
    assert!(m.retired.is_empty());
    let s = core.stats();
    assert_eq!((s.totals.open, s.totals.epochs_draining), (0, 0));
    assert_eq!(core.next_deadline(), None);
    m.seen
}

#[test]
fn epoch_storm_keeps_every_invariant() {
    let mut all = Coverage::default();
    for seed in 1..=8 {
        let c = storm(seed, 6000);
        all.drained += c.drained;
        all.killed += c.killed;
        all.drain_closes += c.drain_closes;
        all.stale += c.stale;
        all.disable_closes += c.disable_closes;
        all.timeouts += c.timeouts;
    }
    // The storm did go through every path it checks.
    println!("{all:?}");
    assert!(
        all.drained > 1000
            && all.killed > 500
            && all.drain_closes > 200
            && all.stale > 200
            && all.disable_closes > 100
            && all.timeouts > 100,
        "{all:?}"
    );
}
