//! Turns one line of the command language into a typed [`Command`].
//!
//! Every parameter is parsed here into its typed value (addresses, enums,
//! numbers checked against their ranges, cipher suites and curves), so a
//! command that parses is well formed. Whether it makes sense against the
//! running configuration (names exist, files load, nothing is bound twice)
//! is checked by `apply`, not here. Keywords and flag names are
//! case-insensitive; entity names are kept exactly as written.
//!
//! [`Command`] also implements `Display`, writing the canonical text that
//! parses back into the same command; `save` and `diff` rely on it.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use super::lexer::{quote_word, split_words};
use super::model::{
    BackendProto, CipherRef, CipherSuiteName, ClientCertMode, Curve, EntityKind, EntityRef, HealthFlags, SslParams,
};

/// Longest entity name accepted, as on the ADC.
pub const MAX_NAME_LEN: usize = 127;

/// Kinds of named object that `rm` removes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    CertKey,
    CipherGroup,
    Profile,
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
    SetProfile {
        name: String,
        params: SslParams,
    },
    /// `add lb vserver V SSL_TCP IP PORT [-maxClients N] [-cltTimeout S]`;
    /// `max_clients` 0 means unlimited.
    AddVserver {
        name: String,
        addr: SocketAddr,
        max_clients: Option<u32>,
        client_timeout: Option<u32>,
    },
    SetLbVserver {
        name: String,
        max_clients: Option<u32>,
        client_timeout: Option<u32>,
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
    },
    AddServiceGroup {
        name: String,
        proto: BackendProto,
        health: HealthFlags,
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

/// Parse one line. `Ok(None)` for a blank or comment-only line.
pub fn parse_line(line: &str) -> Result<Option<Command>, String> {
    let words = split_words(line)?;
    if words.is_empty() {
        return Ok(None);
    }
    parse_words(&words).map(Some)
}

/// Parse a line already split into words (not empty).
pub fn parse_words(words: &[String]) -> Result<Command, String> {
    let mut c = Cursor { words, pos: 0 };
    let verb = c.keyword("a command")?;
    let cmd = match verb.as_str() {
        "add" => parse_add(&mut c)?,
        "update" => {
            c.expect_words(&["ssl", "certkey"], "update")?;
            let name = c.name("certKey name")?;
            let (cert, key) = parse_cert_flags(&mut c, &name)?;
            Command::UpdateCertKey { name, cert, key }
        }
        "link" => {
            c.expect_words(&["ssl", "certkey"], "link")?;
            let name = c.name("certKey name")?;
            let ca = c.name("CA certKey name")?;
            Command::LinkCertKey { name, ca }
        }
        "unlink" => {
            c.expect_words(&["ssl", "certkey"], "unlink")?;
            Command::UnlinkCertKey {
                name: c.name("certKey name")?,
            }
        }
        "rm" => {
            let what = parse_object_kind(&mut c, "rm")?;
            Command::Rm {
                what,
                name: c.name("name")?,
            }
        }
        "bind" | "unbind" => parse_bind(&mut c, verb == "bind")?,
        "set" => parse_set(&mut c)?,
        "disable" | "enable" => {
            let what = parse_object_kind(&mut c, &verb)?;
            let Some(kind) = what.entity_kind() else {
                return Err(format!(
                    "cannot {verb} {}: only lb vserver, service and serviceGroup",
                    what.words()
                ));
            };
            let e = EntityRef::new(kind, &c.name("name")?);
            if verb == "disable" {
                Command::Disable(e)
            } else {
                Command::Enable(e)
            }
        }
        "save" => {
            let w = c.keyword("'ns config' or 'config'")?;
            match w.as_str() {
                "config" => {}
                "ns" => c.expect_words(&["config"], "save ns")?,
                _ => return Err(format!("save: expected 'ns config' or 'config', found '{}'", c.last())),
            }
            Command::Save
        }
        "show" => parse_show(&mut c)?,
        _ => return Err(format!("unknown command '{}'", c.last())),
    };
    c.done()?;
    Ok(cmd)
}

struct Cursor<'a> {
    words: &'a [String],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn next(&mut self) -> Option<&'a str> {
        let w = self.words.get(self.pos)?;
        self.pos += 1;
        Some(w.as_str())
    }
    fn peek(&self) -> Option<&'a str> {
        self.words.get(self.pos).map(|s| s.as_str())
    }
    fn last(&self) -> &'a str {
        self.pos
            .checked_sub(1)
            .and_then(|i| self.words.get(i))
            .map_or("", |s| s.as_str())
    }
    /// Next word, lower-cased, or an error saying `what` was expected.
    fn keyword(&mut self, what: &str) -> Result<String, String> {
        self.next()
            .map(|w| w.to_ascii_lowercase())
            .ok_or_else(|| format!("missing {what}"))
    }
    /// Expect exactly these keywords (given in lower case), in order.
    fn expect_words(&mut self, expected: &[&str], after: &str) -> Result<(), String> {
        for e in expected {
            match self.next() {
                Some(w) if w.eq_ignore_ascii_case(e) => {}
                Some(w) => return Err(format!("{after}: expected '{e}', found '{w}'")),
                None => return Err(format!("{after}: missing '{e}'")),
            }
        }
        Ok(())
    }
    /// A required positional name.
    fn name(&mut self, what: &str) -> Result<String, String> {
        match self.next() {
            None => Err(format!("missing {what}")),
            Some(w) => check_name(w, what).map(str::to_string),
        }
    }
    /// The value of `flag`, which must follow it.
    fn value(&mut self, flag: &str) -> Result<&'a str, String> {
        self.next().ok_or_else(|| format!("missing value for {flag}"))
    }
    /// The next flag (lower-cased, with its original spelling), or `None` at the end.
    fn flag(&mut self) -> Result<Option<(String, &'a str)>, String> {
        match self.next() {
            None => Ok(None),
            Some(w) if w.starts_with('-') && w.len() > 1 => Ok(Some((w.to_ascii_lowercase(), w))),
            Some(w) => Err(format!("unexpected word '{w}' where a -flag was expected")),
        }
    }
    fn done(&self) -> Result<(), String> {
        match self.peek() {
            None => Ok(()),
            Some(w) => Err(format!("unexpected extra word '{w}'")),
        }
    }
}

fn check_name<'s>(w: &'s str, what: &str) -> Result<&'s str, String> {
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

fn parse_object_kind(c: &mut Cursor<'_>, verb: &str) -> Result<ObjectKind, String> {
    let w = c.keyword("what to act on")?;
    Ok(match w.as_str() {
        "ssl" => match c.keyword("'certKey', 'cipher' or 'profile' after 'ssl'")?.as_str() {
            "certkey" => ObjectKind::CertKey,
            "cipher" => ObjectKind::CipherGroup,
            "profile" => ObjectKind::Profile,
            _ => return Err(format!("{verb} ssl: unknown entity '{}'", c.last())),
        },
        "lb" => {
            c.expect_words(&["vserver"], &format!("{verb} lb"))?;
            ObjectKind::Vserver
        }
        "service" => ObjectKind::Service,
        "servicegroup" => ObjectKind::ServiceGroup,
        _ => return Err(format!("{verb}: unknown entity '{}'", c.last())),
    })
}

/// `vserver|service|serviceGroup` after `ssl` in set/bind/unbind.
fn parse_ssl_entity(c: &mut Cursor<'_>, verb: &str) -> Result<EntityRef, String> {
    let kind = match c.keyword("'vserver', 'service' or 'serviceGroup'")?.as_str() {
        "vserver" => EntityKind::Vserver,
        "service" => EntityKind::Service,
        "servicegroup" => EntityKind::ServiceGroup,
        _ => return Err(format!("{verb} ssl: unknown entity '{}'", c.last())),
    };
    Ok(EntityRef::new(kind, &c.name(&format!("{} name", kind.keyword()))?))
}

fn parse_add(c: &mut Cursor<'_>) -> Result<Command, String> {
    let what = parse_object_kind(c, "add")?;
    let name = c.name("name")?;
    Ok(match what {
        ObjectKind::CertKey => {
            let (cert, key) = parse_cert_flags(c, &name)?;
            Command::AddCertKey { name, cert, key }
        }
        ObjectKind::CipherGroup => {
            if CipherSuiteName::from_adc(&name).is_some() {
                return Err(format!("cipher group name '{name}' is the name of a cipher suite"));
            }
            Command::AddCipherGroup { name }
        }
        ObjectKind::Profile => Command::AddProfile {
            name,
            params: parse_ssl_params(c, None)?.0,
        },
        ObjectKind::Vserver => {
            let proto = c.keyword("service type SSL_TCP")?;
            if proto != "ssl_tcp" {
                return Err(format!(
                    "lb vserver {name}: service type '{}' is not supported (only SSL_TCP)",
                    c.last()
                ));
            }
            let addr = parse_addr(c)?;
            let (max_clients, client_timeout) = parse_lb_flags(c)?;
            Command::AddVserver {
                name,
                addr,
                max_clients,
                client_timeout,
            }
        }
        ObjectKind::Service => {
            let ip = parse_ip(c.next().ok_or("missing IP address")?)?;
            // `IP PORT PROTO` as documented, or the ADC's own `IP PROTO PORT`.
            let w = c.next().ok_or("missing port")?;
            let (port, proto) = match parse_proto(w) {
                Ok(proto) => (parse_port(c.next().ok_or("missing port")?)?, proto),
                Err(_) => (
                    parse_port(w)?,
                    parse_proto(c.next().ok_or("missing protocol TCP or SSL_TCP")?)?,
                ),
            };
            Command::AddService {
                name,
                addr: SocketAddr::new(ip, port),
                proto,
                health: parse_health_flags(c)?,
            }
        }
        ObjectKind::ServiceGroup => {
            let proto = parse_proto(c.next().ok_or("missing protocol TCP or SSL_TCP")?)?;
            let health = parse_health_flags(c)?;
            Command::AddServiceGroup { name, proto, health }
        }
    })
}

fn parse_cert_flags(c: &mut Cursor<'_>, name: &str) -> Result<(PathBuf, Option<PathBuf>), String> {
    let mut cert = None;
    let mut key = None;
    while let Some((flag, orig)) = c.flag()? {
        let slot = match flag.as_str() {
            "-cert" => &mut cert,
            "-key" => &mut key,
            _ => {
                return Err(format!(
                    "certKey {name}: unknown flag '{orig}' (expected -cert or -key)"
                ))
            }
        };
        let v = c.value(orig)?;
        if v.is_empty() {
            return Err(format!("certKey {name}: empty path for {orig}"));
        }
        if slot.replace(PathBuf::from(v)).is_some() {
            return Err(format!("certKey {name}: {orig} given twice"));
        }
    }
    let cert = cert.ok_or_else(|| format!("certKey {name}: missing -cert FILE"))?;
    Ok((cert, key))
}

/// `[-healthInterval SECONDS] [-healthRetries N]` after `add service` /
/// `add serviceGroup`.
fn parse_health_flags(c: &mut Cursor<'_>) -> Result<HealthFlags, String> {
    let mut health = HealthFlags::default();
    while let Some((flag, orig)) = c.flag()? {
        match flag.as_str() {
            "-healthinterval" => health.interval = Some(parse_num(c.value(orig)?, orig, 1, 3600)?),
            "-healthretries" => health.retries = Some(parse_num(c.value(orig)?, orig, 1, 100)?),
            _ => {
                return Err(format!(
                    "unknown flag '{orig}' (expected -healthInterval or -healthRetries)"
                ))
            }
        }
    }
    Ok(health)
}

fn write_health_flags(f: &mut fmt::Formatter<'_>, health: &HealthFlags) -> fmt::Result {
    if let Some(s) = health.interval {
        write!(f, " -healthInterval {s}")?;
    }
    if let Some(n) = health.retries {
        write!(f, " -healthRetries {n}")?;
    }
    Ok(())
}

fn parse_lb_flags(c: &mut Cursor<'_>) -> Result<(Option<u32>, Option<u32>), String> {
    let mut max_clients = None;
    let mut timeout = None;
    while let Some((flag, orig)) = c.flag()? {
        match flag.as_str() {
            "-maxclients" => max_clients = Some(parse_num(c.value(orig)?, orig, 0, 4_294_967_294)?),
            "-clttimeout" => timeout = Some(parse_num(c.value(orig)?, orig, 1, 31_536_000)?),
            _ => return Err(format!("unknown flag '{orig}' (expected -maxClients or -cltTimeout)")),
        }
    }
    Ok((max_clients, timeout))
}

fn parse_set(c: &mut Cursor<'_>) -> Result<Command, String> {
    match c.keyword("what to set")?.as_str() {
        "lb" => {
            c.expect_words(&["vserver"], "set lb")?;
            let name = c.name("vserver name")?;
            let (max_clients, client_timeout) = parse_lb_flags(c)?;
            if max_clients.is_none() && client_timeout.is_none() {
                return Err(format!("set lb vserver {name}: nothing to set"));
            }
            Ok(Command::SetLbVserver {
                name,
                max_clients,
                client_timeout,
            })
        }
        "ssl" => {
            let Some(w) = c.peek() else {
                return Err("set ssl: missing entity".into());
            };
            match w.to_ascii_lowercase().as_str() {
                "cipher" => {
                    c.next();
                    let name = c.name("cipher group name")?;
                    let mut suites = Vec::new();
                    while let Some((flag, orig)) = c.flag()? {
                        if flag != "-ciphername" {
                            return Err(format!(
                                "set ssl cipher {name}: unknown flag '{orig}' (expected -cipherName)"
                            ));
                        }
                        for s in c.value(orig)?.split(',').filter(|s| !s.is_empty()) {
                            let suite = parse_suite(s)?;
                            if suites.contains(&suite) {
                                return Err(format!("set ssl cipher {name}: {s} listed twice"));
                            }
                            suites.push(suite);
                        }
                    }
                    if suites.is_empty() {
                        return Err(format!(
                            "set ssl cipher {name}: nothing to set (give -cipherName S1,S2,...)"
                        ));
                    }
                    Ok(Command::SetCipherGroup { name, suites })
                }
                "profile" => {
                    c.next();
                    let name = c.name("profile name")?;
                    let (params, _) = parse_ssl_params(c, None)?;
                    if params == SslParams::default() {
                        return Err(format!("set ssl profile {name}: nothing to set"));
                    }
                    Ok(Command::SetProfile { name, params })
                }
                _ => {
                    let entity = parse_ssl_entity(c, "set")?;
                    let (params, profile) = parse_ssl_params(c, Some(&entity))?;
                    if params == SslParams::default() && profile.is_none() {
                        return Err(format!("set ssl {entity}: nothing to set"));
                    }
                    Ok(Command::SetSsl {
                        entity,
                        params,
                        profile,
                    })
                }
            }
        }
        _ => Err(format!("set: unknown entity '{}'", c.last())),
    }
}

fn parse_bind(c: &mut Cursor<'_>, bind: bool) -> Result<Command, String> {
    let verb = if bind { "bind" } else { "unbind" };
    match c.keyword("what to bind")?.as_str() {
        "lb" => {
            c.expect_words(&["vserver"], &format!("{verb} lb"))?;
            let name = c.name("vserver name")?;
            let target = c.name("service or serviceGroup name")?;
            Ok(if bind {
                Command::BindLbVserver { name, target }
            } else {
                Command::UnbindLbVserver { name, target }
            })
        }
        "servicegroup" => {
            let name = c.name("serviceGroup name")?;
            let addr = parse_addr(c)?;
            Ok(if bind {
                Command::BindServiceGroupMember { name, addr }
            } else {
                Command::UnbindServiceGroupMember { name, addr }
            })
        }
        "ssl" => {
            if c.peek().is_some_and(|w| w.eq_ignore_ascii_case("cipher")) {
                c.next();
                let name = c.name("cipher group name")?;
                let mut suite = None;
                while let Some((flag, orig)) = c.flag()? {
                    if flag != "-ciphername" {
                        return Err(format!(
                            "{verb} ssl cipher {name}: unknown flag '{orig}' (expected -cipherName)"
                        ));
                    }
                    if suite.replace(parse_suite(c.value(orig)?)?).is_some() {
                        return Err(format!("{verb} ssl cipher {name}: -cipherName given twice"));
                    }
                }
                let suite = suite.ok_or_else(|| format!("{verb} ssl cipher {name}: missing -cipherName"))?;
                return Ok(if bind {
                    Command::BindCipherGroup { name, suite }
                } else {
                    Command::UnbindCipherGroup { name, suite }
                });
            }
            let entity = parse_ssl_entity(c, verb)?;
            let b = parse_ssl_bind(c, &entity, verb)?;
            Ok(if bind {
                Command::BindSsl { entity, bind: b }
            } else {
                Command::UnbindSsl { entity, bind: b }
            })
        }
        _ => Err(format!("{verb}: unknown entity '{}'", c.last())),
    }
}

fn parse_ssl_bind(c: &mut Cursor<'_>, entity: &EntityRef, verb: &str) -> Result<SslBind, String> {
    let mut certkey = None;
    let mut sni = false;
    let mut ca = false;
    let mut cipher = None;
    let mut priority = None;
    let mut curve = None;
    while let Some((flag, orig)) = c.flag()? {
        match flag.as_str() {
            "-certkeyname" => certkey = Some(check_name(c.value(orig)?, "certKey name")?.to_string()),
            "-snicert" => sni = true,
            "-ca" => ca = true,
            "-ciphername" => {
                let v = c.value(orig)?;
                cipher = Some(match CipherSuiteName::from_adc(v) {
                    Some(s) => CipherRef::Suite(s),
                    None if looks_like_suite(v) => return Err(unknown_suite(v)),
                    None => CipherRef::Group(check_name(v, "cipher group name")?.to_string()),
                });
            }
            "-cipherpriority" => priority = Some(parse_num(c.value(orig)?, orig, 1, 1000)?),
            "-ecccurvename" => {
                let v = c.value(orig)?;
                curve = Some(Curve::from_adc(v).ok_or_else(|| {
                    let known: Vec<_> = Curve::ALL.iter().map(|c| c.adc_name()).collect();
                    format!("unknown ECC curve '{v}' (known: {})", known.join(", "))
                })?);
            }
            _ => {
                return Err(format!(
                    "{verb} ssl {entity}: unknown flag '{orig}' (expected -certkeyName, -cipherName or -eccCurveName)"
                ))
            }
        }
    }
    let n = certkey.is_some() as u8 + cipher.is_some() as u8 + curve.is_some() as u8;
    if n != 1 {
        return Err(format!(
            "{verb} ssl {entity}: give exactly one of -certkeyName, -cipherName, -eccCurveName"
        ));
    }
    if (sni || ca) && certkey.is_none() {
        return Err(format!("{verb} ssl {entity}: -SNICert and -CA go with -certkeyName"));
    }
    if priority.is_some() && cipher.is_none() {
        return Err(format!("{verb} ssl {entity}: -cipherPriority goes with -cipherName"));
    }
    if sni && ca {
        return Err(format!(
            "{verb} ssl {entity}: a certKey is either -SNICert or -CA, not both"
        ));
    }
    if sni && entity.kind != EntityKind::Vserver {
        return Err(format!("{verb} ssl {entity}: -SNICert applies to vservers only"));
    }
    Ok(if let Some(name) = certkey {
        SslBind::CertKey { name, sni, ca }
    } else if let Some(cipher) = cipher {
        SslBind::Cipher { cipher, priority }
    } else if let Some(curve) = curve {
        SslBind::Curve(curve)
    } else {
        unreachable!("exactly one binding kind was checked above")
    })
}

fn parse_show(c: &mut Cursor<'_>) -> Result<Command, String> {
    let what = match c.keyword("what to show")?.as_str() {
        "stats" => ShowWhat::Stats,
        "ns" => {
            match c.keyword("'runningConfig'")?.as_str() {
                "runningconfig" => {}
                _ => return Err(format!("show ns: expected 'runningConfig', found '{}'", c.last())),
            }
            ShowWhat::RunningConfig
        }
        "ssl" => match c.keyword("entity after 'show ssl'")?.as_str() {
            "certkey" => ShowWhat::Object(ObjectKind::CertKey),
            "cipher" => ShowWhat::Object(ObjectKind::CipherGroup),
            "profile" => ShowWhat::Object(ObjectKind::Profile),
            "vserver" => ShowWhat::Ssl(EntityKind::Vserver),
            "service" => ShowWhat::Ssl(EntityKind::Service),
            "servicegroup" => ShowWhat::Ssl(EntityKind::ServiceGroup),
            _ => return Err(format!("show ssl: unknown entity '{}'", c.last())),
        },
        "lb" => {
            c.expect_words(&["vserver"], "show lb")?;
            ShowWhat::Object(ObjectKind::Vserver)
        }
        "service" => ShowWhat::Object(ObjectKind::Service),
        "servicegroup" => ShowWhat::Object(ObjectKind::ServiceGroup),
        _ => return Err(format!("show: unknown entity '{}'", c.last())),
    };
    let name = match what {
        ShowWhat::Stats | ShowWhat::RunningConfig => None,
        _ => match c.peek() {
            Some(_) => Some(c.name("name")?),
            None => None,
        },
    };
    Ok(Command::Show { what, name })
}

/// Parse SSL parameters up to the end of the line. `entity` is `Some` for
/// `set ssl vserver|service|serviceGroup`, where `-sslProfile P` is allowed too.
fn parse_ssl_params(c: &mut Cursor<'_>, entity: Option<&EntityRef>) -> Result<(SslParams, Option<String>), String> {
    let mut p = SslParams::default();
    let mut profile = None;
    while let Some((flag, orig)) = c.flag()? {
        match flag.as_str() {
            "-tls12" => p.tls12 = Some(parse_enabled(c.value(orig)?, orig)?),
            "-tls13" => p.tls13 = Some(parse_enabled(c.value(orig)?, orig)?),
            "-sessreuse" => p.sess_reuse = Some(parse_enabled(c.value(orig)?, orig)?),
            "-sessionticket" => p.session_ticket = Some(parse_enabled(c.value(orig)?, orig)?),
            "-clientauth" => p.client_auth = Some(parse_enabled(c.value(orig)?, orig)?),
            "-strictsessioncleanup" => p.strict_session_cleanup = Some(parse_enabled(c.value(orig)?, orig)?),
            "-serverauth" => p.server_auth = Some(parse_enabled(c.value(orig)?, orig)?),
            "-snienable" => {
                // A bare `-SNIEnable` means ENABLED.
                let v = match c.peek() {
                    Some(w) if !w.starts_with('-') => {
                        c.next();
                        parse_enabled(w, orig)?
                    }
                    _ => true,
                };
                p.sni_enable = Some(v);
            }
            "-sesstimeout" => p.sess_timeout = Some(parse_num(c.value(orig)?, orig, 1, 604_800)?),
            "-draintimeout" => p.drain_timeout = Some(parse_num(c.value(orig)?, orig, 1, 86_400)?),
            "-handshaketimeout" => p.handshake_timeout = Some(parse_num(c.value(orig)?, orig, 1, 3_600)?),
            "-clientcert" => {
                let v = c.value(orig)?;
                p.client_cert = Some(match v.to_ascii_lowercase().as_str() {
                    "mandatory" => ClientCertMode::Mandatory,
                    "optional" => ClientCertMode::Optional,
                    _ => return Err(format!("{orig}: expected MANDATORY or OPTIONAL, found '{v}'")),
                });
            }
            "-commonname" => {
                let v = c.value(orig)?;
                if v.is_empty() || v.len() > 253 || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(format!("{orig}: '{}' is not a valid server name", v.escape_debug()));
                }
                p.common_name = Some(v.to_string());
            }
            "-alpnprotocols" => {
                let v = c.value(orig)?;
                let mut list = Vec::new();
                for proto in v.split(',') {
                    if proto.is_empty() || proto.len() > 255 {
                        return Err(format!("{orig}: '{v}' must be a comma list of names of 1 to 255 bytes"));
                    }
                    list.push(proto.to_string());
                }
                p.alpn_protocols = Some(list);
            }
            "-denysslreneg" => {
                let v = c.value(orig)?;
                p.deny_ssl_reneg = Some(!v.eq_ignore_ascii_case("NO"));
            }
            "-sslprofile" if entity.is_some() => {
                profile = Some(check_name(c.value(orig)?, "profile name")?.to_string())
            }
            _ => {
                let on = entity.map_or_else(String::new, |e| format!("set ssl {e}: "));
                return Err(format!("{on}unknown SSL parameter '{orig}'"));
            }
        }
    }
    Ok((p, profile))
}

fn parse_enabled(v: &str, flag: &str) -> Result<bool, String> {
    if v.eq_ignore_ascii_case("ENABLED") {
        Ok(true)
    } else if v.eq_ignore_ascii_case("DISABLED") {
        Ok(false)
    } else {
        Err(format!("{flag}: expected ENABLED or DISABLED, found '{v}'"))
    }
}

fn parse_num(v: &str, what: &str, min: u32, max: u32) -> Result<u32, String> {
    match v.parse::<u64>() {
        Ok(n) if n >= u64::from(min) && n <= u64::from(max) => Ok(n as u32),
        Ok(_) => Err(format!("{what}: {v} is out of range {min}..={max}")),
        Err(_) => Err(format!("{what}: '{v}' is not a number")),
    }
}

fn parse_ip(v: &str) -> Result<IpAddr, String> {
    v.parse().map_err(|_| format!("bad IP address '{v}'"))
}

fn parse_port(v: &str) -> Result<u16, String> {
    match v.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
        Ok(_) => Err(format!("bad port '{v}': out of range 1..=65535")),
        Err(_) => Err(format!("bad port '{v}': not a number")),
    }
}

fn parse_addr(c: &mut Cursor<'_>) -> Result<SocketAddr, String> {
    let ip = parse_ip(c.next().ok_or("missing IP address")?)?;
    let port = parse_port(c.next().ok_or("missing port")?)?;
    Ok(SocketAddr::new(ip, port))
}

fn parse_proto(v: &str) -> Result<BackendProto, String> {
    if v.eq_ignore_ascii_case("TCP") {
        Ok(BackendProto::Tcp)
    } else if v.eq_ignore_ascii_case("SSL_TCP") {
        Ok(BackendProto::SslTcp)
    } else {
        Err(format!("bad protocol '{v}': expected TCP or SSL_TCP"))
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

// ---- Canonical text -------------------------------------------------------

fn en(b: bool) -> &'static str {
    if b {
        "ENABLED"
    } else {
        "DISABLED"
    }
}

/// Write the SSL parameters that are set, as ` -flag value` pairs.
pub(crate) fn write_params(f: &mut impl fmt::Write, p: &SslParams) -> fmt::Result {
    let flags: [(&str, Option<bool>); 8] = [
        ("-tls12", p.tls12),
        ("-tls13", p.tls13),
        ("-sessReuse", p.sess_reuse),
        ("-sessionTicket", p.session_ticket),
        ("-clientAuth", p.client_auth),
        ("-SNIEnable", p.sni_enable),
        ("-serverAuth", p.server_auth),
        ("-strictSessionCleanup", p.strict_session_cleanup),
    ];
    for (flag, v) in flags {
        if let Some(v) = v {
            write!(f, " {flag} {}", en(v))?;
        }
    }
    if let Some(v) = p.sess_timeout {
        write!(f, " -sessTimeout {v}")?;
    }
    if let Some(v) = p.client_cert {
        write!(
            f,
            " -clientCert {}",
            if v == ClientCertMode::Mandatory {
                "MANDATORY"
            } else {
                "OPTIONAL"
            }
        )?;
    }
    if let Some(v) = &p.common_name {
        write!(f, " -commonName {}", quote_word(v))?;
    }
    if let Some(v) = &p.alpn_protocols {
        write!(f, " -alpnProtocols {}", quote_word(&v.join(",")))?;
    }
    if let Some(v) = p.deny_ssl_reneg {
        write!(f, " -denySSLReneg {}", if v { "ALL" } else { "NO" })?;
    }
    if let Some(v) = p.drain_timeout {
        write!(f, " -drainTimeout {v}")?;
    }
    if let Some(v) = p.handshake_timeout {
        write!(f, " -handshakeTimeout {v}")?;
    }
    Ok(())
}

fn q(s: &str) -> String {
    quote_word(s)
}

fn qp(p: &std::path::Path) -> String {
    quote_word(&p.to_string_lossy())
}

fn entity_words(e: &EntityRef) -> &'static str {
    ObjectKind::from(e.kind).words()
}

impl fmt::Display for SslBind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SslBind::CertKey { name, sni, ca } => {
                write!(f, "-certkeyName {}", q(name))?;
                if *sni {
                    f.write_str(" -SNICert")?;
                }
                if *ca {
                    f.write_str(" -CA")?;
                }
                Ok(())
            }
            SslBind::Cipher { cipher, priority } => {
                match cipher {
                    CipherRef::Group(g) => write!(f, "-cipherName {}", q(g))?,
                    CipherRef::Suite(s) => write!(f, "-cipherName {}", s.adc_name())?,
                }
                if let Some(p) = priority {
                    write!(f, " -cipherPriority {p}")?;
                }
                Ok(())
            }
            SslBind::Curve(c) => write!(f, "-eccCurveName {}", c.adc_name()),
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::AddCertKey { name, cert, key } | Command::UpdateCertKey { name, cert, key } => {
                let verb = if matches!(self, Command::AddCertKey { .. }) {
                    "add"
                } else {
                    "update"
                };
                write!(f, "{verb} ssl certKey {} -cert {}", q(name), qp(cert))?;
                if let Some(k) = key {
                    write!(f, " -key {}", qp(k))?;
                }
                Ok(())
            }
            Command::LinkCertKey { name, ca } => {
                write!(f, "link ssl certKey {} {}", q(name), q(ca))
            }
            Command::UnlinkCertKey { name } => write!(f, "unlink ssl certKey {}", q(name)),
            Command::AddCipherGroup { name } => write!(f, "add ssl cipher {}", q(name)),
            Command::BindCipherGroup { name, suite } => {
                write!(f, "bind ssl cipher {} -cipherName {}", q(name), suite.adc_name())
            }
            Command::UnbindCipherGroup { name, suite } => {
                write!(f, "unbind ssl cipher {} -cipherName {}", q(name), suite.adc_name())
            }
            Command::SetCipherGroup { name, suites } => {
                let list: Vec<_> = suites.iter().map(|s| s.adc_name()).collect();
                write!(f, "set ssl cipher {} -cipherName {}", q(name), list.join(","))
            }
            Command::AddProfile { name, params } => {
                write!(f, "add ssl profile {}", q(name))?;
                write_params(f, params)
            }
            Command::SetProfile { name, params } => {
                write!(f, "set ssl profile {}", q(name))?;
                write_params(f, params)
            }
            Command::AddVserver {
                name,
                addr,
                max_clients,
                client_timeout,
            } => {
                write!(f, "add lb vserver {} SSL_TCP {} {}", q(name), addr.ip(), addr.port())?;
                write_lb_flags(f, *max_clients, *client_timeout)
            }
            Command::SetLbVserver {
                name,
                max_clients,
                client_timeout,
            } => {
                write!(f, "set lb vserver {}", q(name))?;
                write_lb_flags(f, *max_clients, *client_timeout)
            }
            Command::SetSsl {
                entity,
                params,
                profile,
            } => {
                write!(f, "set ssl {} {}", entity.kind.keyword(), q(&entity.name))?;
                write_params(f, params)?;
                if let Some(p) = profile {
                    write!(f, " -sslProfile {}", q(p))?;
                }
                Ok(())
            }
            Command::BindSsl { entity, bind } => {
                write!(f, "bind ssl {} {} {bind}", entity.kind.keyword(), q(&entity.name))
            }
            Command::UnbindSsl { entity, bind } => {
                write!(f, "unbind ssl {} {} {bind}", entity.kind.keyword(), q(&entity.name))
            }
            Command::BindLbVserver { name, target } => {
                write!(f, "bind lb vserver {} {}", q(name), q(target))
            }
            Command::UnbindLbVserver { name, target } => {
                write!(f, "unbind lb vserver {} {}", q(name), q(target))
            }
            Command::AddService {
                name,
                addr,
                proto,
                health,
            } => {
                write!(
                    f,
                    "add service {} {} {} {}",
                    q(name),
                    addr.ip(),
                    addr.port(),
                    proto.keyword()
                )?;
                write_health_flags(f, health)
            }
            Command::AddServiceGroup { name, proto, health } => {
                write!(f, "add serviceGroup {} {}", q(name), proto.keyword())?;
                write_health_flags(f, health)
            }
            Command::BindServiceGroupMember { name, addr } => {
                write!(f, "bind serviceGroup {} {} {}", q(name), addr.ip(), addr.port())
            }
            Command::UnbindServiceGroupMember { name, addr } => {
                write!(f, "unbind serviceGroup {} {} {}", q(name), addr.ip(), addr.port())
            }
            Command::Disable(e) => write!(f, "disable {} {}", entity_words(e), q(&e.name)),
            Command::Enable(e) => write!(f, "enable {} {}", entity_words(e), q(&e.name)),
            Command::Rm { what, name } => write!(f, "rm {} {}", what.words(), q(name)),
            Command::Save => f.write_str("save ns config"),
            Command::Show { what, name } => {
                match what {
                    ShowWhat::Object(k) => write!(f, "show {}", k.words())?,
                    ShowWhat::Ssl(k) => write!(f, "show ssl {}", k.keyword())?,
                    ShowWhat::Stats => f.write_str("show stats")?,
                    ShowWhat::RunningConfig => f.write_str("show ns runningConfig")?,
                }
                if let Some(n) = name {
                    write!(f, " {}", q(n))?;
                }
                Ok(())
            }
        }
    }
}

fn write_lb_flags(f: &mut fmt::Formatter<'_>, max_clients: Option<u32>, timeout: Option<u32>) -> fmt::Result {
    if let Some(m) = max_clients {
        write!(f, " -maxClients {m}")?;
    }
    if let Some(t) = timeout {
        write!(f, " -cltTimeout {t}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(line: &str) -> Command {
        match parse_line(line) {
            Ok(Some(c)) => c,
            other => panic!("{line}: {other:?}"),
        }
    }

    fn err(line: &str) -> String {
        match parse_line(line) {
            Err(e) => e,
            Ok(c) => panic!("{line}: expected an error, got {c:?}"),
        }
    }

    /// Every command's canonical text parses back into the same command.
    fn round_trip(c: &Command) {
        let text = c.to_string();
        assert_eq!(&p(&text), c, "{text}");
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blank_and_comment_lines() {
        assert_eq!(parse_line("").unwrap(), None);
        assert_eq!(parse_line("   # nothing").unwrap(), None);
    }

    #[test]
    fn certkey_commands() {
        let c = p("add ssl certKey web -cert certs/web.pem -key \"keys/web key.pem\"");
        assert_eq!(
            c,
            Command::AddCertKey {
                name: "web".into(),
                cert: "certs/web.pem".into(),
                key: Some("keys/web key.pem".into())
            }
        );
        round_trip(&c);
        assert_eq!(
            p("ADD SSL CERTKEY ca -CERT /etc/ca.pem"),
            Command::AddCertKey {
                name: "ca".into(),
                cert: "/etc/ca.pem".into(),
                key: None
            }
        );
        round_trip(&p("update ssl certKey web -cert a.pem"));
        assert_eq!(
            p("link ssl certKey web ca"),
            Command::LinkCertKey {
                name: "web".into(),
                ca: "ca".into()
            }
        );
        assert_eq!(
            p("unlink ssl certKey web"),
            Command::UnlinkCertKey { name: "web".into() }
        );
        assert_eq!(
            p("rm ssl certKey web"),
            Command::Rm {
                what: ObjectKind::CertKey,
                name: "web".into()
            }
        );
        assert!(err("add ssl certKey web").contains("missing -cert"));
        assert!(err("add ssl certKey web -cert").contains("missing value for -cert"));
        assert!(err("add ssl certKey web -cert a -cert b").contains("given twice"));
        assert!(err("add ssl certKey web -cert a -inform PEM").contains("unknown flag '-inform'"));
        assert!(err("add ssl certKey -cert a").contains("missing name"));
        assert!(err("link ssl certKey web").contains("missing CA certKey name"));
        assert!(err("unlink ssl certKey a b").contains("unexpected extra word 'b'"));
    }

    #[test]
    fn names_are_case_sensitive_keywords_are_not() {
        assert_eq!(
            p("Add Ssl CertKey WeB -Cert x").to_string(),
            "add ssl certKey WeB -cert x"
        );
        assert!(err(&format!("add ssl cipher {}", "n".repeat(200))).contains("longer than"));
    }

    #[test]
    fn cipher_group_commands() {
        assert_eq!(p("add ssl cipher g1"), Command::AddCipherGroup { name: "g1".into() });
        let c = p("bind ssl cipher g1 -cipherName tls1.3-aes128-gcm-sha256");
        assert_eq!(
            c,
            Command::BindCipherGroup {
                name: "g1".into(),
                suite: CipherSuiteName::Tls13Aes128GcmSha256
            }
        );
        round_trip(&c);
        round_trip(&p(
            "unbind ssl cipher g1 -cipherName TLS1.2-ECDHE-RSA-AES256-GCM-SHA384",
        ));
        let c = p("set ssl cipher g1 -cipherName TLS1.3-AES256-GCM-SHA384,TLS1.3-AES128-GCM-SHA256");
        assert_eq!(
            c,
            Command::SetCipherGroup {
                name: "g1".into(),
                suites: vec![
                    CipherSuiteName::Tls13Aes256GcmSha384,
                    CipherSuiteName::Tls13Aes128GcmSha256
                ]
            }
        );
        round_trip(&c);
        assert_eq!(
            p("rm ssl cipher g1"),
            Command::Rm {
                what: ObjectKind::CipherGroup,
                name: "g1".into()
            }
        );
        let e = err("bind ssl cipher g1 -cipherName RC4-MD5");
        assert!(e.contains("unknown cipher 'RC4-MD5'"), "{e}");
        assert!(err("bind ssl cipher g1").contains("missing -cipherName"));
        assert!(err("add ssl cipher TLS1.3-AES128-GCM-SHA256").contains("name of a cipher suite"));
        assert!(err("set ssl cipher g1").contains("nothing to set"));
        assert!(
            err("set ssl cipher g1 -cipherName TLS1.3-AES128-GCM-SHA256,TLS1.3-AES128-GCM-SHA256").contains("twice")
        );
    }

    #[test]
    fn profile_params() {
        let c = p(
            "add ssl profile fe -tls12 DISABLED -tls13 enabled -sessReuse ENABLED -sessTimeout 600 \
                   -sessionTicket DISABLED -clientAuth ENABLED -clientCert optional -SNIEnable \
                   -serverAuth ENABLED -commonName back.test -alpnProtocols h2,http/1.1 \
                   -denySSLReneg FRONTEND_CLIENT -drainTimeout 30 -handshakeTimeout 5 \
                   -strictSessionCleanup DISABLED",
        );
        let Command::AddProfile { name, params } = &c else {
            panic!("{c:?}")
        };
        assert_eq!(name, "fe");
        assert_eq!(
            *params,
            SslParams {
                tls12: Some(false),
                tls13: Some(true),
                sess_reuse: Some(true),
                sess_timeout: Some(600),
                session_ticket: Some(false),
                client_auth: Some(true),
                client_cert: Some(ClientCertMode::Optional),
                sni_enable: Some(true),
                server_auth: Some(true),
                common_name: Some("back.test".into()),
                alpn_protocols: Some(vec!["h2".into(), "http/1.1".into()]),
                deny_ssl_reneg: Some(true),
                drain_timeout: Some(30),
                strict_session_cleanup: Some(false),
                handshake_timeout: Some(5),
            }
        );
        round_trip(&c);
        let Command::SetProfile { params, .. } = p("set ssl profile fe -SNIEnable DISABLED -denySSLReneg NO") else {
            panic!()
        };
        assert_eq!(params.sni_enable, Some(false));
        assert_eq!(params.deny_ssl_reneg, Some(false));
        let Command::SetProfile { params, .. } = p("set ssl profile fe -SNIEnable -tls12 ENABLED") else {
            panic!()
        };
        assert_eq!((params.sni_enable, params.tls12), (Some(true), Some(true)));
        assert_eq!(
            p("add ssl profile empty"),
            Command::AddProfile {
                name: "empty".into(),
                params: SslParams::default()
            }
        );

        assert!(err("set ssl profile fe").contains("nothing to set"));
        assert!(err("add ssl profile fe -tls12 MAYBE").contains("expected ENABLED or DISABLED, found 'MAYBE'"));
        assert!(err("add ssl profile fe -sessTimeout abc").contains("not a number"));
        assert!(err("add ssl profile fe -sessTimeout 0").contains("out of range"));
        assert!(err("add ssl profile fe -sessTimeout 99999999999999999999").contains("not a number"));
        assert!(err("add ssl profile fe -sessTimeout").contains("missing value for -sessTimeout"));
        assert!(err("add ssl profile fe -clientCert SOMETIMES").contains("MANDATORY or OPTIONAL"));
        assert!(err("add ssl profile fe -alpnProtocols h2,,x").contains("comma list"));
        assert!(err("add ssl profile fe -bogus 1").contains("unknown SSL parameter '-bogus'"));
        assert!(err("add ssl profile fe -sslProfile x").contains("unknown SSL parameter"));
        assert!(err("add ssl profile fe stray").contains("unexpected word 'stray'"));
    }

    #[test]
    fn vserver_commands() {
        let c = p("add lb vserver v1 SSL_TCP 10.0.0.1 443 -maxClients 100 -cltTimeout 60");
        assert_eq!(
            c,
            Command::AddVserver {
                name: "v1".into(),
                addr: addr("10.0.0.1:443"),
                max_clients: Some(100),
                client_timeout: Some(60)
            }
        );
        round_trip(&c);
        round_trip(&p("add lb vserver v6 ssl_tcp ::1 8443"));
        assert_eq!(
            p("set lb vserver v1 -maxClients 0"),
            Command::SetLbVserver {
                name: "v1".into(),
                max_clients: Some(0),
                client_timeout: None
            }
        );
        assert!(err("set lb vserver v1").contains("nothing to set"));
        assert!(err("add lb vserver v1 HTTP 10.0.0.1 80").contains("only SSL_TCP"));
        assert!(err("add lb vserver v1 SSL_TCP 10.0.0.300 443").contains("bad IP address '10.0.0.300'"));
        assert!(err("add lb vserver v1 SSL_TCP 10.0.0.1 70000").contains("bad port '70000'"));
        assert!(err("add lb vserver v1 SSL_TCP 10.0.0.1 0").contains("bad port"));
        assert!(err("add lb vserver v1 SSL_TCP 10.0.0.1").contains("missing port"));
        assert!(err("add lb vserver v1 SSL_TCP 10.0.0.1 443 -cltTimeout 0").contains("out of range"));

        let c = p("set ssl vserver v1 -tls12 DISABLED -sslProfile fe");
        let Command::SetSsl {
            entity,
            params,
            profile,
        } = &c
        else {
            panic!()
        };
        assert_eq!(*entity, EntityRef::new(EntityKind::Vserver, "v1"));
        assert_eq!(params.tls12, Some(false));
        assert_eq!(profile.as_deref(), Some("fe"));
        round_trip(&c);
        assert!(err("set ssl vserver v1").contains("nothing to set"));

        let c = p("bind ssl vserver v1 -certkeyName web -SNICert");
        assert_eq!(
            c,
            Command::BindSsl {
                entity: EntityRef::new(EntityKind::Vserver, "v1"),
                bind: SslBind::CertKey {
                    name: "web".into(),
                    sni: true,
                    ca: false
                }
            }
        );
        round_trip(&c);
        round_trip(&p("unbind ssl vserver v1 -certkeyName ca -CA"));
        let c = p("bind ssl vserver v1 -cipherName mygroup -cipherPriority 2");
        assert_eq!(
            c,
            Command::BindSsl {
                entity: EntityRef::new(EntityKind::Vserver, "v1"),
                bind: SslBind::Cipher {
                    cipher: CipherRef::Group("mygroup".into()),
                    priority: Some(2)
                }
            }
        );
        round_trip(&c);
        let c = p("bind ssl vserver v1 -cipherName TLS1.3-CHACHA20-POLY1305-SHA256");
        assert!(matches!(
            c,
            Command::BindSsl {
                bind: SslBind::Cipher {
                    cipher: CipherRef::Suite(CipherSuiteName::Tls13Chacha20Poly1305Sha256),
                    priority: None
                },
                ..
            }
        ));
        round_trip(&c);
        let c = p("bind ssl vserver v1 -eccCurveName p_256");
        assert!(matches!(
            c,
            Command::BindSsl {
                bind: SslBind::Curve(Curve::P256),
                ..
            }
        ));
        round_trip(&c);
        round_trip(&p("unbind ssl vserver v1 -eccCurveName X25519"));

        assert!(err("bind ssl vserver v1 -eccCurveName P_521").contains("unknown ECC curve 'P_521'"));
        assert!(err("bind ssl vserver v1 -cipherName TLS1.2-RC4").contains("unknown cipher 'TLS1.2-RC4'"));
        assert!(err("bind ssl vserver v1").contains("exactly one"));
        assert!(err("bind ssl vserver v1 -certkeyName a -eccCurveName X25519").contains("exactly one"));
        assert!(err("bind ssl vserver v1 -certkeyName a -SNICert -CA").contains("not both"));
        assert!(err("bind ssl vserver v1 -eccCurveName X25519 -CA").contains("go with -certkeyName"));
        assert!(err("bind ssl vserver v1 -certkeyName a -cipherPriority 1").contains("goes with -cipherName"));
        assert!(err("bind ssl vserver v1 -cipherName g -cipherPriority 0").contains("out of range"));
        assert!(err("bind ssl vserver v1 -certkeyName").contains("missing value"));
        assert!(err("bind ssl vserver v1 -foo").contains("unknown flag '-foo'"));
        assert!(err("bind ssl frob v1 -certkeyName a").contains("unknown entity 'frob'"));

        assert_eq!(
            p("bind lb vserver v1 svc"),
            Command::BindLbVserver {
                name: "v1".into(),
                target: "svc".into()
            }
        );
        round_trip(&p("unbind lb vserver v1 grp"));
        assert!(err("bind lb vserver v1").contains("missing service or serviceGroup name"));
        for verb in ["disable", "enable"] {
            round_trip(&p(&format!("{verb} lb vserver v1")));
        }
        assert_eq!(
            p("rm lb vserver v1"),
            Command::Rm {
                what: ObjectKind::Vserver,
                name: "v1".into()
            }
        );
        assert!(err("disable ssl certKey a").contains("cannot disable"));
    }

    #[test]
    fn service_commands() {
        let c = p("add service s1 192.168.1.5 8443 SSL_TCP");
        assert_eq!(
            c,
            Command::AddService {
                name: "s1".into(),
                addr: addr("192.168.1.5:8443"),
                proto: BackendProto::SslTcp,
                health: HealthFlags::default(),
            }
        );
        round_trip(&c);
        // The ADC's own order: IP PROTOCOL PORT.
        assert_eq!(p("add service s1 192.168.1.5 tcp 80"), {
            Command::AddService {
                name: "s1".into(),
                addr: addr("192.168.1.5:80"),
                proto: BackendProto::Tcp,
                health: HealthFlags::default(),
            }
        });
        assert!(err("add service s1 192.168.1.5 80 UDP").contains("bad protocol 'UDP'"));
        assert!(err("add service s1 192.168.1.5 80").contains("missing protocol"));
        assert!(err("add service s1 host.test 80 TCP").contains("bad IP address 'host.test'"));
        let c = p("set ssl service s1 -serverAuth ENABLED -commonName b.test");
        assert!(matches!(&c, Command::SetSsl { entity, .. } if entity.kind == EntityKind::Service));
        round_trip(&c);
        round_trip(&p("bind ssl service s1 -certkeyName ca -CA"));
        round_trip(&p("unbind ssl service s1 -cipherName TLS1.3-AES128-GCM-SHA256"));
        assert!(err("bind ssl service s1 -certkeyName a -SNICert").contains("vservers only"));
        round_trip(&p("disable service s1"));
        round_trip(&p("enable service s1"));
        round_trip(&p("rm service s1"));
    }

    #[test]
    fn service_group_commands() {
        let c = p("add serviceGroup g TCP");
        assert_eq!(
            c,
            Command::AddServiceGroup {
                name: "g".into(),
                proto: BackendProto::Tcp,
                health: HealthFlags::default(),
            }
        );
        round_trip(&c);
        let c = p("bind serviceGroup g 10.1.1.1 80");
        assert_eq!(
            c,
            Command::BindServiceGroupMember {
                name: "g".into(),
                addr: addr("10.1.1.1:80")
            }
        );
        round_trip(&c);
        round_trip(&p("unbind serviceGroup g 10.1.1.1 80"));
        round_trip(&p("set ssl serviceGroup g -sessReuse DISABLED"));
        round_trip(&p("bind ssl serviceGroup g -eccCurveName P_384"));
        round_trip(&p("unbind ssl servicegroup g -certkeyName c"));
        round_trip(&p("disable serviceGroup g"));
        round_trip(&p("rm serviceGroup g"));
        assert!(err("bind serviceGroup g 10.1.1.1").contains("missing port"));
        assert!(err("add serviceGroup g").contains("missing protocol"));
    }

    #[test]
    fn save_and_show() {
        assert_eq!(p("save ns config"), Command::Save);
        assert_eq!(p("SAVE CONFIG"), Command::Save);
        assert!(p("save config").is_query());
        assert!(err("save ns").contains("missing 'config'"));
        assert!(err("save everything").contains("expected 'ns config'"));
        assert_eq!(
            p("show stats"),
            Command::Show {
                what: ShowWhat::Stats,
                name: None
            }
        );
        assert_eq!(
            p("show ns runningConfig"),
            Command::Show {
                what: ShowWhat::RunningConfig,
                name: None
            }
        );
        assert_eq!(
            p("show ssl certKey web"),
            Command::Show {
                what: ShowWhat::Object(ObjectKind::CertKey),
                name: Some("web".into())
            }
        );
        for line in [
            "show ssl cipher",
            "show ssl profile p",
            "show lb vserver",
            "show ssl vserver v",
            "show service s",
            "show ssl service",
            "show serviceGroup g",
            "show ssl serviceGroup g",
        ] {
            let c = p(line);
            assert!(c.is_query());
            round_trip(&c);
        }
        assert!(err("show stats x").contains("extra word"));
        assert!(err("show frobs").contains("unknown entity"));
        assert!(!p("add ssl cipher g").is_query());
    }

    #[test]
    fn unknown_commands_and_lexer_errors() {
        assert!(err("frobnicate all").contains("unknown command 'frobnicate'"));
        assert!(err("add").contains("missing what to act on"));
        assert!(err("add ssl certKey \"x").contains("unterminated quote"));
        assert!(err("add nothing x").contains("unknown entity 'nothing'"));
    }
}

#[cfg(test)]
mod health_interval_tests {
    use super::*;

    #[test]
    fn health_interval_parses_prints_back_and_is_bounded() {
        let c = parse_line("add service s1 10.0.0.1 80 TCP -healthInterval 30")
            .unwrap()
            .unwrap();
        match &c {
            Command::AddService { health, .. } => assert_eq!(health.interval, Some(30)),
            other => panic!("{other:?}"),
        }
        assert_eq!(c.to_string(), "add service s1 10.0.0.1 80 TCP -healthInterval 30");
        let g = parse_line("add serviceGroup g SSL_TCP -healthInterval 2")
            .unwrap()
            .unwrap();
        assert_eq!(g.to_string(), "add serviceGroup g SSL_TCP -healthInterval 2");
        assert!(parse_line("add service s1 10.0.0.1 80 TCP -healthInterval 0").is_err());
        assert!(parse_line("add service s1 10.0.0.1 80 TCP -healthInterval").is_err());
        assert!(parse_line("add service s1 10.0.0.1 80 TCP -bogus 1").is_err());
        let both = parse_line("add serviceGroup g TCP -healthRetries 5 -healthInterval 2")
            .unwrap()
            .unwrap();
        match &both {
            Command::AddServiceGroup { health, .. } => {
                assert_eq!((health.interval, health.retries), (Some(2), Some(5)))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            both.to_string(),
            "add serviceGroup g TCP -healthInterval 2 -healthRetries 5"
        );
        assert!(parse_line("add service s1 10.0.0.1 80 TCP -healthRetries 0").is_err());
        assert!(parse_line("add service s1 10.0.0.1 80 TCP -healthRetries 101").is_err());
        assert!(parse_line("add service s1 10.0.0.1 80 TCP -healthRetries x").is_err());
        let plain = parse_line("add service s1 10.0.0.1 80 TCP").unwrap().unwrap();
        assert_eq!(plain.to_string(), "add service s1 10.0.0.1 80 TCP");
    }
}
