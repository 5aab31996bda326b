//! From validated model entities to rustls configurations.
//!
//! A [`FrontendSpec`] (vserver) or [`BackendSpec`] (service or serviceGroup)
//! is built once per (entity, epoch) by the control plane and shared by every
//! shard. Everything in it is immutable: providers with the bound suites and
//! curves in priority order, the SNI certificate map, verifiers, ticket keys.
//! Each shard then makes its own rustls config from the spec
//! ([`FrontendSpec::shard_config`], [`BackendSpec::shard_config`]) with a
//! fresh shard-local session store, so caches are never shared across cores
//! and a new epoch always starts with empty ones (R3, R4).

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, Resumption, Tls12Resumption};
use rustls::crypto::{ring as ring_provider, CryptoProvider, SupportedKxGroup, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, NoServerSessionStorage, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme, SupportedCipherSuite,
    SupportedProtocolVersion,
};

use super::session::{EpochTicketer, ShardClientSessions, ShardSessionCache};
use crate::config::{
    CertBinding, CipherRef, CipherSuiteName, ClientCertMode, Curve, EffectiveSslParams, Epoch, Model, SslBindings,
    SslParams,
};

fn suite(name: CipherSuiteName) -> SupportedCipherSuite {
    use ring_provider::cipher_suite as cs;
    match name {
        CipherSuiteName::Tls13Aes128GcmSha256 => cs::TLS13_AES_128_GCM_SHA256,
        CipherSuiteName::Tls13Aes256GcmSha384 => cs::TLS13_AES_256_GCM_SHA384,
        CipherSuiteName::Tls13Chacha20Poly1305Sha256 => cs::TLS13_CHACHA20_POLY1305_SHA256,
        CipherSuiteName::Tls12EcdheEcdsaAes128GcmSha256 => cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        CipherSuiteName::Tls12EcdheEcdsaAes256GcmSha384 => cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        CipherSuiteName::Tls12EcdheEcdsaChacha20Poly1305 => cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        CipherSuiteName::Tls12EcdheRsaAes128GcmSha256 => cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        CipherSuiteName::Tls12EcdheRsaAes256GcmSha384 => cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        CipherSuiteName::Tls12EcdheRsaChacha20Poly1305 => cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    }
}

fn kx_group(c: Curve) -> &'static dyn SupportedKxGroup {
    use ring_provider::kx_group;
    match c {
        Curve::X25519 => kx_group::X25519,
        Curve::P256 => kx_group::SECP256R1,
        Curve::P384 => kx_group::SECP384R1,
    }
}

/// The bound suites, groups expanded, ordered by priority (ties: binding order).
pub fn bound_suites(model: &Model, b: &SslBindings) -> Result<Vec<CipherSuiteName>, String> {
    let mut bindings: Vec<_> = b.ciphers.iter().enumerate().collect();
    bindings.sort_by_key(|(i, c)| (c.priority, *i));
    let mut out = Vec::new();
    for (_, c) in bindings {
        let names: Vec<CipherSuiteName> = match &c.cipher {
            CipherRef::Suite(s) => vec![*s],
            CipherRef::Group(g) => model
                .cipher_groups
                .get(g)
                .ok_or_else(|| format!("cipher group {g} does not exist"))?
                .suites
                .clone(),
        };
        for n in names {
            if !out.contains(&n) {
                out.push(n);
            }
        }
    }
    Ok(out)
}

/// A provider with the bound suites and curves (defaults where none are bound),
/// and the protocol versions left enabled.
fn provider_for(
    model: &Model,
    b: &SslBindings,
    p: &EffectiveSslParams,
) -> Result<(Arc<CryptoProvider>, Vec<&'static SupportedProtocolVersion>, bool), String> {
    let mut provider = ring_provider::default_provider();
    let bound = bound_suites(model, b)?;
    let explicit = !bound.is_empty();
    if explicit {
        provider.cipher_suites = bound.into_iter().map(suite).collect();
    }
    provider.cipher_suites.retain(|s| match s {
        SupportedCipherSuite::Tls13(_) => p.tls13,
        SupportedCipherSuite::Tls12(_) => p.tls12,
    });
    if !b.curves.is_empty() {
        provider.kx_groups = b.curves.iter().map(|c| kx_group(*c)).collect();
    }
    let mut versions = Vec::new();
    let has13 = provider
        .cipher_suites
        .iter()
        .any(|s| matches!(s, SupportedCipherSuite::Tls13(_)));
    let has12 = provider
        .cipher_suites
        .iter()
        .any(|s| matches!(s, SupportedCipherSuite::Tls12(_)));
    if p.tls13 && has13 {
        versions.push(&rustls::version::TLS13);
    }
    if p.tls12 && has12 {
        versions.push(&rustls::version::TLS12);
    }
    if versions.is_empty() {
        return Err("no protocol version is usable: TLS 1.2 and 1.3 are disabled or no bound cipher suits them".into());
    }
    Ok((Arc::new(provider), versions, explicit))
}

/// A certKey's certificate plus the chain built with `link`.
fn chain_of(model: &Model, certkey: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut chain = Vec::new();
    let mut next = Some(certkey.to_string());
    let mut depth = 0;
    while let Some(name) = next {
        depth += 1;
        if depth > 10 {
            return Err(format!("certificate chain of {certkey} is too long or loops"));
        }
        let ck = model
            .certkeys
            .get(&name)
            .ok_or_else(|| format!("certKey {name} does not exist"))?;
        chain.extend(ck.material.certs.iter().cloned());
        next = ck.linked_to.clone();
    }
    Ok(chain)
}

fn certified_key(model: &Model, certkey: &str) -> Result<ServerCert, String> {
    let ck = model
        .certkeys
        .get(certkey)
        .ok_or_else(|| format!("certKey {certkey} does not exist"))?;
    let key = ck
        .material
        .key
        .clone()
        .ok_or_else(|| format!("certKey {certkey} has no private key"))?;
    Ok(ServerCert {
        key: Arc::new(CertifiedKey::new(chain_of(model, certkey)?, key)),
        der: ck.material.key_der.clone(),
    })
}

/// A server certificate with its key, and the key as read (to give each
/// shard a signing key of its own).
#[derive(Clone)]
struct ServerCert {
    key: Arc<CertifiedKey>,
    der: Option<Arc<crate::config::SecretKeyDer>>,
}

impl ServerCert {
    /// A copy that shares no reference count with this one: the chain is
    /// cloned and the signing key parsed again (falls back to sharing the
    /// key if it cannot be, which the first parse rules out). The key is
    /// parsed from the shared DER in place: no copy of it is left behind.
    fn for_shard(&self) -> Self {
        let key = self
            .der
            .as_ref()
            .and_then(|der| ring_provider::sign::any_supported_type(der).ok())
            .unwrap_or_else(|| self.key.key.clone());
        let mut ck = CertifiedKey::new(self.key.cert.clone(), key);
        ck.ocsp = self.key.ocsp.clone();
        ServerCert {
            key: Arc::new(ck),
            der: self.der.clone(),
        }
    }
}

fn roots(model: &Model, bindings: &[CertBinding]) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for b in bindings.iter().filter(|b| b.ca) {
        let ck = model
            .certkeys
            .get(&b.certkey)
            .ok_or_else(|| format!("certKey {} does not exist", b.certkey))?;
        for c in ck.material.certs.iter() {
            roots
                .add(c.clone())
                .map_err(|e| format!("certKey {} is not a usable CA: {e}", b.certkey))?;
        }
    }
    Ok(roots)
}

fn profile_params<'m>(model: &'m Model, profile: &Option<String>) -> Option<&'m SslParams> {
    profile.as_ref().and_then(|p| model.profiles.get(p)).map(|p| &p.params)
}

/// Chooses the certificate by SNI among `-SNICert` bindings, else the
/// default. With `-strictSNI` the default answers only names it covers,
/// and a name no certificate covers (or no name) gets none: the handshake
/// is refused (`unrecognized_name`, see [`super::stream`]).
pub struct SniResolver {
    default: Option<ServerCert>,
    /// DNS names of the default certificate.
    default_names: Vec<String>,
    by_name: Vec<(Vec<String>, ServerCert)>,
    sni_enable: bool,
    strict: bool,
}

impl SniResolver {
    /// This resolver for one shard: certificates and keys of its own.
    fn for_shard(&self) -> Self {
        SniResolver {
            default: self.default.as_ref().map(ServerCert::for_shard),
            default_names: self.default_names.clone(),
            by_name: self.by_name.iter().map(|(n, c)| (n.clone(), c.for_shard())).collect(),
            sni_enable: self.sni_enable,
            strict: self.strict,
        }
    }
}

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SniResolver")
            .field("sni_certs", &self.by_name.len())
            .finish()
    }
}

fn name_matches(pattern: &str, sni: &str) -> bool {
    if let Some(suffix) = pattern.strip_prefix("*.") {
        sni.split_once('.')
            .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(suffix))
    } else {
        pattern.eq_ignore_ascii_case(sni)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if self.sni_enable {
            if let Some(sni) = hello.server_name() {
                for (names, ck) in &self.by_name {
                    if names.iter().any(|n| name_matches(n, sni)) {
                        return Some(ck.key.clone());
                    }
                }
            }
        }
        if self.strict
            && !hello
                .server_name()
                .is_some_and(|sni| self.default_names.iter().any(|n| name_matches(n, sni)))
        {
            super::session::note_sni_refused(hello.server_name());
            return None;
        }
        self.default.as_ref().map(|c| c.key.clone())
    }
}

/// Everything needed to make a vserver's rustls server config for one epoch.
pub struct FrontendSpec {
    pub epoch: Epoch,
    pub params: EffectiveSslParams,
    provider: Arc<CryptoProvider>,
    versions: Vec<&'static SupportedProtocolVersion>,
    server_order: bool,
    resolver: Arc<SniResolver>,
    client_verifier: Option<Arc<dyn ClientCertVerifier>>,
    ticketer: Option<Arc<EpochTicketer>>,
}

impl fmt::Debug for FrontendSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrontendSpec").field("epoch", &self.epoch).finish()
    }
}

/// A shard's own server config for one (vserver, epoch), with its cache.
#[derive(Clone)]
pub struct ShardServerConfig {
    pub config: Arc<ServerConfig>,
    pub cache: Option<Arc<ShardSessionCache>>,
    pub ticketer: Option<Arc<EpochTicketer>>,
    pub epoch: Epoch,
}

impl FrontendSpec {
    /// Build the spec of vserver `name` at `epoch`. Fails when the vserver
    /// cannot serve TLS (no server certificate, no usable version, bad CA).
    pub fn build(model: &Model, name: &str, epoch: Epoch) -> Result<Self, String> {
        let vs = model
            .vservers
            .get(name)
            .ok_or_else(|| format!("vserver {name} does not exist"))?;
        let params = vs.params.effective(profile_params(model, &vs.ssl_profile));
        let (provider, versions, server_order) = provider_for(model, &vs.bindings, &params)?;
        let mut default = None;
        let mut default_names = Vec::new();
        let mut by_name = Vec::new();
        for b in vs.bindings.certkeys.iter().filter(|b| !b.ca) {
            let ck = certified_key(model, &b.certkey)?;
            let names = model
                .certkeys
                .get(&b.certkey)
                .map(|c| c.material.dns_names.clone())
                .unwrap_or_default();
            let is_default = default.is_none() && (!b.sni || !vs.bindings.certkeys.iter().any(|x| !x.ca && !x.sni));
            if is_default {
                default = Some(ck.clone());
                default_names = names.clone();
            }
            if b.sni {
                by_name.push((names, ck));
            }
        }
        if default.is_none() {
            return Err(format!("vserver {name} has no server certificate bound"));
        }
        let client_verifier = if params.client_auth {
            let roots = roots(model, &vs.bindings.certkeys)?;
            if roots.is_empty() {
                return Err(format!(
                    "vserver {name}: -clientAuth ENABLED needs a certKey bound with -CA"
                ));
            }
            let mut b = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            if params.client_cert == ClientCertMode::Optional {
                b = b.allow_unauthenticated();
            }
            Some(b.build().map_err(|e| format!("vserver {name}: client verifier: {e}"))?)
        } else {
            None
        };
        let ticketer = if params.sess_reuse && params.session_ticket {
            Some(EpochTicketer::new(params.sess_timeout)?)
        } else {
            None
        };
        let spec = FrontendSpec {
            epoch,
            resolver: Arc::new(SniResolver {
                default,
                default_names,
                by_name,
                sni_enable: params.sni_enable,
                strict: params.strict_sni,
            }),
            params,
            provider,
            versions,
            server_order,
            client_verifier,
            ticketer,
        };
        // Prove a config can be made now, so a bad one fails validation (R10).
        spec.server_config(None)?;
        Ok(spec)
    }

    fn server_config(&self, cache: Option<Arc<ShardSessionCache>>) -> Result<ServerConfig, String> {
        let builder = ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&self.versions)
            .map_err(|e| format!("TLS settings rejected: {e}"))?;
        let builder = match &self.client_verifier {
            Some(v) => builder.with_client_cert_verifier(v.clone()),
            None => builder.with_no_client_auth(),
        };
        let mut cfg = builder.with_cert_resolver(Arc::new(self.resolver.for_shard()));
        cfg.alpn_protocols = self
            .params
            .alpn_protocols
            .iter()
            .map(|p| p.as_bytes().to_vec())
            .collect();
        cfg.ignore_client_order = self.server_order;
        cfg.session_storage = match cache {
            Some(c) if self.params.sess_reuse => c,
            _ => Arc::new(NoServerSessionStorage {}),
        };
        // `-tls13SessionTicketsPerAuthContext`, two by default (rustls' default,
        // as OpenSSL): a client that opens parallel connections needs more
        // than one, and with one a client's store never grows past its first ticket.
        cfg.send_tls13_tickets = self.params.tls13_session_tickets as usize;
        match &self.ticketer {
            Some(t) => cfg.ticketer = t.clone(),
            None if !self.params.sess_reuse => cfg.send_tls13_tickets = 0,
            None => {}
        }
        Ok(cfg)
    }

    /// A shard's own config, with a fresh shard-local session cache.
    pub fn shard_config(&self) -> ShardServerConfig {
        let cache = self
            .params
            .sess_reuse
            .then(|| ShardSessionCache::new(self.params.sess_timeout));
        let config = self
            .server_config(cache.clone())
            .map(Arc::new)
            .expect("validated when the spec was built");
        ShardServerConfig {
            config,
            cache,
            ticketer: self.ticketer.clone(),
            epoch: self.epoch,
        }
    }
}

/// Accepts any server certificate (for `-serverAuth DISABLED`, and for the
/// load generator's `--insecure`) but still checks handshake signatures, so
/// the session keys are bound to the presented key and a client does the
/// same signature work as a verifying one, minus path building.
#[derive(Debug)]
pub struct AnyServerCert(WebPkiSupportedAlgorithms);

impl AnyServerCert {
    pub fn new(provider: &rustls::crypto::CryptoProvider) -> Self {
        AnyServerCert(provider.signature_verification_algorithms)
    }
}

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[derive(Debug)]
struct FixedClientCert(Arc<CertifiedKey>);

impl ResolvesClientCert for FixedClientCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
    fn has_certs(&self) -> bool {
        true
    }
}

/// Everything needed to make a back end's rustls client config for one epoch.
pub struct BackendSpec {
    pub epoch: Epoch,
    pub params: EffectiveSslParams,
    provider: Arc<CryptoProvider>,
    versions: Vec<&'static SupportedProtocolVersion>,
    verifier: Arc<dyn ServerCertVerifier>,
    client_cert: Option<Arc<CertifiedKey>>,
}

impl fmt::Debug for BackendSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendSpec").field("epoch", &self.epoch).finish()
    }
}

/// A shard's own client config for one (service, epoch), with its session store.
#[derive(Clone)]
pub struct ShardClientConfig {
    pub config: Arc<ClientConfig>,
    pub sessions: Arc<ShardClientSessions>,
    pub epoch: Epoch,
}

impl BackendSpec {
    /// Build the spec for a service or serviceGroup's TLS settings at `epoch`.
    pub fn build(
        model: &Model,
        what: &str,
        params: &SslParams,
        profile: &Option<String>,
        bindings: &SslBindings,
        epoch: Epoch,
    ) -> Result<Self, String> {
        let params = params.effective(profile_params(model, profile));
        let (provider, versions, _) = provider_for(model, bindings, &params).map_err(|e| format!("{what}: {e}"))?;
        let verifier: Arc<dyn ServerCertVerifier> = if params.server_auth {
            let roots = roots(model, &bindings.certkeys)?;
            if roots.is_empty() {
                return Err(format!("{what}: -serverAuth ENABLED needs a certKey bound with -CA"));
            }
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| format!("{what}: server verifier: {e}"))?
        } else {
            Arc::new(AnyServerCert::new(&provider))
        };
        let client_cert = match bindings.certkeys.iter().find(|b| !b.ca) {
            Some(b) => Some(certified_key(model, &b.certkey)?.key),
            None => None,
        };
        let spec = BackendSpec {
            epoch,
            params,
            provider,
            versions,
            verifier,
            client_cert,
        };
        spec.client_config(ShardClientSessions::new(spec.params.sess_timeout))?;
        Ok(spec)
    }

    fn client_config(&self, sessions: Arc<ShardClientSessions>) -> Result<ClientConfig, String> {
        let builder = ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&self.versions)
            .map_err(|e| format!("TLS settings rejected: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(self.verifier.clone());
        let mut cfg = match &self.client_cert {
            Some(ck) => builder.with_client_cert_resolver(Arc::new(FixedClientCert(ck.clone()))),
            None => builder.with_no_client_auth(),
        };
        cfg.alpn_protocols = self
            .params
            .alpn_protocols
            .iter()
            .map(|p| p.as_bytes().to_vec())
            .collect();
        cfg.resumption = if self.params.sess_reuse {
            Resumption::store(sessions).tls12_resumption(Tls12Resumption::SessionIdOrTickets)
        } else {
            Resumption::disabled()
        };
        cfg.enable_sni = self.params.common_name.is_some();
        Ok(cfg)
    }

    /// A shard's own config with a fresh shard-local session store.
    pub fn shard_config(&self) -> ShardClientConfig {
        let sessions = ShardClientSessions::new(self.params.sess_timeout);
        let config = self
            .client_config(sessions.clone())
            .map(Arc::new)
            .expect("validated when the spec was built");
        ShardClientConfig {
            config,
            sessions,
            epoch: self.epoch,
        }
    }

    /// The name to send and verify for member `addr`: `-commonName`, else its IP.
    pub fn server_name(&self, addr: SocketAddr) -> ServerName<'static> {
        self.params
            .common_name
            .as_deref()
            .and_then(|n| ServerName::try_from(n.to_string()).ok())
            .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()))
    }
}
