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

use super::model::*;
use super::parser::{Command, ObjectKind, SslBind};
use crate::tls::material::load_cert_key;

/// Where certificate and key files come from. Relative paths are resolved
/// against the config file's folder by the implementation.
pub trait FileSource {
    /// The whole file, or a reason naming the path and the cause.
    fn read(&self, path: &Path) -> Result<Vec<u8>, String>;
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
        let full = if path.is_absolute() { path.to_path_buf() } else { self.base.join(path) };
        std::fs::read(&full).map_err(|e| format!("cannot read {}: {e}", full.display()))
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
        Change { bumped: vec![], disabled: vec![], enabled: vec![], removed: vec![], added: vec![], kind }
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
fn load_material(name: &str, cert: &Path, key: Option<&Path>, files: &dyn FileSource) -> Result<CertKeyMaterial, String> {
    let cert_pem = files.read(cert).map_err(|e| format!("certKey {name}: {e}"))?;
    let key_pem = match key {
        Some(k) => Some(files.read(k).map_err(|e| format!("certKey {name}: {e}"))?),
        None => None,
    };
    let cert_name = cert.display().to_string();
    let key_name = key.map(|k| k.display().to_string()).unwrap_or_default();
    load_cert_key(&cert_pem, &cert_name, key_pem.as_deref().map(|p| (p, key_name.as_str())))
        .map_err(|e| format!("certKey {name}: {e}"))
}

/// Whether `child`'s leaf was issued by `ca`'s leaf (issuer name equals subject name).
fn issued_by(child: &CertKeyMaterial, ca: &CertKeyMaterial) -> bool {
    use x509_parser::prelude::*;
    let (Some(c), Some(a)) = (child.certs.first(), ca.certs.first()) else { return false };
    match (X509Certificate::from_der(c.as_ref()), X509Certificate::from_der(a.as_ref())) {
        (Ok((_, c)), Ok((_, a))) => c.issuer().as_raw() == a.subject().as_raw(),
        _ => false,
    }
}

fn merge_params(dst: &mut SslParams, src: &SslParams) {
    macro_rules! take {
        ($($f:ident),*) => { $( if src.$f.is_some() { dst.$f = src.$f.clone(); } )* };
    }
    take!(
        tls12, tls13, sess_reuse, sess_timeout, session_ticket, client_auth, client_cert, sni_enable,
        server_auth, common_name, alpn_protocols, deny_ssl_reneg, drain_timeout, strict_session_cleanup,
        handshake_timeout
    );
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
            (EntityRef::new(EntityKind::Vserver, &v.name), SslView { profile: &v.ssl_profile, bindings: &v.bindings })
        });
        let s = self.services.values().filter(|s| s.proto == BackendProto::SslTcp).map(|s| {
            (EntityRef::new(EntityKind::Service, &s.name), SslView { profile: &s.ssl_profile, bindings: &s.bindings })
        });
        let g = self.service_groups.values().filter(|g| g.proto == BackendProto::SslTcp).map(|g| {
            (
                EntityRef::new(EntityKind::ServiceGroup, &g.name),
                SslView { profile: &g.ssl_profile, bindings: &g.bindings },
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
            .filter(|(_, v)| v.bindings.certkeys.iter().any(|b| self.chain_of(&b.certkey).contains(&name)))
            .map(|(e, _)| e)
            .collect()
    }

    /// Entities bound to cipher group `name`.
    pub fn cipher_group_users(&self, name: &str) -> BTreeSet<EntityRef> {
        self.ssl_entities()
            .filter(|(_, v)| v.bindings.ciphers.iter().any(|b| b.cipher == CipherRef::Group(name.to_string())))
            .map(|(e, _)| e)
            .collect()
    }

    /// Entities whose `-sslProfile` is `name`.
    pub fn profile_users(&self, name: &str) -> BTreeSet<EntityRef> {
        self.ssl_entities().filter(|(_, v)| v.profile.as_deref() == Some(name)).map(|(e, _)| e).collect()
    }

    /// Vservers with `bind lb vserver V target`.
    fn lb_users(&self, target: &str) -> Vec<&str> {
        self.vservers.values().filter(|v| v.targets.iter().any(|t| t == target)).map(|v| v.name.as_str()).collect()
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
    fn ssl_parts_mut(&mut self, e: &EntityRef) -> Result<(&mut Option<String>, &mut SslParams, &mut SslBindings), String> {
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
                let g = self.service_groups.get_mut(&*e.name).ok_or_else(|| format!("unknown {e}"))?;
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
                if let Some(ca) = &old.linked_to {
                    let ca_ck = self.certkey(ca)?;
                    if !issued_by(&material, &ca_ck.material) {
                        return Err(format!(
                            "certKey {name}: the new certificate is not issued by {ca}, which it is linked to; unlink it first"
                        ));
                    }
                }
                for child in self.certkeys.values().filter(|c| c.linked_to.as_deref() == Some(name.as_str())) {
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
                let ca_ck = self.certkey(ca).map_err(|_| format!("cannot link {name}: unknown CA certKey {ca}"))?;
                if let Some(cur) = &ck.linked_to {
                    return Err(format!("certKey {name} is already linked to {cur}; unlink it first"));
                }
                if name == ca || self.chain_of(ca).contains(&name.as_str()) {
                    return Err(format!("cannot link {name} to {ca}: the chain would loop back to {name}"));
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
                self.cipher_groups.insert(name.clone(), CipherGroup { name: name.clone(), suites: vec![] });
                Ok(Change::new(Add))
            }
            Command::BindCipherGroup { name, suite } => {
                let g = self.cipher_groups.get_mut(name).ok_or_else(|| format!("unknown cipher group {name}"))?;
                if g.suites.contains(suite) {
                    return Err(format!("cipher {} is already bound to cipher group {name}", suite.adc_name()));
                }
                g.suites.push(*suite);
                self.cipher_group_changed(name)
            }
            Command::UnbindCipherGroup { name, suite } => {
                let g = self.cipher_groups.get_mut(name).ok_or_else(|| format!("unknown cipher group {name}"))?;
                let Some(i) = g.suites.iter().position(|s| s == suite) else {
                    return Err(format!("cipher {} is not bound to cipher group {name}", suite.adc_name()));
                };
                g.suites.remove(i);
                self.cipher_group_changed(name)
            }
            Command::SetCipherGroup { name, suites } => {
                let g = self.cipher_groups.get_mut(name).ok_or_else(|| format!("unknown cipher group {name}"))?;
                g.suites = suites.clone();
                self.cipher_group_changed(name)
            }

            Command::AddProfile { name, params } => {
                if self.profiles.contains_key(name) {
                    return Err(format!("ssl profile {name} already exists"));
                }
                self.profiles.insert(name.clone(), SslProfile { name: name.clone(), params: params.clone() });
                Ok(Change::new(Add))
            }
            Command::SetProfile { name, params } => {
                let p = self.profiles.get_mut(name).ok_or_else(|| format!("unknown ssl profile {name}"))?;
                merge_params(&mut p.params, params);
                let users = self.profile_users(name);
                let mut ch = Change::new(Ssl);
                ch.bumped = self.bump(users);
                Ok(ch)
            }

            Command::AddVserver { name, addr, max_clients, client_timeout } => {
                if self.vservers.contains_key(name) {
                    return Err(format!("lb vserver {name} already exists"));
                }
                if let Some(other) = self.vservers.values().find(|v| v.addr == *addr) {
                    return Err(format!("lb vserver {name}: address {addr} is already used by lb vserver {}", other.name));
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
            Command::SetLbVserver { name, max_clients, client_timeout } => {
                let v = self.vservers.get_mut(name).ok_or_else(|| format!("unknown lb vserver {name}"))?;
                if let Some(m) = max_clients {
                    v.max_clients = Some(*m).filter(|m| *m != 0);
                }
                if let Some(t) = client_timeout {
                    v.client_timeout = *t;
                }
                Ok(Change::new(Plain))
            }
            Command::BindLbVserver { name, target } => {
                let v = self.vservers.get(name).ok_or_else(|| format!("unknown lb vserver {name}"))?;
                if !self.services.contains_key(target) && !self.service_groups.contains_key(target) {
                    return Err(format!("bind lb vserver {name}: no service or serviceGroup named {target}"));
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
                let v = self.vservers.get_mut(name).ok_or_else(|| format!("unknown lb vserver {name}"))?;
                let Some(i) = v.targets.iter().position(|t| t == target) else {
                    return Err(format!("{target} is not bound to lb vserver {name}"));
                };
                v.targets.remove(i);
                Ok(Change::new(Plain))
            }

            Command::SetSsl { entity, params, profile } => {
                if let Some(p) = profile {
                    if !self.profiles.contains_key(p) {
                        return Err(format!("set ssl {entity}: unknown ssl profile {p}"));
                    }
                }
                let (prof, own, _) = self.ssl_parts_mut(entity)?;
                merge_params(own, params);
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
                        b.ciphers.iter().map(|c| c.priority).max().map_or(1, |m| m.saturating_add(1))
                    }
                    SslBind::Cipher { priority: Some(p), .. } => *p,
                    _ => 0,
                };
                let (_, _, b) = self.ssl_parts_mut(entity)?;
                match bind {
                    SslBind::CertKey { name, sni, ca } => {
                        b.certkeys.push(CertBinding { certkey: name.clone(), sni: *sni, ca: *ca })
                    }
                    SslBind::Cipher { cipher, .. } => b.ciphers.push(CipherBinding { cipher: cipher.clone(), priority }),
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

            Command::AddService { name, addr, proto } => {
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
                        ssl_profile: None,
                        params: SslParams::default(),
                        bindings: SslBindings::default(),
                    },
                );
                Ok(self.added(EntityRef::new(EntityKind::Service, name)))
            }
            Command::AddServiceGroup { name, proto } => {
                self.backend_name_free(name)?;
                self.service_groups.insert(
                    name.clone(),
                    ServiceGroup {
                        name: name.clone(),
                        proto: *proto,
                        enabled: true,
                        members: vec![],
                        ssl_profile: None,
                        params: SslParams::default(),
                        bindings: SslBindings::default(),
                    },
                );
                Ok(self.added(EntityRef::new(EntityKind::ServiceGroup, name)))
            }
            Command::BindServiceGroupMember { name, addr } => {
                let g = self.service_groups.get_mut(name).ok_or_else(|| format!("unknown serviceGroup {name}"))?;
                if g.members.contains(addr) {
                    return Err(format!("{addr} is already a member of serviceGroup {name}"));
                }
                g.members.push(*addr);
                Ok(Change::new(Plain))
            }
            Command::UnbindServiceGroupMember { name, addr } => {
                let g = self.service_groups.get_mut(name).ok_or_else(|| format!("unknown serviceGroup {name}"))?;
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
                    return Err(in_use(&format!("certKey {} is linked to it; unlink that first", child.name)));
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
            let ch = next.apply(cmd, files).map_err(|reason| BatchError { line: *line, reason })?;
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
        SslBind::Cipher { cipher: CipherRef::Group(g), .. } => format!("cipher group {g}"),
        SslBind::Cipher { cipher: CipherRef::Suite(s), .. } => format!("cipher {}", s.adc_name()),
        SslBind::Curve(c) => format!("curve {}", c.adc_name()),
    }
}
