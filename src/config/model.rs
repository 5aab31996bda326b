//! The validated configuration model: every entity of the command language,
//! with every parameter parsed into a typed value.
//!
//! This module holds data only. Parsing text into commands lives in
//! `grammar` (through the table in `commands`), applying commands (with validation) in `apply`, writing the
//! model back as commands in `save`. Nothing here touches sockets or rustls
//! objects; certificate material is a [`CertKeyMaterial`] loaded by
//! `material`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

pub use super::material::CertKeyMaterial;

/// Which side of the proxy an SSL setting applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    /// Client-facing connections (vservers).
    Front,
    /// Server-facing connections (services, serviceGroups).
    Back,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Front => "front",
            Side::Back => "back",
        })
    }
}

/// Kinds of entity that own connections and therefore epochs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EntityKind {
    Vserver,
    Service,
    ServiceGroup,
}

impl EntityKind {
    pub fn side(self) -> Side {
        match self {
            EntityKind::Vserver => Side::Front,
            EntityKind::Service | EntityKind::ServiceGroup => Side::Back,
        }
    }
    pub fn keyword(self) -> &'static str {
        match self {
            EntityKind::Vserver => "vserver",
            EntityKind::Service => "service",
            EntityKind::ServiceGroup => "serviceGroup",
        }
    }
}

/// A connection-owning entity, by kind and name. Its side follows from its kind.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntityRef {
    pub kind: EntityKind,
    pub name: Arc<str>,
}

impl EntityRef {
    pub fn new(kind: EntityKind, name: &str) -> Self {
        EntityRef {
            kind,
            name: Arc::from(name),
        }
    }
    pub fn side(&self) -> Side {
        self.kind.side()
    }
}

impl fmt::Display for EntityRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind.keyword(), self.name)
    }
}

/// Epoch number of one (entity, side). Starts at 1 when the entity is added.
pub type Epoch = u64;

/// A cipher suite, by its ADC name. Each maps to exactly one rustls suite.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CipherSuiteName {
    Tls13Aes128GcmSha256,
    Tls13Aes256GcmSha384,
    Tls13Chacha20Poly1305Sha256,
    Tls12EcdheEcdsaAes128GcmSha256,
    Tls12EcdheEcdsaAes256GcmSha384,
    Tls12EcdheEcdsaChacha20Poly1305,
    Tls12EcdheRsaAes128GcmSha256,
    Tls12EcdheRsaAes256GcmSha384,
    Tls12EcdheRsaChacha20Poly1305,
}

impl CipherSuiteName {
    pub const ALL: [CipherSuiteName; 9] = [
        CipherSuiteName::Tls13Aes128GcmSha256,
        CipherSuiteName::Tls13Aes256GcmSha384,
        CipherSuiteName::Tls13Chacha20Poly1305Sha256,
        CipherSuiteName::Tls12EcdheEcdsaAes128GcmSha256,
        CipherSuiteName::Tls12EcdheEcdsaAes256GcmSha384,
        CipherSuiteName::Tls12EcdheEcdsaChacha20Poly1305,
        CipherSuiteName::Tls12EcdheRsaAes128GcmSha256,
        CipherSuiteName::Tls12EcdheRsaAes256GcmSha384,
        CipherSuiteName::Tls12EcdheRsaChacha20Poly1305,
    ];

    /// The ADC spelling, as accepted by `-cipherName` and written by `save`.
    pub fn adc_name(self) -> &'static str {
        match self {
            CipherSuiteName::Tls13Aes128GcmSha256 => "TLS1.3-AES128-GCM-SHA256",
            CipherSuiteName::Tls13Aes256GcmSha384 => "TLS1.3-AES256-GCM-SHA384",
            CipherSuiteName::Tls13Chacha20Poly1305Sha256 => "TLS1.3-CHACHA20-POLY1305-SHA256",
            CipherSuiteName::Tls12EcdheEcdsaAes128GcmSha256 => "TLS1.2-ECDHE-ECDSA-AES128-GCM-SHA256",
            CipherSuiteName::Tls12EcdheEcdsaAes256GcmSha384 => "TLS1.2-ECDHE-ECDSA-AES256-GCM-SHA384",
            CipherSuiteName::Tls12EcdheEcdsaChacha20Poly1305 => "TLS1.2-ECDHE-ECDSA-CHACHA20-POLY1305",
            CipherSuiteName::Tls12EcdheRsaAes128GcmSha256 => "TLS1.2-ECDHE-RSA-AES128-GCM-SHA256",
            CipherSuiteName::Tls12EcdheRsaAes256GcmSha384 => "TLS1.2-ECDHE-RSA-AES256-GCM-SHA384",
            CipherSuiteName::Tls12EcdheRsaChacha20Poly1305 => "TLS1.2-ECDHE-RSA-CHACHA20-POLY1305",
        }
    }

    /// Case-insensitive lookup of an ADC cipher name.
    pub fn from_adc(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.adc_name().eq_ignore_ascii_case(s))
    }

    pub fn is_tls13(self) -> bool {
        matches!(
            self,
            CipherSuiteName::Tls13Aes128GcmSha256
                | CipherSuiteName::Tls13Aes256GcmSha384
                | CipherSuiteName::Tls13Chacha20Poly1305Sha256
        )
    }
}

/// Key-exchange groups that can be bound with `-eccCurveName`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Curve {
    X25519,
    P256,
    P384,
}

impl Curve {
    pub const ALL: [Curve; 3] = [Curve::X25519, Curve::P256, Curve::P384];
    pub fn adc_name(self) -> &'static str {
        match self {
            Curve::X25519 => "X25519",
            Curve::P256 => "P_256",
            Curve::P384 => "P_384",
        }
    }
    pub fn from_adc(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.adc_name().eq_ignore_ascii_case(s))
    }
}

/// `-clientCert MANDATORY|OPTIONAL`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientCertMode {
    Mandatory,
    Optional,
}

/// SSL parameters as written on a profile, vserver, service or serviceGroup.
/// `None` means "not set here": the profile's value, then the default, applies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SslParams {
    pub tls12: Option<bool>,
    pub tls13: Option<bool>,
    pub sess_reuse: Option<bool>,
    /// `-sessTimeout`, seconds.
    pub sess_timeout: Option<u32>,
    pub session_ticket: Option<bool>,
    pub client_auth: Option<bool>,
    pub client_cert: Option<ClientCertMode>,
    pub sni_enable: Option<bool>,
    /// Front end: refuse a handshake whose SNI (or its absence) no bound
    /// server certificate covers, with `unrecognized_name`.
    pub strict_sni: Option<bool>,
    /// Back end: verify the server's certificate against the bound `-CA` certKeys.
    pub server_auth: Option<bool>,
    /// Back end: name sent in SNI and verified in the server's certificate.
    pub common_name: Option<String>,
    pub alpn_protocols: Option<Vec<String>>,
    /// Accepted for compatibility; rustls never renegotiates.
    pub deny_ssl_reneg: Option<bool>,
    /// R12: seconds after which connections of a retired epoch are closed.
    pub drain_timeout: Option<u32>,
    /// R8: drop sessions of connections that did not end with our close_notify.
    pub strict_session_cleanup: Option<bool>,
    /// Front end: seconds allowed for a client to complete its handshake.
    pub handshake_timeout: Option<u32>,
    /// Front end: TLS 1.3 session tickets sent after each full handshake.
    pub tls13_session_tickets: Option<u32>,
}

/// SSL parameters after layering entity over profile over defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EffectiveSslParams {
    pub tls12: bool,
    pub tls13: bool,
    pub sess_reuse: bool,
    pub sess_timeout: u32,
    pub session_ticket: bool,
    pub client_auth: bool,
    pub client_cert: ClientCertMode,
    pub sni_enable: bool,
    pub strict_sni: bool,
    pub server_auth: bool,
    pub common_name: Option<String>,
    pub alpn_protocols: Vec<String>,
    pub drain_timeout: Option<u32>,
    pub strict_session_cleanup: bool,
    pub handshake_timeout: u32,
    pub tls13_session_tickets: u32,
}

/// Calls `$m!(field, ...)` with every field of [`SslParams`], so the
/// field-wise operations stay in step with the struct.
macro_rules! for_each_ssl_param {
    ($m:ident) => {
        $m!(
            tls12,
            tls13,
            sess_reuse,
            sess_timeout,
            session_ticket,
            client_auth,
            client_cert,
            sni_enable,
            strict_sni,
            server_auth,
            common_name,
            alpn_protocols,
            deny_ssl_reneg,
            drain_timeout,
            strict_session_cleanup,
            handshake_timeout,
            tls13_session_tickets
        )
    };
}

impl SslParams {
    /// Take every field that `src` sets (what `set ssl ...` does).
    pub fn overlay(&mut self, src: &SslParams) {
        macro_rules! take {
            ($($f:ident),*) => { $( if src.$f.is_some() { self.$f = src.$f.clone(); } )* };
        }
        for_each_ssl_param!(take);
    }

    /// The fields `new` sets to something other than `self`'s value.
    pub fn changes_to(&self, new: &SslParams) -> SslParams {
        let mut d = SslParams::default();
        macro_rules! delta {
            ($($f:ident),*) => { $( if new.$f.is_some() && new.$f != self.$f { d.$f = new.$f.clone(); } )* };
        }
        for_each_ssl_param!(delta);
        d
    }

    /// Layer `self` (the entity's own settings) over `profile`, then defaults.
    pub fn effective(&self, profile: Option<&SslParams>) -> EffectiveSslParams {
        let empty = SslParams::default();
        let p = profile.unwrap_or(&empty);
        macro_rules! pick {
            ($f:ident, $d:expr) => {
                self.$f.clone().or_else(|| p.$f.clone()).unwrap_or($d)
            };
        }
        EffectiveSslParams {
            tls12: pick!(tls12, true),
            tls13: pick!(tls13, true),
            sess_reuse: pick!(sess_reuse, true),
            sess_timeout: pick!(sess_timeout, 300),
            session_ticket: pick!(session_ticket, true),
            client_auth: pick!(client_auth, false),
            client_cert: pick!(client_cert, ClientCertMode::Mandatory),
            sni_enable: pick!(sni_enable, false),
            strict_sni: pick!(strict_sni, false),
            server_auth: pick!(server_auth, false),
            common_name: self.common_name.clone().or_else(|| p.common_name.clone()),
            alpn_protocols: pick!(alpn_protocols, Vec::new()),
            drain_timeout: self.drain_timeout.or(p.drain_timeout),
            strict_session_cleanup: pick!(strict_session_cleanup, true),
            handshake_timeout: pick!(handshake_timeout, 10),
            tls13_session_tickets: pick!(tls13_session_tickets, 2),
        }
    }
}

/// `add ssl certKey N -cert F [-key F]`, plus its `link`.
#[derive(Clone, Debug)]
pub struct CertKey {
    pub name: String,
    /// Path as written in the command (absolute, or relative to the config file's folder).
    pub cert_path: PathBuf,
    pub key_path: Option<PathBuf>,
    /// `link ssl certKey N CA`: the issuer certKey whose certificate extends the chain.
    pub linked_to: Option<String>,
    /// Parsed and checked certificate (and key, when given).
    pub material: Arc<CertKeyMaterial>,
}

/// `add ssl cipher G` with its bound suites in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CipherGroup {
    pub name: String,
    pub suites: Vec<CipherSuiteName>,
}

/// What a `bind ssl ... -cipherName X` names: a group, or one suite.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CipherRef {
    Group(String),
    Suite(CipherSuiteName),
}

/// The highest `-cipherPriority` the language accepts (the lowest is 1).
pub const MAX_CIPHER_PRIORITY: u32 = 1000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CipherBinding {
    pub cipher: CipherRef,
    /// `-cipherPriority N`: lower comes first; ties keep binding order.
    pub priority: u32,
}

/// `bind ssl vserver|service|serviceGroup X -certkeyName C [-SNICert] [-CA]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertBinding {
    pub certkey: String,
    /// Front end: used when the client's SNI matches this certificate's names.
    pub sni: bool,
    /// A trust anchor: verifies client certificates (front) or servers (back).
    pub ca: bool,
}

/// The SSL bindings of one entity.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SslBindings {
    pub certkeys: Vec<CertBinding>,
    pub ciphers: Vec<CipherBinding>,
    pub curves: Vec<Curve>,
}

/// `add ssl profile P [params]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SslProfile {
    pub name: String,
    pub params: SslParams,
}

/// `add lb vserver V SSL_TCP|SSL_BRIDGE IP PORT [-maxClients N] [-cltTimeout S]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vserver {
    pub name: String,
    /// `SSL_TCP` (terminates TLS) or `SSL_BRIDGE` (passes it through).
    pub proto: BackendProto,
    pub addr: SocketAddr,
    pub enabled: bool,
    /// Most concurrent client connections per shard; `None`: unlimited.
    pub max_clients: Option<u32>,
    /// Idle timeout of a proxied connection, seconds.
    pub client_timeout: u32,
    pub ssl_profile: Option<String>,
    pub params: SslParams,
    pub bindings: SslBindings,
    /// `bind lb vserver V X`: services and serviceGroups, in binding order.
    pub targets: Vec<String>,
    /// `-netProfile N`: a PROXY header accepted from a load balancer in front.
    pub net_profile: Option<String>,
}

/// `-proxyProtocolVersion V1|V2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyProtocolVersion {
    V1,
    V2,
}

impl ProxyProtocolVersion {
    pub fn keyword(self) -> &'static str {
        match self {
            ProxyProtocolVersion::V1 => "V1",
            ProxyProtocolVersion::V2 => "V2",
        }
    }
}

/// The settings of a net profile as written; `None` means the default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetParams {
    /// `-proxyProtocol ENABLED|DISABLED` (default DISABLED).
    pub proxy_protocol: Option<bool>,
    /// `-proxyProtocolVersion V1|V2` (default V1, as on the ADC).
    pub proxy_protocol_version: Option<ProxyProtocolVersion>,
    /// `-proxyProtocolTrustedNetworks CIDR,...` (ours): the source networks
    /// a vserver bound to this profile accepts a PROXY header from.
    pub trusted_networks: Option<Vec<Cidr>>,
}

impl NetParams {
    /// Take every field that `src` sets (what `set netProfile` does).
    pub fn overlay(&mut self, src: &NetParams) {
        if src.proxy_protocol.is_some() {
            self.proxy_protocol = src.proxy_protocol;
        }
        if src.proxy_protocol_version.is_some() {
            self.proxy_protocol_version = src.proxy_protocol_version;
        }
        if src.trusted_networks.is_some() {
            self.trusted_networks.clone_from(&src.trusted_networks);
        }
    }

    /// The PROXY protocol version a back end bound to this profile
    /// receives; `None` when the header is not sent.
    pub fn proxy_header(&self) -> Option<ProxyProtocolVersion> {
        self.proxy_protocol
            .unwrap_or(false)
            .then(|| self.proxy_protocol_version.unwrap_or(ProxyProtocolVersion::V1))
    }
}

/// An IP network, `ADDR/LEN` (a bare address is its own /32 or /128).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: std::net::IpAddr,
    pub len: u8,
}

impl Cidr {
    /// Whether `ip` is in this network (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr::*;
        let ip = match ip {
            V6(v6) => v6.to_ipv4_mapped().map_or(V6(v6), V4),
            v4 => v4,
        };
        let (net, ip, bits) = match (self.addr, ip) {
            (V4(n), V4(i)) => (u32::from(n) as u128, u32::from(i) as u128, 32),
            (V6(n), V6(i)) => (u128::from(n), u128::from(i), 128),
            _ => return false,
        };
        let shift = bits - u32::from(self.len);
        shift >= bits || (net >> shift) == (ip >> shift)
    }
}

impl std::str::FromStr for Cidr {
    type Err = ();
    fn from_str(s: &str) -> Result<Cidr, ()> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: std::net::IpAddr = addr.parse().map_err(|_| ())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            Some(l) => l
                .parse::<u8>()
                .map_err(|_| ())
                .and_then(|l| if l <= max { Ok(l) } else { Err(()) })?,
            None => max,
        };
        Ok(Cidr { addr, len })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// `add netProfile N [-proxyProtocol ENABLED] [-proxyProtocolVersion V2]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetProfile {
    pub name: String,
    pub params: NetParams,
}

/// The ADC's service type, of a back end or a vserver: plain TCP, TLS
/// (terminated by a vserver, re-encrypted to a back end), or TLS passed
/// through untouched (`SSL_BRIDGE`: routed by the ClientHello's SNI,
/// relayed byte for byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendProto {
    Tcp,
    SslTcp,
    SslBridge,
}

impl BackendProto {
    pub fn keyword(self) -> &'static str {
        match self {
            BackendProto::Tcp => "TCP",
            BackendProto::SslTcp => "SSL_TCP",
            BackendProto::SslBridge => "SSL_BRIDGE",
        }
    }
}

/// Health checking of a service's or serviceGroup's members; `None` means
/// the default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HealthFlags {
    /// `-healthInterval SECONDS`: time between probes of a member that is
    /// down (default 5).
    pub interval: Option<u32>,
    /// `-healthRetries N`: failures in a row that mark a member down
    /// (default 3).
    pub retries: Option<u32>,
}

/// `add service S IP PORT TCP|SSL_TCP|SSL_BRIDGE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub addr: SocketAddr,
    pub proto: BackendProto,
    pub enabled: bool,
    /// `-healthInterval S -healthRetries N`.
    pub health: HealthFlags,
    /// `-netProfile N`: how connections to the back end are made (PROXY header).
    pub net_profile: Option<String>,
    pub ssl_profile: Option<String>,
    pub params: SslParams,
    pub bindings: SslBindings,
}

/// `add serviceGroup G TCP|SSL_TCP|SSL_BRIDGE` with `bind serviceGroup G IP PORT` members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceGroup {
    pub name: String,
    pub proto: BackendProto,
    pub enabled: bool,
    pub members: Vec<SocketAddr>,
    /// As for a service.
    pub health: HealthFlags,
    pub net_profile: Option<String>,
    pub ssl_profile: Option<String>,
    pub params: SslParams,
    pub bindings: SslBindings,
}

/// The whole running configuration. Cloned for each transaction; a failed
/// transaction drops its clone and leaves the original untouched (R10).
#[derive(Clone, Debug, Default)]
pub struct Model {
    pub certkeys: BTreeMap<String, CertKey>,
    pub cipher_groups: BTreeMap<String, CipherGroup>,
    pub profiles: BTreeMap<String, SslProfile>,
    pub net_profiles: BTreeMap<String, NetProfile>,
    pub vservers: BTreeMap<String, Vserver>,
    pub services: BTreeMap<String, Service>,
    pub service_groups: BTreeMap<String, ServiceGroup>,
    /// Current epoch of every connection-owning entity (its side follows
    /// from its kind). Bumped by `apply` for each affected entity.
    pub epochs: BTreeMap<EntityRef, Epoch>,
}
