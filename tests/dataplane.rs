//! End-to-end tests of the data plane: the `shardtls` binary serving real
//! TLS over loopback sockets (two shards unless a test says otherwise), with
//! the built-in back ends behind it.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use shardtls::test_server::TestServerMode;

const SHARDS: usize = 2;

/// A vserver `name` on `port` with certKey `cert` bound, forwarding to `target`.
fn vserver(name: &str, port: u16, cert: &str, target: &str) -> String {
    format!(
        "add lb vserver {name} SSL_TCP 127.0.0.1 {port}\n\
         bind ssl vserver {name} -certkeyName {cert}\n\
         bind lb vserver {name} {target}\n"
    )
}

/// Sum `field` over every shard and epoch of entity (`kind`, `name`).
fn entity_sum(stats: &serde_json::Value, kind: &str, name: &str, field: &str) -> u64 {
    per_shard(stats, kind, name, field).iter().sum()
}

/// `field` of entity (`kind`, `name`) summed over its epochs, one value per shard.
fn per_shard(stats: &serde_json::Value, kind: &str, name: &str, field: &str) -> Vec<u64> {
    let mut out = Vec::new();
    for shard in stats["shards"].as_array().expect("shards array") {
        let mut n = 0;
        for e in shard["core"]["entities"].as_array().into_iter().flatten() {
            if e["kind"].as_str().is_some_and(|k| k.eq_ignore_ascii_case(kind)) && e["name"] == name {
                if let Some(v) = e[field].as_u64() {
                    n += v;
                }
                for ep in e["epochs"].as_array().into_iter().flatten() {
                    n += ep[field].as_u64().unwrap_or(0);
                }
                n += e["older_epochs"][field].as_u64().unwrap_or(0);
            }
        }
        out.push(n);
    }
    out
}

/// Sum of a shard-level counter (`accepted`, `refused`, `backend_failures`) over shards.
fn shard_sum(stats: &serde_json::Value, field: &str) -> u64 {
    stats["shards"]
        .as_array()
        .expect("shards array")
        .iter()
        .map(|s| s[field].as_u64().unwrap_or(0))
        .sum()
}

/// Read until EOF; Ok(true) when the peer ended with close_notify, Ok(false) on a bare EOF.
fn read_to_end_tls(c: &mut Client, out: &mut Vec<u8>) -> Result<bool, BoxError> {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match c.tls.read(&mut buf) {
            Ok(0) => return Ok(true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(false),
            Err(e) => return Err(e.into()),
        }
    }
}

/// A verifier that accepts any server certificate: lets a test see which
/// certificate the proxy chose for names the certificate does not cover.
#[derive(Debug)]
struct AcceptAnyCert;

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &provider().signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &provider().signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        provider().signature_verification_algorithms.supported_schemes()
    }
}

fn accept_any_config() -> Arc<rustls::ClientConfig> {
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert))
            .with_no_client_auth(),
    )
}

fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

// 1. TLS 1.3 and TLS 1.2 clients through the proxy to an echo back end.
#[test]
fn tls13_and_tls12_clients_reach_echo_backend() {
    let s = echo_setup(SHARDS, "");
    let cases = [
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
    ];
    let mut total = 0u64;
    for (version, expect) in cases {
        let cfg = client_config(&s.pki.ca, Some(version));
        for i in 0..10u8 {
            let mut c = Client::connect(s.addr, "site.test", cfg.clone())
                .unwrap_or_else(|e| panic!("{expect:?} connect {i}: {e}\n{}", s.proxy.log()));
            assert_eq!(c.version(), Some(expect));
            let data = payload(1000 + i as usize * 517, i);
            let got = c
                .echo(&data)
                .unwrap_or_else(|e| panic!("{expect:?} echo {i}: {e}\n{}", s.proxy.log()));
            assert_eq!(got, data, "{expect:?} echo {i}");
            // A second exchange on the same connection.
            assert_eq!(c.echo(b"again").unwrap(), b"again");
            c.close();
            total += 1;
        }
    }
    let stats = s.proxy.stats();
    assert_eq!(shard_sum(&stats, "accepted"), total, "{stats:#}");
    assert_eq!(
        entity_sum(&stats, "vserver", "v1", "handshakes_completed"),
        total,
        "{stats:#}"
    );
    // 20 connections spread by SO_REUSEPORT: every shard served some.
    let per = per_shard(&stats, "vserver", "v1", "handshakes_completed");
    assert_eq!(per.len(), SHARDS, "{stats:#}");
    assert!(per.iter().all(|n| *n > 0), "a shard served nothing: {per:?}");
}

// 2. SNI picks the right certificate, and the default one for unknown names.
#[test]
fn sni_selects_certificate() {
    let pki = Pki::new();
    let origin = backend(TestServerMode::Echo);
    let port = free_port();
    let (ck_a, serial_a) = certkey(&pki, "site", &["a.test"]);
    let (ck_b, serial_b) = certkey(&pki, "other", &["b.test", "*.wild.test"]);
    let config = format!(
        "{ck_a}{ck_b}add service web {} TCP\n\
         add lb vserver v1 SSL_TCP 127.0.0.1 {port}\n\
         set ssl vserver v1 -SNIEnable ENABLED\n\
         bind ssl vserver v1 -certkeyName site\n\
         bind ssl vserver v1 -certkeyName other -SNICert\n\
         bind lb vserver v1 web\n",
        origin.local_addr().to_string().replace(':', " ")
    );
    let proxy = Proxy::start(&config, SHARDS);
    let addr = lo(port);
    let verified = pki.client_config();
    for round in 0..3 {
        let mut c = Client::connect(addr, "b.test", verified.clone())
            .unwrap_or_else(|e| panic!("b.test: {e}\n{}", proxy.log()));
        assert_eq!(c.serial(), serial_b, "b.test round {round}");
        assert_eq!(c.echo(b"bbb").unwrap(), b"bbb");
        c.close();

        let c = Client::connect(addr, "x.wild.test", verified.clone())
            .unwrap_or_else(|e| panic!("x.wild.test: {e}\n{}", proxy.log()));
        assert_eq!(c.serial(), serial_b, "wildcard round {round}");
        c.close();

        let mut c = Client::connect(addr, "a.test", verified.clone())
            .unwrap_or_else(|e| panic!("a.test: {e}\n{}", proxy.log()));
        assert_eq!(c.serial(), serial_a, "a.test round {round}");
        assert_eq!(c.echo(b"aaa").unwrap(), b"aaa");
        c.close();
    }
    // Unknown name, and no SNI at all (an IP address as server name): default certificate.
    let any = accept_any_config();
    for sni in ["unknown.test", "127.0.0.1"] {
        let mut c = Client::connect(addr, sni, any.clone()).unwrap_or_else(|e| panic!("{sni}: {e}\n{}", proxy.log()));
        assert_eq!(c.serial(), serial_a, "default certificate for {sni}");
        assert_eq!(c.echo(b"ddd").unwrap(), b"ddd");
        c.close();
    }
    // A verifying client asking for an unknown name gets the default
    // certificate and therefore refuses it.
    assert!(Client::connect(addr, "unknown.test", verified).is_err());
}

/// Lines for an SSL_TCP service `name` at `addr` verified against certKey `ca` as `backend.test`.
fn tls_service(name: &str, addr: SocketAddr, ca: &str) -> String {
    format!(
        "add service {name} {} {} SSL_TCP\n\
         set ssl service {name} -serverAuth ENABLED -commonName backend.test\n\
         bind ssl service {name} -certkeyName {ca} -CA\n",
        addr.ip(),
        addr.port()
    )
}

/// Connect, send, and expect the proxy to close without echoing anything.
fn expect_no_data(addr: SocketAddr, cfg: Arc<rustls::ClientConfig>, what: &str, log: impl Fn() -> String) {
    match Client::connect(addr, "site.test", cfg) {
        Err(_) => {} // closed even before the handshake finished: also no data.
        Ok(mut c) => {
            let _ = c.tls.write_all(b"must not pass");
            let _ = c.tls.flush();
            let mut got = Vec::new();
            let end = read_to_end_tls(&mut c, &mut got);
            assert!(got.is_empty(), "{what}: data came back: {got:?}\n{}", log());
            assert!(
                end.is_ok() || end.as_ref().is_err_and(|e| e.to_string().contains("reset")),
                "{what}: unexpected end {end:?}"
            );
        }
    }
}

// 3. A TLS back end is verified and reached; a wrong certificate fails.
#[test]
fn tls_backend_verified_and_wrong_certificates_refused() {
    let pki = Pki::new();
    let (ck, _) = certkey(&pki, "site", &["site.test"]);
    let ca = pki.ca_file();
    let (good_cert, good_key, _) = pki.issue("backend", &["backend.test"]);
    let (name_cert, name_key, _) = pki.issue("wrongname", &["elsewhere.test"]);
    let other_ca = shardtls::pki::Ca::new("other CA").unwrap();
    let foreign = other_ca.issue(&["backend.test"], 7).unwrap();
    let (foreign_cert, foreign_key) = (pki.path("foreign.pem"), pki.path("foreign.key"));
    std::fs::write(&foreign_cert, foreign.cert_pem).unwrap();
    shardtls::pki::write_private(&foreign_key, foreign.key_pem.as_bytes()).unwrap();

    let good = tls_backend(TestServerMode::Echo, server_config_from(&good_cert, &good_key));
    let badname = tls_backend(TestServerMode::Echo, server_config_from(&name_cert, &name_key));
    let badca = tls_backend(TestServerMode::Echo, server_config_from(&foreign_cert, &foreign_key));
    let (p1, p2, p3) = (free_port(), free_port(), free_port());
    let config = format!(
        "{ck}add ssl certKey ca -cert {}\n{}{}{}{}{}{}",
        p(&ca),
        tls_service("tgood", good.local_addr(), "ca"),
        tls_service("tname", badname.local_addr(), "ca"),
        tls_service("tca", badca.local_addr(), "ca"),
        vserver("vgood", p1, "site", "tgood"),
        vserver("vname", p2, "site", "tname"),
        vserver("vca", p3, "site", "tca"),
    );
    let proxy = Proxy::start(&config, SHARDS);
    let cfg = pki.client_config();

    for i in 0..4u8 {
        let mut c = Client::connect(lo(p1), "site.test", cfg.clone())
            .unwrap_or_else(|e| panic!("connect: {e}\n{}", proxy.log()));
        let data = payload(20_000, i);
        assert_eq!(
            c.echo(&data)
                .unwrap_or_else(|e| panic!("echo via TLS back end: {e}\n{}", proxy.log())),
            data
        );
        c.close();
    }
    assert!(
        good.connections() >= 4,
        "TLS back end saw {} connections",
        good.connections()
    );
    assert!(good.bytes() >= 80_000, "TLS back end received {} bytes", good.bytes());

    let log = || proxy.log();
    for i in 0..3 {
        expect_no_data(lo(p2), cfg.clone(), &format!("certificate for another name #{i}"), log);
        expect_no_data(lo(p3), cfg.clone(), &format!("certificate from another CA #{i}"), log);
    }
    // The wrong back ends were contacted (the proxy really tried) but carried no data.
    assert!(badname.connections() > 0 && badca.connections() > 0);
    assert_eq!(
        badname.bytes() + badca.bytes(),
        0,
        "data reached an unverified back end"
    );
    let stats = proxy.stats();
    assert!(shard_sum(&stats, "backend_failures") >= 6, "{stats:#}");
    assert_eq!(
        entity_sum(&stats, "service", "tname", "handshakes_completed"),
        0,
        "{stats:#}"
    );
    assert_eq!(
        entity_sum(&stats, "service", "tca", "handshakes_completed"),
        0,
        "{stats:#}"
    );
}

// 4. Connections to a TLS back end resume its session.
#[test]
fn tls_backend_sessions_resume() {
    let pki = Pki::new();
    let (ck, _) = certkey(&pki, "site", &["site.test"]);
    let ca = pki.ca_file();
    let (bc, bk, _) = pki.issue("backend", &["backend.test"]);
    let origin = tls_backend(TestServerMode::Echo, server_config_from(&bc, &bk));
    let port = free_port();
    let config = format!(
        "{ck}add ssl certKey ca -cert {}\n{}{}",
        p(&ca),
        tls_service("tlsweb", origin.local_addr(), "ca"),
        vserver("v1", port, "site", "tlsweb"),
    );
    let proxy = Proxy::start(&config, SHARDS);
    let cfg = pki.client_config();
    let n = 10;
    for i in 0..n {
        let mut c = Client::connect(lo(port), "site.test", cfg.clone())
            .unwrap_or_else(|e| panic!("connect {i}: {e}\n{}", proxy.log()));
        assert_eq!(c.echo(b"hello back end").unwrap(), b"hello back end");
        c.close();
        // Let the proxy finish both legs (and store the ticket) before the next one.
        let done = wait_for(Duration::from_secs(2), || {
            entity_sum(&proxy.stats(), "service", "tlsweb", "closed_clean") > i
        });
        assert!(
            done,
            "back-end connection {i} did not close cleanly: {:#}\n{}",
            proxy.stats(),
            proxy.log()
        );
    }
    let stats = proxy.stats();
    let resumed = entity_sum(&stats, "service", "tlsweb", "resumed");
    let completed = entity_sum(&stats, "service", "tlsweb", "handshakes_completed");
    assert_eq!(completed, n, "{stats:#}");
    // Sessions are kept per shard: at most one full handshake per shard.
    assert!(resumed > 0, "no back-end resumption: {stats:#}");
    assert!(
        resumed >= n - SHARDS as u64,
        "only {resumed} of {n} back-end handshakes resumed: {stats:#}"
    );
}

// 5. A failing member is skipped.
#[test]
fn dead_member_is_skipped() {
    let pki = Pki::new();
    let (ck, _) = certkey(&pki, "site", &["site.test"]);
    let live = backend(TestServerMode::Echo);
    let dead = free_port(); // nothing listens there
    let port = free_port();
    let config = format!(
        "{ck}add serviceGroup pool TCP\n\
         bind serviceGroup pool 127.0.0.1 {dead}\n\
         bind serviceGroup pool {} {}\n{}",
        live.local_addr().ip(),
        live.local_addr().port(),
        vserver("v1", port, "site", "pool"),
    );
    let proxy = Proxy::start(&config, SHARDS);
    let cfg = pki.client_config();
    let n = 12;
    for i in 0..n {
        let mut c = Client::connect(lo(port), "site.test", cfg.clone())
            .unwrap_or_else(|e| panic!("connect {i}: {e}\n{}", proxy.log()));
        let data = payload(300, i as u8);
        let got = c
            .echo(&data)
            .unwrap_or_else(|e| panic!("connection {i} failed: {e}\n{}", proxy.log()));
        assert_eq!(got, data);
        c.close();
    }
    assert_eq!(live.connections(), n as u64);
    let stats = proxy.stats();
    // Round robin puts the dead member first for about half the connections.
    assert!(
        shard_sum(&stats, "backend_failures") >= 2,
        "dead member never tried: {stats:#}"
    );
}

// 6. Half-close: the client ends its sending side and still gets every byte back.
#[test]
fn half_close_returns_everything() {
    let pki = Pki::new();
    let (ck, _) = certkey(&pki, "site", &["site.test"]);
    let ca = pki.ca_file();
    let (bc, bk, _) = pki.issue("backend", &["backend.test"]);
    let plain = backend(TestServerMode::Echo);
    let tls = tls_backend(TestServerMode::Echo, server_config_from(&bc, &bk));
    let (p1, p2) = (free_port(), free_port());
    let config = format!(
        "{ck}add ssl certKey ca -cert {}\nadd service web {} {} TCP\n{}{}{}",
        p(&ca),
        plain.local_addr().ip(),
        plain.local_addr().port(),
        tls_service("tlsweb", tls.local_addr(), "ca"),
        vserver("vplain", p1, "site", "web"),
        vserver("vtls", p2, "site", "tlsweb"),
    );
    let proxy = Proxy::start(&config, SHARDS);
    let cfg = pki.client_config();
    for (port, back) in [(p1, "plain back end"), (p2, "TLS back end")] {
        for tcp_shutdown in [false, true] {
            let what = format!("{back}, TCP shutdown {tcp_shutdown}");
            let mut c = Client::connect(lo(port), "site.test", cfg.clone())
                .unwrap_or_else(|e| panic!("{what}: {e}\n{}", proxy.log()));
            let data = payload(64 * 1024, 3);
            c.tls.write_all(&data).unwrap();
            c.tls.conn.send_close_notify();
            c.tls.flush().unwrap();
            while c.tls.conn.wants_write() {
                c.tls.conn.write_tls(&mut c.tls.sock).unwrap();
            }
            if tcp_shutdown {
                c.tls.sock.shutdown(Shutdown::Write).unwrap();
            }
            let mut got = Vec::new();
            let clean = read_to_end_tls(&mut c, &mut got)
                .unwrap_or_else(|e| panic!("{what}: read failed after {} bytes: {e}\n{}", got.len(), proxy.log()));
            assert_eq!(got.len(), data.len(), "{what}: echoed length");
            assert!(got == data, "{what}: echoed bytes differ");
            assert!(clean, "{what}: the proxy ended without close_notify");
        }
    }
}

// 7. A client that sends a lot and never reads cannot stall another connection.
#[test]
fn slow_client_does_not_stall_others() {
    let s = echo_setup(SHARDS, "");
    let cfg = s.pki.client_config();
    // Warm up (first handshakes allocate caches), then take the baseline.
    for _ in 0..4 {
        Client::connect(s.addr, "site.test", cfg.clone()).unwrap().close();
    }
    let rss_before = rss_kib(s.proxy.child.id());

    // Several hogs, so that at least one shares a shard with the probe.
    let stop = Arc::new(AtomicBool::new(false));
    let mut hogs = Vec::new();
    let mut hog_socks = Vec::new();
    let written: Vec<Arc<AtomicU64>> = (0..4).map(|_| Arc::new(AtomicU64::new(0))).collect();
    for w in &written {
        let mut c = Client::connect(s.addr, "site.test", cfg.clone()).unwrap();
        c.tls.sock.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
        hog_socks.push(c.tls.sock.try_clone().unwrap());
        let (stop, w) = (stop.clone(), w.clone());
        hogs.push(std::thread::spawn(move || {
            let chunk = vec![0x5au8; 64 * 1024];
            while !stop.load(Ordering::Relaxed) {
                if c.tls.write_all(&chunk).is_err() || c.tls.flush().is_err() {
                    break;
                }
                w.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
        }));
    }
    // Wait until every hog is stuck: its writes stopped making progress
    // because it reads nothing back (the proxy applies backpressure).
    let mut last: Vec<u64> = written.iter().map(|w| w.load(Ordering::Relaxed)).collect();
    let mut stable_since = Instant::now();
    let stuck = wait_for(Duration::from_secs(8), || {
        let now: Vec<u64> = written.iter().map(|w| w.load(Ordering::Relaxed)).collect();
        if now != last {
            last = now;
            stable_since = Instant::now();
        }
        stable_since.elapsed() > Duration::from_millis(300) && last.iter().all(|n| *n > 0)
    });
    assert!(stuck, "hogs never blocked: {last:?}");
    // Memory per connection is bounded: the proxy did not swallow the
    // streams (what the hogs wrote sits in kernel socket buffers).
    let wrote: u64 = written.iter().map(|w| w.load(Ordering::Relaxed)).sum();
    let grown = rss_kib(s.proxy.child.id()).saturating_sub(rss_before);
    assert!(
        grown < 16 * 1024,
        "proxy RSS grew by {grown} KiB while hogs wrote {wrote} bytes"
    );

    // Also a client that connected and sends nothing, and one stuck mid-ClientHello.
    let _idle = TcpStream::connect(s.addr).unwrap();
    let mut partial = TcpStream::connect(s.addr).unwrap();
    partial.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).unwrap();

    let mut worst = Duration::ZERO;
    for i in 0..5 {
        let t0 = Instant::now();
        let mut c = Client::connect(s.addr, "site.test", cfg.clone())
            .unwrap_or_else(|e| panic!("probe {i}: {e}\n{}", s.proxy.log()));
        for j in 0..10u8 {
            let data = payload(512, j);
            assert_eq!(c.echo(&data).unwrap(), data);
        }
        c.close();
        worst = worst.max(t0.elapsed());
    }
    assert!(
        worst < Duration::from_secs(1),
        "a probe connection took {worst:?} next to stalled clients"
    );

    stop.store(true, Ordering::Relaxed);
    for s in &hog_socks {
        let _ = s.shutdown(Shutdown::Both);
    }
    for h in hogs {
        h.join().unwrap();
    }
}

/// Resident memory of process `pid`, KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

// 8. SIGTERM drains: established connections keep working, new ones are refused, exit 0.
#[test]
fn sigterm_drains_then_exits_zero() {
    let mut s = echo_setup(SHARDS, "");
    let cfg = s.pki.client_config();
    let mut clients: Vec<Client> = (0..4)
        .map(|_| Client::connect(s.addr, "site.test", cfg.clone()).unwrap())
        .collect();
    for c in clients.iter_mut() {
        assert_eq!(c.echo(b"before").unwrap(), b"before");
    }
    unsafe { libc::kill(s.proxy.child.id() as i32, libc::SIGTERM) };

    // New connections are refused once the listeners are gone.
    let refused = wait_for(Duration::from_secs(3), || {
        match TcpStream::connect_timeout(&s.addr, Duration::from_millis(200)) {
            Err(_) => true,
            Ok(sock) => {
                // Accepted by a listener on its way out: it must not be served.
                sock.set_read_timeout(Some(Duration::from_millis(300))).ok();
                drop(sock);
                false
            }
        }
    });
    assert!(refused, "still accepting after SIGTERM\n{}", s.proxy.log());
    assert!(
        Client::connect(s.addr, "site.test", cfg.clone()).is_err(),
        "a new TLS connection succeeded while draining"
    );

    // Established connections keep working for a while.
    std::thread::sleep(Duration::from_millis(300));
    for (i, c) in clients.iter_mut().enumerate() {
        let data = payload(4000, i as u8);
        assert_eq!(
            c.echo(&data)
                .unwrap_or_else(|e| panic!("client {i} after SIGTERM: {e}\n{}", s.proxy.log())),
            data
        );
    }
    assert!(
        s.proxy.child.try_wait().unwrap().is_none(),
        "exited with connections still open"
    );

    // The process exits, with 0, once they close, long before the drain deadline.
    let t0 = Instant::now();
    for c in clients {
        c.close();
    }
    let exited = wait_for(Duration::from_secs(5), || s.proxy.child.try_wait().unwrap().is_some());
    assert!(
        exited,
        "did not exit after the last connection closed\n{}",
        s.proxy.log()
    );
    let status = s.proxy.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "exit status {status}\n{}", s.proxy.log());
    assert!(t0.elapsed() < Duration::from_secs(5));
}

/// Connect `n` times with one client config; returns how many resumed.
fn resume_loop(addr: SocketAddr, cfg: &Arc<rustls::ClientConfig>, n: usize, log: impl Fn() -> String) -> Vec<bool> {
    let mut out = Vec::new();
    for i in 0..n {
        let mut c =
            Client::connect(addr, "site.test", cfg.clone()).unwrap_or_else(|e| panic!("connect {i}: {e}\n{}", log()));
        out.push(c.resumed());
        // Read the tickets sent after the handshake, then close cleanly so
        // the sessions stay valid (R8).
        c.pump_tickets();
        c.close();
    }
    out
}

// 9. A returning client resumes whichever shard it lands on (TLS 1.3 tickets).
#[test]
fn tls13_resumption_on_any_shard() {
    let s = echo_setup(SHARDS, "");
    let cfg = client_config(&s.pki.ca, Some(&rustls::version::TLS13));
    let first = resume_loop(s.addr, &cfg, 1, || s.proxy.log());
    assert_eq!(first, [false]);
    let n = 30;
    let resumed = resume_loop(s.addr, &cfg, n, || s.proxy.log());
    let misses: Vec<usize> = resumed
        .iter()
        .enumerate()
        .filter(|(_, r)| !**r)
        .map(|(i, _)| i)
        .collect();
    let stats = s.proxy.stats();
    assert!(
        misses.is_empty(),
        "connections {misses:?} of {n} did not resume: {stats:#}"
    );
    let per = per_shard(&stats, "vserver", "v1", "resumed");
    assert_eq!(per.iter().sum::<u64>(), n as u64, "{stats:#}");
    assert!(
        per.iter().all(|r| *r > 0),
        "resumptions did not happen on every shard: {per:?}"
    );
}

// 9b. The same for TLS 1.2 (session tickets or IDs).
#[test]
fn tls12_resumption_on_any_shard() {
    let s = echo_setup(SHARDS, "");
    let cfg = client_config(&s.pki.ca, Some(&rustls::version::TLS12));
    assert_eq!(resume_loop(s.addr, &cfg, 1, || s.proxy.log()), [false]);
    let n = 20;
    let resumed = resume_loop(s.addr, &cfg, n, || s.proxy.log());
    let stats = s.proxy.stats();
    let hits = resumed.iter().filter(|r| **r).count();
    assert_eq!(
        hits, n,
        "{hits} of {n} TLS 1.2 connections resumed ({resumed:?}): {stats:#}"
    );
    let per = per_shard(&stats, "vserver", "v1", "resumed");
    assert!(
        per.iter().all(|r| *r > 0),
        "resumptions did not happen on every shard: {per:?}"
    );
}

fn run_check(config: &Path) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_shardtls"))
        .args(["check", "-c"])
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// 10. `shardtls check` accepts a good file and reports FILE:LINE: reason for a bad one.
#[test]
fn check_reports_file_line_reason() {
    let pki = Pki::new();
    let (cert, key, _) = pki.issue("site", &["site.test"]);
    let (_, other_key, _) = pki.issue("other", &["other.test"]);
    let good = format!(
        "# a good configuration\n\
         add ssl certKey site -cert {} -key {}\n\
         add service web 127.0.0.1 9001 TCP\n\
         add lb vserver v1 SSL_TCP 127.0.0.1 {}\n\
         bind ssl vserver v1 -certkeyName site\n\
         bind lb vserver v1 web\n",
        p(&cert),
        p(&key),
        free_port()
    );
    let good_path = pki.path("good.conf");
    std::fs::write(&good_path, &good).unwrap();
    let (code, out, err) = run_check(&good_path);
    assert_eq!(code, Some(0), "good config refused:\n{out}{err}");

    let bad = format!(
        "# line 1: a comment\n\
         add ssl certKey site -cert {cert} -key {key}\n\
         add ssl certKey mismatch -cert {cert} -key {other}\n\
         add service web 127.0.0.1 9001 TCP\n\
         add service bad 300.1.1.1 80 TCP\n\
         add lb vserver v1 SSL_TCP 127.0.0.1 8443\n\
         bind ssl vserver v1 -certkeyName nosuch\n\
         bind ssl vserver v1 -cipherName TLS1.3-AES999-GCM\n\
         add ssl certKey unreadable -cert {missing}\n\
         add service web 127.0.0.1 9002 TCP\n",
        cert = p(&cert),
        key = p(&key),
        other = p(&other_key),
        missing = p(&pki.path("missing.pem")),
    );
    let bad_path = pki.path("bad.conf");
    std::fs::write(&bad_path, &bad).unwrap();
    let (code, out, err) = run_check(&bad_path);
    assert_eq!(code, Some(1), "bad config: exit {code:?}\n{out}{err}");
    let file = p(&bad_path);
    // Each error kind, with words its reason must contain (any of them).
    let expected: [(usize, &[&str]); 6] = [
        (3, &["match"]),
        (5, &["address", "300.1.1.1"]),
        (7, &["nosuch"]),
        (8, &["cipher"]),
        (9, &["read", "missing.pem"]),
        (10, &["exists", "duplicate"]),
    ];
    for (line, words) in expected {
        let prefix = format!("{file}:{line}: ");
        let hit = err.lines().chain(out.lines()).find(|l| l.starts_with(&prefix));
        let hit = hit.unwrap_or_else(|| panic!("no error for line {line} in:\n{out}{err}"));
        let reason = hit[prefix.len()..].to_lowercase();
        assert!(
            words.iter().any(|w| reason.contains(&w.to_lowercase())),
            "line {line}: reason should mention {words:?}: {hit}"
        );
    }
    for line in [1, 2, 4, 6] {
        assert!(
            !err.contains(&format!("{file}:{line}: ")),
            "error reported for good line {line}:\n{err}"
        );
    }
    // Unreadable file itself.
    let (code, _, err) = run_check(&pki.path("no-such.conf"));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no-such.conf"), "{err}");
}

// 12. -maxClients: the connection over the limit is closed, the others keep working.
#[test]
fn max_clients_refuses_extra_connection() {
    let s = echo_setup(1, " -maxClients 2");
    let cfg = s.pki.client_config();
    let mut a = Client::connect(s.addr, "site.test", cfg.clone()).unwrap();
    let mut b = Client::connect(s.addr, "site.test", cfg.clone()).unwrap();
    assert_eq!(a.echo(b"a1").unwrap(), b"a1");
    assert_eq!(b.echo(b"b1").unwrap(), b"b1");

    let t0 = Instant::now();
    let third = Client::connect(s.addr, "site.test", cfg.clone()).and_then(|mut c| c.echo(b"c1"));
    assert!(third.is_err(), "third concurrent connection was served: {third:?}");
    // Closed at once, not left hanging until the client's own timeout.
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "third connection hung for {:?}: {third:?}",
        t0.elapsed()
    );

    assert_eq!(a.echo(b"a2").unwrap(), b"a2");
    assert_eq!(b.echo(b"b2").unwrap(), b"b2");
    let stats = s.proxy.stats();
    assert!(shard_sum(&stats, "refused") >= 1, "{stats:#}");

    // Once one closes, a new connection gets its place.
    a.close();
    let ok = wait_for(Duration::from_secs(3), || {
        Client::connect(s.addr, "site.test", cfg.clone())
            .and_then(|mut c| c.echo(b"d1"))
            .is_ok_and(|d| d == b"d1")
    });
    assert!(ok, "no connection accepted after one closed\n{}", s.proxy.log());
    assert_eq!(b.echo(b"b3").unwrap(), b"b3");
    b.close();
}
