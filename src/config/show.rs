//! Human-readable text for `show` commands.
//!
//! Reads the model only. Certificates are described by their paths,
//! subject, names and validity; key material is never printed. `show
//! stats` is not answered here (the counters live with the shards).

use std::fmt::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use super::apply::CommandError;
use super::command::{ObjectKind, ShowWhat};
use super::commands::write_ssl_params;
use super::model::*;

/// The text answering `show WHAT [NAME]`, or why there is none.
pub fn show(m: &Model, what: ShowWhat, name: Option<&str>) -> Result<String, CommandError> {
    let mut out = String::new();
    let pick = |keys: Vec<&String>, kind: &str| -> Result<Vec<String>, CommandError> {
        match name {
            None => Ok(keys.into_iter().cloned().collect()),
            Some(n) if keys.iter().any(|k| *k == n) => Ok(vec![n.to_string()]),
            Some(n) => Err(CommandError::Unknown(format!("unknown {kind} {n}"))),
        }
    };
    match what {
        ShowWhat::Stats => {
            return Err(CommandError::NotAChange(
                "show stats is answered by the running proxy".into(),
            ))
        }
        ShowWhat::Help => return Ok(super::grammar::help_text()),
        ShowWhat::RunningConfig => return Ok(m.to_commands()),
        ShowWhat::Object(ObjectKind::CertKey) => {
            for n in pick(m.certkeys.keys().collect(), "certKey")? {
                let Some(ck) = m.certkeys.get(&n) else {
                    continue;
                };
                let mat = &ck.material;
                let _ = writeln!(out, "certKey {n}");
                let _ = writeln!(out, "  cert: {}", ck.cert_path.display());
                match &ck.key_path {
                    Some(k) => _ = writeln!(out, "  key: {}", k.display()),
                    None => _ = writeln!(out, "  key: none"),
                }
                let _ = writeln!(out, "  subject: {}", mat.subject);
                let _ = writeln!(out, "  names: {}", mat.dns_names.join(", "));
                let _ = writeln!(
                    out,
                    "  valid: {} .. {}{}",
                    secs(mat.not_before),
                    secs(mat.not_after),
                    if mat.is_expired(SystemTime::now()) {
                        " (EXPIRED)"
                    } else {
                        ""
                    }
                );
                if let Some(ca) = &ck.linked_to {
                    let _ = writeln!(out, "  linked to: {ca}");
                }
                let users: Vec<String> = m.certkey_users(&n).iter().map(|e| e.to_string()).collect();
                let _ = writeln!(out, "  used by: {}", none_if_empty(&users));
            }
        }
        ShowWhat::Object(ObjectKind::CipherGroup) => {
            for n in pick(m.cipher_groups.keys().collect(), "cipher group")? {
                let Some(g) = m.cipher_groups.get(&n) else {
                    continue;
                };
                let suites: Vec<String> = g.suites.iter().map(|s| s.adc_name().to_string()).collect();
                let _ = writeln!(out, "cipher group {n}: {}", none_if_empty(&suites));
            }
        }
        ShowWhat::Object(ObjectKind::Profile) => {
            for n in pick(m.profiles.keys().collect(), "ssl profile")? {
                let Some(p) = m.profiles.get(&n) else {
                    continue;
                };
                let mut params = String::new();
                write_ssl_params(&mut params, &p.params);
                let users: Vec<String> = m.profile_users(&n).iter().map(|e| e.to_string()).collect();
                let _ = writeln!(out, "ssl profile {n}:{params}\n  used by: {}", none_if_empty(&users));
            }
        }
        ShowWhat::Object(ObjectKind::NetProfile) => {
            for n in pick(m.net_profiles.keys().collect(), "netProfile")? {
                let Some(p) = m.net_profiles.get(&n) else {
                    continue;
                };
                let mut header = match p.params.proxy_header() {
                    Some(v) => format!("PROXY protocol {}", v.keyword()),
                    None => "no PROXY protocol".to_string(),
                };
                if let Some(nets) = &p.params.trusted_networks {
                    let nets: Vec<String> = nets.iter().map(|c| c.to_string()).collect();
                    header.push_str(&format!(", accepted from {}", nets.join(",")));
                }
                let users: Vec<String> = m.net_profile_users(&n).iter().map(|e| e.to_string()).collect();
                let _ = writeln!(out, "netProfile {n}: {header}\n  used by: {}", none_if_empty(&users));
            }
        }
        ShowWhat::Object(ObjectKind::Vserver) => {
            for n in pick(m.vservers.keys().collect(), "lb vserver")? {
                let Some(v) = m.vservers.get(&n) else {
                    continue;
                };
                let e = EntityRef::new(EntityKind::Vserver, &n);
                let _ = writeln!(
                    out,
                    "lb vserver {n} {} {} {} epoch {} maxClients {} cltTimeout {}\n  bound: {}",
                    v.proto.keyword(),
                    v.addr,
                    state(v.enabled),
                    m.epochs.get(&e).copied().unwrap_or(0),
                    v.max_clients.map_or("unlimited".to_string(), |c| c.to_string()),
                    v.client_timeout,
                    none_if_empty(&v.targets),
                );
            }
        }
        ShowWhat::Object(ObjectKind::Service) => {
            for n in pick(m.services.keys().collect(), "service")? {
                let Some(s) = m.services.get(&n) else {
                    continue;
                };
                let e = EntityRef::new(EntityKind::Service, &n);
                let _ = writeln!(
                    out,
                    "service {n} {} {} {} epoch {}",
                    s.addr,
                    s.proto.keyword(),
                    state(s.enabled),
                    m.epochs.get(&e).copied().unwrap_or(0)
                );
                if let Some(np) = &s.net_profile {
                    let _ = writeln!(out, "  netProfile: {np}");
                }
                server_auth(&mut out, m, &e);
            }
        }
        ShowWhat::Object(ObjectKind::ServiceGroup) => {
            for n in pick(m.service_groups.keys().collect(), "serviceGroup")? {
                let Some(g) = m.service_groups.get(&n) else {
                    continue;
                };
                let e = EntityRef::new(EntityKind::ServiceGroup, &n);
                let members: Vec<String> = g.members.iter().map(|a| a.to_string()).collect();
                let _ = writeln!(
                    out,
                    "serviceGroup {n} {} {} epoch {}\n  members: {}",
                    g.proto.keyword(),
                    state(g.enabled),
                    m.epochs.get(&e).copied().unwrap_or(0),
                    none_if_empty(&members)
                );
                if let Some(np) = &g.net_profile {
                    let _ = writeln!(out, "  netProfile: {np}");
                }
                server_auth(&mut out, m, &e);
            }
        }
        ShowWhat::Ssl(kind) => {
            let parts: Vec<(&String, &Option<String>, &SslParams, &SslBindings)> = match kind {
                EntityKind::Vserver => m
                    .vservers
                    .values()
                    .map(|v| (&v.name, &v.ssl_profile, &v.params, &v.bindings))
                    .collect(),
                EntityKind::Service => m
                    .services
                    .values()
                    .map(|s| (&s.name, &s.ssl_profile, &s.params, &s.bindings))
                    .collect(),
                EntityKind::ServiceGroup => m
                    .service_groups
                    .values()
                    .map(|g| (&g.name, &g.ssl_profile, &g.params, &g.bindings))
                    .collect(),
            };
            if let Some(n) = name {
                if !parts.iter().any(|(pn, ..)| *pn == n) {
                    return Err(CommandError::Unknown(format!("unknown {} {n}", kind.keyword())));
                }
            }
            for (n, profile, params, b) in parts.into_iter().filter(|(pn, ..)| name.is_none_or(|x| x == *pn)) {
                let prof = profile.as_ref().and_then(|p| m.profiles.get(p)).map(|p| &p.params);
                let eff = params.effective(prof);
                let e = EntityRef::new(kind, n);
                let _ = writeln!(out, "ssl {e} epoch {}", m.epochs.get(&e).copied().unwrap_or(0));
                let _ = writeln!(out, "  profile: {}", profile.as_deref().unwrap_or("none"));
                let _ = writeln!(out, "  effective: {eff:?}");
                for c in &b.certkeys {
                    let flag = if c.ca {
                        " (CA)"
                    } else if c.sni {
                        " (SNI)"
                    } else {
                        ""
                    };
                    let _ = writeln!(out, "  certKey {}{flag}", c.certkey);
                }
                for c in &b.ciphers {
                    let name = match &c.cipher {
                        CipherRef::Group(g) => g.clone(),
                        CipherRef::Suite(s) => s.adc_name().to_string(),
                    };
                    let _ = writeln!(out, "  cipher {name} priority {}", c.priority);
                }
                for c in &b.curves {
                    let _ = writeln!(out, "  curve {}", c.adc_name());
                }
            }
        }
    }
    Ok(out)
}

/// The `serverAuth:` line of an `SSL_TCP` back end; nothing for a TCP one.
fn server_auth(out: &mut String, m: &Model, e: &EntityRef) {
    match m.verifies_server(e) {
        Some(true) => _ = writeln!(out, "  serverAuth: ENABLED"),
        Some(false) => _ = writeln!(out, "  serverAuth: DISABLED (back-end certificate not verified)"),
        None => {}
    }
}

fn state(enabled: bool) -> &'static str {
    if enabled {
        "UP"
    } else {
        "DISABLED"
    }
}

fn secs(t: SystemTime) -> String {
    format!("{}s", t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
}

fn none_if_empty(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testutil::Fixture;

    #[test]
    fn shows_without_key_material() {
        let fx = Fixture::new();
        fx.leaf("a", "a.test");
        let m = fx.model(
            "add ssl certKey a -cert a.crt -key a.key
             add ssl cipher g
             bind ssl cipher g -cipherName TLS1.3-AES128-GCM-SHA256
             add ssl profile p -sessTimeout 60
             add service s 127.0.0.1 9000 SSL_TCP
             add serviceGroup sg TCP
             bind serviceGroup sg 127.0.0.1 9001
             add lb vserver v SSL_TCP 127.0.0.1 8443
             set ssl vserver v -sslProfile p
             bind ssl vserver v -certkeyName a
             bind ssl vserver v -cipherName g
             bind lb vserver v s",
        );
        let ck = show(&m, ShowWhat::Object(ObjectKind::CertKey), Some("a")).unwrap();
        assert!(
            ck.contains("cert: a.crt") && ck.contains("key: a.key") && ck.contains("a.test"),
            "{ck}"
        );
        assert!(ck.contains("used by: vserver v"), "{ck}");
        assert!(!ck.contains("PRIVATE") && !ck.contains("BEGIN"));
        let v = show(&m, ShowWhat::Object(ObjectKind::Vserver), None).unwrap();
        assert!(
            v.contains("lb vserver v SSL_TCP 127.0.0.1:8443 UP epoch 1") && v.contains("bound: s"),
            "{v}"
        );
        let s = show(&m, ShowWhat::Ssl(EntityKind::Vserver), Some("v")).unwrap();
        assert!(
            s.contains("profile: p") && s.contains("sess_timeout: 60") && s.contains("cipher g priority 1"),
            "{s}"
        );
        assert!(show(&m, ShowWhat::Object(ObjectKind::ServiceGroup), None)
            .unwrap()
            .contains("127.0.0.1:9001"));
        assert!(show(&m, ShowWhat::Object(ObjectKind::Service), Some("s"))
            .unwrap()
            .contains("SSL_TCP"));
        assert!(show(&m, ShowWhat::Object(ObjectKind::CipherGroup), None)
            .unwrap()
            .contains("TLS1.3-AES128"));
        assert!(show(&m, ShowWhat::Object(ObjectKind::Profile), None)
            .unwrap()
            .contains("used by: vserver v"));
        assert_eq!(show(&m, ShowWhat::RunningConfig, None).unwrap(), m.to_commands());
        assert_eq!(
            show(&m, ShowWhat::Object(ObjectKind::Service), Some("x")).unwrap_err(),
            CommandError::Unknown("unknown service x".into())
        );
        assert!(show(&m, ShowWhat::Ssl(EntityKind::Service), Some("x")).is_err());
        assert!(show(&m, ShowWhat::Stats, None).is_err());
    }

    #[test]
    fn ssl_back_ends_say_whether_they_verify_the_server() {
        let fx = Fixture::new();
        let m = fx.model(
            "add ssl profile checks -serverAuth ENABLED
             add service open 127.0.0.1 9000 SSL_TCP
             add service own 127.0.0.1 9001 SSL_TCP
             set ssl service own -serverAuth ENABLED
             add service by_profile 127.0.0.1 9002 SSL_TCP
             set ssl service by_profile -sslProfile checks
             add service plain 127.0.0.1 9003 TCP
             add serviceGroup pool SSL_TCP
             add serviceGroup tcp_pool TCP",
        );
        let service = |n: &str| show(&m, ShowWhat::Object(ObjectKind::Service), Some(n)).unwrap();
        let unverified = "  serverAuth: DISABLED (back-end certificate not verified)\n";
        assert!(service("open").ends_with(unverified), "{}", service("open"));
        assert!(
            service("own").ends_with("  serverAuth: ENABLED\n"),
            "{}",
            service("own")
        );
        assert!(service("by_profile").ends_with("  serverAuth: ENABLED\n"));
        assert!(!service("plain").contains("serverAuth"));
        let groups = show(&m, ShowWhat::Object(ObjectKind::ServiceGroup), None).unwrap();
        assert!(
            groups.contains(&format!(
                "serviceGroup pool SSL_TCP UP epoch 1\n  members: none\n{unverified}"
            )),
            "{groups}"
        );
        assert_eq!(groups.matches("serverAuth").count(), 1, "{groups}");
        assert_eq!(
            m.unverified_backends()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["service open", "serviceGroup pool"]
        );
    }
}
