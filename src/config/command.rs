//! The typed commands of the configuration language.
//!
//! A [`Command`] is what a line means once parsed: every value typed
//! (addresses, numbers in range, cipher suites, curves), names and paths
//! exactly as written. How a command is spelled (its words, flags, value
//! types and ranges) is declared once in `commands`; `grammar` parses and
//! prints through that declaration. Whether a command makes sense against
//! the running configuration is `apply`'s business.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::model::{
    BackendProto, CipherRef, CipherSuiteName, Curve, EntityKind, EntityRef, HealthFlags, NetParams, SslParams,
};

/// Longest entity name accepted, as on the ADC.
pub const MAX_NAME_LEN: usize = 127;

/// Kinds of named object that `rm` removes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    CertKey,
    CipherGroup,
    Profile,
    NetProfile,
    Vserver,
    Service,
    ServiceGroup,
}

impl ObjectKind {
    /// The words naming this kind in `rm` and `show` (`ssl certKey`, `lb vserver`, ...).
    pub fn words(self) -> &'static str {
        match self {
            ObjectKind::CertKey => "ssl certKey",
            ObjectKind::CipherGroup => "ssl cipher",
            ObjectKind::Profile => "ssl profile",
            ObjectKind::NetProfile => "netProfile",
            ObjectKind::Vserver => "lb vserver",
            ObjectKind::Service => "service",
            ObjectKind::ServiceGroup => "serviceGroup",
        }
    }

    /// The connection-owning entity kind, for vservers, services and serviceGroups.
    pub fn entity_kind(self) -> Option<EntityKind> {
        match self {
            ObjectKind::Vserver => Some(EntityKind::Vserver),
            ObjectKind::Service => Some(EntityKind::Service),
            ObjectKind::ServiceGroup => Some(EntityKind::ServiceGroup),
            _ => None,
        }
    }
}

impl From<EntityKind> for ObjectKind {
    fn from(k: EntityKind) -> Self {
        match k {
            EntityKind::Vserver => ObjectKind::Vserver,
            EntityKind::Service => ObjectKind::Service,
            EntityKind::ServiceGroup => ObjectKind::ServiceGroup,
        }
    }
}

/// What a `show` command asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShowWhat {
    /// `show ssl certKey|cipher|profile`, `show lb vserver`, `show service`, `show serviceGroup`.
    Object(ObjectKind),
    /// `show ssl vserver|service|serviceGroup`: the SSL settings and bindings of an entity.
    Ssl(EntityKind),
    /// `show stats`.
    Stats,
    /// `show ns runningConfig`.
    RunningConfig,
    /// `show help`: every command and flag, from the command table.
    Help,
}

/// One `bind ssl ENTITY X ...` / `unbind ssl ENTITY X ...` binding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SslBind {
    /// `-certkeyName C [-SNICert] [-CA]`.
    CertKey { name: String, sni: bool, ca: bool },
    /// `-cipherName G|S [-cipherPriority N]`. Without a priority, `apply`
    /// places the binding after the existing ones.
    Cipher { cipher: CipherRef, priority: Option<u32> },
    /// `-eccCurveName X`.
    Curve(Curve),
}

/// A parsed command. Names are exactly as written; paths as written
/// (absolute, or relative to the config file's folder).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    AddCertKey {
        name: String,
        cert: PathBuf,
        key: Option<PathBuf>,
    },
    /// `update ssl certKey N -cert F [-key F]`: without `-key`, the current key path is kept.
    UpdateCertKey {
        name: String,
        cert: PathBuf,
        key: Option<PathBuf>,
    },
    LinkCertKey {
        name: String,
        ca: String,
    },
    UnlinkCertKey {
        name: String,
    },
    AddCipherGroup {
        name: String,
    },
    BindCipherGroup {
        name: String,
        suite: CipherSuiteName,
    },
    UnbindCipherGroup {
        name: String,
        suite: CipherSuiteName,
    },
    /// `set ssl cipher G -cipherName S1,S2,...`: replaces the group's suites, in this order.
    SetCipherGroup {
        name: String,
        suites: Vec<CipherSuiteName>,
    },
    AddProfile {
        name: String,
        params: SslParams,
    },
    AddNetProfile {
        name: String,
        params: NetParams,
    },
    /// `set netProfile`: every vserver, service and serviceGroup bound to it opens an epoch.
    SetNetProfile {
        name: String,
        params: NetParams,
    },
    SetProfile {
        name: String,
        params: SslParams,
    },
    /// `add lb vserver V SSL_TCP|SSL_BRIDGE IP PORT [-maxClients N] [-cltTimeout S]`;
    /// `max_clients` 0 means unlimited.
    AddVserver {
        name: String,
        proto: BackendProto,
        addr: SocketAddr,
        max_clients: Option<u32>,
        client_timeout: Option<u32>,
        net_profile: Option<String>,
    },
    /// `set lb vserver V [-maxClients N] [-cltTimeout S] [-netProfile N]`:
    /// the limits open no epoch, a net profile change opens one of V.
    SetLbVserver {
        name: String,
        max_clients: Option<u32>,
        client_timeout: Option<u32>,
        net_profile: Option<String>,
    },
    /// `set ssl vserver|service|serviceGroup X [params] [-sslProfile P]`.
    SetSsl {
        entity: EntityRef,
        params: SslParams,
        profile: Option<String>,
    },
    BindSsl {
        entity: EntityRef,
        bind: SslBind,
    },
    UnbindSsl {
        entity: EntityRef,
        bind: SslBind,
    },
    BindLbVserver {
        name: String,
        target: String,
    },
    UnbindLbVserver {
        name: String,
        target: String,
    },
    AddService {
        name: String,
        addr: SocketAddr,
        proto: BackendProto,
        health: HealthFlags,
        net_profile: Option<String>,
    },
    AddServiceGroup {
        name: String,
        proto: BackendProto,
        health: HealthFlags,
        net_profile: Option<String>,
    },
    /// `set service|serviceGroup X -netProfile N`: opens an epoch of that back end.
    SetBackend {
        entity: EntityRef,
        net_profile: Option<String>,
    },
    BindServiceGroupMember {
        name: String,
        addr: SocketAddr,
    },
    UnbindServiceGroupMember {
        name: String,
        addr: SocketAddr,
    },
    Disable(EntityRef),
    Enable(EntityRef),
    Rm {
        what: ObjectKind,
        name: String,
    },
    /// `save ns config` / `save config`.
    Save,
    Show {
        what: ShowWhat,
        name: Option<String>,
    },
}

impl Command {
    /// `show` and `save`: commands that read the configuration, not change it.
    pub fn is_query(&self) -> bool {
        matches!(self, Command::Save | Command::Show { .. })
    }
}
