//! Parsing and printing of every command, through the command table.

#![cfg(test)]

use std::net::SocketAddr;

use super::command::*;
use super::grammar::parse_line;
use super::model::*;

mod cases {
    use super::*;

    fn p(line: &str) -> Command {
        match parse_line(line) {
            Ok(Some(c)) => c,
            other => panic!("{line}: {other:?}"),
        }
    }

    fn err(line: &str) -> String {
        match parse_line(line) {
            Err(e) => e.to_string(),
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
        assert!(err("add ssl certKey web -cert a -inform PEM").contains("unknown flag '-inform'"));
        assert!(err("add ssl certKey -cert a").contains("missing name"));
        assert!(err("link ssl certKey web").contains("missing CA certKey name"));
        assert!(err("unlink ssl certKey a b").contains("unexpected extra word 'b'"));
    }

    /// A flag given twice: a list appends, any other value is the last one
    /// given (as configurations written for the ADC rely on).
    #[test]
    fn repeated_flags_append_lists_and_otherwise_take_the_last() {
        assert_eq!(
            p("set ssl cipher G -cipherName TLS1.3-AES256-GCM-SHA384 -cipherName TLS1.3-AES128-GCM-SHA256"),
            Command::SetCipherGroup {
                name: "G".into(),
                suites: vec![
                    CipherSuiteName::Tls13Aes256GcmSha384,
                    CipherSuiteName::Tls13Aes128GcmSha256
                ]
            }
        );
        let e = err("set ssl cipher G -cipherName TLS1.3-AES128-GCM-SHA256 -cipherName TLS1.3-AES128-GCM-SHA256");
        assert!(e.contains("listed twice"), "{e}");
        assert_eq!(
            p("set ssl vserver v -tls12 ENABLED -tls12 DISABLED"),
            p("set ssl vserver v -tls12 DISABLED")
        );
        assert_eq!(
            p("add ssl certKey web -cert a -cert b"),
            p("add ssl certKey web -cert b")
        );
        assert_eq!(
            p("bind ssl serviceGroup g -certkeyName ca -CA -CA"),
            p("bind ssl serviceGroup g -certkeyName ca -CA")
        );
        assert_eq!(
            p("add ssl profile fe -alpnProtocols h2 -alpnProtocols http/1.1"),
            p("add ssl profile fe -alpnProtocols h2,http/1.1")
        );
        // The repeated value is still checked.
        assert!(err("set ssl vserver v -tls12 ENABLED -tls12 maybe").contains("expected ENABLED or DISABLED"));
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
                strict_sni: None,
                server_auth: Some(true),
                common_name: Some("back.test".into()),
                alpn_protocols: Some(vec!["h2".into(), "http/1.1".into()]),
                deny_ssl_reneg: Some(true),
                drain_timeout: Some(30),
                strict_session_cleanup: Some(false),
                handshake_timeout: Some(5),
                tls13_session_tickets: None,
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
                proto: BackendProto::SslTcp,
                addr: addr("10.0.0.1:443"),
                max_clients: Some(100),
                client_timeout: Some(60),
                net_profile: None,
            }
        );
        round_trip(&c);
        assert_eq!(
            p("set lb vserver v1 -maxClients 0"),
            Command::SetLbVserver {
                name: "v1".into(),
                max_clients: Some(0),
                client_timeout: None,
                net_profile: None,
            }
        );
        let c = p("set lb vserver v1 -netProfile front");
        assert_eq!(
            c,
            Command::SetLbVserver {
                name: "v1".into(),
                max_clients: None,
                client_timeout: None,
                net_profile: Some("front".into()),
            }
        );
        round_trip(&c);
        let c = p("add netProfile front -proxyProtocol ENABLED -proxyProtocolTrustedNetworks 10.0.0.0/8,::1");
        round_trip(&c);
        assert!(err("add netProfile front -proxyProtocolTrustedNetworks 10.0.0.0/33").contains("not an IP network"));
        assert!(err("add netProfile front -proxyProtocolTrustedNetworks 10.0.0.0/8,").contains("not an IP network"));
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
                net_profile: None,
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
                net_profile: None,
            }
        });
        assert!(err("add service s1 192.168.1.5 80 UDP").contains("bad protocol 'UDP'"));
        assert!(err("add service s1 192.168.1.5 80").contains("missing protocol"));
        assert!(err("add service s1 host.test 80 TCP").contains("bad IP address 'host.test'"));
        // In the ADC's order the arguments read: the error is the flag's, not the port's.
        let e = err("add service s 10.0.0.1 SSL_TCP 443 -healthRetry 3");
        assert!(e.contains("unknown flag '-healthRetry'"), "{e}");
        let e = err("add service s 10.0.0.1 TCP 99999");
        assert!(e.contains("bad port '99999': out of range"), "{e}");
        let e = err("add service s 10.0.0.1 443 SSL_TCP -healthRetry 3");
        assert!(e.contains("unknown flag '-healthRetry'"), "{e}");
        let c = p("set ssl service s1 -serverAuth ENABLED -commonName b.test");
        assert!(matches!(&c, Command::SetSsl { entity, .. } if entity.kind == EntityKind::Service));
        round_trip(&c);
        assert!(err("bind ssl service s1 -certkeyName a -SNICert").contains("vservers only"));
    }

    #[test]
    fn net_profile_commands() {
        for line in [
            "add netProfile np -proxyProtocol ENABLED -proxyProtocolVersion V2",
            "set netProfile np -proxyProtocolVersion V1",
            "add service s1 10.0.0.1 443 SSL_TCP -netProfile np",
            "add serviceGroup g TCP -netProfile np",
            "set service s1 -netProfile np",
            "set serviceGroup g -netProfile np",
            "rm netProfile np",
            "show netProfile np",
        ] {
            round_trip(&p(line));
        }
        let e = err("add netProfile np -proxyProtocolVersion V3");
        assert!(e.contains("expected V1 or V2"), "{e}");
        assert!(err("set netProfile np").contains("np"));
        assert!(err("set service s1").contains("s1"));
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
                net_profile: None,
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

mod tls13_tickets_flag {
    use super::*;

    #[test]
    fn parses_in_range_prints_back_and_layers_over_the_profile() {
        let Ok(Some(Command::SetSsl { params, .. })) =
            parse_line("set ssl vserver v -tls13sessionticketsperauthcontext 4")
        else {
            panic!("does not parse")
        };
        assert_eq!(params.tls13_session_tickets, Some(4));
        let printed = parse_line("set ssl vserver v -tls13SessionTicketsPerAuthContext 4")
            .unwrap()
            .unwrap()
            .to_string();
        assert_eq!(printed, "set ssl vserver v -tls13SessionTicketsPerAuthContext 4");
        let e = parse_line("add ssl profile p -tls13SessionTicketsPerAuthContext 11")
            .unwrap_err()
            .to_string();
        assert!(e.contains("out of range 1..=10"), "{e}");
        assert_eq!(SslParams::default().effective(None).tls13_session_tickets, 2);
        let profile = SslParams {
            tls13_session_tickets: Some(1),
            ..Default::default()
        };
        assert_eq!(SslParams::default().effective(Some(&profile)).tls13_session_tickets, 1);
    }
}

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
