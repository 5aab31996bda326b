//! The value types of the command language: what a positional argument or
//! a flag's value may be, how one word is read into a typed [`Value`], and
//! how a value is written back as a word that reads the same.
//!
//! This module knows words and values only; which command takes which
//! value is declared in `commands`.

use std::net::IpAddr;
use std::path::PathBuf;

use super::command::MAX_NAME_LEN;
use super::lexer::quote_word;
use super::model::{BackendProto, Cidr, CipherRef, CipherSuiteName, ClientCertMode, Curve, ProxyProtocolVersion};

/// What one argument or flag value may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueType {
    /// An entity name: 1 to 127 characters, no control character, not
    /// starting with `-`. Kept exactly as written.
    Name,
    /// A file path, absolute or relative to the config file's folder.
    Path,
    /// A whole number in `min..=max`.
    Number { min: u32, max: u32 },
    /// `ENABLED` or `DISABLED`.
    Switch,
    /// `ENABLED`, `DISABLED`, or no value at all (the bare flag means ENABLED).
    SwitchOrBare,
    /// A bare flag, present or not.
    Presence,
    /// An IPv4 or IPv6 address.
    Ip,
    /// A TCP port, 1 to 65535.
    Port,
    /// `TCP`, `SSL_TCP` or `SSL_BRIDGE`.
    BackendProto,
    /// `SSL_TCP` or `SSL_BRIDGE`: the vserver types.
    VserverProto,
    /// One cipher suite, by its ADC name.
    Suite,
    /// Cipher suites separated by commas, each once.
    SuiteList,
    /// An ECC curve, by its ADC name.
    Curve,
    /// A cipher suite name, or else the name of a cipher group.
    CipherRef,
    /// `MANDATORY` or `OPTIONAL`.
    ClientCert,
    /// A DNS name (sent as SNI, checked in a server's certificate).
    ServerName,
    /// ALPN protocol names separated by commas.
    AlpnList,
    /// `-denySSLReneg`: `NO`, or any of the ADC's other values (read as "deny").
    Reneg,
    /// `V1` or `V2` (PROXY protocol).
    ProxyVersion,
    /// IP networks (`ADDR/LEN`) separated by commas.
    CidrList,
}

/// A typed value, as a command holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Text(String),
    Path(PathBuf),
    Number(u32),
    Bool(bool),
    Ip(IpAddr),
    Port(u16),
    Proto(BackendProto),
    Suite(CipherSuiteName),
    Suites(Vec<CipherSuiteName>),
    Curve(Curve),
    Cipher(CipherRef),
    ClientCert(ClientCertMode),
    List(Vec<String>),
    ProxyVersion(ProxyProtocolVersion),
    Cidrs(Vec<Cidr>),
}

impl ValueType {
    /// How the value is shown in help text (`FILE`, `ENABLED|DISABLED`, ...).
    pub fn label(self) -> String {
        match self {
            ValueType::Name => "NAME".into(),
            ValueType::Path => "FILE".into(),
            ValueType::Number { min, max } => format!("N ({min}..={max})"),
            ValueType::Switch => "ENABLED|DISABLED".into(),
            ValueType::SwitchOrBare => "[ENABLED|DISABLED]".into(),
            ValueType::Presence => String::new(),
            ValueType::Ip => "IP".into(),
            ValueType::Port => "PORT".into(),
            ValueType::BackendProto => "TCP|SSL_TCP|SSL_BRIDGE".into(),
            ValueType::VserverProto => "SSL_TCP|SSL_BRIDGE".into(),
            ValueType::Suite => "SUITE".into(),
            ValueType::SuiteList => "SUITE,SUITE,...".into(),
            ValueType::Curve => Curve::ALL.map(|c| c.adc_name()).join("|"),
            ValueType::CipherRef => "GROUP|SUITE".into(),
            ValueType::ClientCert => "MANDATORY|OPTIONAL".into(),
            ValueType::ServerName => "HOST".into(),
            ValueType::AlpnList => "PROTO,PROTO,...".into(),
            ValueType::Reneg => "ALL|NO".into(),
            ValueType::ProxyVersion => "V1|V2".into(),
            ValueType::CidrList => "CIDR,CIDR,...".into(),
        }
    }

    /// Keywords this type accepts, for the fuzzer's dictionary.
    pub fn keywords(self) -> Vec<&'static str> {
        match self {
            ValueType::Switch | ValueType::SwitchOrBare => vec!["ENABLED", "DISABLED"],
            ValueType::BackendProto => vec!["TCP", "SSL_TCP", "SSL_BRIDGE"],
            ValueType::VserverProto => vec!["SSL_TCP", "SSL_BRIDGE"],
            ValueType::Suite | ValueType::SuiteList | ValueType::CipherRef => {
                CipherSuiteName::ALL.iter().map(|s| s.adc_name()).collect()
            }
            ValueType::Curve => Curve::ALL.iter().map(|c| c.adc_name()).collect(),
            ValueType::ClientCert => vec!["MANDATORY", "OPTIONAL"],
            ValueType::Reneg => vec!["ALL", "NO", "FRONTEND_CLIENT"],
            ValueType::ProxyVersion => vec!["V1", "V2"],
            _ => vec![],
        }
    }

    /// Read `word`, the value of `what` (a flag name, or what an argument is).
    pub fn parse(self, word: &str, what: &str) -> Result<Value, String> {
        Ok(match self {
            ValueType::Name => Value::Text(check_name(word, what)?.to_string()),
            ValueType::Path => {
                if word.is_empty() {
                    return Err(format!("empty path for {what}"));
                }
                Value::Path(PathBuf::from(word))
            }
            ValueType::Number { min, max } => Value::Number(parse_number(word, what, min, max)?),
            ValueType::Switch | ValueType::SwitchOrBare => Value::Bool(parse_switch(word, what)?),
            ValueType::Presence => Value::Bool(true),
            ValueType::Ip => Value::Ip(word.parse().map_err(|_| format!("bad IP address '{word}'"))?),
            ValueType::Port => Value::Port(match word.parse::<u32>() {
                Ok(p) if (1..=65535).contains(&p) => p as u16,
                Ok(_) => return Err(format!("bad port '{word}': out of range 1..=65535")),
                Err(_) => return Err(format!("bad port '{word}': not a number")),
            }),
            ValueType::BackendProto => Value::Proto(parse_proto(word)?),
            ValueType::VserverProto => match parse_proto(word) {
                Ok(p @ (BackendProto::SslTcp | BackendProto::SslBridge)) => Value::Proto(p),
                _ => {
                    return Err(format!(
                        "lb vserver: service type '{word}' is not supported (only SSL_TCP or SSL_BRIDGE)"
                    ))
                }
            },
            ValueType::Suite => Value::Suite(parse_suite(word)?),
            ValueType::SuiteList => {
                let mut suites = Vec::new();
                for s in word.split(',').filter(|s| !s.is_empty()) {
                    let suite = parse_suite(s)?;
                    if suites.contains(&suite) {
                        return Err(format!("{what}: {s} listed twice"));
                    }
                    suites.push(suite);
                }
                if suites.is_empty() {
                    return Err(format!("{what}: give one or more cipher suites, S1,S2,..."));
                }
                Value::Suites(suites)
            }
            ValueType::Curve => Value::Curve(Curve::from_adc(word).ok_or_else(|| {
                let known: Vec<_> = Curve::ALL.iter().map(|c| c.adc_name()).collect();
                format!("unknown ECC curve '{word}' (known: {})", known.join(", "))
            })?),
            ValueType::CipherRef => Value::Cipher(match CipherSuiteName::from_adc(word) {
                Some(s) => CipherRef::Suite(s),
                None if looks_like_suite(word) => return Err(unknown_suite(word)),
                None => CipherRef::Group(check_name(word, "cipher group name")?.to_string()),
            }),
            ValueType::ClientCert => Value::ClientCert(match word.to_ascii_lowercase().as_str() {
                "mandatory" => ClientCertMode::Mandatory,
                "optional" => ClientCertMode::Optional,
                _ => return Err(format!("{what}: expected MANDATORY or OPTIONAL, found '{word}'")),
            }),
            ValueType::ServerName => {
                let bad =
                    word.is_empty() || word.len() > 253 || word.chars().any(|c| c.is_whitespace() || c.is_control());
                if bad {
                    return Err(format!("{what}: '{}' is not a valid server name", word.escape_debug()));
                }
                Value::Text(word.to_string())
            }
            ValueType::AlpnList => {
                let mut list = Vec::new();
                for proto in word.split(',') {
                    if proto.is_empty() || proto.len() > 255 {
                        return Err(format!(
                            "{what}: '{word}' must be a comma list of names of 1 to 255 bytes"
                        ));
                    }
                    list.push(proto.to_string());
                }
                Value::List(list)
            }
            ValueType::Reneg => Value::Bool(!word.eq_ignore_ascii_case("NO")),
            ValueType::ProxyVersion => Value::ProxyVersion(match word.to_ascii_uppercase().as_str() {
                "V1" => ProxyProtocolVersion::V1,
                "V2" => ProxyProtocolVersion::V2,
                _ => return Err(format!("{what}: expected V1 or V2, found '{word}'")),
            }),
            ValueType::CidrList => {
                let mut list = Vec::new();
                for net in word.split(',') {
                    list.push(net.parse::<Cidr>().map_err(|_| {
                        format!(
                            "{what}: '{}' is not an IP network (ADDR/LEN, comma separated)",
                            net.escape_debug()
                        )
                    })?);
                }
                Value::Cidrs(list)
            }
        })
    }

    /// The value of a flag of this type given twice on one line (`earlier`,
    /// then `later`): a list appends (`-cipherName A -cipherName B` reads
    /// as `A,B`; a cipher suite still appears once), any other value is
    /// the later one. `what` names the flag for errors.
    pub fn repeat(self, earlier: Value, later: Value, what: &str) -> Result<Value, String> {
        Ok(match (earlier, later) {
            (Value::Suites(mut list), Value::Suites(more)) => {
                for s in more {
                    if list.contains(&s) {
                        return Err(format!("{what}: {} listed twice", s.adc_name()));
                    }
                    list.push(s);
                }
                Value::Suites(list)
            }
            (Value::List(mut list), Value::List(more)) => {
                list.extend(more);
                Value::List(list)
            }
            (Value::Cidrs(mut list), Value::Cidrs(more)) => {
                list.extend(more);
                Value::Cidrs(list)
            }
            (_, later) => later,
        })
    }

    /// The word that reads back as `v`; `None` for a bare flag (no value word).
    pub fn print(self, v: &Value) -> Option<String> {
        Some(match (self, v) {
            (ValueType::Presence, _) => return None,
            (ValueType::Switch | ValueType::SwitchOrBare, Value::Bool(b)) => enabled_word(*b).to_string(),
            (ValueType::Reneg, Value::Bool(b)) => if *b { "ALL" } else { "NO" }.to_string(),
            (_, Value::Text(s)) => quote_word(s),
            (_, Value::Path(p)) => quote_word(&p.to_string_lossy()),
            (_, Value::Number(n)) => n.to_string(),
            (_, Value::Bool(b)) => enabled_word(*b).to_string(),
            (_, Value::Ip(ip)) => ip.to_string(),
            (_, Value::Port(p)) => p.to_string(),
            (_, Value::Proto(p)) => p.keyword().to_string(),
            (_, Value::Suite(s)) => s.adc_name().to_string(),
            (_, Value::Suites(list)) => list.iter().map(|s| s.adc_name()).collect::<Vec<_>>().join(","),
            (_, Value::Curve(c)) => c.adc_name().to_string(),
            (_, Value::Cipher(CipherRef::Suite(s))) => s.adc_name().to_string(),
            (_, Value::Cipher(CipherRef::Group(g))) => quote_word(g),
            (_, Value::ClientCert(ClientCertMode::Mandatory)) => "MANDATORY".to_string(),
            (_, Value::ClientCert(ClientCertMode::Optional)) => "OPTIONAL".to_string(),
            (_, Value::List(list)) => quote_word(&list.join(",")),
            (_, Value::ProxyVersion(v)) => v.keyword().to_string(),
            (_, Value::Cidrs(list)) => list.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(","),
        })
    }
}

fn enabled_word(on: bool) -> &'static str {
    if on {
        "ENABLED"
    } else {
        "DISABLED"
    }
}

/// An entity name as written, or why it is not one.
pub fn check_name<'s>(w: &'s str, what: &str) -> Result<&'s str, String> {
    if w.is_empty() {
        Err(format!("empty {what}"))
    } else if w.starts_with('-') {
        Err(format!("missing {what} (found flag '{w}')"))
    } else if w.len() > MAX_NAME_LEN {
        Err(format!("{what} '{w}' is longer than {MAX_NAME_LEN} characters"))
    } else if w.chars().any(|c| c.is_control()) {
        Err(format!("{what} '{}' contains a control character", w.escape_debug()))
    } else {
        Ok(w)
    }
}

fn parse_switch(v: &str, flag: &str) -> Result<bool, String> {
    if v.eq_ignore_ascii_case("ENABLED") {
        Ok(true)
    } else if v.eq_ignore_ascii_case("DISABLED") {
        Ok(false)
    } else {
        Err(format!("{flag}: expected ENABLED or DISABLED, found '{v}'"))
    }
}

fn parse_number(v: &str, what: &str, min: u32, max: u32) -> Result<u32, String> {
    match v.parse::<u64>() {
        Ok(n) if n >= u64::from(min) && n <= u64::from(max) => Ok(n as u32),
        Ok(_) => Err(format!("{what}: {v} is out of range {min}..={max}")),
        Err(_) => Err(format!("{what}: '{v}' is not a number")),
    }
}

fn parse_proto(v: &str) -> Result<BackendProto, String> {
    if v.eq_ignore_ascii_case("TCP") {
        Ok(BackendProto::Tcp)
    } else if v.eq_ignore_ascii_case("SSL_TCP") {
        Ok(BackendProto::SslTcp)
    } else if v.eq_ignore_ascii_case("SSL_BRIDGE") {
        Ok(BackendProto::SslBridge)
    } else {
        Err(format!("bad protocol '{v}': expected TCP, SSL_TCP or SSL_BRIDGE"))
    }
}

fn looks_like_suite(v: &str) -> bool {
    let l = v.to_ascii_lowercase();
    l.starts_with("tls1") || l.starts_with("ssl3")
}

fn unknown_suite(v: &str) -> String {
    format!(
        "unknown cipher '{v}' (known: {})",
        CipherSuiteName::ALL.map(|c| c.adc_name()).join(", ")
    )
}

fn parse_suite(v: &str) -> Result<CipherSuiteName, String> {
    CipherSuiteName::from_adc(v).ok_or_else(|| unknown_suite(v))
}

/// Typed access to a [`Value`]: `None` when the value is of another type.
pub trait FromValue: Sized {
    fn from_value(v: Value) -> Option<Self>;
}

macro_rules! value_conversions {
    ($($t:ty => $variant:ident),* $(,)?) => {
        $(
            impl FromValue for $t {
                fn from_value(v: Value) -> Option<Self> {
                    match v {
                        Value::$variant(x) => Some(x),
                        _ => None,
                    }
                }
            }
            impl From<$t> for Value {
                fn from(x: $t) -> Value {
                    Value::$variant(x)
                }
            }
        )*
    };
}

value_conversions!(
    String => Text,
    PathBuf => Path,
    u32 => Number,
    bool => Bool,
    IpAddr => Ip,
    u16 => Port,
    BackendProto => Proto,
    CipherSuiteName => Suite,
    Vec<CipherSuiteName> => Suites,
    Curve => Curve,
    CipherRef => Cipher,
    ClientCertMode => ClientCert,
    Vec<String> => List,
    ProxyProtocolVersion => ProxyVersion,
    Vec<Cidr> => Cidrs,
);
