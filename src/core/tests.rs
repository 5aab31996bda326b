//! Unit tests of the epoch rules with a fake clock: a fixed base instant
//! plus durations.

use std::time::{Duration, Instant};

use super::*;
use crate::config::model::{EntityKind, EntityRef, Epoch};

/// The one real instant the tests start from; everything else is `t0() + d`.
pub(super) fn t0() -> Instant {
    use std::sync::OnceLock;
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

pub(super) fn at(ms: u64) -> Instant {
    t0() + Duration::from_millis(ms)
}

fn secs(s: u64) -> Instant {
    at(s * 1000)
}

fn vs(name: &str) -> EntityRef {
    EntityRef::new(EntityKind::Vserver, name)
}

fn svc(name: &str) -> EntityRef {
    EntityRef::new(EntityKind::Service, name)
}

fn policy() -> EpochPolicy {
    EpochPolicy::default()
}

fn drain(s: u64) -> EpochPolicy {
    EpochPolicy {
        drain_timeout: Some(Duration::from_secs(s)),
        ..EpochPolicy::default()
    }
}

fn core_with(entities: &[&EntityRef]) -> ShardCore {
    let mut c = ShardCore::with_origin(0, t0());
    for e in entities {
        assert!(c.set_epoch(e, 1, policy(), t0()).opened);
    }
    c
}

/// Accept, read the first byte and complete the handshake.
fn established(c: &mut ShardCore, e: &EntityRef, now: Instant) -> ConnId {
    let id = c.on_accept(e, now).unwrap();
    c.on_handshake_start(id, now);
    c.on_established(id, false, now).unwrap();
    id
}

fn handshaking(c: &mut ShardCore, e: &EntityRef, now: Instant) -> ConnId {
    let id = c.on_accept(e, now).unwrap();
    c.on_handshake_start(id, now);
    id
}

fn epoch_line(c: &ShardCore, e: &EntityRef, epoch: Epoch) -> EpochStats {
    let s = c.stats();
    let ent = s
        .entities
        .iter()
        .find(|x| x.name == *e.name && x.kind == e.kind.keyword())
        .expect("entity in stats");
    ent.epochs
        .iter()
        .find(|l| l.epoch == epoch)
        .cloned()
        .expect("epoch in stats")
}

#[test]
fn r1_established_keeps_running_across_changes_until_it_closes() {
    let a = vs("a");
    let mut c = core_with(&[&a]);
    let id = established(&mut c, &a, secs(1));
    assert_eq!(c.conn_state(id), Some(ConnState::Established { epoch: 1 }));

    let ch = c.set_epoch(&a, 2, policy(), secs(2));
    assert_eq!(
        ch,
        EpochChange {
            killed: vec![],
            draining: 1,
            opened: true,
            retired: Some(1),
            retired_drained: false
        }
    );
    assert_eq!(c.conn_state(id), Some(ConnState::Draining { epoch: 1 }));
    let ch = c.set_epoch(&a, 3, policy(), secs(3));
    assert_eq!(
        (ch.draining, ch.retired_drained),
        (0, true),
        "epoch 2 had no connection"
    );

    // No drain timeout: nothing ever closes it.
    assert_eq!(c.next_deadline(), None);
    assert!(c.poll_timeouts(secs(100_000)).is_empty());
    assert_eq!(c.conn_state(id), Some(ConnState::Draining { epoch: 1 }));
    assert_eq!(c.epoch_status(&a, 1), Some(EpochStatus::Draining));
    assert_eq!(epoch_line(&c, &a, 1).live, 1);

    let out = c.on_close(id, CloseKind::Clean, secs(100_001));
    assert_eq!(
        out,
        CloseOutcome {
            drop_session: false,
            epoch: Some(1),
            epoch_drained: true
        }
    );
    assert_eq!(c.epoch_status(&a, 1), Some(EpochStatus::Drained));
    let line = epoch_line(&c, &a, 1);
    assert_eq!(
        (line.live, line.drained_at, line.retired_at),
        (0, Some(100_001.0), Some(2.0))
    );
    assert_eq!(c.conn_state(id), None);
    c.check_consistency();
}

#[test]
fn r2_mid_handshake_killed_unbound_takes_new_epoch_other_entity_untouched() {
    let (a, b) = (vs("a"), vs("b"));
    let mut c = core_with(&[&a, &b]);
    let hs = handshaking(&mut c, &a, secs(1));
    let unbound = c.on_accept(&a, secs(1)).unwrap();
    let other = handshaking(&mut c, &b, secs(1));
    assert_eq!(c.conn_state(unbound), Some(ConnState::Accepted));

    let ch = c.set_epoch(&a, 2, policy(), secs(2));
    assert_eq!(ch.killed, vec![hs]);
    assert_eq!(c.conn_state(hs), Some(ConnState::Closing));
    assert_eq!(c.conn_state(unbound), Some(ConnState::Accepted));
    assert_eq!(c.on_handshake_start(unbound, secs(3)), 2);
    assert_eq!(c.conn_state(unbound), Some(ConnState::Handshaking { epoch: 2 }));
    assert_eq!(c.on_established(unbound, false, secs(3)), Ok(()));

    // Control: entity b saw nothing.
    assert_eq!(c.conn_state(other), Some(ConnState::Handshaking { epoch: 1 }));
    assert_eq!(c.on_established(other, true, secs(3)), Ok(()));
    assert_eq!(c.current_epoch(&b), Some(1));
    assert_eq!(epoch_line(&c, &b, 1).counters.killed, 0);

    assert_eq!(epoch_line(&c, &a, 1).counters.killed, 1);
    let out = c.on_close(hs, CloseKind::Killed, secs(4));
    assert_eq!(
        out,
        CloseOutcome {
            drop_session: true,
            epoch: Some(1),
            epoch_drained: true
        }
    );
    assert_eq!(
        epoch_line(&c, &a, 1).counters.killed,
        1,
        "the close does not count it twice"
    );
    c.check_consistency();
}

#[test]
fn r2_back_end_connections_bind_at_once() {
    let s = svc("s");
    let mut c = core_with(&[&s]);
    let id = c.on_accept(&s, secs(1)).unwrap();
    assert_eq!(c.conn_state(id), Some(ConnState::Handshaking { epoch: 1 }));
    assert_eq!(c.set_epoch(&s, 2, policy(), secs(2)).killed, vec![id]);
    assert_eq!(c.on_established(id, false, secs(2)), Err(Stale));
    let id2 = c.on_accept(&s, secs(3)).unwrap();
    assert_eq!(c.on_handshake_start(id2, secs(3)), 2);
    assert_eq!(c.on_established(id2, true, secs(3)), Ok(()));
    assert!(c.is_reusable(id2));
    c.set_epoch(&s, 3, policy(), secs(4));
    assert!(
        !c.is_reusable(id2),
        "R4: a back-end connection of a retired epoch is never reused"
    );
}

#[test]
fn r3_refused_resumptions_counted_per_epoch() {
    let a = vs("a");
    let mut c = core_with(&[&a]);
    c.on_refused_resumption(&a, secs(1));
    c.set_epoch(&a, 2, policy(), secs(2));
    c.on_refused_resumption(&a, secs(3));
    c.on_refused_resumption(&a, secs(3));
    c.on_refused_resumption(&vs("unknown"), secs(3));
    assert_eq!(epoch_line(&c, &a, 1).counters.refused_resumptions, 1);
    assert_eq!(epoch_line(&c, &a, 2).counters.refused_resumptions, 2);
    assert_eq!(c.stats().totals.counters.refused_resumptions, 3);
}

#[test]
fn r7_disable_closes_every_state_and_refuses_until_enable() {
    let (a, b) = (vs("a"), vs("b"));
    let mut c = core_with(&[&a, &b]);
    let draining = established(&mut c, &a, secs(1));
    c.set_epoch(&a, 2, drain(60), secs(1));
    let est = established(&mut c, &a, secs(2));
    let hs = handshaking(&mut c, &a, secs(2));
    let acc = c.on_accept(&a, secs(2)).unwrap();
    let other = established(&mut c, &b, secs(2));

    let mut closed = c.disable(&a, secs(3));
    closed.sort();
    assert_eq!(closed, vec![draining, est, hs, acc]);
    for id in [draining, est, hs, acc] {
        assert_eq!(c.conn_state(id), Some(ConnState::Closing));
    }
    assert_eq!(c.conn_state(other), Some(ConnState::Established { epoch: 1 }));
    assert!(c.disable(&a, secs(3)).is_empty(), "twice is harmless");
    assert_eq!(c.on_accept(&a, secs(4)), Err(Refused));
    assert!(c.on_established(hs, false, secs(4)).is_err());
    assert_eq!(epoch_line(&c, &a, 2).counters.closed_by_disable, 2);
    assert_eq!(epoch_line(&c, &a, 1).counters.closed_by_disable, 1);

    // The drain deadline of epoch 1 finds nothing left to close.
    assert!(c.poll_timeouts(secs(1000)).is_empty());
    for id in [draining, est, hs, acc] {
        c.on_close(id, CloseKind::Clean, secs(5));
    }
    assert_eq!(c.epoch_status(&a, 1), Some(EpochStatus::Drained));

    // Enable arrives with a newer epoch.
    c.set_epoch(&a, 3, policy(), secs(6));
    c.enable(&a);
    assert_eq!(c.epoch_status(&a, 2), Some(EpochStatus::Drained));
    let id = established(&mut c, &a, secs(7));
    assert_eq!(c.conn_state(id), Some(ConnState::Established { epoch: 3 }));
    let s = c.stats();
    assert_eq!(s.totals.entity_counters.refused_accepts, 1);
    assert_eq!(s.totals.entity_counters.unbound_closed_by_disable, 1);
    c.check_consistency();
}

#[test]
fn r8_only_clean_closes_keep_the_session_when_strict() {
    for strict in [true, false] {
        let a = vs("a");
        let mut c = ShardCore::new(3);
        c.set_epoch(
            &a,
            1,
            EpochPolicy {
                strict_session_cleanup: strict,
                ..policy()
            },
            t0(),
        );
        for kind in CloseKind::ALL {
            for done in [false, true] {
                let id = handshaking(&mut c, &a, secs(1));
                if done {
                    c.on_established(id, false, secs(1)).unwrap();
                }
                let out = c.on_close(id, kind, secs(2));
                let want = strict && kind != CloseKind::Clean;
                assert_eq!(
                    out.drop_session, want,
                    "strict={strict} kind={kind:?} established={done}"
                );
                assert_eq!(out.epoch, Some(1));
            }
            // No byte read: no session, nothing to drop.
            let id = c.on_accept(&a, secs(1)).unwrap();
            assert_eq!(c.on_close(id, kind, secs(2)), CloseOutcome::default());
        }
        let line = epoch_line(&c, &a, 1);
        assert_eq!(line.counters.sessions_dropped, if strict { 10 } else { 0 });
        assert_eq!((line.counters.closed_clean, line.counters.closed_unclean), (2, 10));
    }
}

#[test]
fn r8_strictness_follows_the_connections_epoch() {
    let a = vs("a");
    let mut c = core_with(&[&a]);
    let old = established(&mut c, &a, secs(1));
    c.set_epoch(
        &a,
        2,
        EpochPolicy {
            strict_session_cleanup: false,
            ..policy()
        },
        secs(2),
    );
    let new = established(&mut c, &a, secs(2));
    assert!(c.on_close(old, CloseKind::PeerReset, secs(3)).drop_session);
    assert!(!c.on_close(new, CloseKind::PeerReset, secs(3)).drop_session);
}

#[test]
fn r12_drain_deadline_fires_exactly_at_t() {
    let a = vs("a");
    let mut c = core_with(&[&a]);
    let x = established(&mut c, &a, secs(1));
    let y = established(&mut c, &a, secs(1));
    c.set_epoch(&a, 2, drain(30), secs(10));
    let fresh = established(&mut c, &a, secs(11));
    assert_eq!(c.next_deadline(), Some(secs(40)));
    assert!(c.poll_timeouts(secs(40) - Duration::from_nanos(1)).is_empty());
    assert_eq!(c.conn_state(x), Some(ConnState::Draining { epoch: 1 }));
    let due = c.poll_timeouts(secs(40));
    assert_eq!(
        due,
        vec![(x, CloseReason::DrainTimeout), (y, CloseReason::DrainTimeout)]
    );
    assert_eq!(c.conn_state(x), Some(ConnState::Closing));
    assert_eq!(c.conn_state(fresh), Some(ConnState::Established { epoch: 2 }));
    assert_eq!(c.next_deadline(), None);
    assert_eq!(
        c.epoch_status(&a, 1),
        Some(EpochStatus::Draining),
        "drained once the shell closed them"
    );

    assert!(!c.on_close(x, CloseKind::Clean, secs(40)).epoch_drained);
    assert!(c.on_close(y, CloseKind::Clean, secs(41)).epoch_drained);
    let line = epoch_line(&c, &a, 1);
    assert_eq!(line.status, EpochStatus::Drained);
    assert_eq!((line.drain_deadline, line.drained_at), (Some(40.0), Some(41.0)));
    assert_eq!(line.counters.closed_by_drain, 2);
    c.check_consistency();
}

#[test]
fn r12_no_deadline_without_drain_timeout_and_none_when_drained_early() {
    let a = vs("a");
    let mut c = core_with(&[&a]);
    established(&mut c, &a, secs(1));
    c.set_epoch(&a, 2, policy(), secs(2));
    assert_eq!(c.next_deadline(), None);

    let mut c = core_with(&[&a]);
    let id = established(&mut c, &a, secs(1));
    c.set_epoch(&a, 2, drain(5), secs(2));
    assert_eq!(c.next_deadline(), Some(secs(7)));
    assert!(c.on_close(id, CloseKind::Clean, secs(3)).epoch_drained);
    assert_eq!(c.next_deadline(), None, "the deadline of a drained epoch is cancelled");
}

#[test]
fn handshake_timeouts() {
    let (a, s) = (vs("a"), svc("s"));
    let mut c = core_with(&[&a, &s]);
    let hs_policy = EpochPolicy {
        handshake_timeout: Duration::from_secs(5),
        ..policy()
    };
    c.set_epoch(&a, 1, hs_policy.clone(), t0());
    c.set_epoch(&s, 1, hs_policy, t0());

    let silent = c.on_accept(&a, secs(10)).unwrap(); // no byte ever
    let slow = c.on_accept(&a, secs(10)).unwrap();
    c.on_handshake_start(slow, secs(12)); // re-armed: due at 17
    let ok = c.on_accept(&a, secs(10)).unwrap();
    c.on_handshake_start(ok, secs(10));
    let back = c.on_accept(&s, secs(10)).unwrap(); // connecting
    c.on_handshake_start(back, secs(11)); // re-armed: due at 16
    c.on_handshake_start(back, secs(14)); // a second start does not extend it

    c.on_established(ok, false, secs(14)).unwrap();
    assert_eq!(c.next_deadline(), Some(secs(15)));
    assert!(c.poll_timeouts(secs(15) - Duration::from_millis(1)).is_empty());
    assert_eq!(c.poll_timeouts(secs(15)), vec![(silent, CloseReason::HandshakeTimeout)]);
    assert_eq!(c.poll_timeouts(secs(16)), vec![(back, CloseReason::HandshakeTimeout)]);
    assert_eq!(c.poll_timeouts(secs(100)), vec![(slow, CloseReason::HandshakeTimeout)]);
    assert_eq!(c.conn_state(ok), Some(ConnState::Established { epoch: 1 }));
    assert_eq!(c.on_established(slow, false, secs(100)), Err(Stale));
    assert_eq!(epoch_line(&c, &a, 1).counters.handshake_timeouts, 1);
    assert_eq!(c.stats().entities[0].entity_counters.unbound_timeouts, 1);
    assert!(c.on_close(slow, CloseKind::Timeout, secs(100)).drop_session);
    c.check_consistency();
}

#[test]
fn race_handshake_completes_just_before_the_change_is_kept_and_drains() {
    let a = vs("a");
    let mut c = core_with(&[&a]);
    let id = handshaking(&mut c, &a, secs(1));
    assert_eq!(c.on_established(id, false, secs(2)), Ok(()));
    let ch = c.set_epoch(&a, 2, policy(), secs(2));
    assert_eq!((ch.killed.len(), ch.draining), (0, 1));
    assert_eq!(c.conn_state(id), Some(ConnState::Draining { epoch: 1 }));
}

#[test]
fn race_change_between_start_and_establish_makes_it_stale() {
    let a = vs("a");
    let mut c = core_with(&[&a]);
    let id = handshaking(&mut c, &a, secs(1));
    let ch = c.set_epoch(&a, 2, policy(), secs(2));
    assert_eq!(ch.killed, vec![id]);
    // The shell's handshake future finished before it saw the kill.
    assert_eq!(c.on_established(id, true, secs(2)), Err(Stale));
    let line = epoch_line(&c, &a, 1);
    assert_eq!((line.counters.killed, line.counters.handshakes_completed), (1, 0));
    assert!(c.on_close(id, CloseKind::Killed, secs(2)).epoch_drained);
}

#[test]
fn race_first_byte_just_after_the_change_uses_the_new_epoch() {
    let a = vs("a");
    let mut c = core_with(&[&a]);
    let id = c.on_accept(&a, secs(1)).unwrap();
    let ch = c.set_epoch(&a, 2, policy(), secs(2));
    assert!(ch.killed.is_empty() && ch.retired_drained);
    assert_eq!(c.on_handshake_start(id, secs(2)), 2);
    assert_eq!(c.on_established(id, true, secs(3)), Ok(()));
    assert_eq!(c.conn_state(id), Some(ConnState::Established { epoch: 2 }));
    assert_eq!(epoch_line(&c, &a, 2).counters.resumed, 1);
}

#[test]
fn two_changes_in_a_row_keep_separate_deadlines() {
    let a = vs("a");
    let mut c = core_with(&[&a]);
    let e1 = established(&mut c, &a, secs(1));
    c.set_epoch(&a, 2, drain(100), secs(10)); // epoch 1 due at 110
    let e2 = established(&mut c, &a, secs(20));
    let ch = c.set_epoch(&a, 3, drain(30), secs(50)); // epoch 2 due at 80
    assert_eq!((ch.retired, ch.draining), (Some(2), 1));
    assert_eq!(c.conn_state(e1), Some(ConnState::Draining { epoch: 1 }));
    assert_eq!(c.conn_state(e2), Some(ConnState::Draining { epoch: 2 }));
    assert_eq!(c.next_deadline(), Some(secs(80)));
    assert_eq!(c.poll_timeouts(secs(80)), vec![(e2, CloseReason::DrainTimeout)]);
    assert_eq!(c.conn_state(e1), Some(ConnState::Draining { epoch: 1 }));
    assert!(c.on_close(e2, CloseKind::Clean, secs(81)).epoch_drained);
    assert_eq!(c.epoch_status(&a, 1), Some(EpochStatus::Draining));
    assert_eq!(c.poll_timeouts(secs(110)), vec![(e1, CloseReason::DrainTimeout)]);
    assert!(c.on_close(e1, CloseKind::Clean, secs(110)).epoch_drained);
    assert_eq!(c.stats().totals.epochs_drained, 2);
    c.check_consistency();
}

#[test]
fn max_conns_counts_every_open_connection() {
    let a = vs("a");
    let mut c = ShardCore::new(0);
    c.set_epoch(
        &a,
        1,
        EpochPolicy {
            max_conns: Some(2),
            ..policy()
        },
        t0(),
    );
    let x = established(&mut c, &a, secs(1));
    let _y = c.on_accept(&a, secs(1)).unwrap();
    assert_eq!(c.on_accept(&a, secs(1)), Err(Refused));
    // A closing connection still holds its slot until the shell closes it.
    c.disable(&a, secs(2));
    c.enable(&a);
    assert_eq!(c.on_accept(&a, secs(2)), Err(Refused));
    c.on_close(x, CloseKind::Clean, secs(3));
    assert!(c.on_accept(&a, secs(3)).is_ok());
    // Raised by a policy update on the same epoch.
    c.set_epoch(
        &a,
        1,
        EpochPolicy {
            max_conns: Some(3),
            ..policy()
        },
        secs(4),
    );
    assert!(c.on_accept(&a, secs(4)).is_ok());
    assert_eq!(c.stats().totals.entity_counters.refused_accepts, 2);
    assert_eq!(c.on_accept(&vs("unknown"), secs(4)), Err(Refused));
}

#[test]
fn older_epochs_are_ignored_and_same_epoch_only_updates_policy() {
    let a = vs("a");
    let mut c = core_with(&[&a]);
    c.set_epoch(&a, 5, policy(), secs(1));
    let id = handshaking(&mut c, &a, secs(2));
    assert_eq!(c.set_epoch(&a, 4, policy(), secs(3)), EpochChange::default());
    assert_eq!(c.set_epoch(&a, 5, drain(1), secs(3)), EpochChange::default());
    assert_eq!(c.current_epoch(&a), Some(5));
    assert_eq!(c.conn_state(id), Some(ConnState::Handshaking { epoch: 5 }));
}

#[test]
fn unknown_ids_and_entities_never_panic() {
    let a = vs("a");
    let mut c = ShardCore::new(0);
    assert_eq!(c.on_handshake_start(42, secs(1)), 0);
    assert_eq!(c.on_established(42, false, secs(1)), Err(Stale));
    assert_eq!(c.on_close(42, CloseKind::PeerReset, secs(1)), CloseOutcome::default());
    assert_eq!(c.conn_state(42), None);
    assert!(c.disable(&a, secs(1)).is_empty());
    assert!(c.remove_entity(&a).is_empty());
    c.enable(&a);
    assert_eq!(c.current_epoch(&a), None);
    assert!(!c.is_enabled(&a));
    assert!(c.poll_timeouts(secs(1)).is_empty());
}

#[test]
fn remove_entity_forgets_everything() {
    let (a, b) = (vs("a"), vs("b"));
    let mut c = core_with(&[&a, &b]);
    let x = established(&mut c, &a, secs(1));
    c.set_epoch(&a, 2, drain(10), secs(1));
    let y = handshaking(&mut c, &a, secs(2));
    let z = c.on_accept(&a, secs(2)).unwrap();
    let w = handshaking(&mut c, &a, secs(2));
    c.poll_timeouts(secs(2));
    c.set_epoch(&a, 3, policy(), secs(3)); // y and w killed: closing
    c.on_close(w, CloseKind::Killed, secs(3));
    let keep = established(&mut c, &b, secs(3));
    assert_eq!(c.remove_entity(&a), vec![x, z], "closing ones are not returned again");
    assert_eq!(c.on_close(y, CloseKind::Killed, secs(4)), CloseOutcome::default());
    assert_eq!(c.open_conns(), 1);
    assert_eq!(c.next_deadline(), None, "a's timers went with it");
    assert_eq!(c.conn_state(keep), Some(ConnState::Established { epoch: 1 }));
    c.check_consistency();
}

#[test]
fn ids_are_never_reused_and_history_is_bounded() {
    let a = vs("a");
    let mut c = core_with(&[&a]);
    let mut last = 0;
    for epoch in 2..(2 + 3 * DRAINED_HISTORY as u64) {
        let id = established(&mut c, &a, secs(epoch));
        assert!(id > last);
        last = id;
        c.set_epoch(&a, epoch, policy(), secs(epoch));
        c.on_close(id, CloseKind::Clean, secs(epoch));
    }
    let s = c.stats();
    let ent = &s.entities[0];
    assert_eq!(ent.epochs.len(), 1 + DRAINED_HISTORY);
    assert_eq!(ent.epochs[0].status, EpochStatus::Current);
    let kept: u64 = ent.epochs.iter().map(|l| l.counters.handshakes_completed).sum();
    assert_eq!(kept + ent.older_epochs.handshakes_completed, 3 * DRAINED_HISTORY as u64);
    assert_eq!(s.totals.counters.handshakes_completed, 3 * DRAINED_HISTORY as u64);
    assert_eq!(s.totals.epochs_drained, 3 * DRAINED_HISTORY as u64);
}

#[test]
fn stats_serialize_to_json() {
    let (a, s) = (vs("a"), svc("s"));
    let mut c = core_with(&[&a, &s]);
    established(&mut c, &a, secs(1));
    c.set_epoch(&a, 2, drain(5), secs(2));
    let v = serde_json::to_value(c.stats()).unwrap();
    assert_eq!(v["shard"], 0);
    assert_eq!(v["entities"][0]["name"], "a");
    assert_eq!(v["entities"][0]["side"], "front");
    assert_eq!(v["entities"][1]["side"], "back");
    let e1 = &v["entities"][0]["epochs"][1];
    assert_eq!(
        (e1["epoch"].as_u64(), e1["status"].as_str()),
        (Some(1), Some("draining"))
    );
    assert_eq!((e1["live"].as_u64(), e1["full"].as_u64()), (Some(1), Some(1)));
    assert_eq!(e1["drain_deadline"].as_f64(), Some(7.0));
    assert!(e1["drained_at"].is_null());
    assert_eq!(v["totals"]["open"], 1);
}

/// The core takes its time from its callers only and does no IO: no
/// runtime, no ring, no system calls, no sockets.
#[test]
fn no_clock_or_io_in_the_core() {
    let sources = [
        ("mod.rs", include_str!("mod.rs")),
        ("lifecycle.rs", include_str!("lifecycle.rs")),
        ("stats.rs", include_str!("stats.rs")),
        ("timers.rs", include_str!("timers.rs")),
        ("types.rs", include_str!("types.rs")),
    ];
    let banned: Vec<String> = [
        ("Instant", "::now("),
        ("SystemTime", "::now("),
        ("std::", "net"),
        ("std::", "fs"),
        ("crate::", "rt"),
        ("io_uring", "::"),
        ("libc", "::"),
        ("socket2", "::"),
        ("rustls", "::"),
    ]
    .iter()
    .map(|(a, b)| format!("{a}{b}"))
    .collect();
    for (file, text) in sources {
        for b in &banned {
            assert!(!text.contains(b.as_str()), "{file} uses {b}");
        }
    }
}
