//! Immutable snapshots of the running configuration, as shards see it.
//!
//! A [`Snapshot`] is built from a validated [`Model`] after every accepted
//! change and sent to every shard. Entities whose epoch did not change keep
//! the very same `Arc`ed specs as in the previous snapshot, so shards keep
//! their rustls configs and warm caches for them (R5). Building a snapshot
//! is where TLS settings are turned into rustls objects; if that fails, the
//! change is refused and nothing is applied (R10).
//!
//! This module sits below both `control` (which builds snapshots and
//! broadcasts them) and `shard` (which serves them): it depends on `config`,
//! `core` and `tls` only, so the data path never imports the control plane.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{BackendProto, EntityKind, EntityRef, Epoch, Model};
use crate::core::EpochPolicy;
use crate::tls::{BackendSpec, FrontendSpec};

/// A vserver as shards serve it.
#[derive(Debug)]
pub struct VserverSpec {
    pub entity: EntityRef,
    pub addr: SocketAddr,
    pub enabled: bool,
    pub epoch: Epoch,
    pub policy: EpochPolicy,
    pub idle_timeout: Duration,
    /// Services and serviceGroups, in binding order.
    pub targets: Vec<Arc<str>>,
    /// `None` while no server certificate is bound: the vserver does not
    /// listen, unless it passes TLS through.
    pub tls: Option<Arc<FrontendSpec>>,
    /// `SSL_BRIDGE`: no TLS of ours; the ClientHello is peeked, then every
    /// byte relayed to an `SSL_BRIDGE` back end as it came.
    pub passthrough: bool,
    /// The source networks a PROXY header is accepted from, before the
    /// ClientHello (from its `-netProfile`); `None`: no header is expected.
    pub proxy_trusted: Option<Vec<crate::config::model::Cidr>>,
}

/// A service or serviceGroup as shards use it.
#[derive(Debug)]
pub struct ServiceSpec {
    pub entity: EntityRef,
    pub enabled: bool,
    pub epoch: Epoch,
    pub policy: EpochPolicy,
    pub members: Vec<SocketAddr>,
    /// `Some` for SSL_TCP back ends.
    pub tls: Option<Arc<BackendSpec>>,
    pub connect_timeout: Duration,
    /// When a member is marked down and how it is probed back up.
    pub health: HealthPolicy,
    /// The PROXY protocol header each connection to a member starts with
    /// (from its `-netProfile`); `None`: none.
    pub proxy_header: Option<crate::config::ProxyProtocolVersion>,
}

/// What one accepted change asks of the shards, beyond the new specs.
#[derive(Debug, Default, Clone)]
pub struct ChangeNotes {
    /// R7: close everything of these entities now.
    pub disabled: Vec<EntityRef>,
    /// Epochs opened by this change, for the admin reply.
    pub bumped: Vec<(EntityRef, Epoch)>,
}

/// The whole running configuration for the data path.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub generation: u64,
    pub vservers: BTreeMap<Arc<str>, Arc<VserverSpec>>,
    pub services: BTreeMap<Arc<str>, Arc<ServiceSpec>>,
    pub notes: ChangeNotes,
}

/// The model's TLS settings cannot be turned into rustls configurations
/// (say, no cipher suite left for a protocol version). The change that led
/// to it is refused; it is the configuration's fault, not the proxy's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SnapshotError(pub String);

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Seconds between probes of a down member when `-healthInterval` is not set.
pub const DEFAULT_HEALTH_INTERVAL: u32 = 5;
/// Failures in a row that mark a member down when `-healthRetries` is not set.
pub const DEFAULT_HEALTH_RETRIES: u32 = 3;

/// Health checking of one pool's members (`-healthInterval`, `-healthRetries`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthPolicy {
    /// Failures in a row (connect, TLS handshake) that mark a member down.
    pub down_after: u32,
    /// Time between probes of a member that is down.
    pub probe_interval: Duration,
}

impl HealthPolicy {
    pub fn from_flags(flags: crate::config::HealthFlags) -> Self {
        HealthPolicy {
            down_after: flags.retries.unwrap_or(DEFAULT_HEALTH_RETRIES),
            probe_interval: Duration::from_secs(flags.interval.unwrap_or(DEFAULT_HEALTH_INTERVAL).into()),
        }
    }
}

fn epoch_of(model: &Model, e: &EntityRef) -> Epoch {
    model.epochs.get(e).copied().unwrap_or(1)
}

impl Snapshot {
    /// Build the snapshot of `model`, reusing `prev`'s specs where nothing changed.
    pub fn build(
        model: &Model,
        prev: Option<&Snapshot>,
        generation: u64,
        notes: ChangeNotes,
    ) -> Result<Snapshot, SnapshotError> {
        let mut vservers = BTreeMap::new();
        for (name, vs) in &model.vservers {
            let entity = EntityRef::new(EntityKind::Vserver, name);
            let epoch = epoch_of(model, &entity);
            let profile = vs
                .ssl_profile
                .as_ref()
                .and_then(|p| model.profiles.get(p))
                .map(|p| &p.params);
            let params = vs.params.effective(profile);
            let policy = EpochPolicy {
                drain_timeout: params.drain_timeout.map(|s| Duration::from_secs(s.into())),
                handshake_timeout: Duration::from_secs(params.handshake_timeout.max(1).into()),
                strict_session_cleanup: params.strict_session_cleanup,
                max_conns: vs.max_clients,
            };
            let prev_spec = prev.and_then(|p| p.vservers.get(name.as_str()));
            let passthrough = vs.proto == BackendProto::SslBridge;
            let tls = match prev_spec {
                _ if passthrough => None,
                Some(p) if p.epoch == epoch && p.tls.is_some() => p.tls.clone(),
                _ if !vs.bindings.certkeys.iter().any(|b| !b.ca) => None,
                _ => Some(Arc::new(
                    FrontendSpec::build(model, name, epoch).map_err(SnapshotError)?,
                )),
            };
            let spec = VserverSpec {
                entity,
                addr: vs.addr,
                enabled: vs.enabled,
                epoch,
                policy,
                idle_timeout: Duration::from_secs(vs.client_timeout.max(1).into()),
                targets: vs.targets.iter().map(|t| Arc::from(t.as_str())).collect(),
                tls,
                passthrough,
                proxy_trusted: vs
                    .net_profile
                    .as_ref()
                    .and_then(|n| model.net_profiles.get(n))
                    .filter(|p| p.params.proxy_header().is_some())
                    .map(|p| p.params.trusted_networks.clone().unwrap_or_default()),
            };
            vservers.insert(Arc::from(name.as_str()), Arc::new(spec));
        }
        let mut services = BTreeMap::new();
        let mut add_pool = |name: &str,
                            kind: EntityKind,
                            enabled: bool,
                            health: crate::config::HealthFlags,
                            net_profile: &Option<String>,
                            members: Vec<SocketAddr>,
                            proto: BackendProto,
                            params: &crate::config::SslParams,
                            profile: &Option<String>,
                            bindings: &crate::config::SslBindings|
         -> Result<(), SnapshotError> {
            let entity = EntityRef::new(kind, name);
            let epoch = epoch_of(model, &entity);
            let prof = profile.as_ref().and_then(|p| model.profiles.get(p)).map(|p| &p.params);
            let eff = params.effective(prof);
            let prev_spec = prev.and_then(|p| p.services.get(name));
            let tls = match (proto, prev_spec) {
                (BackendProto::Tcp | BackendProto::SslBridge, _) => None,
                (BackendProto::SslTcp, Some(p)) if p.epoch == epoch && p.tls.is_some() => p.tls.clone(),
                (BackendProto::SslTcp, _) => Some(Arc::new(
                    BackendSpec::build(model, &entity.to_string(), params, profile, bindings, epoch)
                        .map_err(SnapshotError)?,
                )),
            };
            let policy = EpochPolicy {
                drain_timeout: eff.drain_timeout.map(|s| Duration::from_secs(s.into())),
                handshake_timeout: Duration::from_secs(eff.handshake_timeout.max(1).into()),
                strict_session_cleanup: eff.strict_session_cleanup,
                max_conns: None,
            };
            services.insert(
                Arc::from(name),
                Arc::new(ServiceSpec {
                    entity,
                    enabled,
                    epoch,
                    policy,
                    members,
                    tls,
                    connect_timeout: CONNECT_TIMEOUT,
                    health: HealthPolicy::from_flags(health),
                    proxy_header: net_profile
                        .as_ref()
                        .and_then(|n| model.net_profiles.get(n))
                        .and_then(|n| n.params.proxy_header()),
                }),
            );
            Ok(())
        };
        for (name, s) in &model.services {
            add_pool(
                name,
                EntityKind::Service,
                s.enabled,
                s.health,
                &s.net_profile,
                vec![s.addr],
                s.proto,
                &s.params,
                &s.ssl_profile,
                &s.bindings,
            )?;
        }
        for (name, g) in &model.service_groups {
            add_pool(
                name,
                EntityKind::ServiceGroup,
                g.enabled,
                g.health,
                &g.net_profile,
                g.members.clone(),
                g.proto,
                &g.params,
                &g.ssl_profile,
                &g.bindings,
            )?;
        }
        Ok(Snapshot {
            generation,
            vservers,
            services,
            notes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{load_text, FileKind, FileSource};

    /// Any `*.key` path reads as the key, anything else as the certificate.
    struct Files(crate::pki::Issued);

    impl FileSource for Files {
        fn read(&self, _: &std::path::Path, kind: FileKind) -> Result<crate::config::FileBytes, String> {
            let pem = match kind {
                FileKind::PrivateKey => self.0.key_pem.as_bytes(),
                FileKind::Certificate => self.0.cert_pem.as_bytes(),
            };
            Ok(pem.to_vec().into())
        }
    }

    fn tickets(extra: &str) -> usize {
        let ca = crate::pki::Ca::new("snapshot test CA").unwrap();
        let files = Files(ca.issue(&["www.test"], 1).unwrap());
        let text = format!(
            "add ssl certKey site -cert site.pem -key site.key\n\
             add lb vserver v SSL_TCP 127.0.0.1 8443\n\
             bind ssl vserver v -certkeyName site\n{extra}"
        );
        let model = load_text(&text, "test", &files).unwrap();
        let snap = Snapshot::build(&model, None, 1, ChangeNotes::default()).unwrap();
        let tls = snap.vservers["v"].tls.as_ref().expect("a certificate is bound");
        tls.shard_config().config.send_tls13_tickets
    }

    #[test]
    fn tls13_tickets_per_handshake_follow_the_flag() {
        assert_eq!(tickets(""), 2);
        assert_eq!(tickets("set ssl vserver v -tls13SessionTicketsPerAuthContext 5\n"), 5);
        assert_eq!(
            tickets("add ssl profile p -tls13SessionTicketsPerAuthContext 1\nset ssl vserver v -sslProfile p\n"),
            1
        );
        assert_eq!(tickets("set ssl vserver v -sessReuse DISABLED\n"), 0);
    }
}
