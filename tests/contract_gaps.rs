//! End-to-end tests for the cleanup contract (DESIGN.md section 2) that
//! close the gaps issue 13 found: each test here fails when its rule is
//! broken in a specific way (named in the test's comment), which the older
//! tests in `epochs.rs` did not notice.
//!
//! - the session-ID path (tickets disabled), TLS 1.2 and 1.3: R3 and R8;
//! - R8 on the back end, against an in-test TLS back end that counts its
//!   full and resumed handshakes and resets one connection on request;
//! - R5 exact: a front-end change causes zero new full back-end handshakes;
//! - R6 that a late apply cannot satisfy;
//! - R1 right after a change and later, with and without `-drainTimeout`;
//! - R10 for batches and for commands that fail only at snapshot build.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rustls::client::{ClientSessionMemoryCache, ClientSessionStore, Resumption};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{HandshakeKind, SupportedProtocolVersion};
use serde_json::Value;
use shardtls::control::admin::client_request;
use shardtls::test_server::{TestServerHandle, TestServerMode};

const SNI: &str = "site.test";
/// Upper bound for anything the proxy should do "soon" (generous for CI).
const SOON: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Statistics

/// The entity's line on each shard, in shard order.
fn per_shard<'a>(stats: &'a Value, kind: &str, name: &str) -> Vec<&'a Value> {
    let mut out = Vec::new();
    for shard in stats["shards"].as_array().into_iter().flatten() {
        for e in shard["core"]["entities"].as_array().into_iter().flatten() {
            if e["kind"] == kind && e["name"] == name {
                out.push(e);
            }
        }
    }
    out
}

/// The entity's current epoch on each shard.
fn epochs_per_shard(stats: &Value, kind: &str, name: &str) -> Vec<u64> {
    per_shard(stats, kind, name)
        .iter()
        .map(|e| e["current_epoch"].as_u64().unwrap_or(0))
        .collect()
}

/// The live connections of one epoch of an entity, per shard.
fn live_at_epoch(stats: &Value, kind: &str, name: &str, epoch: u64) -> Vec<u64> {
    per_shard(stats, kind, name)
        .iter()
        .map(|e| {
            e["epochs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|x| x["epoch"].as_u64() == Some(epoch))
                .map(|x| x["live"].as_u64().unwrap_or(0))
                .sum()
        })
        .collect()
}

/// Wait until no client connection is open on any shard: every earlier
/// connection has been closed and accounted for (R8 decided).
fn wait_idle(proxy: &Proxy) {
    assert!(
        wait_for(SOON, || shard_counter(&proxy.stats(), "live_client_connections")
            .iter()
            .all(|n| *n == 0)),
        "connections still open on the proxy: {}",
        proxy.stats()
    );
}

fn running_config(proxy: &Proxy) -> String {
    let (ok, body) = client_request(&proxy.admin, "GET", "/config", "", None).unwrap();
    assert!(ok, "GET /config failed: {body}");
    body
}

// ---------------------------------------------------------------------------
// Clients

/// A client-side session store that remembers the longest session ticket it
/// was given, to prove the session-ID path is the one under test: with
/// tickets disabled TLS 1.2 carries no ticket and TLS 1.3 a 32-byte session
/// ID, while a proxy ticket is over 100 bytes.
#[derive(Debug)]
struct RecordingStore {
    inner: Arc<ClientSessionMemoryCache>,
    longest_ticket: AtomicUsize,
    sessions: AtomicUsize,
}

impl RecordingStore {
    fn note(&self, debug: String) {
        // rustls prints a session's ticket as bare hex after "ticket: ".
        let ticket = debug
            .split("ticket: ")
            .nth(1)
            .map(|rest| rest.chars().take_while(|c| c.is_ascii_hexdigit()).count() / 2)
            .expect("a session value names its ticket");
        self.longest_ticket.fetch_max(ticket, Ordering::SeqCst);
        self.sessions.fetch_add(1, Ordering::SeqCst);
    }
}

impl ClientSessionStore for RecordingStore {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: rustls::NamedGroup) {
        self.inner.set_kx_hint(server_name, group)
    }
    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<rustls::NamedGroup> {
        self.inner.kx_hint(server_name)
    }
    fn set_tls12_session(&self, server_name: ServerName<'static>, value: rustls::client::Tls12ClientSessionValue) {
        self.note(format!("{value:?}"));
        self.inner.set_tls12_session(server_name, value)
    }
    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<rustls::client::Tls12ClientSessionValue> {
        self.inner.tls12_session(server_name)
    }
    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.inner.remove_tls12_session(server_name)
    }
    fn insert_tls13_ticket(&self, server_name: ServerName<'static>, value: rustls::client::Tls13ClientSessionValue) {
        self.note(format!("{value:?}"));
        self.inner.insert_tls13_ticket(server_name, value)
    }
    fn take_tls13_ticket(&self, server_name: &ServerName<'static>) -> Option<rustls::client::Tls13ClientSessionValue> {
        self.inner.take_tls13_ticket(server_name)
    }
}

/// A client limited to `version`, with a fresh recording session store.
fn recording_client(
    pki: &Pki,
    version: &'static SupportedProtocolVersion,
) -> (Arc<rustls::ClientConfig>, Arc<RecordingStore>) {
    let store = Arc::new(RecordingStore {
        inner: Arc::new(ClientSessionMemoryCache::new(64)),
        longest_ticket: AtomicUsize::new(0),
        sessions: AtomicUsize::new(0),
    });
    let mut cfg = (*client_config(&pki.ca, Some(version))).clone();
    cfg.resumption = Resumption::store(store.clone());
    (Arc::new(cfg), store)
}

fn connect(addr: SocketAddr, cfg: &Arc<rustls::ClientConfig>) -> Client {
    Client::connect(addr, SNI, cfg.clone()).unwrap_or_else(|e| panic!("connect {addr}: {e}"))
}

/// A connection whose post-handshake records (TLS 1.3 tickets) were read.
fn connect_pumped(addr: SocketAddr, cfg: &Arc<rustls::ClientConfig>) -> Client {
    let mut c = connect(addr, cfg);
    assert_eq!(c.echo(b"x").unwrap(), b"x");
    c
}

/// Reset the TCP connection under `c`: RST, no close_notify.
fn reset(c: Client) {
    socket2::SockRef::from(&c.tls.sock)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(c);
}

/// Whether the peer closed `c` (EOF, close_notify or reset) within `limit`.
fn closed_within(c: &mut Client, limit: Duration) -> bool {
    c.tls.sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let t0 = Instant::now();
    let mut buf = [0u8; 64];
    let closed = loop {
        if t0.elapsed() >= limit {
            break false;
        }
        match c.tls.read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break true,
        }
    };
    c.tls.sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    closed
}

/// `n` sequential proxied connections, each echoing and closing cleanly.
fn through(addr: SocketAddr, cfg: &Arc<rustls::ClientConfig>, n: usize) {
    for _ in 0..n {
        let mut c = connect(addr, cfg);
        assert_eq!(c.echo(b"ping").unwrap(), b"ping");
        c.close();
    }
}

// ---------------------------------------------------------------------------
// Proxies

/// v1 serves certKey `site`, v2 serves certKey `other`; both echo (TCP back end).
struct Rig {
    pki: Pki,
    proxy: Proxy,
    v1: SocketAddr,
    v2: SocketAddr,
    _echo: TestServerHandle,
}

fn rig(extra: &str, shards: usize) -> Rig {
    let pki = Pki::new();
    let (site, _) = certkey(&pki, "site", &[SNI]);
    let (other, _) = certkey(&pki, "other", &[SNI]);
    let echo = backend(TestServerMode::Echo);
    let (p1, p2) = (free_port(), free_port());
    let config = format!(
        "{site}{other}\
         add service web 127.0.0.1 {} TCP\n\
         add lb vserver v1 SSL_TCP 127.0.0.1 {p1}\n\
         bind ssl vserver v1 -certkeyName site\n\
         bind lb vserver v1 web\n\
         add lb vserver v2 SSL_TCP 127.0.0.1 {p2}\n\
         bind ssl vserver v2 -certkeyName other\n\
         bind lb vserver v2 web\n{extra}",
        echo.local_addr().port()
    );
    Rig {
        proxy: Proxy::start(&config, shards),
        pki,
        v1: lo(p1),
        v2: lo(p2),
        _echo: echo,
    }
}

impl Rig {
    /// Issue a new certificate for SNI; returns the command that installs
    /// it in certKey `name`, and its serial.
    fn update_cmd(&self, name: &str, file: &str) -> (String, String) {
        let (c, k, serial) = self.pki.issue(file, &[SNI]);
        (
            format!("update ssl certKey {name} -cert {} -key {}", p(&c), p(&k)),
            serial,
        )
    }

    fn serial_of(&self, file: &str) -> String {
        let pem = std::fs::read(self.pki.path(&format!("{file}.pem"))).unwrap();
        let der = CertificateDer::pem_slice_iter(&pem).next().unwrap().unwrap();
        let (_, x) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        x.tbs_certificate.raw_serial_as_string()
    }
}

// ---------------------------------------------------------------------------
// A TLS back end that counts its own full and resumed handshakes.

struct CountingBackend {
    addr: SocketAddr,
    full: Arc<AtomicU64>,
    resumed: Arc<AtomicU64>,
    /// The next connection is reset (RST, no close_notify) once it has
    /// read its first bytes, instead of echoing them.
    reset_next: Arc<AtomicBool>,
    /// The next connection is reset as soon as its ClientHello arrives,
    /// before any answer: its handshake fails.
    reset_hello_next: Arc<AtomicBool>,
    /// The next connection waits this many milliseconds before its handshake.
    delay_next_ms: Arc<AtomicU64>,
    resets: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl CountingBackend {
    /// Serve `version` only, resuming through session IDs, or through
    /// tickets as well when `tickets`.
    fn start(cert: &Path, key: &Path, version: &'static SupportedProtocolVersion, tickets: bool) -> Self {
        let certs = CertificateDer::pem_slice_iter(&std::fs::read(cert).unwrap())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(&std::fs::read(key).unwrap()).unwrap();
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[version])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        cfg.session_storage = rustls::server::ServerSessionMemoryCache::new(1024);
        if tickets {
            cfg.ticketer = rustls::crypto::ring::Ticketer::new().unwrap();
        }
        let cfg = Arc::new(cfg);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let full = Arc::new(AtomicU64::new(0));
        let resumed = Arc::new(AtomicU64::new(0));
        let reset_next = Arc::new(AtomicBool::new(false));
        let reset_hello_next = Arc::new(AtomicBool::new(false));
        let delay_next_ms = Arc::new(AtomicU64::new(0));
        let resets = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let (full, resumed, reset_next, reset_hello_next, resets, stop, delay_next_ms) = (
                full.clone(),
                resumed.clone(),
                reset_next.clone(),
                reset_hello_next.clone(),
                resets.clone(),
                stop.clone(),
                delay_next_ms.clone(),
            );
            std::thread::spawn(move || {
                for sock in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(sock) = sock else { continue };
                    let reset = reset_next.swap(false, Ordering::SeqCst);
                    if reset_hello_next.swap(false, Ordering::SeqCst) {
                        let mut hello = [0u8; 512];
                        let mut sock = sock;
                        let _ = sock.set_read_timeout(Some(Duration::from_secs(5)));
                        let _ = sock.read(&mut hello);
                        let _ = socket2::SockRef::from(&sock).set_linger(Some(Duration::ZERO));
                        resets.fetch_add(1, Ordering::SeqCst);
                        continue; // dropped: RST
                    }
                    let delay = delay_next_ms.swap(0, Ordering::SeqCst);
                    let (cfg, full, resumed, resets) = (cfg.clone(), full.clone(), resumed.clone(), resets.clone());
                    std::thread::spawn(move || {
                        std::thread::sleep(Duration::from_millis(delay));
                        let _ = serve_counting(sock, cfg, reset, &full, &resumed, &resets);
                    });
                }
            })
        };
        CountingBackend {
            addr,
            full,
            resumed,
            reset_next,
            reset_hello_next,
            delay_next_ms,
            resets,
            stop,
            accept: Some(accept),
        }
    }

    /// (full, resumed) handshakes completed so far.
    fn counts(&self) -> (u64, u64) {
        (self.full.load(Ordering::SeqCst), self.resumed.load(Ordering::SeqCst))
    }
}

impl Drop for CountingBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn serve_counting(
    sock: TcpStream,
    cfg: Arc<rustls::ServerConfig>,
    reset: bool,
    full: &AtomicU64,
    resumed: &AtomicU64,
    resets: &AtomicU64,
) -> std::io::Result<()> {
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    sock.set_write_timeout(Some(Duration::from_secs(10)))?;
    let conn = rustls::ServerConnection::new(cfg).map_err(std::io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    match tls.conn.handshake_kind() {
        Some(HandshakeKind::Resumed) => resumed.fetch_add(1, Ordering::SeqCst),
        _ => full.fetch_add(1, Ordering::SeqCst),
    };
    // Session tickets (TLS 1.3) go out now, before any application data.
    while tls.conn.wants_write() {
        tls.conn.write_tls(&mut tls.sock)?;
    }
    let mut buf = [0u8; 4096];
    loop {
        let n = match tls.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if reset {
            socket2::SockRef::from(&tls.sock).set_linger(Some(Duration::ZERO))?;
            resets.fetch_add(1, Ordering::SeqCst);
            return Ok(()); // dropped: RST, no close_notify
        }
        tls.write_all(&buf[..n])?;
        tls.flush()?;
    }
    tls.conn.send_close_notify();
    while tls.conn.wants_write() {
        tls.conn.write_tls(&mut tls.sock)?;
    }
    Ok(())
}

/// A vserver v1 in front of SSL_TCP service s1 (verified, SNI backend.test)
/// served by a counting back end.
struct TlsRig {
    pki: Pki,
    proxy: Proxy,
    v1: SocketAddr,
    backend: CountingBackend,
}

fn tls_rig(shards: usize, version: &'static SupportedProtocolVersion, tickets: bool) -> TlsRig {
    let pki = Pki::new();
    let (site, _) = certkey(&pki, "site", &[SNI]);
    let (bc, bk, _) = pki.issue("backend", &["backend.test"]);
    let backend = CountingBackend::start(&bc, &bk, version, tickets);
    let p1 = free_port();
    let config = format!(
        "{site}\
         add ssl certKey ca -cert {}\n\
         add service s1 127.0.0.1 {} SSL_TCP\n\
         set ssl service s1 -serverAuth ENABLED -commonName backend.test\n\
         bind ssl service s1 -certkeyName ca -CA\n\
         add lb vserver v1 SSL_TCP 127.0.0.1 {p1}\n\
         bind ssl vserver v1 -certkeyName site\n\
         bind lb vserver v1 s1\n",
        p(&pki.ca_file()),
        backend.addr.port()
    );
    TlsRig {
        proxy: Proxy::start(&config, shards),
        pki,
        v1: lo(p1),
        backend,
    }
}

// ---------------------------------------------------------------------------
// 1. The session-ID path (tickets disabled): R3 and R8, TLS 1.2 and 1.3.

/// Session IDs live in a shard-local cache, so one shard. `change` opens a
/// new epoch of v1. Catches: R3 broken by a session-ID cache shared across
/// epochs; R8 broken by a cache entry kept after its connection was reset.
fn session_id_path(version: &'static SupportedProtocolVersion, extra: &str, change: &dyn Fn(&Rig) -> String) {
    let rig = rig(extra, 1);
    let mut stores = Vec::new();

    // Control: with nothing changed, a session resumes (first one still open).
    let (cfg, store) = recording_client(&rig.pki, version);
    stores.push(store);
    let first = connect_pumped(rig.v1, &cfg);
    assert_eq!(first.version(), Some(version.version));
    let second = connect(rig.v1, &cfg);
    assert!(second.resumed(), "control: a session ID resumes when nothing changed");
    second.close();
    first.close();

    // Control: a cleanly closed connection's session resumes.
    let (cfg, store) = recording_client(&rig.pki, version);
    stores.push(store);
    connect_pumped(rig.v1, &cfg).close();
    wait_idle(&rig.proxy);
    let mut again = connect(rig.v1, &cfg);
    assert!(again.resumed(), "control: a clean close keeps the session");
    assert_eq!(again.echo(b"resumed").unwrap(), b"resumed");
    again.close();

    // R8: the session of a connection reset by the client never resumes.
    let (cfg, store) = recording_client(&rig.pki, version);
    stores.push(store);
    reset(connect_pumped(rig.v1, &cfg));
    wait_idle(&rig.proxy);
    let mut after_reset = connect(rig.v1, &cfg);
    assert!(!after_reset.resumed(), "R8: the session of a reset connection resumed");
    assert_eq!(after_reset.echo(b"full").unwrap(), b"full");
    after_reset.close();

    // R3: no session from before a change to v1 resumes; a full handshake, no error.
    let (cfg, store) = recording_client(&rig.pki, version);
    stores.push(store);
    connect_pumped(rig.v1, &cfg).close();
    wait_idle(&rig.proxy);
    let before = total(&rig.proxy.stats(), "vserver", "v1", "refused_resumptions");
    let reply = rig.proxy.ctl(&change(&rig)).unwrap();
    assert!(reply.contains("vserver v1 -> 2"), "{reply}");
    let mut after_change = connect(rig.v1, &cfg);
    assert!(
        !after_change.resumed(),
        "R3: a session ID from before the change resumed"
    );
    assert_eq!(after_change.echo(b"new epoch").unwrap(), b"new epoch");
    after_change.close();
    assert!(
        total(&rig.proxy.stats(), "vserver", "v1", "refused_resumptions") > before,
        "the refused resumption is counted"
    );
    // Control: sessions of the new epoch resume again.
    wait_idle(&rig.proxy);
    let resumes = connect(rig.v1, &cfg);
    assert!(resumes.resumed(), "control: a session of the new epoch resumes");
    resumes.close();

    for s in &stores {
        assert!(s.sessions.load(Ordering::SeqCst) > 0, "the client saved sessions");
        assert!(
            s.longest_ticket.load(Ordering::SeqCst) <= 32,
            "a session ticket was issued although tickets are disabled ({} bytes)",
            s.longest_ticket.load(Ordering::SeqCst)
        );
    }
}

#[test]
fn session_id_tls12_resumes_only_within_an_epoch_and_after_a_clean_close() {
    session_id_path(
        &rustls::version::TLS12,
        "set ssl vserver v1 -sessionTicket DISABLED\n",
        &|_| "set ssl vserver v1 -sessTimeout 240".to_string(),
    );
}

#[test]
fn session_id_tls13_resumes_only_within_an_epoch_and_after_a_clean_close() {
    session_id_path(
        &rustls::version::TLS13,
        "add ssl profile noticket -sessionTicket DISABLED\nset ssl vserver v1 -sslProfile noticket\n",
        &|rig| rig.update_cmd("site", "site-2").0,
    );
}

#[test]
fn session_id_tls12_through_a_profile_and_a_certificate_update() {
    // The same R3 check through a certKey change on a profile-configured vserver.
    session_id_path(
        &rustls::version::TLS12,
        "add ssl profile noticket -sessionTicket DISABLED\nset ssl vserver v1 -sslProfile noticket\n",
        &|rig| rig.update_cmd("site", "site-2").0,
    );
}

// ---------------------------------------------------------------------------
// 2. R8 on the back end.

/// Catches: a back-end session kept after the back-end connection ended
/// uncleanly (RST without close_notify from the back end).
fn backend_reset(version: &'static SupportedProtocolVersion, tickets: bool) {
    let rig = tls_rig(1, version, tickets);
    let cfg = rig.pki.client_config();
    through(rig.v1, &cfg, 1);
    assert_eq!(rig.backend.counts(), (1, 0), "first back-end handshake is full");
    through(rig.v1, &cfg, 1);
    assert_eq!(rig.backend.counts(), (1, 1), "control: the back-end session resumes");

    // The back end resets the next connection instead of answering.
    rig.backend.reset_next.store(true, Ordering::SeqCst);
    let mut c = connect(rig.v1, &cfg);
    c.tls.write_all(b"ping").unwrap();
    c.tls.flush().unwrap();
    assert!(
        closed_within(&mut c, SOON),
        "the proxy closed the client after the back end's reset"
    );
    drop(c);
    assert_eq!(rig.backend.resets.load(Ordering::SeqCst), 1);
    assert_eq!(rig.backend.counts(), (1, 2), "the reset connection had resumed");
    wait_idle(&rig.proxy);

    through(rig.v1, &cfg, 1);
    assert_eq!(
        rig.backend.counts(),
        (2, 2),
        "R8: the proxy resumed a back-end session after an unclean end"
    );
    // Control: after that clean close the session resumes again.
    through(rig.v1, &cfg, 1);
    assert_eq!(rig.backend.counts(), (2, 3), "control: a clean close keeps the session");
    let stats = rig.proxy.stats();
    assert!(total(&stats, "service", "s1", "sessions_dropped") >= 1, "{stats}");
}

/// Catches: a back-end session kept after a back-end handshake failed
/// (the server reset it after the ClientHello): `try_member` must forget
/// the server's sessions then, as `Backend::finish` does after a proxied
/// connection ended uncleanly.
fn backend_handshake_failure(version: &'static SupportedProtocolVersion, tickets: bool) {
    let rig = tls_rig(1, version, tickets);
    let cfg = rig.pki.client_config();
    through(rig.v1, &cfg, 2);
    assert_eq!(rig.backend.counts(), (1, 1), "control: the back-end session resumes");

    rig.backend.reset_hello_next.store(true, Ordering::SeqCst);
    let mut c = connect(rig.v1, &cfg);
    assert!(
        closed_within(&mut c, SOON),
        "the proxy closed the client after the back-end handshake failed"
    );
    drop(c);
    assert_eq!(rig.backend.resets.load(Ordering::SeqCst), 1);
    wait_idle(&rig.proxy);

    through(rig.v1, &cfg, 1);
    assert_eq!(
        rig.backend.counts(),
        (2, 1),
        "R8: the proxy offered a session of a server whose handshake failed"
    );
}

#[test]
fn r8_back_end_tls13_ticket_is_not_offered_after_a_failed_handshake() {
    backend_handshake_failure(&rustls::version::TLS13, true);
}

#[test]
fn r8_back_end_tls12_session_id_is_not_offered_after_a_failed_handshake() {
    backend_handshake_failure(&rustls::version::TLS12, false);
}

#[test]
fn r8_back_end_tls13_ticket_of_a_reset_connection_is_not_resumed() {
    backend_reset(&rustls::version::TLS13, true);
}

#[test]
fn r8_back_end_tls12_session_id_of_a_reset_connection_is_not_resumed() {
    backend_reset(&rustls::version::TLS12, false);
}

// ---------------------------------------------------------------------------
// 3. R5 exact.

/// Catches: every change rebuilding each shard's back-end config (dropping
/// its back-end sessions). Zero new full back-end handshakes, exactly.
#[test]
fn r5_a_front_end_change_causes_no_full_back_end_handshake() {
    let rig = tls_rig(2, &rustls::version::TLS13, true);
    let cfg = rig.pki.client_config();
    // Warm every shard: each has made at least two back-end connections.
    let mut n = 0;
    while shard_counter(&rig.proxy.stats(), "accepted").iter().any(|a| *a < 2) {
        assert!(n < 60, "could not reach every shard: {}", rig.proxy.stats());
        through(rig.v1, &cfg, 2);
        n += 2;
    }
    let (full_before, resumed_before) = rig.backend.counts();
    assert!(
        full_before <= 2,
        "one full back-end handshake per shard at most: {full_before}"
    );

    for change in [
        "set ssl vserver v1 -sessTimeout 301".to_string(),
        {
            let (c, k, _) = rig.pki.issue("site-2", &[SNI]);
            format!("update ssl certKey site -cert {} -key {}", p(&c), p(&k))
        },
        "bind ssl vserver v1 -eccCurveName P_256".to_string(),
    ] {
        let reply = rig.proxy.ctl(&change).unwrap();
        assert!(
            reply.contains("vserver v1 ->") && !reply.contains("service s1"),
            "{reply}"
        );
        through(rig.v1, &cfg, 6);
    }
    let (full, resumed) = rig.backend.counts();
    assert_eq!(
        full, full_before,
        "R5: front-end changes caused new full back-end handshakes"
    );
    assert_eq!(resumed, resumed_before + 18);
    let stats = rig.proxy.stats();
    assert!(epochs_per_shard(&stats, "service", "s1").iter().all(|e| *e == 1));
    assert!(epochs_per_shard(&stats, "vserver", "v1").iter().all(|e| *e == 4));
}

// ---------------------------------------------------------------------------
// 4. R6.

/// TCP connections to `addr`, accepted by the proxy (no byte sent), until
/// every shard holds at least two of them.
fn accepted_on_every_shard(proxy: &Proxy, addr: SocketAddr) -> Vec<TcpStream> {
    let mut socks = Vec::new();
    for _ in 0..6 {
        for _ in 0..8 {
            socks.push(TcpStream::connect(addr).unwrap());
        }
        let want = socks.len() as u64;
        assert!(
            wait_for(SOON, || shard_counter(&proxy.stats(), "accepted").iter().sum::<u64>()
                >= want),
            "the proxy did not accept {want} connections"
        );
        if shard_counter(&proxy.stats(), "accepted").iter().all(|a| *a >= 2) {
            return socks;
        }
    }
    panic!("could not place connections on every shard: {}", proxy.stats());
}

/// Catches: a shard that acknowledges and applies later (here 100 ms).
/// Connections accepted before the change send their ClientHello the
/// moment the command returns, with nothing queued in front, on every
/// shard; all must see the new certificate, and so must fresh ones.
#[test]
fn r6_every_shard_serves_the_new_certificate_the_moment_the_command_returns() {
    let rig = rig("", 2);
    let cfg = rig.pki.client_config();
    let old = rig.serial_of("site");
    let socks = accepted_on_every_shard(&rig.proxy, rig.v1);
    let (cmd, new_serial) = rig.update_cmd("site", "site-2");
    rig.proxy.ctl(&cmd).unwrap();
    // Right away: every accepted socket sends its ClientHello.
    let mut conns = Vec::new();
    for mut sock in socks {
        let mut conn = rustls::ClientConnection::new(cfg.clone(), ServerName::try_from(SNI).unwrap()).unwrap();
        conn.write_tls(&mut sock).unwrap();
        conns.push((conn, sock));
    }
    let mut serials = Vec::new();
    for (conn, sock) in conns {
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, sock);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock).unwrap();
        }
        serials.push(Client { tls }.serial());
    }
    // And fresh connections, as fast as they come.
    for _ in 0..8 {
        let c = connect(rig.v1, &cfg);
        serials.push(c.serial());
        c.close();
    }
    assert_ne!(old, new_serial);
    assert!(
        serials.iter().all(|s| *s == new_serial),
        "R6: a connection after the reply got the old certificate {old}: {serials:?}"
    );
    let stats = rig.proxy.stats();
    assert_eq!(epochs_per_shard(&stats, "vserver", "v1"), vec![2, 2], "{stats}");
}

/// Catches: the control replying after the first shard's ack. The reply
/// must account for every shard's apply (handshakes killed on each), and
/// the next request must see every shard on the new epoch.
#[test]
fn r6_the_reply_waits_for_every_shard() {
    let rig = rig("", 2);
    let cfg = rig.pki.client_config();
    let mut half = Vec::new();
    let mut placed = false;
    for _ in 0..6 {
        for _ in 0..6 {
            half.push(half_handshake(rig.v1, SNI, &cfg));
        }
        let want = half.len() as u64;
        assert!(wait_for(SOON, || live_at_epoch(&rig.proxy.stats(), "vserver", "v1", 1)
            .iter()
            .sum::<u64>()
            == want));
        if live_at_epoch(&rig.proxy.stats(), "vserver", "v1", 1)
            .iter()
            .all(|n| *n > 0)
        {
            placed = true;
            break;
        }
    }
    assert!(
        placed,
        "could not place handshakes on every shard: {}",
        rig.proxy.stats()
    );
    let (cmd, _) = rig.update_cmd("site", "site-2");
    let reply = rig.proxy.ctl(&cmd).unwrap();
    assert!(
        reply.contains(&format!("handshakes killed: {}\n", half.len())),
        "R6: the reply does not cover every shard ({} handshakes in flight): {reply}",
        half.len()
    );
    let stats = rig.proxy.stats();
    assert_eq!(epochs_per_shard(&stats, "vserver", "v1"), vec![2, 2], "{stats}");
    assert_eq!(shard_counter(&stats, "accepted").len(), 2, "{stats}");
    // Every half-finished handshake was closed by the shard that held it.
    for HalfHandshake { mut sock, .. } in half {
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 4096];
        let closed = loop {
            match sock.read(&mut buf) {
                Ok(0) => break true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
                    break false
                }
                Err(_) => break true,
            }
        };
        assert!(closed, "a killed handshake was closed (R2)");
    }
    // The next change is answered for the right generation, too.
    let reply = rig.proxy.ctl("set ssl vserver v2 -sessTimeout 200").unwrap();
    assert!(
        reply.contains("vserver v2 -> 2") && reply.contains("handshakes killed: 0\n"),
        "{reply}"
    );
    assert_eq!(rig.proxy.stats()["shards"].as_array().unwrap().len(), 2);
}

// ---------------------------------------------------------------------------
// 5. R1.

/// Catches: no `-drainTimeout` read as "drain 0 s" (established connections
/// cut at once), and a drain deadline applied too early. v1 has
/// `-drainTimeout 5`, v2 none; one batch changes both.
#[test]
fn r1_established_connections_run_on_right_after_a_change_and_later() {
    let rig = rig("set ssl vserver v1 -drainTimeout 5\n", 2);
    let cfg = rig.pki.client_config();
    let mut with_drain = vec![connect_pumped(rig.v1, &cfg), connect_pumped(rig.v1, &cfg)];
    let mut without = vec![connect_pumped(rig.v2, &cfg), connect_pumped(rig.v2, &cfg)];
    let (u1, s1) = rig.update_cmd("site", "site-2");
    let (u2, s2) = rig.update_cmd("other", "other-2");
    let reply = rig.proxy.ctl(&format!("{u1}\n{u2}")).unwrap();
    let t0 = Instant::now();
    assert!(reply.contains("established connections draining: 4"), "{reply}");
    // Immediately, with no sleep, and then continuously for a while.
    let mut rounds = 0;
    while rounds == 0 || t0.elapsed() < Duration::from_millis(300) {
        for (i, c) in with_drain.iter_mut().chain(without.iter_mut()).enumerate() {
            let r = c
                .echo(b"right after")
                .unwrap_or_else(|e| panic!("R1: connection {i} broken {:?} after the change: {e}", t0.elapsed()));
            assert_eq!(r, b"right after");
        }
        rounds += 1;
    }
    std::thread::sleep(Duration::from_millis(1500).saturating_sub(t0.elapsed()));
    for (i, c) in with_drain.iter_mut().chain(without.iter_mut()).enumerate() {
        let r = c
            .echo(b"1.5 s later")
            .unwrap_or_else(|e| panic!("R1: connection {i} broken 1.5 s after the change: {e}"));
        assert_eq!(r, b"1.5 s later");
    }
    // Control: new connections are on the new epochs.
    assert_eq!(connect(rig.v1, &cfg).serial(), s1);
    assert_eq!(connect(rig.v2, &cfg).serial(), s2);
    let stats = rig.proxy.stats();
    assert_eq!(total(&stats, "vserver", "v1", "closed_by_drain"), 0);
    assert_eq!(total(&stats, "vserver", "v2", "closed_by_drain"), 0);
    for c in with_drain.into_iter().chain(without) {
        c.close();
    }
}

// ---------------------------------------------------------------------------
// 6. R10.

/// Catches: a batch applied line by line (the lines before the failing one
/// take effect), and the model committed before the snapshot is built
/// (a command failing at snapshot build still changes the running config).
#[test]
fn r10_a_failing_batch_or_snapshot_changes_nothing_on_any_shard() {
    let rig = rig(
        "add ssl cipher modern\n\
         bind ssl cipher modern -cipherName TLS1.3-AES128-GCM-SHA256\n\
         bind ssl vserver v1 -cipherName modern\n\
         set ssl vserver v1 -tls12 DISABLED\n",
        2,
    );
    let cfg = rig.pki.client_config();
    let old = rig.serial_of("site");
    let mut est = connect_pumped(rig.v1, &cfg);
    let config_before = running_config(&rig.proxy);
    let generation = rig.proxy.stats()["generation"].clone();
    let (update_site, _) = rig.update_cmd("site", "site-2");
    let (extra, _) = certkey(&rig.pki, "extra", &[SNI]);
    let (other_cert, _, _) = rig.pki.issue("other-2", &[SNI]);
    let bad_key = format!(
        "update ssl certKey other -cert {} -key {}",
        p(&other_cert),
        p(&rig.pki.path("site.key"))
    );
    let batches = [
        // The last line fails validation (unknown name).
        format!(
            "{update_site}\nset ssl vserver v1 -sessTimeout 120\n{extra}bind ssl vserver v2 -certkeyName extra -SNICert\n\
             set ssl vserver v2 -sessTimeout 130\nbind ssl vserver v1 -certkeyName nosuch"
        ),
        // The last line: a key that does not match its certificate.
        format!("{update_site}\nset ssl vserver v2 -sessTimeout 131\n{bad_key}"),
        // The last line: an unknown cipher into a group in use.
        format!("{update_site}\nbind ssl cipher modern -cipherName TLS1.3-NOT-A-CIPHER"),
        // Fails only when the snapshot is built: client auth without a CA.
        format!("{update_site}\nset ssl vserver v2 -sessTimeout 132\nset ssl vserver v1 -clientAuth ENABLED"),
        "set ssl vserver v1 -clientAuth ENABLED".to_string(),
        // Fails only at snapshot build: the group in use leaves v1 (TLS 1.2
        // disabled) no usable protocol version.
        "set ssl vserver v2 -sessTimeout 133\n\
         set ssl cipher modern -cipherName TLS1.2-ECDHE-ECDSA-AES128-GCM-SHA256"
            .to_string(),
    ];
    for batch in &batches {
        let err = rig.proxy.ctl(batch).expect_err(&format!("refused: {batch}"));
        assert!(err.contains("Nothing was changed"), "{batch}\n->\n{err}");
        assert_eq!(
            running_config(&rig.proxy),
            config_before,
            "R10: the running configuration changed after a refused batch:\n{batch}\n->\n{err}"
        );
        let stats = rig.proxy.stats();
        assert_eq!(stats["generation"], generation, "{batch}");
        assert_eq!(epochs_per_shard(&stats, "vserver", "v1"), vec![1, 1], "{batch}");
        assert_eq!(epochs_per_shard(&stats, "vserver", "v2"), vec![1, 1], "{batch}");
    }
    // Every shard still serves the running certificate.
    let mut serials = Vec::new();
    let start = shard_counter(&rig.proxy.stats(), "accepted");
    while serials.len() < 64 {
        let c = connect(rig.v1, &cfg);
        serials.push(c.serial());
        c.close();
        let now = shard_counter(&rig.proxy.stats(), "accepted");
        if serials.len() >= 8 && now.iter().zip(&start).all(|(n, s)| n > s) {
            break;
        }
    }
    assert!(serials.iter().all(|s| *s == old), "{serials:?}");
    let now = shard_counter(&rig.proxy.stats(), "accepted");
    assert!(
        now.iter().zip(&start).all(|(n, s)| n > s),
        "every shard served: {start:?} -> {now:?}"
    );
    assert_eq!(est.echo(b"intact").unwrap(), b"intact");

    // A valid command afterwards applies just itself.
    let reply = rig.proxy.ctl("set ssl vserver v2 -sessTimeout 77").unwrap();
    assert!(
        reply.contains("vserver v2 -> 2") && !reply.contains("vserver v1"),
        "{reply}"
    );
    let config_after = running_config(&rig.proxy);
    for gone in [
        "site-2",
        "extra",
        "-sessTimeout 12",
        "-sessTimeout 13",
        "clientAuth ENABLED",
        "TLS1.2-ECDHE",
    ] {
        assert!(
            !config_after.contains(gone),
            "{gone} leaked into the config:\n{config_after}"
        );
    }
    assert!(config_after.contains("-sessTimeout 77"), "{config_after}");
    assert_eq!(connect(rig.v1, &cfg).serial(), old);
    assert_eq!(epochs_per_shard(&rig.proxy.stats(), "vserver", "v1"), vec![1, 1]);
    est.close();
}

/// A back-end change while a back-end TLS handshake is under way kills that
/// attempt (R2 on the back-end side), not the client connection: the proxy
/// connects again under the new epoch and serves the client, and the member
/// is not counted as failing. Control: without the change the slow
/// handshake simply completes.
#[test]
fn a_back_end_change_during_a_back_end_handshake_is_retried_not_failed() {
    let rig = tls_rig(1, &rustls::version::TLS13, true);
    let cfg = rig.pki.client_config();
    for change in [false, true] {
        rig.backend.delay_next_ms.store(800, Ordering::SeqCst);
        let v1 = rig.v1;
        let cfg2 = cfg.clone();
        let client = std::thread::spawn(move || {
            let mut c = Client::connect(v1, SNI, cfg2).map_err(|e| e.to_string())?;
            c.echo(b"through a slow back end").map_err(|e| e.to_string())
        });
        // The back end has taken the connection (its delay is consumed) and
        // holds the handshake for 800 ms: the change lands during it.
        assert!(
            wait_for(Duration::from_secs(10), || rig
                .backend
                .delay_next_ms
                .load(Ordering::SeqCst)
                == 0),
            "the back end never took the connection"
        );
        if change {
            rig.proxy
                .ctl("set ssl service s1 -sessTimeout 120")
                .expect("back-end change");
        }
        let got = client.join().unwrap();
        assert_eq!(
            got.as_deref(),
            Ok(&b"through a slow back end"[..]),
            "change={change}: the client connection was not served\n{}",
            rig.proxy.log()
        );
    }
    let stats = rig.proxy.stats();
    assert_eq!(
        stats["shards"][0]["backend_failures"], 0,
        "a killed attempt counted as a failure: {stats}"
    );
    assert!(stats["shards"][0]["members_down"].as_array().unwrap().is_empty());
}
