//! PROXY protocol to the back end: a back end in the test reads the header
//! with its own parser and checks every field against what the client did
//! (its address and port, the vserver's, SNI, ALPN, TLS version, cipher),
//! for both versions, over IPv4 and IPv6, in front of a plain and a TLS
//! back end; a health probe sends a LOCAL header.
//!
//! PROXY protocol from a load balancer in front: a vserver bound to a net
//! profile with trusted networks takes the client's address from a v1 or
//! v2 header and passes it on; a header from an untrusted source, a
//! malformed, oversized or late one closes the connection and is counted.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use common::*;

/// A header as the test's back end read it.
#[derive(Debug, Default, PartialEq)]
struct Seen {
    /// The v1 line without CRLF, or for v2 the command (`LOCAL`/`PROXY`).
    line: String,
    source: Option<SocketAddr>,
    dest: Option<SocketAddr>,
    tlvs: Vec<(u8, Vec<u8>)>,
}

fn read_exact(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    s.read_exact(&mut b).unwrap();
    b
}

/// Read one PROXY header from `s`, byte-exact (nothing after it).
fn read_header(s: &mut TcpStream) -> Seen {
    let first = read_exact(s, 1);
    if first[0] == b'P' {
        let mut line = first;
        while !line.ends_with(b"\r\n") {
            line.extend(read_exact(s, 1));
            assert!(line.len() <= 107, "v1 header too long: {line:?}");
        }
        let line = String::from_utf8(line[..line.len() - 2].to_vec()).unwrap();
        let w: Vec<&str> = line.split(' ').collect();
        let (source, dest) = if w[1] == "UNKNOWN" {
            (None, None)
        } else {
            let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
            (
                Some(SocketAddr::new(ip(w[2]), w[4].parse().unwrap())),
                Some(SocketAddr::new(ip(w[3]), w[5].parse().unwrap())),
            )
        };
        return Seen {
            line,
            source,
            dest,
            tlvs: vec![],
        };
    }
    let mut fixed = first;
    fixed.extend(read_exact(s, 15));
    assert_eq!(&fixed[..12], b"\r\n\r\n\0\r\nQUIT\n", "v2 signature");
    let len = u16::from_be_bytes([fixed[14], fixed[15]]) as usize;
    let body = read_exact(s, len);
    let line = match fixed[12] {
        0x20 => "LOCAL",
        0x21 => "PROXY",
        other => panic!("version/command byte {other:#x}"),
    }
    .to_string();
    let (source, dest, rest) = match fixed[13] {
        0x00 => (None, None, &body[..]),
        0x11 => {
            let ip = |i: usize| std::net::IpAddr::from([body[i], body[i + 1], body[i + 2], body[i + 3]]);
            let port = |i: usize| u16::from_be_bytes([body[i], body[i + 1]]);
            (
                Some(SocketAddr::new(ip(0), port(8))),
                Some(SocketAddr::new(ip(4), port(10))),
                &body[12..],
            )
        }
        0x21 => {
            let ip = |i: usize| std::net::IpAddr::from(<[u8; 16]>::try_from(&body[i..i + 16]).unwrap());
            let port = |i: usize| u16::from_be_bytes([body[i], body[i + 1]]);
            (
                Some(SocketAddr::new(ip(0), port(32))),
                Some(SocketAddr::new(ip(16), port(34))),
                &body[36..],
            )
        }
        fam => panic!("address family {fam:#x}"),
    };
    Seen {
        line,
        source,
        dest,
        tlvs: tlvs(rest),
    }
}

fn tlvs(mut b: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = vec![];
    while !b.is_empty() {
        let len = u16::from_be_bytes([b[1], b[2]]) as usize;
        out.push((b[0], b[3..3 + len].to_vec()));
        b = &b[3 + len..];
    }
    out
}

fn tlv(seen: &Seen, kind: u8) -> Option<Vec<u8>> {
    seen.tlvs.iter().find(|(k, _)| *k == kind).map(|(_, v)| v.clone())
}

/// A back end on `listener`: for each connection, reads the header, reports
/// it, then echoes (over TLS when `tls` is given).
fn header_backend(listener: TcpListener, tls: Option<Arc<rustls::ServerConfig>>) -> mpsc::Receiver<Seen> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { return };
            let (tx, tls) = (tx.clone(), tls.clone());
            std::thread::spawn(move || {
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let seen = read_header(&mut s);
                let local = seen.line == "LOCAL" || seen.line == "PROXY UNKNOWN";
                let _ = tx.send(seen);
                if local {
                    return;
                }
                let mut buf = [0u8; 4096];
                match tls {
                    None => {
                        while let Ok(n) = s.read(&mut buf) {
                            if n == 0 || s.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                    Some(cfg) => {
                        let conn = rustls::ServerConnection::new(cfg).unwrap();
                        let mut t = rustls::StreamOwned::new(conn, s);
                        while let Ok(n) = t.read(&mut buf) {
                            if n == 0 || t.write_all(&buf[..n]).is_err() {
                                return;
                            }
                            let _ = t.flush();
                        }
                    }
                }
            });
        }
    });
    rx
}

fn listen(ip: &str) -> TcpListener {
    TcpListener::bind(format!("{ip}:0")).unwrap()
}

fn sp(a: SocketAddr) -> String {
    format!("{} {}", a.ip(), a.port())
}

struct Site {
    pki: Pki,
    proxy: Proxy,
    v4: SocketAddr,
    v6: SocketAddr,
    plain: mpsc::Receiver<Seen>,
    tls: mpsc::Receiver<Seen>,
}

/// Two vservers (127.0.0.1 and ::1), one to a plain back end and one to a
/// TLS back end, both bound to a net profile of `version`.
fn site(version: &str) -> Site {
    let pki = Pki::new();
    let (ck, _) = certkey(&pki, "site", &["site.test"]);
    let (bcert, bkey, _) = pki.issue("back", &["back.test"]);
    let plain_l = listen("127.0.0.1");
    let tls_l = listen("127.0.0.1");
    let (plain_addr, tls_addr) = (plain_l.local_addr().unwrap(), tls_l.local_addr().unwrap());
    let plain = header_backend(plain_l, None);
    let tls = header_backend(tls_l, Some(server_config_from(&bcert, &bkey)));
    let (p4, p6) = (free_port(), free_port());
    let config = format!(
        "{ck}add netProfile np -proxyProtocol ENABLED -proxyProtocolVersion {version}\n\
         add service plain {} TCP -netProfile np\n\
         add service secure {} SSL_TCP -netProfile np\n\
         add lb vserver v4 SSL_TCP 127.0.0.1 {p4}\n\
         add lb vserver v6 SSL_TCP ::1 {p6}\n\
         set ssl vserver v4 -alpnProtocols h2,http/1.1\n\
         set ssl vserver v6 -alpnProtocols h2,http/1.1\n\
         bind ssl vserver v4 -certkeyName site\n\
         bind ssl vserver v6 -certkeyName site\n\
         bind lb vserver v4 plain\n\
         bind lb vserver v6 secure\n",
        sp(plain_addr),
        sp(tls_addr),
    );
    let proxy = Proxy::start(&config, 2);
    Site {
        pki,
        proxy,
        v4: lo(p4),
        v6: SocketAddr::new("::1".parse().unwrap(), p6),
        plain,
        tls,
    }
}

/// A client offering ALPN h2, limited to `version` if given.
fn client(
    pki: &Pki,
    to: SocketAddr,
    version: Option<&'static rustls::SupportedProtocolVersion>,
) -> (Client, SocketAddr) {
    let mut cfg = (*client_config(&pki.ca, version)).clone();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let mut c = Client::connect(to, "site.test", Arc::new(cfg)).unwrap();
    let local = c.tls.sock.local_addr().unwrap();
    assert_eq!(c.echo(b"hello").unwrap(), b"hello");
    (c, local)
}

fn iana(c: &Client) -> String {
    let name = c.tls.conn.negotiated_cipher_suite().unwrap().suite().as_str().unwrap();
    match name.strip_prefix("TLS13_") {
        Some(rest) => format!("TLS_{rest}"),
        None => name.to_string(),
    }
}

fn recv(rx: &mpsc::Receiver<Seen>) -> Seen {
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the back end saw no header")
}

#[test]
fn v2_header_carries_the_client_and_its_tls() {
    let s = site("V2");
    let cases = [
        (s.v4, &s.plain, Some(&rustls::version::TLS12), "TLSv1.2"),
        (s.v6, &s.tls, None, "TLSv1.3"),
    ];
    for (to, rx, version, version_name) in cases {
        let (c, local) = client(&s.pki, to, version);
        let seen = recv(rx);
        assert_eq!(seen.line, "PROXY");
        assert_eq!(seen.source, Some(local), "client address and port");
        assert_eq!(seen.dest, Some(to), "vserver address and port");
        assert_eq!(tlv(&seen, 0x01).as_deref(), Some(&b"h2"[..]), "ALPN");
        assert_eq!(tlv(&seen, 0x02).as_deref(), Some(&b"site.test"[..]), "authority (SNI)");
        let ssl = tlv(&seen, 0x20).expect("SSL TLV");
        assert_eq!(ssl[0], 0x01, "PP2_CLIENT_SSL, no client certificate");
        assert_eq!(ssl[1..5], [0, 0, 0, 0], "verify");
        let subs = tlvs(&ssl[5..]);
        let sub = |k: u8| {
            subs.iter()
                .find(|(t, _)| *t == k)
                .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
        };
        assert_eq!(sub(0x21).as_deref(), Some(version_name), "TLS version");
        assert_eq!(sub(0x23), Some(iana(&c)), "cipher");
        assert_eq!(sub(0x22), None, "no client certificate, no CN");
        c.close();
    }
}

#[test]
fn v1_header_for_old_back_ends() {
    let s = site("V1");
    for (to, rx, fam) in [(s.v4, &s.plain, "TCP4"), (s.v6, &s.tls, "TCP6")] {
        let (c, local) = client(&s.pki, to, None);
        let seen = recv(rx);
        assert_eq!(
            seen.line,
            format!("PROXY {fam} {} {} {} {}", local.ip(), to.ip(), local.port(), to.port())
        );
        assert!(seen.tlvs.is_empty());
        c.close();
    }
    drop(s.proxy);
}

#[test]
fn a_net_profile_change_reaches_new_back_end_connections() {
    let s = site("V1");
    let (c, _) = client(&s.pki, s.v4, None);
    assert!(recv(&s.plain).line.starts_with("PROXY TCP4 "));
    let reply = s.proxy.ctl("set netProfile np -proxyProtocolVersion V2").unwrap();
    assert!(reply.contains("service plain") || reply.contains("epoch"), "{reply}");
    // The established connection goes on (R1); a new one carries v2.
    let mut c = c;
    assert_eq!(c.echo(b"still").unwrap(), b"still");
    let (c2, _) = client(&s.pki, s.v4, None);
    assert_eq!(recv(&s.plain).line, "PROXY");
    c.close();
    c2.close();
}

#[test]
fn health_probe_sends_a_local_header() {
    for (version, want) in [("V2", "LOCAL"), ("V1", "PROXY UNKNOWN")] {
        let pki = Pki::new();
        let (ck, _) = certkey(&pki, "site", &["site.test"]);
        // A claimed port nobody listens on yet: the member fails and is probed.
        let back_port = free_port();
        let port = free_port();
        let config = format!(
            "{ck}add netProfile np -proxyProtocol ENABLED -proxyProtocolVersion {version}\n\
             add service dead 127.0.0.1 {back_port} TCP -netProfile np -healthRetries 1 -healthInterval 1\n\
             add lb vserver v SSL_TCP 127.0.0.1 {port}\n\
             bind ssl vserver v -certkeyName site\n\
             bind lb vserver v dead\n"
        );
        let proxy = Proxy::start(&config, 1);
        let _ = Client::connect(lo(port), "site.test", pki.client_config()).map(|mut c| c.echo(b"x"));
        let listener = {
            use socket2::{Domain, Socket, Type};
            let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
            sock.set_reuse_port(true).unwrap();
            sock.bind(&lo(back_port).into()).unwrap();
            sock.listen(16).unwrap();
            TcpListener::from(sock)
        };
        let rx = header_backend(listener, None);
        let seen = recv(&rx);
        assert_eq!(seen.line, want, "{}", proxy.log());
        assert_eq!((seen.source, seen.dest), (None, None));
    }
}

#[test]
fn v2_header_carries_the_client_certificate() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let pki = Pki::new();
    let (ck, _) = certkey(&pki, "site", &["site.test"]);
    let l = listen("127.0.0.1");
    let back = l.local_addr().unwrap();
    let rx = header_backend(l, None);
    let port = free_port();
    let config = format!(
        "{ck}add ssl certKey clients -cert {}\n\
         add netProfile np -proxyProtocol ENABLED -proxyProtocolVersion V2\n\
         add service plain {} TCP -netProfile np\n\
         add lb vserver v SSL_TCP 127.0.0.1 {port}\n\
         set ssl vserver v -clientAuth ENABLED -clientCert MANDATORY\n\
         bind ssl vserver v -certkeyName site\n\
         bind ssl vserver v -certkeyName clients -CA\n\
         bind lb vserver v plain\n",
        p(&pki.ca_file()),
        sp(back),
    );
    let _proxy = Proxy::start(&config, 1);
    let (cert, key, _) = pki.issue("alice", &["alice.client.test"]);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&key).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.cert_der()).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .unwrap();
    let mut c = Client::connect(lo(port), "site.test", Arc::new(cfg)).unwrap();
    assert_eq!(c.echo(b"hi").unwrap(), b"hi");
    let seen = recv(&rx);
    let ssl = tlv(&seen, 0x20).expect("SSL TLV");
    assert_eq!(
        ssl[0],
        0x01 | 0x02 | 0x04,
        "SSL, certificate on this connection and its session"
    );
    assert_eq!(ssl[1..5], [0, 0, 0, 0], "verified");
    let subs = tlvs(&ssl[5..]);
    let cn = subs.iter().find(|(t, _)| *t == 0x22).map(|(_, v)| v.clone());
    assert_eq!(cn.as_deref(), Some(&b"alice.client.test"[..]), "client CN");
    c.close();
}

/// A vserver whose net profile accepts a PROXY header from `trusted`, in
/// front of a plain back end that receives a v2 header; `extra` lines are
/// added to the config.
struct Inbound {
    pki: Pki,
    proxy: Proxy,
    addr: SocketAddr,
    back: mpsc::Receiver<Seen>,
}

fn inbound(trusted: &str, extra: &str) -> Inbound {
    let pki = Pki::new();
    let (ck, _) = certkey(&pki, "site", &["site.test"]);
    let l = listen("127.0.0.1");
    let back_addr = l.local_addr().unwrap();
    let back = header_backend(l, None);
    let port = free_port();
    let config = format!(
        "{ck}add netProfile out -proxyProtocol ENABLED -proxyProtocolVersion V2\n\
         add netProfile in -proxyProtocol ENABLED -proxyProtocolTrustedNetworks {trusted}\n\
         add service plain {} TCP -netProfile out\n\
         add lb vserver v SSL_TCP 127.0.0.1 {port} -netProfile in\n\
         bind ssl vserver v -certkeyName site\n\
         bind lb vserver v plain\n{extra}",
        sp(back_addr),
    );
    Inbound {
        pki,
        proxy: Proxy::start(&config, 2),
        addr: lo(port),
        back,
    }
}

/// A TLS client on a socket that first sent `header`.
fn client_behind(pki: &Pki, to: SocketAddr, header: &[u8]) -> Result<(Client, SocketAddr), String> {
    let mut sock = TcpStream::connect(to).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let local = sock.local_addr().unwrap();
    sock.write_all(header).map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("site.test").unwrap();
    let conn = rustls::ClientConnection::new(pki.client_config(), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).map_err(|e| e.to_string())?;
    }
    let mut c = Client { tls };
    let echoed = c.echo(b"hello").map_err(|e| e.to_string())?;
    assert_eq!(echoed, b"hello");
    Ok((c, local))
}

fn v2_header(source: SocketAddr, dest: SocketAddr) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    match (source.ip(), dest.ip()) {
        (std::net::IpAddr::V4(s), std::net::IpAddr::V4(d)) => {
            h.extend([0x21, 0x11, 0, 12]);
            h.extend(s.octets());
            h.extend(d.octets());
        }
        (std::net::IpAddr::V6(s), std::net::IpAddr::V6(d)) => {
            h.extend([0x21, 0x21, 0, 36]);
            h.extend(s.octets());
            h.extend(d.octets());
        }
        _ => panic!("mixed families"),
    }
    h.extend(source.port().to_be_bytes());
    h.extend(dest.port().to_be_bytes());
    h
}

/// Whether the proxy closed `sock` (EOF or reset) within its read timeout.
fn closed_by_proxy(sock: &mut TcpStream) -> bool {
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match sock.read(&mut buf) {
            Ok(0) => return true,
            // An alert or other bytes: keep reading until the close.
            Ok(_) => continue,
            Err(e) => return !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
        }
    }
}

fn refused_count(proxy: &Proxy) -> u64 {
    entity_total(&proxy.stats(), "vserver", "v", "proxy_header_refused")
}

#[test]
fn inbound_v1_and_v2_headers_give_the_back_end_the_client_address() {
    let s = inbound("127.0.0.1/8", "");
    let v1_source: SocketAddr = "203.0.113.7:5555".parse().unwrap();
    let v1 = format!("PROXY TCP4 203.0.113.7 127.0.0.1 5555 {}\r\n", s.addr.port());
    let (c, _) = client_behind(&s.pki, s.addr, v1.as_bytes()).unwrap();
    assert_eq!(recv(&s.back).source, Some(v1_source), "v1: {}", s.proxy.log());
    c.close();
    let v2_source: SocketAddr = "[2001:db8::7]:6666".parse().unwrap();
    let header = v2_header(v2_source, "[2001:db8::1]:443".parse().unwrap());
    let (c, _) = client_behind(&s.pki, s.addr, &header).unwrap();
    assert_eq!(recv(&s.back).source, Some(v2_source), "v2: {}", s.proxy.log());
    c.close();
    // A LOCAL header (the load balancer's own check) keeps the socket's address.
    let local_header = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00";
    let (c, local) = client_behind(&s.pki, s.addr, local_header).unwrap();
    assert_eq!(recv(&s.back).source, Some(local), "LOCAL");
    c.close();
    assert_eq!(refused_count(&s.proxy), 0);
}

#[test]
fn inbound_header_from_an_untrusted_source_is_refused_and_counted() {
    let s = inbound("10.0.0.0/8", "");
    let header = v2_header("203.0.113.7:5555".parse().unwrap(), s.addr);
    assert!(
        client_behind(&s.pki, s.addr, &header).is_err(),
        "accepted from 127.0.0.1"
    );
    assert!(wait_for(Duration::from_secs(5), || refused_count(&s.proxy) == 1));
    assert!(s.back.try_recv().is_err(), "the back end was reached");
    let (ok, metrics) = shardtls::control::admin::client_request(&s.proxy.admin, "GET", "/metrics", "", None).unwrap();
    assert!(ok);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("shardtls_proxy_header_refused") && l.contains("name=\"v\"") && l.ends_with(" 1")),
        "{metrics}"
    );
    // Trusting the client's network takes effect for new connections.
    s.proxy
        .ctl("set netProfile in -proxyProtocolTrustedNetworks 10.0.0.0/8,127.0.0.0/8")
        .unwrap();
    let (c, _) = client_behind(&s.pki, s.addr, &header).unwrap();
    assert_eq!(recv(&s.back).source, Some("203.0.113.7:5555".parse().unwrap()));
    c.close();
}

#[test]
fn malformed_and_oversized_inbound_headers_are_refused_and_counted() {
    let s = inbound("127.0.0.0/8", "");
    let mut oversized = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\xff\xff".to_vec();
    oversized.extend([0u8; 64]);
    let cases: [&[u8]; 4] = [
        b"PROXY TCP4 not-an-address 127.0.0.1 1 2\r\n",
        &oversized,
        // A ClientHello where the header belongs.
        b"\x16\x03\x01\x00\xc8\x01\x00\x00\xc4\x03\x03",
        b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 443 and far too much text after it to be a v1 line at all\r\n",
    ];
    for (i, bytes) in cases.iter().enumerate() {
        let mut sock = TcpStream::connect(s.addr).unwrap();
        sock.write_all(bytes).unwrap();
        assert!(closed_by_proxy(&mut sock), "case {i} left open");
        assert!(
            wait_for(Duration::from_secs(5), || refused_count(&s.proxy) == i as u64 + 1),
            "case {i}: {}",
            s.proxy.log()
        );
    }
    assert!(s.proxy.log().contains("PROXY header refused"), "{}", s.proxy.log());
    assert!(s.back.try_recv().is_err(), "the back end was reached");
}

#[test]
fn a_truncated_inbound_header_is_closed_at_the_handshake_timeout() {
    let s = inbound("127.0.0.0/8", "set ssl vserver v -handshakeTimeout 1\n");
    let mut stuck = TcpStream::connect(s.addr).unwrap();
    stuck.write_all(b"PROXY TCP4 203.0.113.7").unwrap();
    // A healthy connection beside it is served meanwhile.
    let header = v2_header("203.0.113.9:7777".parse().unwrap(), s.addr);
    let (mut c, _) = client_behind(&s.pki, s.addr, &header).unwrap();
    assert_eq!(recv(&s.back).source, Some("203.0.113.9:7777".parse().unwrap()));
    assert!(closed_by_proxy(&mut stuck), "the truncated header was left open");
    assert!(wait_for(Duration::from_secs(5), || refused_count(&s.proxy) == 1));
    assert_eq!(c.echo(b"still").unwrap(), b"still");
    c.close();
}
