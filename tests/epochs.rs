//! End-to-end tests of the cleanup contract (DESIGN.md section 2), one or
//! more per rule, over real loopback sockets with two shards. Each rule's
//! test carries a control that shows the rule is not vacuous.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rustls::pki_types::ServerName;
use serde_json::Value;
use shardtls::test_server::{TestServerHandle, TestServerMode};

const SNI: &str = "site.test";

struct Rig {
    pki: Pki,
    proxy: Proxy,
    v1: SocketAddr,
    v2: SocketAddr,
    _echo: TestServerHandle,
}

/// v1 serves certKey `site`, v2 serves certKey `other`; both echo; two shards.
fn rig(extra: &str) -> Rig {
    rig_on(extra, 2)
}

fn rig_on(extra: &str, shards: usize) -> Rig {
    let pki = Pki::new();
    let (c1, k1, _) = pki.issue("site", &[SNI]);
    let (c2, k2, _) = pki.issue("other", &[SNI]);
    let echo = backend(TestServerMode::Echo);
    let (p1, p2) = (free_port(), free_port());
    let config = format!(
        "add ssl certKey site -cert {} -key {}\n\
         add ssl certKey other -cert {} -key {}\n\
         add service web {} {} TCP\n\
         add lb vserver v1 SSL_TCP 127.0.0.1 {p1}\n\
         bind ssl vserver v1 -certkeyName site\n\
         bind lb vserver v1 web\n\
         add lb vserver v2 SSL_TCP 127.0.0.1 {p2}\n\
         bind ssl vserver v2 -certkeyName other\n\
         bind lb vserver v2 web\n{extra}",
        c1.display(),
        k1.display(),
        c2.display(),
        k2.display(),
        echo.local_addr().ip(),
        echo.local_addr().port()
    );
    let proxy = Proxy::start(&config, shards);
    Rig {
        pki,
        proxy,
        v1: format!("127.0.0.1:{p1}").parse().unwrap(),
        v2: format!("127.0.0.1:{p2}").parse().unwrap(),
        _echo: echo,
    }
}

impl Rig {
    /// Rotate `site` to a new certificate; returns the new serial.
    fn rotate(&self, file: &str) -> String {
        let (c, k, serial) = self.pki.issue(file, &[SNI]);
        self.proxy
            .ctl(&format!(
                "update ssl certKey site -cert {} -key {}",
                c.display(),
                k.display()
            ))
            .unwrap_or_else(|e| panic!("rotation refused: {e}"));
        serial
    }

    fn connect(&self, addr: SocketAddr, cfg: &Arc<rustls::ClientConfig>) -> Client {
        Client::connect(addr, SNI, cfg.clone()).unwrap_or_else(|e| panic!("connect {addr}: {e}"))
    }
}

/// Every epoch line of an entity on every shard, plus its folded history.
fn epochs<'a>(stats: &'a Value, kind: &str, name: &str) -> Vec<&'a Value> {
    epoch_lines(stats, kind, name)
}

/// A counter summed over shards for one epoch.
fn at_epoch(stats: &Value, kind: &str, name: &str, epoch: u64, field: &str) -> u64 {
    epochs(stats, kind, name)
        .iter()
        .filter(|e| e["epoch"].as_u64() == Some(epoch))
        .map(|e| e[field].as_u64().unwrap_or(0))
        .sum()
}

fn current_epoch(stats: &Value, kind: &str, name: &str) -> u64 {
    let mut max = 0;
    for shard in stats["shards"].as_array().into_iter().flatten() {
        for e in shard["core"]["entities"].as_array().into_iter().flatten() {
            if e["kind"] == kind && e["name"] == name {
                max = max.max(e["current_epoch"].as_u64().unwrap_or(0));
            }
        }
    }
    max
}

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// Whether the peer closed `c` (EOF, close_notify or reset) within `limit`.
fn closed_within(c: &mut Client, limit: Duration) -> bool {
    c.tls.sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let t0 = Instant::now();
    let mut buf = [0u8; 64];
    while t0.elapsed() < limit {
        match c.tls.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return true,
        }
    }
    false
}

/// A connection that ended its handshake (the client sent its Finished).
fn resumed_client(rig: &Rig, cfg: &Arc<rustls::ClientConfig>) -> Client {
    let mut c = rig.connect(rig.v1, cfg);
    c.pump_tickets();
    c
}

#[test]
fn r1_established_connection_keeps_its_epoch_and_new_ones_get_the_new_one() {
    let rig = rig("");
    let cfg = rig.pki.client_config();
    let mut old = rig.connect(rig.v1, &cfg);
    let old_serial = old.serial();
    assert_eq!(old.echo(b"before").unwrap(), b"before");
    let new_serial = rig.rotate("site-2");
    assert_ne!(old_serial, new_serial);
    // R1: the established connection runs on, on its old certificate.
    for _ in 0..5 {
        assert_eq!(old.echo(b"after the change").unwrap(), b"after the change");
    }
    assert_eq!(old.serial(), old_serial);
    // Control: a new connection does see the change.
    let fresh = rig.connect(rig.v1, &cfg);
    assert_eq!(fresh.serial(), new_serial);
    let stats = rig.proxy.stats();
    assert_eq!(current_epoch(&stats, "vserver", "v1"), 2);
    assert!(
        at_epoch(&stats, "vserver", "v1", 1, "live") >= 1,
        "old epoch still has its connection"
    );
    old.close();
    fresh.close();
}

/// What the R2 tests do with a handshake left half way.
impl HalfHandshake {
    /// Whether the server closed the socket within `limit`.
    fn closed_within(&mut self, limit: Duration) -> bool {
        self.sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let t0 = Instant::now();
        let mut buf = [0u8; 4096];
        while t0.elapsed() < limit {
            match self.sock.read(&mut buf) {
                Ok(0) => return true,
                Ok(n) => self.flight.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return true,
            }
        }
        false
    }

    /// Finish the handshake and echo through the connection.
    fn finish_and_echo(mut self) -> String {
        let mut flight = &self.flight[..];
        while !flight.is_empty() {
            self.conn.read_tls(&mut flight).unwrap();
            self.conn.process_new_packets().unwrap();
        }
        self.sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut tls = rustls::StreamOwned::new(self.conn, self.sock);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock).unwrap();
        }
        tls.write_all(b"late").unwrap();
        let mut out = [0u8; 4];
        tls.read_exact(&mut out).unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }
}

#[test]
fn r2_mid_handshake_connections_are_killed_and_unaffected_ones_survive() {
    let rig = rig("");
    let cfg = rig.pki.client_config();
    let mut affected = half_handshake(rig.v1, SNI, &cfg);
    let mut control = half_handshake(rig.v2, SNI, &cfg);
    let reply = rig.proxy.ctl(&{
        let (c, k, _) = rig.pki.issue("site-2", &[SNI]);
        format!("update ssl certKey site -cert {} -key {}", c.display(), k.display())
    });
    let reply = reply.unwrap();
    assert!(reply.contains("handshakes killed: 1"), "{reply}");
    assert!(
        affected.closed_within(Duration::from_secs(2)),
        "the mid-handshake connection on v1 was closed"
    );
    // Control: v2 does not use `site`; its half-finished handshake completes.
    assert!(!control.closed_within(Duration::from_millis(300)));
    assert_eq!(control.finish_and_echo(), "late");
    let stats = rig.proxy.stats();
    assert_eq!(at_epoch(&stats, "vserver", "v1", 1, "killed"), 1);
    assert_eq!(total(&stats, "vserver", "v2", "killed"), 0);
}

#[test]
fn r2_accepted_connection_without_a_byte_handshakes_under_the_new_epoch() {
    let rig = rig("");
    let cfg = rig.pki.client_config();
    let sock = TcpStream::connect(rig.v1).unwrap();
    // Accepted by a shard, nothing sent: open and bound to no epoch yet.
    assert!(
        wait_until(Duration::from_secs(10), || entity_total(
            &rig.proxy.stats(),
            "vserver",
            "v1",
            "unbound"
        ) == 1),
        "the connection was not accepted: {:#}",
        rig.proxy.stats()
    );
    let new_serial = rig.rotate("site-2");
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let conn = rustls::ClientConnection::new(cfg, ServerName::try_from(SNI).unwrap()).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).unwrap();
    }
    let c = Client { tls };
    assert_eq!(c.serial(), new_serial);
}

#[test]
fn r3_no_session_from_before_a_change_resumes() {
    let rig = rig("");
    // Control: with no change, the session resumes.
    let cfg = rig.pki.client_config();
    resumed_client(&rig, &cfg).close();
    let again = rig.connect(rig.v1, &cfg);
    assert!(again.resumed(), "control: a session resumes when nothing changed");
    again.close();

    let cfg = rig.pki.client_config();
    resumed_client(&rig, &cfg).close();
    let new_serial = rig.rotate("site-2");
    let mut after = rig.connect(rig.v1, &cfg);
    assert!(!after.resumed(), "a session from before the change resumed");
    assert_eq!(after.serial(), new_serial);
    assert_eq!(
        after.echo(b"full handshake, no error").unwrap(),
        b"full handshake, no error"
    );
    after.close();
    let stats = rig.proxy.stats();
    assert!(
        at_epoch(&stats, "vserver", "v1", 2, "refused_resumptions") >= 1,
        "refused resumption counted"
    );
}

#[test]
fn r5_a_change_to_one_vserver_leaves_the_other_alone() {
    let rig = rig("");
    let cfg = rig.pki.client_config();
    let mut c = rig.connect(rig.v2, &cfg);
    c.pump_tickets();
    c.close();
    rig.rotate("site-2");
    let stats = rig.proxy.stats();
    assert_eq!(current_epoch(&stats, "vserver", "v2"), 1, "v2 keeps its epoch");
    let again = rig.connect(rig.v2, &cfg);
    assert!(again.resumed(), "v2's sessions stay valid");
    again.close();
}

#[test]
fn r6_every_shard_uses_the_new_epoch_once_the_command_returns() {
    let rig = rig("");
    let cfg = rig.pki.client_config();
    let new_serial = rig.rotate("site-2");
    let reply = rig.proxy.ctl("show stats").unwrap();
    assert!(reply.contains("\"generation\""));
    let serials: Vec<String> = (0..24)
        .map(|_| {
            let c = rig.connect(rig.v1, &cfg);
            let s = c.serial();
            c.close();
            s
        })
        .collect();
    assert!(serials.iter().all(|s| *s == new_serial), "{serials:?}");
    let stats = rig.proxy.stats();
    let shards_serving = stats["shards"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["accepted"].as_u64().unwrap_or(0) > 0)
        .count();
    assert_eq!(shards_serving, 2, "both shards took connections");
}

#[test]
fn r7_disable_closes_everything_at_once_and_enable_serves_a_new_epoch() {
    let rig = rig("");
    let cfg = rig.pki.client_config();
    let mut est = rig.connect(rig.v1, &cfg);
    assert_eq!(est.echo(b"x").unwrap(), b"x");
    let mut other = rig.connect(rig.v2, &cfg);
    rig.proxy.ctl("disable lb vserver v1").unwrap();
    assert!(
        closed_within(&mut est, Duration::from_secs(10)),
        "established connection closed by disable"
    );
    assert!(
        Client::connect(rig.v1, SNI, cfg.clone()).is_err(),
        "a disabled vserver accepts nothing"
    );
    // Control: the other vserver is untouched.
    assert_eq!(other.echo(b"still here").unwrap(), b"still here");
    rig.proxy.ctl("enable lb vserver v1").unwrap();
    let mut back = None;
    assert!(wait_until(Duration::from_secs(2), || {
        back = Client::connect(rig.v1, SNI, cfg.clone()).ok();
        back.is_some()
    }));
    assert_eq!(back.unwrap().echo(b"y").unwrap(), b"y");
    assert!(
        current_epoch(&rig.proxy.stats(), "vserver", "v1") >= 2,
        "enable opened a new epoch"
    );
}

/// Wait until the proxy holds no connection of vserver v1 (it has seen
/// every close).
fn wait_v1_closed(rig: &Rig) {
    assert!(
        wait_until(Duration::from_secs(10), || entity_total(
            &rig.proxy.stats(),
            "vserver",
            "v1",
            "open"
        ) == 0),
        "v1 still holds connections: {:#}",
        rig.proxy.stats()
    );
}

/// Reset the TCP connection under `c` (no close_notify, RST on close).
fn reset(c: Client) {
    socket2::SockRef::from(&c.tls.sock)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(c);
}

#[test]
fn r8_a_session_of_a_reset_connection_is_not_resumed() {
    let rig = rig("");
    // Control: a cleanly closed connection's session resumes.
    let cfg = rig.pki.client_config();
    resumed_client(&rig, &cfg).close();
    // The proxy has seen the clean close (and kept the session).
    wait_v1_closed(&rig);
    let c = rig.connect(rig.v1, &cfg);
    assert!(c.resumed(), "control: clean close keeps the session");
    c.close();

    let cfg = rig.pki.client_config();
    reset(resumed_client(&rig, &cfg));
    assert!(wait_until(Duration::from_secs(2), || total(
        &rig.proxy.stats(),
        "vserver",
        "v1",
        "sessions_dropped"
    ) >= 1));
    let c = rig.connect(rig.v1, &cfg);
    assert!(!c.resumed(), "the reset connection's session resumed");
    c.close();
}

#[test]
fn r8_strict_session_cleanup_disabled_keeps_a_reset_connections_session() {
    let rig = rig("set ssl vserver v1 -strictSessionCleanup DISABLED\n");
    let cfg = rig.pki.client_config();
    reset(resumed_client(&rig, &cfg));
    // The proxy has seen the reset and closed its side.
    wait_v1_closed(&rig);
    assert_eq!(total(&rig.proxy.stats(), "vserver", "v1", "sessions_dropped"), 0);
    let c = rig.connect(rig.v1, &cfg);
    assert!(c.resumed(), "with strict cleanup off the session survives a reset");
    c.close();
}

#[test]
fn r10_a_refused_command_changes_nothing() {
    let rig = rig("");
    let cfg = rig.pki.client_config();
    let mut est = rig.connect(rig.v1, &cfg);
    let serial = est.serial();
    let before = rig.proxy.stats();
    for bad in [
        "update ssl certKey site -cert /nonexistent/site.pem -key /nonexistent/site.key".to_string(),
        "bind ssl vserver v1 -cipherName TLS1.3-NOT-A-CIPHER".to_string(),
        format!(
            "update ssl certKey site -cert {} -key {}",
            rig.pki.path("site.pem").display(),
            rig.pki.path("other.key").display()
        ),
    ] {
        let err = rig.proxy.ctl(&bad).expect_err("refused");
        assert!(err.contains("Nothing was changed"), "{err}");
    }
    let after = rig.proxy.stats();
    assert_eq!(after["generation"], before["generation"]);
    assert_eq!(current_epoch(&after, "vserver", "v1"), 1);
    assert_eq!(est.echo(b"intact").unwrap(), b"intact");
    let fresh = rig.connect(rig.v1, &cfg);
    assert_eq!(
        fresh.serial(),
        serial,
        "new connections still get the running certificate"
    );
}

#[test]
fn r12_drain_timeout_closes_connections_of_a_retired_epoch() {
    let rig = rig("set ssl vserver v1 -drainTimeout 1\n");
    let cfg = rig.pki.client_config();
    let mut old = rig.connect(rig.v1, &cfg);
    let mut control = rig.connect(rig.v2, &cfg);
    assert_eq!(old.echo(b"a").unwrap(), b"a");
    let t0 = Instant::now();
    rig.rotate("site-2");
    assert!(
        closed_within(&mut old, Duration::from_secs(10)),
        "closed at the drain deadline"
    );
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(800), "closed too early: {took:?}");
    // Control: v2 has no drain timeout and is not affected anyway.
    assert_eq!(control.echo(b"b").unwrap(), b"b");
    let stats = rig.proxy.stats();
    assert_eq!(at_epoch(&stats, "vserver", "v1", 1, "closed_by_drain"), 1);
}

#[test]
fn r12_without_drain_timeout_old_connections_stay() {
    let rig = rig("");
    let cfg = rig.pki.client_config();
    let mut old = rig.connect(rig.v1, &cfg);
    rig.rotate("site-2");
    // Every shard has retired epoch 1 with no drain deadline, the old
    // connection still counted on it.
    let retired_without_deadline = |stats: &serde_json::Value| {
        let lines: Vec<_> = stats["shards"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["core"]["entities"].as_array().into_iter().flatten())
            .filter(|e| e["kind"] == "vserver" && e["name"] == "v1")
            .flat_map(|e| e["epochs"].as_array().into_iter().flatten())
            .filter(|l| l["epoch"] == 1)
            .collect();
        !lines.is_empty()
            && lines
                .iter()
                .all(|l| l["status"] != "current" && l["drain_deadline"].is_null())
            && lines.iter().map(|l| l["live"].as_u64().unwrap_or(0)).sum::<u64>() == 1
    };
    assert!(
        wait_until(Duration::from_secs(10), || retired_without_deadline(&rig.proxy.stats())),
        "epoch 1 not retired without a deadline: {:#}",
        rig.proxy.stats()
    );
    assert_eq!(old.echo(b"still open").unwrap(), b"still open");
    assert_eq!(total(&rig.proxy.stats(), "vserver", "v1", "closed_by_drain"), 0);
}

/// A vserver in front of an SSL_TCP service (verified, SNI backend.test).
fn tls_rig() -> (Pki, Proxy, SocketAddr, TestServerHandle) {
    tls_rig_with("", 2)
}

/// [`tls_rig`] with `extra` config lines, on `shards` shards.
fn tls_rig_with(extra: &str, shards: usize) -> (Pki, Proxy, SocketAddr, TestServerHandle) {
    let pki = Pki::new();
    let (c1, k1, _) = pki.issue("site", &[SNI]);
    let (bc, bk, _) = pki.issue("backend", &["backend.test"]);
    let origin = tls_backend(TestServerMode::Echo, server_config_from(&bc, &bk));
    let p1 = free_port();
    let config = format!(
        "add ssl certKey site -cert {} -key {}\n\
         add ssl certKey ca -cert {}\n\
         add service s1 {} {} SSL_TCP\n\
         set ssl service s1 -serverAuth ENABLED -commonName backend.test\n\
         bind ssl service s1 -certkeyName ca -CA\n\
         add lb vserver v1 SSL_TCP 127.0.0.1 {p1}\n\
         bind ssl vserver v1 -certkeyName site\n\
         bind lb vserver v1 s1\n{extra}",
        c1.display(),
        k1.display(),
        pki.ca_file().display(),
        origin.local_addr().ip(),
        origin.local_addr().port()
    );
    let proxy = Proxy::start(&config, shards);
    (pki, proxy, format!("127.0.0.1:{p1}").parse().unwrap(), origin)
}

/// `n` sequential proxied connections, each echoing and closing cleanly.
fn through(addr: SocketAddr, cfg: &Arc<rustls::ClientConfig>, n: usize) {
    for _ in 0..n {
        let mut c = Client::connect(addr, SNI, cfg.clone()).unwrap();
        assert_eq!(c.echo(b"ping").unwrap(), b"ping");
        c.close();
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn r4_a_back_end_change_drops_back_end_sessions() {
    let (pki, proxy, v1, _origin) = tls_rig();
    let cfg = pki.client_config();
    through(v1, &cfg, 10);
    let stats = proxy.stats();
    let resumed_before = total(&stats, "service", "s1", "resumed");
    assert!(
        resumed_before >= 6,
        "control: back-end sessions resume ({resumed_before})"
    );
    assert_eq!(current_epoch(&stats, "service", "s1"), 1);

    let reply = proxy.ctl("set ssl service s1 -sessTimeout 301").unwrap();
    assert!(reply.contains("service s1 -> 2"), "{reply}");
    assert!(
        !reply.contains("vserver v1 ->"),
        "a back-end change opened a front-end epoch: {reply}"
    );
    through(v1, &cfg, 1);
    let stats = proxy.stats();
    assert_eq!(
        at_epoch(&stats, "service", "s1", 2, "resumed"),
        0,
        "a back-end session from epoch 1 resumed"
    );
    assert_eq!(at_epoch(&stats, "service", "s1", 2, "full"), 1);
    assert_eq!(current_epoch(&stats, "vserver", "v1"), 1, "the front end saw nothing");
}

#[test]
fn r5_a_front_end_change_leaves_back_end_resumption_working() {
    let (pki, proxy, v1, _origin) = tls_rig();
    let cfg = pki.client_config();
    through(v1, &cfg, 10);
    let before = total(&proxy.stats(), "service", "s1", "resumed");
    let reply = proxy.ctl("set ssl vserver v1 -sessTimeout 301").unwrap();
    assert!(
        reply.contains("vserver v1 -> 2") && !reply.contains("service s1 ->"),
        "{reply}"
    );
    through(v1, &cfg, 10);
    let stats = proxy.stats();
    assert_eq!(current_epoch(&stats, "service", "s1"), 1, "the back end kept its epoch");
    let after = total(&stats, "service", "s1", "resumed");
    assert!(
        after >= before + 8,
        "back-end resumption kept working: {before} -> {after}"
    );
}

/// A TLS 1.2 client session store that keeps the first session it is given
/// (session ID or ticket) and offers it on every connection: real clients
/// replace it; this one replays it on purpose.
#[derive(Debug)]
struct ReplayingStore {
    inner: rustls::client::ClientSessionMemoryCache,
    session: std::sync::Mutex<Option<rustls::client::Tls12ClientSessionValue>>,
}

impl rustls::client::ClientSessionStore for ReplayingStore {
    fn set_kx_hint(&self, n: ServerName<'static>, g: rustls::NamedGroup) {
        self.inner.set_kx_hint(n, g)
    }
    fn kx_hint(&self, n: &ServerName<'_>) -> Option<rustls::NamedGroup> {
        self.inner.kx_hint(n)
    }
    fn set_tls12_session(&self, _n: ServerName<'static>, v: rustls::client::Tls12ClientSessionValue) {
        self.session.lock().unwrap().get_or_insert(v);
    }
    fn tls12_session(&self, _n: &ServerName<'_>) -> Option<rustls::client::Tls12ClientSessionValue> {
        self.session.lock().unwrap().clone()
    }
    fn remove_tls12_session(&self, _n: &ServerName<'static>) {}
    fn insert_tls13_ticket(&self, n: ServerName<'static>, v: rustls::client::Tls13ClientSessionValue) {
        self.inner.insert_tls13_ticket(n, v)
    }
    fn take_tls13_ticket(&self, n: &ServerName<'static>) -> Option<rustls::client::Tls13ClientSessionValue> {
        self.inner.take_tls13_ticket(n)
    }
}

/// A TLS 1.2 client that offers its first session on every connection.
fn replaying_config(rig: &Rig) -> Arc<rustls::ClientConfig> {
    let mut cfg = (*client_config(&rig.pki.ca, Some(&rustls::version::TLS12))).clone();
    cfg.resumption = rustls::client::Resumption::store(Arc::new(ReplayingStore {
        inner: rustls::client::ClientSessionMemoryCache::new(64),
        session: std::sync::Mutex::new(None),
    }));
    Arc::new(cfg)
}

/// R8 for a connection that resumed: it ends badly, and the session it
/// resumed with (a ticket, or a session ID with tickets off) never resumes
/// again. Control: after a clean close the same session resumes again.
fn resumed_then_reset(extra: &str) {
    // Session IDs live in a shard's own cache: one shard, so every
    // connection meets the cache its session is in.
    let rig = rig_on(extra, 1);
    let cfg = replaying_config(&rig);
    rig.connect(rig.v1, &cfg).close();
    for i in 0..2 {
        let c = rig.connect(rig.v1, &cfg);
        assert!(c.resumed(), "control: the first session resumes (clean close {i})");
        c.close();
    }
    let dropped_before = total(&rig.proxy.stats(), "vserver", "v1", "sessions_dropped");
    let mut b = rig.connect(rig.v1, &cfg);
    assert!(b.resumed(), "the session resumes once more");
    assert_eq!(b.echo(b"x").unwrap(), b"x");
    reset(b);
    assert!(wait_until(Duration::from_secs(5), || total(
        &rig.proxy.stats(),
        "vserver",
        "v1",
        "sessions_dropped"
    ) > dropped_before));
    let c = rig.connect(rig.v1, &cfg);
    assert!(
        !c.resumed(),
        "the session a reset connection resumed with resumed again"
    );
    c.close();
}

#[test]
fn r8_a_resumed_connection_that_is_reset_revokes_the_ticket_it_resumed_with() {
    resumed_then_reset("");
}

#[test]
fn r8_a_resumed_connection_that_is_reset_forgets_the_session_id_it_resumed_with() {
    resumed_then_reset("set ssl vserver v1 -sessionTicket DISABLED\n");
}

/// A client clock that stays at the moment the config was made, so the
/// client offers its sessions however old they are and only the proxy
/// decides whether they are still good.
#[derive(Debug)]
struct FrozenClock(rustls::pki_types::UnixTime);

impl rustls::time_provider::TimeProvider for FrozenClock {
    fn current_time(&self) -> Option<rustls::pki_types::UnixTime> {
        Some(self.0)
    }
}

fn frozen_clock_config(pki: &Pki, version: &'static rustls::SupportedProtocolVersion) -> Arc<rustls::ClientConfig> {
    let mut cfg = (*client_config(&pki.ca, Some(version))).clone();
    cfg.time_provider = Arc::new(FrozenClock(rustls::pki_types::UnixTime::now()));
    Arc::new(cfg)
}

/// A session outlives `-sessTimeout` neither as a ticket nor as a session
/// ID (TLS 1.3's stateful tickets included), on either TLS version, even
/// when the client keeps offering it. Control: right after the first
/// handshake every one of them resumes.
#[test]
fn sess_timeout_ends_tickets_and_session_ids_on_both_versions() {
    let rig = rig_on(
        "set ssl vserver v1 -sessTimeout 1\n\
         set ssl vserver v2 -sessTimeout 1 -sessionTicket DISABLED\n",
        1,
    );
    let cases = [
        ("TLS 1.2 ticket", rig.v1, &rustls::version::TLS12),
        ("TLS 1.3 ticket", rig.v1, &rustls::version::TLS13),
        ("TLS 1.2 session ID", rig.v2, &rustls::version::TLS12),
        ("TLS 1.3 stateful ticket", rig.v2, &rustls::version::TLS13),
    ];
    let mut clients = Vec::new();
    for (what, addr, version) in cases {
        let cfg = frozen_clock_config(&rig.pki, version);
        let mut c = rig.connect(addr, &cfg);
        c.pump_tickets();
        c.close();
        let mut again = rig.connect(addr, &cfg);
        assert!(again.resumed(), "control: {what} resumes at once");
        again.pump_tickets();
        again.close();
        clients.push((what, addr, cfg));
    }
    std::thread::sleep(Duration::from_millis(1300));
    for (what, addr, cfg) in clients {
        let mut c = rig.connect(addr, &cfg);
        assert!(!c.resumed(), "a {what} resumed after -sessTimeout");
        assert_eq!(c.echo(b"full handshake").unwrap(), b"full handshake");
        c.close();
    }
}

/// The service's `-sessTimeout` bounds how long the proxy reuses a back-end
/// session, whatever lifetime the back end announced (here none: its
/// session IDs and stateful tickets never expire on their own).
#[test]
fn sess_timeout_ends_back_end_sessions() {
    let (pki, proxy, v1, _origin) = tls_rig_with("set ssl service s1 -sessTimeout 1\n", 1);
    let cfg = pki.client_config();
    through(v1, &cfg, 3);
    let resumed = total(&proxy.stats(), "service", "s1", "resumed");
    assert!(resumed >= 2, "control: back-end sessions resume ({resumed})");
    std::thread::sleep(Duration::from_millis(1300));
    through(v1, &cfg, 1);
    assert_eq!(
        total(&proxy.stats(), "service", "s1", "resumed"),
        resumed,
        "a back-end session resumed after the service's -sessTimeout"
    );
}
