//! Shared fixtures of the apply tests: a seeded model and assertions on what a command changes.

use super::Change;
use crate::config::command::Command;
use crate::config::grammar::parse_line;
use crate::config::model::*;
use crate::config::testutil::Fixture;

pub(super) fn cmd(line: &str) -> Command {
    parse_line(line)
        .unwrap_or_else(|e| panic!("{line}: {e}"))
        .expect("a command")
}

pub(super) fn ok(m: &mut Model, fx: &Fixture, line: &str) -> Change {
    m.apply(&cmd(line), &fx.files())
        .unwrap_or_else(|e| panic!("{line}: {e}"))
}

/// Applies `line`, expects an error containing `reason`, and checks the model did not change.
pub(super) fn refused(m: &mut Model, fx: &Fixture, line: &str, reason: &str) {
    let before = crate::config::save::snapshot(m);
    let e = m.apply(&cmd(line), &fx.files()).expect_err(line);
    assert!(e.to_string().contains(reason), "{line}: got '{e}', wanted '{reason}'");
    assert_eq!(crate::config::save::snapshot(m), before, "{line} changed the model");
}

pub(super) fn v(n: &str) -> EntityRef {
    EntityRef::new(EntityKind::Vserver, n)
}
pub(super) fn s(n: &str) -> EntityRef {
    EntityRef::new(EntityKind::Service, n)
}
pub(super) fn g(n: &str) -> EntityRef {
    EntityRef::new(EntityKind::ServiceGroup, n)
}

/// Two vservers, an SSL service, an SSL serviceGroup and a TCP service,
/// with certificates a (leaf), ca/inter (CA chain) and leaf (signed by inter).
pub(super) fn setup() -> (Fixture, Model) {
    let mut fx = Fixture::new();
    fx.leaf("a", "a.test");
    fx.leaf("b", "b.test");
    fx.ca("ca", None);
    fx.ca("inter", Some("ca"));
    fx.signed_leaf("leaf", "leaf.test", "inter");
    let m = fx.model(
        "add ssl certKey a -cert a.crt -key a.key
         add ssl certKey b -cert b.crt -key b.key
         add ssl certKey ca -cert ca.crt
         add ssl certKey inter -cert inter.crt
         add ssl certKey leaf -cert leaf.crt -key leaf.key
         add ssl cipher grp
         bind ssl cipher grp -cipherName TLS1.3-AES128-GCM-SHA256
         add ssl profile fe
         add ssl profile be
         add lb vserver v1 SSL_TCP 127.0.0.1 8441
         add lb vserver v2 SSL_TCP 127.0.0.1 8442
         add service s1 127.0.0.1 9001 SSL_TCP
         add service plain 127.0.0.1 9002 TCP
         add serviceGroup g1 SSL_TCP
         bind serviceGroup g1 127.0.0.1 9003
         set ssl vserver v1 -sslProfile fe
         set ssl service s1 -sslProfile be
         bind ssl vserver v1 -certkeyName a
         bind ssl vserver v2 -certkeyName leaf
         bind ssl vserver v2 -cipherName grp
         bind ssl service s1 -cipherName grp
         bind ssl serviceGroup g1 -certkeyName ca -CA
         bind lb vserver v1 s1
         bind lb vserver v2 g1",
    );
    (fx, m)
}

pub(super) fn epochs(m: &Model) -> Vec<(String, Epoch)> {
    m.epochs.iter().map(|(e, n)| (e.to_string(), *n)).collect()
}

/// Apply `line` and check exactly `expect` were bumped, by one each.
pub(super) fn bumps(m: &mut Model, fx: &Fixture, line: &str, expect: &[EntityRef]) {
    let before = m.epochs.clone();
    let change = ok(m, fx, line);
    let mut got = change.bumped.clone();
    got.sort();
    let mut want = expect.to_vec();
    want.sort();
    assert_eq!(got, want, "{line}");
    for (e, n) in &m.epochs {
        let old = before.get(e).copied().unwrap_or(0);
        let delta = if want.contains(e) { 1 } else { 0 };
        assert_eq!(*n, old + delta, "{line}: epoch of {e}");
    }
}
