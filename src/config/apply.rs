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

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::command::{Command, ObjectKind, SslBind};
use super::material::load_cert_key;
use super::model::*;

/// Where certificate and key files come from. Relative paths are resolved
/// against the config file's folder by the implementation.
pub trait FileSource {
    /// The whole file, or a reason naming the path and the cause.
    fn read(&self, path: &Path) -> Result<Vec<u8>, String>;

    /// Permission bits of a file, where the source has them (used to warn
    /// about private keys readable by group or others).
    fn mode(&self, _path: &Path) -> Option<u32> {
        None
    }
}

/// Reads real files; relative paths are taken from `base` (the config file's folder).
#[derive(Clone, Debug)]
pub struct DirFileSource {
    pub base: PathBuf,
}

impl DirFileSource {
    pub fn new(base: impl Into<PathBuf>) -> Self {
        DirFileSource { base: base.into() }
    }
}

impl FileSource for DirFileSource {
    fn read(&self, path: &Path) -> Result<Vec<u8>, String> {
        let full = if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base.join(path)
        };
        std::fs::read(&full).map_err(|e| format!("cannot read {}: {e}", full.display()))
    }

    fn mode(&self, path: &Path) -> Option<u32> {
        use std::os::unix::fs::PermissionsExt;
        let full = if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base.join(path)
        };
        std::fs::metadata(full).ok().map(|m| m.permissions().mode())
    }
}

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

/// A batch that failed: the line of the first failing command and why.
/// The model the batch was applied to is unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchError {
    pub line: usize,
    pub reason: String,
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

impl std::error::Error for BatchError {}

/// Default idle timeout of a proxied connection (`-cltTimeout`), seconds.
pub const DEFAULT_CLIENT_TIMEOUT: u32 = 180;

/// Read and check a certKey's files.
fn load_material(
    name: &str,
    cert: &Path,
    key: Option<&Path>,
    files: &dyn FileSource,
) -> Result<CertKeyMaterial, String> {
    let cert_pem = files.read(cert).map_err(|e| format!("certKey {name}: {e}"))?;
    let key_pem = match key {
        Some(k) => {
            let pem = files.read(k).map_err(|e| format!("certKey {name}: {e}"))?;
            if let Some(mode) = files.mode(k).filter(|m| m & 0o077 != 0) {
                tracing::warn!(
                    "certKey {name}: private key file {} is readable by group or others (mode {:o}); chmod 600 it",
                    k.display(),
                    mode & 0o777
                );
            }
            Some(pem)
        }
        None => None,
    };
    let cert_name = cert.display().to_string();
    let key_name = key.map(|k| k.display().to_string()).unwrap_or_default();
    load_cert_key(
        &cert_pem,
        &cert_name,
        key_pem.as_deref().map(|p| (p, key_name.as_str())),
    )
    .map_err(|e| format!("certKey {name}: {e}"))
}

/// Whether `child`'s leaf was issued by `ca`'s leaf (issuer name equals subject name).
fn issued_by(child: &CertKeyMaterial, ca: &CertKeyMaterial) -> bool {
    use x509_parser::prelude::*;
    let (Some(c), Some(a)) = (child.certs.first(), ca.certs.first()) else {
        return false;
    };
    match (
        X509Certificate::from_der(c.as_ref()),
        X509Certificate::from_der(a.as_ref()),
    ) {
        (Ok((_, c)), Ok((_, a))) => c.issuer().as_raw() == a.subject().as_raw(),
        _ => false,
    }
}

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
    ) -> Result<(&mut Option<String>, &mut SslParams, &mut SslBindings), String> {
        let not_ssl = || format!("{e} uses TCP, not SSL_TCP: SSL settings do not apply");
        match e.kind {
            EntityKind::Vserver => {
                let v = self.vservers.get_mut(&*e.name).ok_or_else(|| format!("unknown {e}"))?;
                Ok((&mut v.ssl_profile, &mut v.params, &mut v.bindings))
            }
            EntityKind::Service => {
                let s = self.services.get_mut(&*e.name).ok_or_else(|| format!("unknown {e}"))?;
                if s.proto != BackendProto::SslTcp {
                    return Err(not_ssl());
                }
                Ok((&mut s.ssl_profile, &mut s.params, &mut s.bindings))
            }
            EntityKind::ServiceGroup => {
                let g = self
                    .service_groups
                    .get_mut(&*e.name)
                    .ok_or_else(|| format!("unknown {e}"))?;
                if g.proto != BackendProto::SslTcp {
                    return Err(not_ssl());
                }
                Ok((&mut g.ssl_profile, &mut g.params, &mut g.bindings))
            }
        }
    }

    fn certkey(&self, name: &str) -> Result<&CertKey, String> {
        self.certkeys.get(name).ok_or_else(|| format!("unknown certKey {name}"))
    }

    fn backend_name_free(&self, name: &str) -> Result<(), String> {
        if self.services.contains_key(name) {
            Err(format!("a service named {name} already exists"))
        } else if self.service_groups.contains_key(name) {
            Err(format!("a serviceGroup named {name} already exists"))
        } else {
            Ok(())
        }
    }

    /// Validate `cmd` and apply it. On error the model is unchanged.
    pub fn apply(&mut self, cmd: &Command, files: &dyn FileSource) -> Result<Change, String> {
        use ChangeKind::*;
        match cmd {
            Command::Save | Command::Show { .. } => Err(format!("'{cmd}' is not a configuration change")),

            Command::AddCertKey { name, cert, key } => {
                if self.certkeys.contains_key(name) {
                    return Err(format!("certKey {name} already exists"));
                }
                let material = load_material(name, cert, key.as_deref(), files)?;
                self.certkeys.insert(
                    name.clone(),
                    CertKey {
                        name: name.clone(),
                        cert_path: cert.clone(),
                        key_path: key.clone(),
                        linked_to: None,
                        material: Arc::new(material),
                    },
                );
                Ok(Change::new(Add))
            }
            Command::UpdateCertKey { name, cert, key } => {
                let old = self.certkey(name)?;
                let key = key.clone().or_else(|| old.key_path.clone());
                let material = load_material(name, cert, key.as_deref(), files)?;
                let now = std::time::SystemTime::now();
                if material.is_expired(now) {
                    return Err(format!(
                        "certKey {name}: the new certificate {} has expired; the running one is kept",
                        cert.display()
                    ));
                }
                if now < material.not_before {
                    return Err(format!(
                        "certKey {name}: the new certificate {} is not valid yet; the running one is kept",
                        cert.display()
                    ));
                }
                if let Some(ca) = &old.linked_to {
                    let ca_ck = self.certkey(ca)?;
                    if !issued_by(&material, &ca_ck.material) {
                        return Err(format!(
                            "certKey {name}: the new certificate is not issued by {ca}, which it is linked to; unlink it first"
                        ));
                    }
                }
                for child in self
                    .certkeys
                    .values()
                    .filter(|c| c.linked_to.as_deref() == Some(name.as_str()))
                {
                    if !issued_by(&child.material, &material) {
                        return Err(format!(
                            "certKey {name}: certKey {} is linked to it and is not issued by the new certificate",
                            child.name
                        ));
                    }
                }
                let users = self.certkey_users(name);
                if let Some(ck) = self.certkeys.get_mut(name) {
                    ck.cert_path = cert.clone();
                    ck.key_path = key;
                    ck.material = Arc::new(material);
                }
                let mut ch = Change::new(Ssl);
                ch.bumped = self.bump(users);
                Ok(ch)
            }
            Command::LinkCertKey { name, ca } => {
                let ck = self.certkey(name)?;
                let ca_ck = self
                    .certkey(ca)
                    .map_err(|_| format!("cannot link {name}: unknown CA certKey {ca}"))?;
                if let Some(cur) = &ck.linked_to {
                    return Err(format!("certKey {name} is already linked to {cur}; unlink it first"));
                }
                if name == ca || self.chain_of(ca).contains(&name.as_str()) {
                    return Err(format!(
                        "cannot link {name} to {ca}: the chain would loop back to {name}"
                    ));
                }
                if !issued_by(&ck.material, &ca_ck.material) {
                    return Err(format!(
                        "cannot link {name} to {ca}: the certificate of {name} is not issued by {} (subject of {ca})",
                        ca_ck.material.subject
                    ));
                }
                if let Some(ck) = self.certkeys.get_mut(name) {
                    ck.linked_to = Some(ca.clone());
                }
                let users = self.certkey_users(name);
                let mut ch = Change::new(Ssl);
                ch.bumped = self.bump(users);
                Ok(ch)
            }
            Command::UnlinkCertKey { name } => {
                if self.certkey(name)?.linked_to.is_none() {
                    return Err(format!("certKey {name} is not linked"));
                }
                let users = self.certkey_users(name);
                if let Some(ck) = self.certkeys.get_mut(name) {
                    ck.linked_to = None;
                }
                let mut ch = Change::new(Ssl);
                ch.bumped = self.bump(users);
                Ok(ch)
            }

            Command::AddCipherGroup { name } => {
                if self.cipher_groups.contains_key(name) {
                    return Err(format!("cipher group {name} already exists"));
                }
                if CipherSuiteName::from_adc(name).is_some() {
                    return Err(format!("cipher group name {name} is the name of a cipher suite"));
                }
                self.cipher_groups.insert(
                    name.clone(),
                    CipherGroup {
                        name: name.clone(),
                        suites: vec![],
                    },
                );
                Ok(Change::new(Add))
            }
            Command::BindCipherGroup { name, suite } => {
                let g = self
                    .cipher_groups
                    .get_mut(name)
                    .ok_or_else(|| format!("unknown cipher group {name}"))?;
                if g.suites.contains(suite) {
                    return Err(format!(
                        "cipher {} is already bound to cipher group {name}",
                        suite.adc_name()
                    ));
                }
                g.suites.push(*suite);
                self.cipher_group_changed(name)
            }
            Command::UnbindCipherGroup { name, suite } => {
                let g = self
                    .cipher_groups
                    .get_mut(name)
                    .ok_or_else(|| format!("unknown cipher group {name}"))?;
                let Some(i) = g.suites.iter().position(|s| s == suite) else {
                    return Err(format!(
                        "cipher {} is not bound to cipher group {name}",
                        suite.adc_name()
                    ));
                };
                g.suites.remove(i);
                self.cipher_group_changed(name)
            }
            Command::SetCipherGroup { name, suites } => {
                let g = self
                    .cipher_groups
                    .get_mut(name)
                    .ok_or_else(|| format!("unknown cipher group {name}"))?;
                g.suites = suites.clone();
                self.cipher_group_changed(name)
            }

            Command::AddProfile { name, params } => {
                if self.profiles.contains_key(name) {
                    return Err(format!("ssl profile {name} already exists"));
                }
                self.profiles.insert(
                    name.clone(),
                    SslProfile {
                        name: name.clone(),
                        params: params.clone(),
                    },
                );
                Ok(Change::new(Add))
            }
            Command::SetProfile { name, params } => {
                let p = self
                    .profiles
                    .get_mut(name)
                    .ok_or_else(|| format!("unknown ssl profile {name}"))?;
                p.params.overlay(params);
                let users = self.profile_users(name);
                let mut ch = Change::new(Ssl);
                ch.bumped = self.bump(users);
                Ok(ch)
            }

            Command::AddVserver {
                name,
                addr,
                max_clients,
                client_timeout,
            } => {
                if self.vservers.contains_key(name) {
                    return Err(format!("lb vserver {name} already exists"));
                }
                if let Some(other) = self.vservers.values().find(|v| v.addr == *addr) {
                    return Err(format!(
                        "lb vserver {name}: address {addr} is already used by lb vserver {}",
                        other.name
                    ));
                }
                self.vservers.insert(
                    name.clone(),
                    Vserver {
                        name: name.clone(),
                        addr: *addr,
                        enabled: true,
                        max_clients: max_clients.filter(|m| *m != 0),
                        client_timeout: client_timeout.unwrap_or(DEFAULT_CLIENT_TIMEOUT),
                        ssl_profile: None,
                        params: SslParams::default(),
                        bindings: SslBindings::default(),
                        targets: vec![],
                    },
                );
                Ok(self.added(EntityRef::new(EntityKind::Vserver, name)))
            }
            Command::SetLbVserver {
                name,
                max_clients,
                client_timeout,
            } => {
                let v = self
                    .vservers
                    .get_mut(name)
                    .ok_or_else(|| format!("unknown lb vserver {name}"))?;
                if let Some(m) = max_clients {
                    v.max_clients = Some(*m).filter(|m| *m != 0);
                }
                if let Some(t) = client_timeout {
                    v.client_timeout = *t;
                }
                Ok(Change::new(Plain))
            }
            Command::BindLbVserver { name, target } => {
                let v = self
                    .vservers
                    .get(name)
                    .ok_or_else(|| format!("unknown lb vserver {name}"))?;
                if !self.services.contains_key(target) && !self.service_groups.contains_key(target) {
                    return Err(format!(
                        "bind lb vserver {name}: no service or serviceGroup named {target}"
                    ));
                }
                if v.targets.contains(target) {
                    return Err(format!("{target} is already bound to lb vserver {name}"));
                }
                if let Some(v) = self.vservers.get_mut(name) {
                    v.targets.push(target.clone());
                }
                Ok(Change::new(Plain))
            }
            Command::UnbindLbVserver { name, target } => {
                let v = self
                    .vservers
                    .get_mut(name)
                    .ok_or_else(|| format!("unknown lb vserver {name}"))?;
                let Some(i) = v.targets.iter().position(|t| t == target) else {
                    return Err(format!("{target} is not bound to lb vserver {name}"));
                };
                v.targets.remove(i);
                Ok(Change::new(Plain))
            }

            Command::SetSsl {
                entity,
                params,
                profile,
            } => {
                if let Some(p) = profile {
                    if !self.profiles.contains_key(p) {
                        return Err(format!("set ssl {entity}: unknown ssl profile {p}"));
                    }
                }
                let (prof, own, _) = self.ssl_parts_mut(entity)?;
                own.overlay(params);
                if profile.is_some() {
                    prof.clone_from(profile);
                }
                let mut ch = Change::new(Ssl);
                ch.bumped = self.bump([entity.clone()]);
                Ok(ch)
            }
            Command::BindSsl { entity, bind } => {
                self.check_bind(entity, bind)?;
                let priority = match bind {
                    SslBind::Cipher { priority: None, .. } => {
                        let (_, _, b) = self.ssl_parts_mut(entity)?;
                        b.ciphers
                            .iter()
                            .map(|c| c.priority)
                            .max()
                            .map_or(1, |m| m.saturating_add(1))
                    }
                    SslBind::Cipher { priority: Some(p), .. } => *p,
                    _ => 0,
                };
                let (_, _, b) = self.ssl_parts_mut(entity)?;
                match bind {
                    SslBind::CertKey { name, sni, ca } => b.certkeys.push(CertBinding {
                        certkey: name.clone(),
                        sni: *sni,
                        ca: *ca,
                    }),
                    SslBind::Cipher { cipher, .. } => b.ciphers.push(CipherBinding {
                        cipher: cipher.clone(),
                        priority,
                    }),
                    SslBind::Curve(c) => b.curves.push(*c),
                }
                let mut ch = Change::new(Ssl);
                ch.bumped = self.bump([entity.clone()]);
                Ok(ch)
            }
            Command::UnbindSsl { entity, bind } => {
                let (_, _, b) = self.ssl_parts_mut(entity)?;
                let removed = match bind {
                    SslBind::CertKey { name, ca, .. } => {
                        take_first(&mut b.certkeys, |x| x.certkey == *name && x.ca == *ca)
                    }
                    SslBind::Cipher { cipher, .. } => take_first(&mut b.ciphers, |x| x.cipher == *cipher),
                    SslBind::Curve(c) => take_first(&mut b.curves, |x| x == c),
                };
                if !removed {
                    return Err(format!("{} is not bound to {entity}", describe_bind(bind)));
                }
                let mut ch = Change::new(Ssl);
                ch.bumped = self.bump([entity.clone()]);
                Ok(ch)
            }

            Command::AddService {
                name,
                addr,
                proto,
                health,
            } => {
                self.backend_name_free(name)?;
                if let Some(other) = self.services.values().find(|s| s.addr == *addr && s.proto == *proto) {
                    return Err(format!(
                        "service {name}: {addr} {} is already service {}",
                        proto.keyword(),
                        other.name
                    ));
                }
                self.services.insert(
                    name.clone(),
                    Service {
                        name: name.clone(),
                        addr: *addr,
                        proto: *proto,
                        enabled: true,
                        health: *health,
                        ssl_profile: None,
                        params: SslParams::default(),
                        bindings: SslBindings::default(),
                    },
                );
                Ok(self.added(EntityRef::new(EntityKind::Service, name)))
            }
            Command::AddServiceGroup { name, proto, health } => {
                self.backend_name_free(name)?;
                self.service_groups.insert(
                    name.clone(),
                    ServiceGroup {
                        name: name.clone(),
                        proto: *proto,
                        enabled: true,
                        members: vec![],
                        health: *health,
                        ssl_profile: None,
                        params: SslParams::default(),
                        bindings: SslBindings::default(),
                    },
                );
                Ok(self.added(EntityRef::new(EntityKind::ServiceGroup, name)))
            }
            Command::BindServiceGroupMember { name, addr } => {
                let g = self
                    .service_groups
                    .get_mut(name)
                    .ok_or_else(|| format!("unknown serviceGroup {name}"))?;
                if g.members.contains(addr) {
                    return Err(format!("{addr} is already a member of serviceGroup {name}"));
                }
                g.members.push(*addr);
                Ok(Change::new(Plain))
            }
            Command::UnbindServiceGroupMember { name, addr } => {
                let g = self
                    .service_groups
                    .get_mut(name)
                    .ok_or_else(|| format!("unknown serviceGroup {name}"))?;
                if !take_first(&mut g.members, |m| m == addr) {
                    return Err(format!("{addr} is not a member of serviceGroup {name}"));
                }
                Ok(Change::new(Plain))
            }

            Command::Disable(e) | Command::Enable(e) => {
                let on = matches!(cmd, Command::Enable(_));
                let enabled = match e.kind {
                    EntityKind::Vserver => self.vservers.get_mut(&*e.name).map(|v| &mut v.enabled),
                    EntityKind::Service => self.services.get_mut(&*e.name).map(|s| &mut s.enabled),
                    EntityKind::ServiceGroup => self.service_groups.get_mut(&*e.name).map(|g| &mut g.enabled),
                }
                .ok_or_else(|| format!("unknown {e}"))?;
                let was = std::mem::replace(enabled, on);
                let mut ch = Change::new(if on { Enable } else { Disable });
                // Enabling or disabling again is accepted and changes nothing.
                if was != on {
                    if on {
                        ch.enabled.push(e.clone());
                        ch.bumped = self.bump([e.clone()]);
                    } else {
                        ch.disabled.push(e.clone());
                    }
                }
                Ok(ch)
            }

            Command::Rm { what, name } => self.remove(*what, name),
        }
    }

    fn added(&mut self, e: EntityRef) -> Change {
        self.epochs.insert(e.clone(), 1);
        let mut ch = Change::new(ChangeKind::Add);
        ch.added.push(e);
        ch
    }

    fn cipher_group_changed(&mut self, name: &str) -> Result<Change, String> {
        let users = self.cipher_group_users(name);
        let mut ch = Change::new(ChangeKind::Ssl);
        ch.bumped = self.bump(users);
        Ok(ch)
    }

    fn check_bind(&self, entity: &EntityRef, bind: &SslBind) -> Result<(), String> {
        if !self.entity_exists(entity) {
            return Err(format!("unknown {entity}"));
        }
        let bindings = self
            .ssl_entities()
            .find(|(e, _)| e == entity)
            .map(|(_, v)| v.bindings)
            .ok_or_else(|| format!("{entity} uses TCP, not SSL_TCP: SSL settings do not apply"))?;
        match bind {
            SslBind::CertKey { name, sni, ca } => {
                let ck = self.certkey(name)?;
                if bindings.certkeys.iter().any(|b| b.certkey == *name && b.ca == *ca) {
                    return Err(format!("certKey {name} is already bound to {entity}"));
                }
                if !ca {
                    if ck.material.key.is_none() {
                        return Err(format!(
                            "certKey {name} has no key: it can be bound to {entity} only with -CA"
                        ));
                    }
                    if !sni {
                        if let Some(other) = bindings.certkeys.iter().find(|b| !b.ca && !b.sni) {
                            return Err(format!(
                                "{entity} already has certKey {} as its certificate; unbind it first or bind {name} with -SNICert",
                                other.certkey
                            ));
                        }
                    }
                }
            }
            SslBind::Cipher { cipher, .. } => {
                if let CipherRef::Group(g) = cipher {
                    if !self.cipher_groups.contains_key(g) {
                        return Err(format!("unknown cipher group or cipher suite {g}"));
                    }
                }
                if bindings.ciphers.iter().any(|b| b.cipher == *cipher) {
                    return Err(format!("{} is already bound to {entity}", describe_bind(bind)));
                }
            }
            SslBind::Curve(c) => {
                if bindings.curves.contains(c) {
                    return Err(format!("curve {} is already bound to {entity}", c.adc_name()));
                }
            }
        }
        Ok(())
    }

    fn remove(&mut self, what: ObjectKind, name: &str) -> Result<Change, String> {
        let in_use = |by: &str| format!("cannot remove {} {name}: {by}", what.words());
        match what {
            ObjectKind::CertKey => {
                self.certkey(name)?;
                if let Some((e, _)) = self
                    .ssl_entities()
                    .find(|(_, v)| v.bindings.certkeys.iter().any(|b| b.certkey == name))
                {
                    return Err(in_use(&format!("it is bound to {e}; unbind it first")));
                }
                if let Some(child) = self.certkeys.values().find(|c| c.linked_to.as_deref() == Some(name)) {
                    return Err(in_use(&format!(
                        "certKey {} is linked to it; unlink that first",
                        child.name
                    )));
                }
                self.certkeys.remove(name);
            }
            ObjectKind::CipherGroup => {
                if !self.cipher_groups.contains_key(name) {
                    return Err(format!("unknown cipher group {name}"));
                }
                if let Some(e) = self.cipher_group_users(name).into_iter().next() {
                    return Err(in_use(&format!("it is bound to {e}; unbind it first")));
                }
                self.cipher_groups.remove(name);
            }
            ObjectKind::Profile => {
                if !self.profiles.contains_key(name) {
                    return Err(format!("unknown ssl profile {name}"));
                }
                if let Some(e) = self.profile_users(name).into_iter().next() {
                    return Err(in_use(&format!("{e} uses it")));
                }
                self.profiles.remove(name);
            }
            ObjectKind::Vserver | ObjectKind::Service | ObjectKind::ServiceGroup => {
                let kind = what.entity_kind().unwrap_or(EntityKind::Vserver);
                let e = EntityRef::new(kind, name);
                if !self.entity_exists(&e) {
                    return Err(format!("unknown {e}"));
                }
                if kind != EntityKind::Vserver {
                    if let Some(v) = self.lb_users(name).first() {
                        return Err(in_use(&format!("it is bound to lb vserver {v}; unbind it first")));
                    }
                }
                match kind {
                    EntityKind::Vserver => self.vservers.remove(name).map(|_| ()),
                    EntityKind::Service => self.services.remove(name).map(|_| ()),
                    EntityKind::ServiceGroup => self.service_groups.remove(name).map(|_| ()),
                };
                self.epochs.remove(&e);
                let mut ch = Change::new(ChangeKind::Remove);
                ch.removed.push(e);
                return Ok(ch);
            }
        }
        Ok(Change::new(ChangeKind::Remove))
    }

    /// Apply `cmds` as one transaction on a copy of `self`. Returns the new
    /// model and each command's change, or the first failing line; `self`
    /// is never modified (R10).
    pub fn apply_batch(
        &self,
        cmds: &[(usize, Command)],
        files: &dyn FileSource,
    ) -> Result<(Model, Vec<Change>), BatchError> {
        let mut next = self.clone();
        let mut changes = Vec::with_capacity(cmds.len());
        for (line, cmd) in cmds {
            let ch = next
                .apply(cmd, files)
                .map_err(|reason| BatchError { line: *line, reason })?;
            changes.push(ch);
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
    use super::*;
    use crate::config::grammar::parse_line;
    use crate::config::testutil::Fixture;

    fn cmd(line: &str) -> Command {
        parse_line(line)
            .unwrap_or_else(|e| panic!("{line}: {e}"))
            .expect("a command")
    }

    fn ok(m: &mut Model, fx: &Fixture, line: &str) -> Change {
        m.apply(&cmd(line), &fx.files())
            .unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    /// Applies `line`, expects an error containing `reason`, and checks the model did not change.
    fn refused(m: &mut Model, fx: &Fixture, line: &str, reason: &str) {
        let before = crate::config::save::snapshot(m);
        let e = m.apply(&cmd(line), &fx.files()).expect_err(line);
        assert!(e.contains(reason), "{line}: got '{e}', wanted '{reason}'");
        assert_eq!(crate::config::save::snapshot(m), before, "{line} changed the model");
    }

    fn v(n: &str) -> EntityRef {
        EntityRef::new(EntityKind::Vserver, n)
    }
    fn s(n: &str) -> EntityRef {
        EntityRef::new(EntityKind::Service, n)
    }
    fn g(n: &str) -> EntityRef {
        EntityRef::new(EntityKind::ServiceGroup, n)
    }

    /// Two vservers, an SSL service, an SSL serviceGroup and a TCP service,
    /// with certificates a (leaf), ca/inter (CA chain) and leaf (signed by inter).
    fn setup() -> (Fixture, Model) {
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

    fn epochs(m: &Model) -> Vec<(String, Epoch)> {
        m.epochs.iter().map(|(e, n)| (e.to_string(), *n)).collect()
    }

    /// Apply `line` and check exactly `expect` were bumped, by one each.
    fn bumps(m: &mut Model, fx: &Fixture, line: &str, expect: &[EntityRef]) {
        let before = m.epochs.clone();
        let ch = ok(m, fx, line);
        let mut got = ch.bumped.clone();
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

    #[test]
    fn added_entities_start_at_epoch_one() {
        let fx = Fixture::new();
        let mut m = Model::default();
        let ch = ok(&mut m, &fx, "add lb vserver v SSL_TCP 127.0.0.1 443");
        assert_eq!(ch.kind, ChangeKind::Add);
        assert_eq!(ch.added, [v("v")]);
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
    fn disable_and_enable() {
        let (fx, mut m) = setup();
        let ch = ok(&mut m, &fx, "disable lb vserver v1");
        assert_eq!(
            (ch.kind, ch.disabled.clone(), ch.bumped.clone()),
            (ChangeKind::Disable, vec![v("v1")], vec![])
        );
        assert!(!m.vservers["v1"].enabled);
        let again = ok(&mut m, &fx, "disable lb vserver v1");
        assert!(again.disabled.is_empty());
        let e1 = m.epochs[&v("v1")];
        let ch = ok(&mut m, &fx, "enable lb vserver v1");
        assert_eq!((ch.enabled.clone(), ch.bumped.clone()), (vec![v("v1")], vec![v("v1")]));
        assert_eq!(m.epochs[&v("v1")], e1 + 1);
        assert!(ok(&mut m, &fx, "enable lb vserver v1").bumped.is_empty());
        ok(&mut m, &fx, "disable service s1");
        ok(&mut m, &fx, "disable serviceGroup g1");
        assert!(!m.services["s1"].enabled && !m.service_groups["g1"].enabled);
        refused(&mut m, &fx, "enable service nosuch", "unknown service nosuch");
    }

    #[test]
    fn rm_in_use_is_refused_then_allowed() {
        let (fx, mut m) = setup();
        refused(
            &mut m,
            &fx,
            "rm ssl certKey a",
            "cannot remove ssl certKey a: it is bound to vserver v1",
        );
        refused(&mut m, &fx, "rm ssl cipher grp", "it is bound to");
        refused(&mut m, &fx, "rm ssl profile fe", "vserver v1 uses it");
        refused(&mut m, &fx, "rm service s1", "bound to lb vserver v1");
        refused(&mut m, &fx, "rm serviceGroup g1", "bound to lb vserver v2");
        ok(&mut m, &fx, "link ssl certKey leaf inter");
        refused(&mut m, &fx, "rm ssl certKey inter", "certKey leaf is linked to it");
        refused(&mut m, &fx, "rm ssl certKey nosuch", "unknown certKey nosuch");

        ok(&mut m, &fx, "unbind ssl vserver v1 -certkeyName a");
        ok(&mut m, &fx, "rm ssl certKey a");
        ok(&mut m, &fx, "set ssl vserver v1 -sslProfile be");
        ok(&mut m, &fx, "rm ssl profile fe");
        ok(&mut m, &fx, "unbind lb vserver v1 s1");
        let ch = ok(&mut m, &fx, "rm service s1");
        assert_eq!((ch.kind, ch.removed.clone()), (ChangeKind::Remove, vec![s("s1")]));
        assert!(!m.epochs.contains_key(&s("s1")));
        let ch = ok(&mut m, &fx, "rm lb vserver v2");
        assert_eq!(ch.removed, [v("v2")]);
        ok(&mut m, &fx, "rm serviceGroup g1");
        ok(&mut m, &fx, "rm ssl cipher grp");
    }

    #[test]
    fn validation_errors_change_nothing() {
        let (fx, mut m) = setup();
        refused(
            &mut m,
            &fx,
            "add ssl certKey a -cert a.crt -key a.key",
            "certKey a already exists",
        );
        refused(
            &mut m,
            &fx,
            "add ssl certKey x -cert a.crt -key b.key",
            "does not match certificate",
        );
        refused(&mut m, &fx, "add ssl certKey x -cert nothere.crt", "cannot read");
        refused(&mut m, &fx, "add ssl certKey x -cert a.key", "no PEM certificate");
        refused(
            &mut m,
            &fx,
            "update ssl certKey a -cert b.crt",
            "does not match certificate",
        );
        refused(&mut m, &fx, "update ssl certKey zz -cert b.crt", "unknown certKey zz");
        refused(&mut m, &fx, "add ssl cipher grp", "cipher group grp already exists");
        refused(&mut m, &fx, "add ssl profile fe", "ssl profile fe already exists");
        refused(
            &mut m,
            &fx,
            "add lb vserver v1 SSL_TCP 127.0.0.1 1",
            "lb vserver v1 already exists",
        );
        refused(
            &mut m,
            &fx,
            "add lb vserver v9 SSL_TCP 127.0.0.1 8441",
            "already used by lb vserver v1",
        );
        refused(
            &mut m,
            &fx,
            "add service g1 127.0.0.1 1 TCP",
            "serviceGroup named g1 already exists",
        );
        refused(
            &mut m,
            &fx,
            "add serviceGroup s1 TCP",
            "service named s1 already exists",
        );
        refused(
            &mut m,
            &fx,
            "add service s9 127.0.0.1 9001 SSL_TCP",
            "already service s1",
        );
        refused(
            &mut m,
            &fx,
            "bind ssl cipher nog -cipherName TLS1.3-AES128-GCM-SHA256",
            "unknown cipher group nog",
        );
        refused(
            &mut m,
            &fx,
            "bind ssl cipher grp -cipherName TLS1.3-AES128-GCM-SHA256",
            "already bound",
        );
        refused(
            &mut m,
            &fx,
            "unbind ssl cipher grp -cipherName TLS1.3-AES256-GCM-SHA384",
            "is not bound",
        );
        refused(
            &mut m,
            &fx,
            "set ssl profile nop -tls12 ENABLED",
            "unknown ssl profile nop",
        );
        refused(&mut m, &fx, "set ssl vserver nov -tls12 ENABLED", "unknown vserver nov");
        refused(
            &mut m,
            &fx,
            "set ssl vserver v1 -sslProfile nop",
            "unknown ssl profile nop",
        );
        refused(
            &mut m,
            &fx,
            "set ssl service plain -tls12 ENABLED",
            "uses TCP, not SSL_TCP",
        );
        refused(
            &mut m,
            &fx,
            "bind ssl service plain -eccCurveName X25519",
            "uses TCP, not SSL_TCP",
        );
        refused(
            &mut m,
            &fx,
            "bind ssl vserver v1 -certkeyName nock",
            "unknown certKey nock",
        );
        refused(&mut m, &fx, "bind ssl vserver v1 -certkeyName ca", "has no key");
        refused(&mut m, &fx, "bind ssl vserver v1 -certkeyName a", "already bound");
        refused(
            &mut m,
            &fx,
            "bind ssl vserver v1 -certkeyName b",
            "already has certKey a",
        );
        refused(
            &mut m,
            &fx,
            "bind ssl vserver v1 -cipherName nog",
            "unknown cipher group or cipher suite nog",
        );
        refused(&mut m, &fx, "bind ssl vserver v2 -cipherName grp", "already bound");
        refused(
            &mut m,
            &fx,
            "unbind ssl vserver v1 -certkeyName b",
            "certKey b is not bound to vserver v1",
        );
        refused(&mut m, &fx, "unbind ssl vserver v1 -certkeyName a -CA", "is not bound");
        refused(
            &mut m,
            &fx,
            "unbind ssl vserver v1 -eccCurveName P_384",
            "curve P_384 is not bound",
        );
        refused(
            &mut m,
            &fx,
            "bind lb vserver v1 nos",
            "no service or serviceGroup named nos",
        );
        refused(&mut m, &fx, "bind lb vserver v1 s1", "already bound");
        refused(&mut m, &fx, "unbind lb vserver v1 g1", "not bound");
        refused(&mut m, &fx, "bind serviceGroup g1 127.0.0.1 9003", "already a member");
        refused(&mut m, &fx, "unbind serviceGroup g1 127.0.0.1 9999", "not a member");
        refused(
            &mut m,
            &fx,
            "bind serviceGroup nog 127.0.0.1 9003",
            "unknown serviceGroup nog",
        );
        refused(&mut m, &fx, "show stats", "not a configuration change");
        refused(&mut m, &fx, "save config", "not a configuration change");
        // A CA certKey may be bound as -CA; key-less is fine then.
        ok(&mut m, &fx, "bind ssl vserver v1 -certkeyName ca -CA");
    }

    #[test]
    fn links_are_checked() {
        let (fx, mut m) = setup();
        refused(&mut m, &fx, "link ssl certKey leaf nosuch", "unknown CA certKey nosuch");
        refused(&mut m, &fx, "link ssl certKey nosuch ca", "unknown certKey nosuch");
        refused(&mut m, &fx, "link ssl certKey leaf ca", "is not issued by");
        refused(&mut m, &fx, "link ssl certKey a a", "loop");
        refused(&mut m, &fx, "unlink ssl certKey leaf", "is not linked");
        ok(&mut m, &fx, "link ssl certKey leaf inter");
        ok(&mut m, &fx, "link ssl certKey inter ca");
        refused(&mut m, &fx, "link ssl certKey leaf inter", "already linked to inter");
        refused(&mut m, &fx, "link ssl certKey ca leaf", "loop");
        assert_eq!(m.chain_of("leaf"), ["leaf", "inter", "ca"]);
        // Updating a CA to a certificate that did not issue its children is refused.
        refused(
            &mut m,
            &fx,
            "update ssl certKey inter -cert a.crt",
            "not issued by ca, which it is linked to",
        );
        refused(
            &mut m,
            &fx,
            "update ssl certKey leaf -cert a.crt -key a.key",
            "not issued by inter",
        );
        ok(&mut m, &fx, "unlink ssl certKey inter");
        refused(
            &mut m,
            &fx,
            "update ssl certKey inter -cert a.crt",
            "certKey leaf is linked to it and is not issued by",
        );
    }

    #[test]
    fn update_rereads_files() {
        let (fx, mut m) = setup();
        let old = m.certkeys["a"].material.certs[0].clone();
        fx.leaf("a", "a2.test");
        ok(&mut m, &fx, "update ssl certKey a -cert a.crt");
        let ck = &m.certkeys["a"];
        assert_ne!(ck.material.certs[0], old);
        assert_eq!(ck.material.dns_names, ["a2.test"]);
        assert_eq!(ck.key_path.as_deref(), Some(Path::new("a.key")));
        // Unreadable new files: refused, old material kept.
        refused(&mut m, &fx, "update ssl certKey a -cert gone.crt", "cannot read");
        assert_eq!(m.certkeys["a"].material.dns_names, ["a2.test"]);
    }

    #[test]
    fn cipher_priorities() {
        let (fx, mut m) = setup();
        ok(&mut m, &fx, "bind ssl vserver v1 -cipherName TLS1.3-AES256-GCM-SHA384");
        ok(&mut m, &fx, "bind ssl vserver v1 -cipherName grp -cipherPriority 7");
        ok(
            &mut m,
            &fx,
            "bind ssl vserver v1 -cipherName TLS1.3-CHACHA20-POLY1305-SHA256",
        );
        let pr: Vec<u32> = m.vservers["v1"].bindings.ciphers.iter().map(|c| c.priority).collect();
        assert_eq!(pr, [1, 7, 8]);
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
        assert_eq!(next.epochs[&v("v3")], 2);
        assert_eq!(next.epochs[&v("v1")], m.epochs[&v("v1")] + 1);
        assert_eq!(crate::config::save::snapshot(&m), before);
    }
}
