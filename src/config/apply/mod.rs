//! Validates a [`Command`] against a [`Model`] and applies it.
//!
//! A command either applies completely or changes nothing (R10): every
//! check runs before the model is touched. [`Model::apply_batch`] extends
//! that to a list of commands by working on a clone. The returned
//! [`Change`] says which entity sides opened a new epoch, following
//! DESIGN.md section 2 ("Which sides a change affects"); the epochs
//! themselves are kept in [`Model::epochs`].
//!
//! This module reads the files a certKey names (through a [`FileSource`])
//! and checks that the key matches the certificate. It does not build
//! rustls configurations, open sockets or broadcast anything: the caller
//! turns the new model and the change into snapshots for the shards.
//!
//! One file per kind of entity, each with its checks, its effect on epochs
//! and its tests: `certkey`, `cipher`, `profile`, `vserver`, `backend`
//! (services and serviceGroups), `net_profile`, `entity_ssl` (SSL settings and bindings of
//! any of those), `removal` (`rm`, `disable`, `enable`); `files` says where
//! the files a command names are read from. This file holds the
//! dispatcher, the transaction and the queries they share.

mod backend;
mod certkey;
mod cipher;
mod entity_ssl;
mod files;
mod net_profile;
mod profile;
mod removal;
mod vserver;

#[cfg(test)]
mod testkit;

pub use files::{canonical_dirs, read_regular, DirFileSource, FileBytes, FileKind, FileSource, MAX_PEM_BYTES};

use std::collections::BTreeSet;
use std::fmt;

use super::command::{Command, SslBind};
use super::model::*;
use CommandError::*;

/// What kind of change a command made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    /// A new object (certKey, cipher group, profile, vserver, service, serviceGroup).
    Add,
    /// An object was removed.
    Remove,
    /// SSL settings changed: `bumped` lists the entity sides with a new epoch.
    Ssl,
    /// A non-SSL change (limits, lb bindings, serviceGroup members): no epoch moves.
    Plain,
    /// `disable`: close every connection of the entity now (R7).
    Disable,
    /// `enable`: accept or select again, under a new epoch.
    Enable,
}

/// The effect of one applied command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// Entity sides that opened a new epoch (their new number is in `Model::epochs`).
    pub bumped: Vec<EntityRef>,
    pub disabled: Vec<EntityRef>,
    pub enabled: Vec<EntityRef>,
    pub removed: Vec<EntityRef>,
    /// New entities; they start at epoch 1.
    pub added: Vec<EntityRef>,
    pub kind: ChangeKind,
}

impl Change {
    fn new(kind: ChangeKind) -> Self {
        Change {
            bumped: vec![],
            disabled: vec![],
            enabled: vec![],
            removed: vec![],
            added: vec![],
            kind,
        }
    }
}

/// Why `apply` refused a command. Every kind is the user's doing (the
/// command, or a file it names), never an internal fault, and the model is
/// left unchanged (R10). The message says what to do about it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// It names an entity, binding, link or member that does not exist.
    #[error("{0}")]
    Unknown(String),
    /// It clashes with what is there: already exists, already bound, still in use.
    #[error("{0}")]
    Conflict(String),
    /// Its values do not hold together: a key that does not match its
    /// certificate, a chain that does not verify, SSL settings on a TCP service.
    #[error("{0}")]
    Invalid(String),
    /// A file it names cannot be read.
    #[error("{0}")]
    File(String),
    /// `show` or `save` given where a change was expected.
    #[error("{0}")]
    NotAChange(String),
}

/// A batch that failed: the line of the first failing command and why.
/// The model the batch was applied to is unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchError {
    pub line: usize,
    pub reason: CommandError,
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

impl std::error::Error for BatchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.reason)
    }
}

/// Default idle timeout of a proxied connection (`-cltTimeout`), seconds.
pub const DEFAULT_CLIENT_TIMEOUT: u32 = 180;

/// The SSL-related parts of one entity.
struct SslView<'a> {
    profile: &'a Option<String>,
    bindings: &'a SslBindings,
}

impl Model {
    /// Every SSL-capable entity with its profile and bindings (TCP back ends are skipped).
    fn ssl_entities(&self) -> impl Iterator<Item = (EntityRef, SslView<'_>)> {
        let v = self.vservers.values().map(|v| {
            (
                EntityRef::new(EntityKind::Vserver, &v.name),
                SslView {
                    profile: &v.ssl_profile,
                    bindings: &v.bindings,
                },
            )
        });
        let s = self
            .services
            .values()
            .filter(|s| s.proto == BackendProto::SslTcp)
            .map(|s| {
                (
                    EntityRef::new(EntityKind::Service, &s.name),
                    SslView {
                        profile: &s.ssl_profile,
                        bindings: &s.bindings,
                    },
                )
            });
        let g = self
            .service_groups
            .values()
            .filter(|g| g.proto == BackendProto::SslTcp)
            .map(|g| {
                (
                    EntityRef::new(EntityKind::ServiceGroup, &g.name),
                    SslView {
                        profile: &g.ssl_profile,
                        bindings: &g.bindings,
                    },
                )
            });
        v.chain(s).chain(g)
    }

    /// `name` followed by the certKeys it is linked to, transitively.
    pub fn chain_of<'a>(&'a self, name: &'a str) -> Vec<&'a str> {
        let mut out = vec![name];
        let mut cur = name;
        // Links never form a cycle (apply refuses them); the bound is a guard.
        while out.len() <= self.certkeys.len() {
            match self.certkeys.get(cur).and_then(|c| c.linked_to.as_deref()) {
                Some(next) if !out.contains(&next) => {
                    out.push(next);
                    cur = next;
                }
                _ => break,
            }
        }
        out
    }

    /// Entities that use certKey `name` directly (bound) or through a chain.
    pub fn certkey_users(&self, name: &str) -> BTreeSet<EntityRef> {
        self.ssl_entities()
            .filter(|(_, v)| {
                v.bindings
                    .certkeys
                    .iter()
                    .any(|b| self.chain_of(&b.certkey).contains(&name))
            })
            .map(|(e, _)| e)
            .collect()
    }

    /// Entities bound to cipher group `name`.
    pub fn cipher_group_users(&self, name: &str) -> BTreeSet<EntityRef> {
        self.ssl_entities()
            .filter(|(_, v)| {
                v.bindings
                    .ciphers
                    .iter()
                    .any(|b| b.cipher == CipherRef::Group(name.to_string()))
            })
            .map(|(e, _)| e)
            .collect()
    }

    /// Entities whose `-sslProfile` is `name`.
    pub fn profile_users(&self, name: &str) -> BTreeSet<EntityRef> {
        self.ssl_entities()
            .filter(|(_, v)| v.profile.as_deref() == Some(name))
            .map(|(e, _)| e)
            .collect()
    }

    /// Vservers with `bind lb vserver V target`.
    fn lb_users(&self, target: &str) -> Vec<&str> {
        self.vservers
            .values()
            .filter(|v| v.targets.iter().any(|t| t == target))
            .map(|v| v.name.as_str())
            .collect()
    }

    /// An SSL-side change of `entities`: each gets a new epoch.
    fn ssl_change(&mut self, entities: impl IntoIterator<Item = EntityRef>) -> Change {
        let mut change = Change::new(ChangeKind::Ssl);
        change.bumped = self.bump(entities);
        change
    }

    fn bump(&mut self, entities: impl IntoIterator<Item = EntityRef>) -> Vec<EntityRef> {
        let mut out = Vec::new();
        for e in entities {
            *self.epochs.entry(e.clone()).or_insert(0) += 1;
            out.push(e);
        }
        out
    }

    fn entity_exists(&self, e: &EntityRef) -> bool {
        match e.kind {
            EntityKind::Vserver => self.vservers.contains_key(&*e.name),
            EntityKind::Service => self.services.contains_key(&*e.name),
            EntityKind::ServiceGroup => self.service_groups.contains_key(&*e.name),
        }
    }

    /// The SSL settings of an entity, for changing them. Fails when the
    /// entity does not exist or is a plain TCP back end.
    fn ssl_parts_mut(
        &mut self,
        e: &EntityRef,
    ) -> Result<(&mut Option<String>, &mut SslParams, &mut SslBindings), CommandError> {
        let not_ssl = |p: BackendProto| {
            Invalid(format!(
                "{e} uses {}, not SSL_TCP: SSL settings do not apply",
                p.keyword()
            ))
        };
        match e.kind {
            EntityKind::Vserver => {
                let v = self
                    .vservers
                    .get_mut(&*e.name)
                    .ok_or_else(|| Unknown(format!("unknown {e}")))?;
                Ok((&mut v.ssl_profile, &mut v.params, &mut v.bindings))
            }
            EntityKind::Service => {
                let s = self
                    .services
                    .get_mut(&*e.name)
                    .ok_or_else(|| Unknown(format!("unknown {e}")))?;
                if s.proto != BackendProto::SslTcp {
                    return Err(not_ssl(s.proto));
                }
                Ok((&mut s.ssl_profile, &mut s.params, &mut s.bindings))
            }
            EntityKind::ServiceGroup => {
                let g = self
                    .service_groups
                    .get_mut(&*e.name)
                    .ok_or_else(|| Unknown(format!("unknown {e}")))?;
                if g.proto != BackendProto::SslTcp {
                    return Err(not_ssl(g.proto));
                }
                Ok((&mut g.ssl_profile, &mut g.params, &mut g.bindings))
            }
        }
    }

    fn certkey(&self, name: &str) -> Result<&CertKey, CommandError> {
        self.certkeys
            .get(name)
            .ok_or_else(|| Unknown(format!("unknown certKey {name}")))
    }

    /// Validate `cmd` and apply it. On error the model is unchanged.
    pub fn apply(&mut self, cmd: &Command, files: &dyn FileSource) -> Result<Change, CommandError> {
        match cmd {
            Command::Save | Command::Show { .. } => Err(NotAChange(format!("'{cmd}' is not a configuration change"))),
            Command::AddCertKey { name, cert, key } => self.add_certkey(name, cert, key.as_deref(), files),
            Command::UpdateCertKey { name, cert, key } => self.update_certkey(name, cert, key.as_deref(), files),
            Command::LinkCertKey { name, ca } => self.link_certkey(name, ca),
            Command::UnlinkCertKey { name } => self.unlink_certkey(name),
            Command::AddCipherGroup { name } => self.add_cipher_group(name),
            Command::BindCipherGroup { name, suite } => self.bind_cipher_group(name, suite),
            Command::UnbindCipherGroup { name, suite } => self.unbind_cipher_group(name, suite),
            Command::SetCipherGroup { name, suites } => self.set_cipher_group(name, suites),
            Command::AddProfile { name, params } => self.add_profile(name, params),
            Command::SetProfile { name, params } => self.set_profile(name, params),
            Command::AddVserver {
                name,
                proto,
                addr,
                max_clients,
                client_timeout,
                net_profile,
            } => self.add_vserver(name, *proto, addr, max_clients, client_timeout, net_profile),
            Command::SetLbVserver {
                name,
                max_clients,
                client_timeout,
                net_profile,
            } => self.set_lb_vserver(name, max_clients, client_timeout, net_profile),
            Command::BindLbVserver { name, target } => self.bind_lb_vserver(name, target),
            Command::UnbindLbVserver { name, target } => self.unbind_lb_vserver(name, target),
            Command::SetSsl {
                entity,
                params,
                profile,
            } => self.set_ssl(entity, params, profile),
            Command::BindSsl { entity, bind } => self.bind_ssl(entity, bind),
            Command::UnbindSsl { entity, bind } => self.unbind_ssl(entity, bind),
            Command::AddNetProfile { name, params } => self.add_net_profile(name, params),
            Command::SetNetProfile { name, params } => self.set_net_profile(name, params),
            Command::AddService {
                name,
                addr,
                proto,
                health,
                net_profile,
            } => self.add_service(name, addr, proto, health, net_profile),
            Command::AddServiceGroup {
                name,
                proto,
                health,
                net_profile,
            } => self.add_service_group(name, proto, health, net_profile),
            Command::SetBackend { entity, net_profile } => self.set_backend(entity, net_profile),
            Command::BindServiceGroupMember { name, addr } => self.bind_member(name, addr),
            Command::UnbindServiceGroupMember { name, addr } => self.unbind_member(name, addr),
            Command::Disable(e) => self.set_enabled(e, false),
            Command::Enable(e) => self.set_enabled(e, true),
            Command::Rm { what, name } => self.remove(*what, name),
        }
    }

    fn added(&mut self, e: EntityRef) -> Change {
        self.epochs.insert(e.clone(), 1);
        let mut change = Change::new(ChangeKind::Add);
        change.added.push(e);
        change
    }

    /// Apply `cmds` as one transaction on a copy of `self`. Returns the new
    /// model and each command's change, or the first failing line; `self`
    /// is never modified (R10).
    ///
    /// A transaction opens at most one epoch per entity: an entity that was
    /// there before and that any command changed (removed and added again
    /// included) gets the number after the one it had, however many of its
    /// commands opened one; an entity the transaction creates starts at 1.
    pub fn apply_batch(
        &self,
        cmds: &[(usize, Command)],
        files: &dyn FileSource,
    ) -> Result<(Model, Vec<Change>), BatchError> {
        let mut next = self.clone();
        let mut changes = Vec::with_capacity(cmds.len());
        for (line, cmd) in cmds {
            let change = next
                .apply(cmd, files)
                .map_err(|reason| BatchError { line: *line, reason })?;
            changes.push(change);
        }
        for (e, epoch) in next.epochs.iter_mut() {
            let touched = || changes.iter().any(|c| c.bumped.contains(e) || c.added.contains(e));
            *epoch = match self.epochs.get(e) {
                None => 1,
                Some(&before) if *epoch != before || touched() => before + 1,
                Some(&before) => before,
            };
        }
        Ok((next, changes))
    }
}

fn take_first<T>(v: &mut Vec<T>, pred: impl Fn(&T) -> bool) -> bool {
    match v.iter().position(pred) {
        Some(i) => {
            v.remove(i);
            true
        }
        None => false,
    }
}

fn describe_bind(b: &SslBind) -> String {
    match b {
        SslBind::CertKey { name, ca: true, .. } => format!("certKey {name} (as -CA)"),
        SslBind::CertKey { name, .. } => format!("certKey {name}"),
        SslBind::Cipher {
            cipher: CipherRef::Group(g),
            ..
        } => format!("cipher group {g}"),
        SslBind::Cipher {
            cipher: CipherRef::Suite(s),
            ..
        } => format!("cipher {}", s.adc_name()),
        SslBind::Curve(c) => format!("curve {}", c.adc_name()),
    }
}

#[cfg(test)]
mod tests {
    use super::testkit::*;
    use super::*;
    use crate::config::testutil::Fixture;

    #[test]
    fn added_entities_start_at_epoch_one() {
        let fx = Fixture::new();
        let mut m = Model::default();
        let change = ok(&mut m, &fx, "add lb vserver v SSL_TCP 127.0.0.1 443");
        assert_eq!(change.kind, ChangeKind::Add);
        assert_eq!(change.added, [v("v")]);
        assert_eq!(m.epochs[&v("v")], 1);
        ok(&mut m, &fx, "add service s 127.0.0.1 80 TCP");
        ok(&mut m, &fx, "add serviceGroup g TCP");
        assert_eq!(
            epochs(&m),
            [
                ("vserver v".into(), 1),
                ("service s".into(), 1),
                ("serviceGroup g".into(), 1)
            ]
        );
    }

    #[test]
    fn epoch_scope_per_design_table() {
        let (fx, mut m) = setup();
        // Entity's own settings and bindings: that entity only.
        bumps(&mut m, &fx, "set ssl vserver v1 -tls12 DISABLED", &[v("v1")]);
        bumps(&mut m, &fx, "bind ssl vserver v1 -eccCurveName X25519", &[v("v1")]);
        bumps(&mut m, &fx, "unbind ssl vserver v1 -eccCurveName X25519", &[v("v1")]);
        bumps(&mut m, &fx, "set ssl service s1 -commonName b.test", &[s("s1")]);
        bumps(&mut m, &fx, "bind ssl service s1 -eccCurveName P_256", &[s("s1")]);
        bumps(&mut m, &fx, "set ssl serviceGroup g1 -serverAuth ENABLED", &[g("g1")]);
        bumps(
            &mut m,
            &fx,
            "bind ssl serviceGroup g1 -cipherName TLS1.3-AES256-GCM-SHA384",
            &[g("g1")],
        );
        bumps(&mut m, &fx, "bind ssl vserver v1 -certkeyName b -SNICert", &[v("v1")]);
        // Profiles: every entity using it, on its side.
        bumps(&mut m, &fx, "set ssl profile fe -sessTimeout 60", &[v("v1")]);
        bumps(&mut m, &fx, "set ssl profile be -sessReuse DISABLED", &[s("s1")]);
        // Cipher group: every entity bound to it, front and back.
        bumps(
            &mut m,
            &fx,
            "bind ssl cipher grp -cipherName TLS1.3-AES256-GCM-SHA384",
            &[v("v2"), s("s1")],
        );
        bumps(
            &mut m,
            &fx,
            "unbind ssl cipher grp -cipherName TLS1.3-AES256-GCM-SHA384",
            &[v("v2"), s("s1")],
        );
        bumps(
            &mut m,
            &fx,
            "set ssl cipher grp -cipherName TLS1.3-AES256-GCM-SHA384,TLS1.3-AES128-GCM-SHA256",
            &[v("v2"), s("s1")],
        );
        // certKey update/link/unlink: users directly or through a chain.
        bumps(&mut m, &fx, "update ssl certKey a -cert a.crt", &[v("v1")]);
        bumps(&mut m, &fx, "link ssl certKey leaf inter", &[v("v2")]);
        // inter is now in v2's chain; ca is bound to g1 directly.
        bumps(&mut m, &fx, "link ssl certKey inter ca", &[v("v2")]);
        bumps(&mut m, &fx, "update ssl certKey ca -cert ca.crt", &[v("v2"), g("g1")]);
        bumps(&mut m, &fx, "update ssl certKey inter -cert inter.crt", &[v("v2")]);
        bumps(&mut m, &fx, "unlink ssl certKey inter", &[v("v2")]);
        bumps(&mut m, &fx, "update ssl certKey ca -cert ca.crt", &[g("g1")]);
        // Non-SSL changes are changes but bump nothing.
        for line in [
            "set lb vserver v1 -maxClients 10 -cltTimeout 30",
            "unbind lb vserver v1 s1",
            "bind lb vserver v1 s1",
            "bind serviceGroup g1 127.0.0.1 9004",
            "unbind serviceGroup g1 127.0.0.1 9004",
            "add ssl profile unused",
            "set ssl profile unused -tls13 DISABLED",
            "add ssl cipher lonely",
            "bind ssl cipher lonely -cipherName TLS1.3-AES128-GCM-SHA256",
        ] {
            bumps(&mut m, &fx, line, &[]);
        }
        assert_eq!(
            ok(&mut m, &fx, "set lb vserver v1 -maxClients 0").kind,
            ChangeKind::Plain
        );
        assert_eq!(m.vservers["v1"].max_clients, None);
    }

    #[test]
    fn batch_is_a_transaction() {
        let (fx, m) = setup();
        let before = crate::config::save::snapshot(&m);
        let cmds = vec![
            (1, cmd("add lb vserver v3 SSL_TCP 127.0.0.1 8443")),
            (2, cmd("bind ssl vserver v3 -certkeyName a")),
            (3, cmd("set ssl vserver v1 -tls12 DISABLED")),
            (4, cmd("bind ssl vserver v3 -certkeyName missing")),
        ];
        let err = m.apply_batch(&cmds, &fx.files()).unwrap_err();
        assert_eq!(err.line, 4);
        assert!(err.to_string().starts_with("line 4: unknown certKey missing"), "{err}");
        assert_eq!(crate::config::save::snapshot(&m), before);
        assert!(!m.vservers.contains_key("v3"));

        let (next, changes) = m.apply_batch(&cmds[..3], &fx.files()).unwrap();
        assert_eq!(changes.len(), 3);
        assert_eq!(changes[0].added, [v("v3")]);
        assert_eq!(
            next.epochs[&v("v3")],
            1,
            "created and bound in one transaction: its first epoch"
        );
        assert_eq!(next.epochs[&v("v1")], m.epochs[&v("v1")] + 1);
        assert_eq!(crate::config::save::snapshot(&m), before);
    }

    #[test]
    fn a_batch_opens_at_most_one_epoch_per_entity() {
        let (fx, m) = setup();
        let e1 = m.epochs[&v("v1")];
        let cmds = vec![
            (1, cmd("set ssl vserver v1 -tls12 DISABLED")),
            (2, cmd("set ssl vserver v1 -sessTimeout 77")),
            (3, cmd("unbind ssl vserver v1 -certkeyName a")),
            (4, cmd("bind ssl vserver v1 -certkeyName a")),
        ];
        let (next, _) = m.apply_batch(&cmds, &fx.files()).unwrap();
        assert_eq!(next.epochs[&v("v1")], e1 + 1);
        // Removed and added again: still the next epoch, never an older number
        // (a shard keeps the higher one it has).
        let cmds: Vec<_> = [
            "rm lb vserver v1",
            "add lb vserver v1 SSL_TCP 127.0.0.1 8441",
            "set ssl vserver v1 -sslProfile fe",
            "bind ssl vserver v1 -certkeyName a",
            "bind lb vserver v1 s1",
        ]
        .into_iter()
        .enumerate()
        .map(|(i, l)| (i + 1, cmd(l)))
        .collect();
        let (next, _) = m.apply_batch(&cmds, &fx.files()).unwrap();
        assert_eq!(next.epochs[&v("v1")], e1 + 1);
    }

    #[test]
    fn validation_errors_change_nothing() {
        let (fx, mut m) = setup();
        refused(&mut m, &fx, "show stats", "not a configuration change");
        refused(&mut m, &fx, "save config", "not a configuration change");
    }
}

#[cfg(test)]
mod error_kind_tests {
    use super::testkit::*;
    use super::CommandError;

    /// Each refusal says whose mistake it is, so the API can answer 400 or 409.
    #[test]
    fn refusals_are_typed_by_kind() {
        let (fx, mut m) = setup();
        let mut kind = |line: &str| m.apply(&cmd(line), &fx.files()).unwrap_err();
        assert!(matches!(kind("add ssl cipher grp"), CommandError::Conflict(_)));
        assert!(matches!(kind("rm ssl certKey a"), CommandError::Conflict(_)));
        assert!(matches!(
            kind("bind ssl vserver v1 -certkeyName nock"),
            CommandError::Unknown(_)
        ));
        assert!(matches!(kind("unbind lb vserver v1 g1"), CommandError::Unknown(_)));
        assert!(matches!(
            kind("set ssl service plain -tls12 ENABLED"),
            CommandError::Invalid(_)
        ));
        assert!(matches!(
            kind("add ssl certKey x -cert a.crt -key b.key"),
            CommandError::Invalid(_)
        ));
        assert!(matches!(
            kind("add ssl certKey x -cert nothere.crt"),
            CommandError::File(_)
        ));
        assert!(matches!(kind("save config"), CommandError::NotAChange(_)));
    }
}
