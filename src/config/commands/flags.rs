//! Every flag of the language with its value type, range, default and epoch scope.

use super::super::grammar::{FlagSpec, Scope};
use super::super::model::{SslParams, MAX_CIPHER_PRIORITY};
use super::super::values::{FromValue, Value, ValueType};

const fn flag(
    name: &'static str,
    value: ValueType,
    scope: Scope,
    default: Option<&'static str>,
    help: &'static str,
) -> FlagSpec {
    FlagSpec {
        name,
        value,
        scope,
        default,
        help,
    }
}

const fn num(min: u32, max: u32) -> ValueType {
    ValueType::Number { min, max }
}

use Scope::{Back, Both, Front, NoEpoch};
use ValueType::*;

pub(super) static CERT: FlagSpec = flag("-cert", Path, Both, None, "certificate file (PEM, leaf first)");
pub(super) static KEY: FlagSpec = flag("-key", Path, Both, None, "private key file (PEM)");
pub(super) static CIPHER_SUITE: FlagSpec = flag("-cipherName", Suite, Both, None, "one cipher suite of the group");
pub(super) static CIPHER_SUITES: FlagSpec = flag("-cipherName", SuiteList, Both, None, "the group's suites, in order");
pub(super) static SSL_PROFILE: FlagSpec = flag(
    "-sslProfile",
    Name,
    Both,
    None,
    "SSL profile whose parameters apply where the entity sets none",
);
pub(super) static NET_PROFILE: FlagSpec = flag(
    "-netProfile",
    Name,
    Back,
    None,
    "net profile: how connections to the back end are made (PROXY header)",
);
pub(super) static PROXY_PROTOCOL: FlagSpec = flag(
    "-proxyProtocol",
    Switch,
    Back,
    Some("DISABLED"),
    "send a PROXY protocol header to the back end before any client byte",
);
pub(super) static PROXY_PROTOCOL_VERSION: FlagSpec = flag(
    "-proxyProtocolVersion",
    ProxyVersion,
    Back,
    Some("V1"),
    "PROXY protocol version: V1 (text) or V2 (binary, with the TLS TLVs)",
);
pub(super) static PROXY_PROTOCOL_TRUSTED_NETWORKS: FlagSpec = flag(
    "-proxyProtocolTrustedNetworks",
    CidrList,
    Front,
    None,
    "source networks a vserver bound to the profile accepts a PROXY header from (required to accept one)",
);
pub(super) static VSERVER_NET_PROFILE: FlagSpec = flag(
    "-netProfile",
    Name,
    Front,
    None,
    "net profile: a PROXY header accepted from a load balancer in front",
);
pub(super) static MAX_CLIENTS: FlagSpec = flag(
    "-maxClients",
    num(0, 4_294_967_294),
    NoEpoch,
    Some("0 (unlimited)"),
    "most concurrent client connections per shard",
);
pub(super) static CLIENT_TIMEOUT: FlagSpec = flag(
    "-cltTimeout",
    num(1, 31_536_000),
    NoEpoch,
    Some("180"),
    "idle timeout of a proxied connection, seconds",
);
pub(super) static HEALTH_INTERVAL: FlagSpec = flag(
    "-healthInterval",
    num(1, 3600),
    NoEpoch,
    Some("5"),
    "seconds between probes of a member that is down",
);
pub(super) static HEALTH_RETRIES: FlagSpec = flag(
    "-healthRetries",
    num(1, 100),
    NoEpoch,
    Some("3"),
    "failures in a row that mark a member down",
);
pub(super) static CERTKEY_NAME: FlagSpec = flag(
    "-certkeyName",
    Name,
    Both,
    None,
    "certKey to bind: the entity's certificate, an SNI certificate or a CA",
);
pub(super) static SNI_CERT: FlagSpec = flag(
    "-SNICert",
    Presence,
    Front,
    None,
    "served when the client's SNI matches its names (vservers)",
);
pub(super) static CA: FlagSpec = flag(
    "-CA",
    Presence,
    Both,
    None,
    "a trust anchor: verifies clients (front) or servers (back)",
);
pub(super) static CIPHER_REF: FlagSpec = flag(
    "-cipherName",
    ValueType::CipherRef,
    Both,
    None,
    "cipher group or single suite to bind",
);
pub(super) static CIPHER_PRIORITY: FlagSpec = flag(
    "-cipherPriority",
    num(1, MAX_CIPHER_PRIORITY),
    Both,
    Some("after the last"),
    "lower comes first",
);
pub(super) static ECC_CURVE: FlagSpec = flag("-eccCurveName", Curve, Both, Some("all"), "key-exchange group to offer");

/// An SSL parameter: its flag and where it lives in [`SslParams`].
pub struct SslParamFlag {
    pub flag: FlagSpec,
    pub get: fn(&SslParams) -> Option<Value>,
    pub set: fn(&mut SslParams, Value),
}

macro_rules! ssl_params {
    ($($field:ident: $name:literal, $ty:expr, $scope:ident, $default:expr, $help:literal;)*) => {
        /// Every SSL parameter (profile, vserver, service, serviceGroup), in the order `save` writes them.
        pub static SSL_PARAMS: &[SslParamFlag] = &[$(SslParamFlag {
            flag: flag($name, $ty, $scope, $default, $help),
            get: |p| p.$field.clone().map(Value::from),
            set: |p, v| p.$field = FromValue::from_value(v),
        },)*];
    };
}

ssl_params! {
    tls12: "-tls12", Switch, Both, Some("ENABLED"), "offer TLS 1.2";
    tls13: "-tls13", Switch, Both, Some("ENABLED"), "offer TLS 1.3";
    sess_reuse: "-sessReuse", Switch, Both, Some("ENABLED"), "resume sessions (cache and tickets)";
    session_ticket: "-sessionTicket", Switch, Front, Some("ENABLED"), "issue session tickets";
    client_auth: "-clientAuth", Switch, Front, Some("DISABLED"), "ask clients for a certificate, checked against the bound -CA certKeys";
    sni_enable: "-SNIEnable", SwitchOrBare, Front, Some("DISABLED"), "choose the certificate by the client's SNI";
    strict_sni: "-strictSNI", Switch, Front, Some("DISABLED"), "refuse a handshake whose SNI (or its absence) no bound certificate covers, with unrecognized_name; DISABLED: the default certificate answers";
    server_auth: "-serverAuth", Switch, Back, Some("DISABLED"), "verify the server's certificate against the bound -CA certKeys";
    strict_session_cleanup: "-strictSessionCleanup", Switch, Both, Some("ENABLED"), "drop the session of a connection that did not end with close_notify (R8)";
    sess_timeout: "-sessTimeout", num(1, 604_800), Both, Some("300"), "session lifetime, seconds";
    client_cert: "-clientCert", ClientCert, Front, Some("MANDATORY"), "with -clientAuth: whether a certificate is required";
    common_name: "-commonName", ServerName, Back, None, "name sent as SNI and checked in the server's certificate";
    alpn_protocols: "-alpnProtocols", AlpnList, Both, None, "ALPN protocols offered, in order";
    deny_ssl_reneg: "-denySSLReneg", Reneg, Both, Some("ALL"), "accepted for compatibility; renegotiation never happens";
    drain_timeout: "-drainTimeout", num(1, 86_400), Both, None, "close connections of a retired epoch after this many seconds (R12)";
    handshake_timeout: "-handshakeTimeout", num(1, 3_600), Both, Some("10"), "seconds allowed to complete a handshake";
    tls13_session_tickets: "-tls13SessionTicketsPerAuthContext", num(1, 10), Front, Some("2"), "TLS 1.3 session tickets sent after each full handshake";
}

/// Whether `f` is one of [`SSL_PARAMS`].
pub fn is_ssl_param(f: &FlagSpec) -> bool {
    SSL_PARAMS.iter().any(|p| std::ptr::eq(&p.flag, f))
}
