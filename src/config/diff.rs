//! Commands that turn one [`Model`] into another (for reloading a file as
//! one transaction).
//!
//! The commands touch only what differs, so that entities whose settings
//! did not change keep their epochs. The language has no `unset`: when a
//! setting goes back to "not set" (a parameter, or an entity's profile),
//! or an entity's address or protocol changes, the entity is removed and
//! added again (in one transaction: it opens its next epoch, as any
//! change does); a profile that loses a
//! parameter is recreated together with the entities using it. The result
//! is meant for [`Model::apply_batch`] on `old`; it assumes both models are
//! valid (each was built by `apply`).

use std::collections::BTreeSet;

use super::command::{Command, ObjectKind, SslBind};
use super::model::*;
use super::save::binding_commands;

/// Commands that, applied to `old` in order, give a model equal to `new`.
pub fn diff(old: &Model, new: &Model) -> Vec<Command> {
    let mut teardown = Vec::new(); // unbinds, unlinks and removals of what changes
    let mut rebinds = Vec::new(); // bindings of kept entities, redone after the build
    let mut removals = Vec::new(); // groups, profiles and certKeys nothing uses any more

    // Which profiles must be recreated, and which entities with them.
    let recreated_profiles: BTreeSet<&str> = old
        .profiles
        .values()
        .filter(|p| {
            new.profiles
                .get(&p.name)
                .is_some_and(|n| !reachable(&p.params, &n.params))
        })
        .map(|p| p.name.as_str())
        .collect();
    let ents_old = entities(old);
    let ents_new = entities(new);
    let recreate: BTreeSet<EntityRef> = ents_old
        .iter()
        .filter_map(|(e, o)| {
            let n = ents_new.iter().find(|(ne, _)| ne == e).map(|(_, n)| n)?;
            let again = o.addr != n.addr
                || o.proto != n.proto
                || o.health != n.health
                || !reachable(o.params, n.params)
                || (o.profile.is_some() && n.profile.is_none())
                || (o.net_profile.is_some() && n.net_profile.is_none())
                || o.profile
                    .as_ref()
                    .is_some_and(|p| recreated_profiles.contains(p.as_str()));
            again.then(|| e.clone())
        })
        .collect();
    let kept = |e: &EntityRef| {
        ents_old.iter().any(|(o, _)| o == e) && ents_new.iter().any(|(n, _)| n == e) && !recreate.contains(e)
    };

    // Certificates whose files or material changed, and the links around them.
    let updated: BTreeSet<&str> = old
        .certkeys
        .values()
        .filter(|o| {
            new.certkeys.get(&o.name).is_some_and(|n| {
                n.cert_path != o.cert_path || n.key_path != o.key_path || n.material.certs != o.material.certs
            })
        })
        .map(|o| o.name.as_str())
        .collect();
    let relink = |m: &Model, name: &str| -> bool {
        let Some(ck) = m.certkeys.get(name) else {
            return false;
        };
        let Some(ca) = &ck.linked_to else {
            return false;
        };
        updated.contains(name) || updated.contains(ca.as_str())
    };

    // ---- teardown ----
    for (e, o) in &ents_old {
        if !kept(e) {
            continue;
        }
        let Some((_, n)) = ents_new.iter().find(|(ne, _)| ne == e) else {
            continue;
        };
        if e.kind == EntityKind::Vserver {
            let (unbinds, binds) = list_diff(o.targets, n.targets, |t| {
                let te = target_ref(new, t);
                te.is_some_and(|te| recreate.contains(&te))
            });
            teardown.extend(unbinds.iter().map(|t| Command::UnbindLbVserver {
                name: e.name.to_string(),
                target: (*t).clone(),
            }));
            rebinds.extend(binds.iter().map(|t| Command::BindLbVserver {
                name: e.name.to_string(),
                target: (*t).clone(),
            }));
        }
        let (unbinds, binds) = bindings_diff(e, o.bindings, n.bindings);
        teardown.extend(unbinds);
        rebinds.extend(binds);
        if e.kind == EntityKind::ServiceGroup {
            let (unbinds, binds) = list_diff(o.members, n.members, |_| false);
            teardown.extend(unbinds.iter().map(|m| Command::UnbindServiceGroupMember {
                name: e.name.to_string(),
                addr: **m,
            }));
            rebinds.extend(binds.iter().map(|m| Command::BindServiceGroupMember {
                name: e.name.to_string(),
                addr: **m,
            }));
        }
    }
    for o in old.certkeys.values() {
        if let Some(ca) = &o.linked_to {
            let n = new.certkeys.get(&o.name);
            if n.is_none_or(|n| n.linked_to.as_ref() != Some(ca)) || relink(old, &o.name) {
                teardown.push(Command::UnlinkCertKey { name: o.name.clone() });
            }
        }
    }
    // Vservers first: removing one releases the services bound to it.
    for kind in [EntityKind::Vserver, EntityKind::Service, EntityKind::ServiceGroup] {
        for (e, _) in ents_old.iter().filter(|(e, _)| e.kind == kind) {
            if !kept(e) {
                teardown.push(Command::Rm {
                    what: ObjectKind::from(kind),
                    name: e.name.to_string(),
                });
            }
        }
    }
    for p in &recreated_profiles {
        teardown.push(Command::Rm {
            what: ObjectKind::Profile,
            name: (*p).to_string(),
        });
    }

    // ---- build ----
    let mut build = Vec::new();
    for n in new.certkeys.values() {
        match old.certkeys.get(&n.name) {
            None => build.push(Command::AddCertKey {
                name: n.name.clone(),
                cert: n.cert_path.clone(),
                key: n.key_path.clone(),
            }),
            Some(_) if updated.contains(n.name.as_str()) => build.push(Command::UpdateCertKey {
                name: n.name.clone(),
                cert: n.cert_path.clone(),
                key: n.key_path.clone(),
            }),
            Some(_) => {}
        }
    }
    for n in new.certkeys.values() {
        if let Some(ca) = &n.linked_to {
            let o = old.certkeys.get(&n.name);
            if o.is_none_or(|o| o.linked_to.as_ref() != Some(ca)) || relink(new, &n.name) {
                build.push(Command::LinkCertKey {
                    name: n.name.clone(),
                    ca: ca.clone(),
                });
            }
        }
    }
    for n in new.cipher_groups.values() {
        match old.cipher_groups.get(&n.name) {
            None => {
                build.push(Command::AddCipherGroup { name: n.name.clone() });
                build.extend(n.suites.iter().map(|s| Command::BindCipherGroup {
                    name: n.name.clone(),
                    suite: *s,
                }));
            }
            Some(o) if o.suites != n.suites => {
                if n.suites.is_empty() {
                    build.extend(o.suites.iter().map(|s| Command::UnbindCipherGroup {
                        name: n.name.clone(),
                        suite: *s,
                    }));
                } else {
                    build.push(Command::SetCipherGroup {
                        name: n.name.clone(),
                        suites: n.suites.clone(),
                    });
                }
            }
            Some(_) => {}
        }
    }
    for n in new.profiles.values() {
        match old.profiles.get(&n.name) {
            Some(o) if !recreated_profiles.contains(n.name.as_str()) => {
                let d = o.params.changes_to(&n.params);
                if d != SslParams::default() {
                    build.push(Command::SetProfile {
                        name: n.name.clone(),
                        params: d,
                    });
                }
            }
            _ => build.push(Command::AddProfile {
                name: n.name.clone(),
                params: n.params.clone(),
            }),
        }
    }
    for n in new.net_profiles.values() {
        match old.net_profiles.get(&n.name) {
            // Net profile settings are always explicit (see `apply`): a set reaches any.
            Some(o) if o.params != n.params => build.push(Command::SetNetProfile {
                name: n.name.clone(),
                params: n.params.clone(),
            }),
            Some(_) => {}
            None => build.push(Command::AddNetProfile {
                name: n.name.clone(),
                params: n.params.clone(),
            }),
        }
    }
    // New and recreated entities: everything, as `save` writes it.
    let mut fresh = Model::default();
    for (e, _) in &ents_new {
        if !kept(e) {
            match e.kind {
                EntityKind::Vserver => {
                    if let Some(v) = new.vservers.get(&*e.name) {
                        fresh.vservers.insert(v.name.clone(), v.clone());
                    }
                }
                EntityKind::Service => {
                    if let Some(s) = new.services.get(&*e.name) {
                        fresh.services.insert(s.name.clone(), s.clone());
                    }
                }
                EntityKind::ServiceGroup => {
                    if let Some(g) = new.service_groups.get(&*e.name) {
                        fresh.service_groups.insert(g.name.clone(), g.clone());
                    }
                }
            }
        }
    }
    let fresh_cmds = fresh.commands();
    let (fresh_adds, fresh_rest): (Vec<_>, Vec<_>) = fresh_cmds.into_iter().partition(|c| {
        matches!(
            c,
            Command::AddService { .. }
                | Command::AddServiceGroup { .. }
                | Command::BindServiceGroupMember { .. }
                | Command::AddVserver { .. }
        )
    });
    build.extend(fresh_adds);
    // Kept entities: changed limits, SSL settings and state.
    let mut kept_set = Vec::new();
    let mut kept_state = Vec::new();
    for (e, o) in &ents_old {
        if !kept(e) {
            continue;
        }
        let Some((_, n)) = ents_new.iter().find(|(ne, _)| ne == e) else {
            continue;
        };
        if let (Some(ov), Some(nv)) = (old.vservers.get(&*e.name), new.vservers.get(&*e.name)) {
            if e.kind == EntityKind::Vserver
                && (ov.max_clients != nv.max_clients
                    || ov.client_timeout != nv.client_timeout
                    || ov.net_profile != nv.net_profile)
            {
                kept_set.push(Command::SetLbVserver {
                    name: e.name.to_string(),
                    max_clients: (ov.max_clients != nv.max_clients).then_some(nv.max_clients.unwrap_or(0)),
                    client_timeout: (ov.client_timeout != nv.client_timeout).then_some(nv.client_timeout),
                    net_profile: nv.net_profile.clone().filter(|_| ov.net_profile != nv.net_profile),
                });
            }
        }
        if o.net_profile != n.net_profile && e.kind != EntityKind::Vserver {
            kept_set.push(Command::SetBackend {
                entity: e.clone(),
                net_profile: n.net_profile.clone(),
            });
        }
        let d = o.params.changes_to(n.params);
        let profile = if o.profile != n.profile {
            n.profile.clone()
        } else {
            None
        };
        if d != SslParams::default() || profile.is_some() {
            kept_set.push(Command::SetSsl {
                entity: e.clone(),
                params: d,
                profile,
            });
        }
        if o.enabled != n.enabled {
            kept_state.push(if n.enabled {
                Command::Enable(e.clone())
            } else {
                Command::Disable(e.clone())
            });
        }
    }
    build.extend(kept_set);
    // Unbinds of kept entities go first, then the new bindings.
    build.extend(fresh_rest.iter().filter(|c| !matches!(c, Command::Disable(_))).cloned());
    build.extend(rebinds);
    build.extend(fresh_rest.into_iter().filter(|c| matches!(c, Command::Disable(_))));
    build.extend(kept_state);

    // ---- final removals ----
    for o in old.cipher_groups.keys().filter(|n| !new.cipher_groups.contains_key(*n)) {
        removals.push(Command::Rm {
            what: ObjectKind::CipherGroup,
            name: o.clone(),
        });
    }
    for o in old.profiles.keys().filter(|n| !new.profiles.contains_key(*n)) {
        removals.push(Command::Rm {
            what: ObjectKind::Profile,
            name: o.clone(),
        });
    }
    for o in old.net_profiles.keys().filter(|n| !new.net_profiles.contains_key(*n)) {
        removals.push(Command::Rm {
            what: ObjectKind::NetProfile,
            name: o.clone(),
        });
    }
    // Children before the certKeys they were linked to.
    let mut gone: Vec<&str> = old
        .certkeys
        .keys()
        .filter(|n| !new.certkeys.contains_key(*n))
        .map(|s| s.as_str())
        .collect();
    gone.sort_by_key(|n| {
        std::cmp::Reverse(
            old.certkeys
                .values()
                .filter(|c| c.linked_to.as_deref() == Some(n))
                .count(),
        )
    });
    removals.extend(gone.into_iter().map(|n| Command::Rm {
        what: ObjectKind::CertKey,
        name: n.to_string(),
    }));

    teardown.extend(build);
    teardown.extend(removals);
    teardown
}

/// The parts of an entity `diff` compares.
struct View<'a> {
    addr: Option<std::net::SocketAddr>,
    proto: Option<BackendProto>,
    health: HealthFlags,
    enabled: bool,
    profile: &'a Option<String>,
    net_profile: &'a Option<String>,
    params: &'a SslParams,
    bindings: &'a SslBindings,
    targets: &'a [String],
    members: &'a [std::net::SocketAddr],
}

fn entities(m: &Model) -> Vec<(EntityRef, View<'_>)> {
    let mut out = Vec::new();
    for v in m.vservers.values() {
        out.push((
            EntityRef::new(EntityKind::Vserver, &v.name),
            View {
                addr: Some(v.addr),
                proto: Some(v.proto),
                health: HealthFlags::default(),
                enabled: v.enabled,
                profile: &v.ssl_profile,
                net_profile: &v.net_profile,
                params: &v.params,
                bindings: &v.bindings,
                targets: &v.targets,
                members: &[],
            },
        ));
    }
    for s in m.services.values() {
        out.push((
            EntityRef::new(EntityKind::Service, &s.name),
            View {
                addr: Some(s.addr),
                proto: Some(s.proto),
                health: s.health,
                enabled: s.enabled,
                profile: &s.ssl_profile,
                net_profile: &s.net_profile,
                params: &s.params,
                bindings: &s.bindings,
                targets: &[],
                members: &[],
            },
        ));
    }
    for g in m.service_groups.values() {
        out.push((
            EntityRef::new(EntityKind::ServiceGroup, &g.name),
            View {
                addr: None,
                proto: Some(g.proto),
                health: g.health,
                enabled: g.enabled,
                profile: &g.ssl_profile,
                net_profile: &g.net_profile,
                params: &g.params,
                bindings: &g.bindings,
                targets: &[],
                members: &g.members,
            },
        ));
    }
    out
}

fn target_ref(m: &Model, name: &str) -> Option<EntityRef> {
    if m.services.contains_key(name) {
        Some(EntityRef::new(EntityKind::Service, name))
    } else if m.service_groups.contains_key(name) {
        Some(EntityRef::new(EntityKind::ServiceGroup, name))
    } else {
        None
    }
}

/// Whether `set` commands can turn `old` into `new` (nothing goes back to unset).
fn reachable(old: &SslParams, new: &SslParams) -> bool {
    let mut merged = old.clone();
    merged.overlay(&old.changes_to(new));
    merged == *new
}

/// Items of `old` to remove and of `new` to add so that the list becomes
/// `new`, in order. Keeps a common prefix-compatible part; when the order
/// would come out wrong, or `force` says an item must be redone, removes
/// and re-adds from the first difference on.
fn list_diff<'a, T: PartialEq>(old: &'a [T], new: &'a [T], force: impl Fn(&T) -> bool) -> (Vec<&'a T>, Vec<&'a T>) {
    let kept: Vec<&T> = old.iter().filter(|x| new.contains(x) && !force(x)).collect();
    let added: Vec<&T> = new.iter().filter(|x| !kept.contains(x)).collect();
    let result_ok = kept.iter().chain(added.iter()).copied().eq(new.iter());
    if result_ok {
        (old.iter().filter(|x| !kept.contains(x)).collect(), added)
    } else {
        (old.iter().collect(), new.iter().collect())
    }
}

fn bindings_diff(e: &EntityRef, o: &SslBindings, n: &SslBindings) -> (Vec<Command>, Vec<Command>) {
    let mut unbinds = Vec::new();
    let mut binds = Vec::new();
    let (unbind_certs, bind_certs) = list_diff(&o.certkeys, &n.certkeys, |_| false);
    let (unbind_ciphers, bind_ciphers) = list_diff(&o.ciphers, &n.ciphers, |_| false);
    let (unbind_curves, bind_curves) = list_diff(&o.curves, &n.curves, |_| false);
    let bindings_of = |c: &[&CertBinding], i: &[&CipherBinding], v: &[&Curve]| SslBindings {
        certkeys: c.iter().map(|x| (*x).clone()).collect(),
        ciphers: i.iter().map(|x| (*x).clone()).collect(),
        curves: v.iter().map(|x| **x).collect(),
    };
    for cmd in binding_commands(e, &bindings_of(&unbind_certs, &unbind_ciphers, &unbind_curves)) {
        if let Command::BindSsl { entity, bind } = cmd {
            let bind = match bind {
                SslBind::Cipher { cipher, .. } => SslBind::Cipher { cipher, priority: None },
                other => other,
            };
            unbinds.push(Command::UnbindSsl { entity, bind });
        }
    }
    binds.extend(binding_commands(
        e,
        &bindings_of(&bind_certs, &bind_ciphers, &bind_curves),
    ));
    (unbinds, binds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testutil::Fixture;

    fn check(fx: &Fixture, old: &Model, new: &Model) -> Vec<Command> {
        let cmds = diff(old, new);
        let numbered: Vec<(usize, Command)> = cmds.iter().cloned().enumerate().collect();
        let text: Vec<String> = cmds.iter().map(|c| c.to_string()).collect();
        let (got, _) = old
            .apply_batch(&numbered, &fx.files())
            .unwrap_or_else(|e| panic!("{e}\n{text:#?}"));
        assert_eq!(got.to_commands(), new.to_commands(), "{text:#?}");
        cmds
    }

    fn fixture() -> Fixture {
        let mut fx = Fixture::new();
        fx.leaf("a", "a.test");
        fx.leaf("b", "b.test");
        fx.ca("ca", None);
        fx.ca("inter", Some("ca"));
        fx.signed_leaf("leaf", "leaf.test", "inter");
        fx
    }

    const BASE: &str = "
add ssl certKey a -cert a.crt -key a.key
add ssl certKey ca -cert ca.crt
add ssl certKey inter -cert inter.crt
add ssl certKey leaf -cert leaf.crt -key leaf.key
link ssl certKey leaf inter
add ssl cipher grp
bind ssl cipher grp -cipherName TLS1.3-AES128-GCM-SHA256
add ssl profile fe -sessTimeout 60
add service s1 127.0.0.1 9001 SSL_TCP
add serviceGroup g1 TCP
bind serviceGroup g1 127.0.0.1 9003
add lb vserver v1 SSL_TCP 127.0.0.1 8441
add lb vserver v2 SSL_TCP 127.0.0.1 8442
set ssl vserver v1 -sslProfile fe
bind ssl vserver v1 -certkeyName a
bind ssl vserver v1 -cipherName grp
bind ssl vserver v2 -certkeyName leaf
bind ssl vserver v2 -eccCurveName X25519
bind lb vserver v1 s1
bind lb vserver v2 g1
";

    #[test]
    fn net_profiles_and_their_bindings() {
        let fx = fixture();
        let old = fx.model(&format!("add netProfile np -proxyProtocol ENABLED\nadd netProfile gone\n{BASE}set service s1 -netProfile np\nset serviceGroup g1 -netProfile gone\n"));
        // Changed settings, a new profile, a kept service moving to it, a
        // group losing its profile (recreated), a profile removed.
        let new = fx.model(&format!("add netProfile np -proxyProtocol ENABLED -proxyProtocolVersion V2\nadd netProfile fresh\n{BASE}set service s1 -netProfile fresh\n"));
        let cmds = check(&fx, &old, &new);
        let text: Vec<String> = cmds.iter().map(|c| c.to_string()).collect();
        assert!(
            text.contains(&"set netProfile np -proxyProtocol ENABLED -proxyProtocolVersion V2".to_string()),
            "{text:#?}"
        );
        assert!(
            text.contains(&"set service s1 -netProfile fresh".to_string()),
            "{text:#?}"
        );
        assert!(text.contains(&"rm netProfile gone".to_string()), "{text:#?}");
        check(&fx, &new, &old);
    }

    #[test]
    fn identical_models_give_nothing() {
        let fx = fixture();
        let m = fx.model(BASE);
        assert!(check(&fx, &m, &m).is_empty());
    }

    #[test]
    fn from_and_to_empty() {
        let fx = fixture();
        let m = fx.model(BASE);
        check(&fx, &Model::default(), &m);
        check(&fx, &m, &Model::default());
    }

    #[test]
    fn small_changes_touch_only_what_changed() {
        let fx = fixture();
        let old = fx.model(BASE);
        let new = fx.model(&format!("{BASE}\nset ssl profile fe -tls12 DISABLED\nlink ssl certKey inter ca\nbind ssl vserver v2 -eccCurveName P_256\ndisable lb vserver v1\n"));
        let cmds = check(&fx, &old, &new);
        let (next, changes) = old
            .apply_batch(&cmds.into_iter().enumerate().collect::<Vec<_>>(), &fx.files())
            .unwrap();
        assert!(changes.iter().all(|c| c.removed.is_empty() && c.added.is_empty()));
        assert!(next.epochs.keys().all(|e| old.epochs.contains_key(e)));
        assert_eq!(next.epochs[&EntityRef::new(EntityKind::Service, "s1")], 1);
    }

    #[test]
    fn a_vserver_changing_type_is_recreated() {
        let fx = fixture();
        let base = format!("{BASE}add service b1 127.0.0.1 9101 SSL_BRIDGE\n");
        let old = fx.model(&format!("{base}add lb vserver v3 SSL_TCP 127.0.0.1 8443\n"));
        let new = fx.model(&format!(
            "{base}add lb vserver v3 SSL_BRIDGE 127.0.0.1 8443\nbind lb vserver v3 b1\n"
        ));
        check(&fx, &old, &new);
    }

    #[test]
    fn unexpressible_changes_recreate() {
        let fx = fixture();
        let old = fx.model(BASE);
        let new = fx.model(
            &BASE
                .replace("set ssl vserver v1 -sslProfile fe\n", "")
                .replace("add service s1 127.0.0.1 9001", "add service s1 127.0.0.1 9999")
                .replace("add ssl profile fe -sessTimeout 60", "add ssl profile fe")
                .replace(
                    "bind ssl cipher grp -cipherName TLS1.3-AES128-GCM-SHA256",
                    "bind ssl cipher grp -cipherName TLS1.3-AES256-GCM-SHA384",
                )
                .replace("link ssl certKey leaf inter\n", "")
                .replace(
                    "bind serviceGroup g1 127.0.0.1 9003",
                    "bind serviceGroup g1 127.0.0.1 9004",
                ),
        );
        check(&fx, &old, &new);
        // Certificates that changed on disk are updated.
        fx.leaf("a", "a2.test");
        let newer = fx.model(BASE);
        let cmds = check(&fx, &old, &newer);
        assert!(
            cmds.iter()
                .any(|c| matches!(c, Command::UpdateCertKey { name, .. } if name == "a")),
            "{cmds:?}"
        );
    }
}
