//! Hostile clients and failing back ends, end to end over loopback: the
//! `shardtls` binary (two shards unless a test says otherwise) must close
//! what misbehaves, say why in its log, never panic, and keep serving.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use shardtls::test_server::TestServerMode;

const SHARDS: usize = 2;

/// The proxy's log without terminal colour codes.
fn plain_log(proxy: &Proxy) -> String {
    let raw = proxy.log();
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Log lines that mention `addr` as a field value (`peer=ADDR`, `member=ADDR`, ...).
fn lines_about(log: &str, addr: &str) -> Vec<String> {
    let pat = format!("={addr}");
    log.lines()
        .filter(|l| {
            l.match_indices(&pat).any(|(i, _)| {
                let rest = &l[i + pat.len()..];
                rest.is_empty() || !rest.starts_with(|c: char| c.is_ascii_digit())
            })
        })
        .map(str::to_string)
        .collect()
}

/// Wait until a log line about `addr` contains every word of `words`; the line.
fn log_line_about(proxy: &Proxy, addr: &str, words: &[&str]) -> Result<String, String> {
    let mut found = None;
    wait_for(Duration::from_secs(3), || {
        found = lines_about(&plain_log(proxy), addr)
            .into_iter()
            .find(|l| words.iter().all(|w| l.contains(w)));
        found.is_some()
    });
    found.ok_or_else(|| {
        format!(
            "no log line about {addr} containing {words:?}; lines about it:\n{}",
            lines_about(&plain_log(proxy), addr).join("\n")
        )
    })
}

/// Wait until some log line contains every word of `words`.
fn log_line_with(proxy: &Proxy, words: &[&str]) -> Result<String, String> {
    let mut found = None;
    wait_for(Duration::from_secs(3), || {
        found = plain_log(proxy)
            .lines()
            .find(|l| words.iter().all(|w| l.contains(w)))
            .map(str::to_string);
        found.is_some()
    });
    found.ok_or_else(|| format!("no log line containing {words:?}"))
}

fn assert_no_panic(proxy: &Proxy) {
    let log = plain_log(proxy);
    assert!(!log.contains("panicked"), "the proxy panicked:\n{log}");
}

/// Sum of `core.totals.FIELD` over every shard.
fn core_total(stats: &serde_json::Value, field: &str) -> u64 {
    stats["shards"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| s["core"]["totals"][field].as_u64().unwrap_or(0))
        .sum()
}

/// A vserver v1 on `port` with certKey `site` (for www.test) in front of
/// service `echo` at `backend`, plus `extra` lines.
fn simple_config(pki: &Pki, port: u16, backend: SocketAddr, extra: &str) -> String {
    let (ck, _) = certkey(pki, "site", &["www.test"]);
    format!(
        "{ck}add service echo 127.0.0.1 {} TCP\n\
         add lb vserver v1 SSL_TCP 127.0.0.1 {port}\n\
         bind ssl vserver v1 -certkeyName site\n\
         bind lb vserver v1 echo\n{extra}",
        backend.port()
    )
}

/// A normal client must complete a handshake and an echo on every shard:
/// connects until each shard's `accepted` counter has moved.
fn serves_on_every_shard(proxy: &Proxy, port: u16, cfg: &Arc<rustls::ClientConfig>) {
    let base = shard_counter(&proxy.stats(), "accepted");
    let mut served = vec![false; base.len()];
    for attempt in 0..60 {
        let mut c = Client::connect(lo(port), "www.test", cfg.clone())
            .unwrap_or_else(|e| panic!("normal client {attempt} failed: {e}\n{}", plain_log(proxy)));
        assert_eq!(
            c.echo(b"still serving").expect("echo after the bad input"),
            b"still serving"
        );
        c.close();
        let now = shard_counter(&proxy.stats(), "accepted");
        for (i, (a, b)) in base.iter().zip(&now).enumerate() {
            if b > a {
                served[i] = true;
            }
        }
        if served.iter().all(|s| *s) {
            return;
        }
    }
    panic!("not every shard served a client: {served:?}");
}

/// How a raw connection ended.
#[derive(Debug, PartialEq, Eq)]
enum Ending {
    Eof,
    Reset,
}

/// Read until the proxy ends the connection; the bytes it sent and how it ended.
fn read_to_end_within(s: &mut TcpStream, within: Duration) -> Result<(Vec<u8>, Ending), String> {
    let t0 = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = within
            .checked_sub(t0.elapsed())
            .ok_or_else(|| format!("still open after {within:?}"))?;
        s.set_read_timeout(Some(left.max(Duration::from_millis(1)))).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return Ok((got, Ending::Eof)),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                return Err(format!("still open after {within:?} (received {} bytes)", got.len()))
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Ok((got, Ending::Reset)),
        }
    }
}

/// True when `bytes` start with a TLS alert record.
fn starts_with_alert(bytes: &[u8]) -> bool {
    bytes.len() >= 7 && bytes[0] == 0x15 && bytes[1] == 0x03
}

/// The first flight of a client (its ClientHello records) for `sni`.
fn client_hello(cfg: &Arc<rustls::ClientConfig>, sni: &str) -> Vec<u8> {
    let mut c = rustls::ClientConnection::new(cfg.clone(), ServerName::try_from(sni.to_string()).unwrap()).unwrap();
    let mut out = Vec::new();
    while c.wants_write() {
        c.write_tls(&mut out).unwrap();
    }
    out
}

fn raw(port: u16) -> TcpStream {
    let s = TcpStream::connect_timeout(&lo(port), Duration::from_secs(3)).expect("connect");
    s.set_nodelay(true).unwrap();
    s
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

// ---------------------------------------------------------------------------
// Slowloris and floods
// ---------------------------------------------------------------------------

#[test]
fn slowloris_connections_are_closed_by_the_handshake_timeout_and_live_traffic_stays_fast() {
    const IDLE: usize = 1500;
    const PARTIAL: usize = 500;
    const TRICKLE: usize = 3;
    let pki = Pki::new();
    let be = backend(TestServerMode::Echo);
    let port = free_port();
    let cfg = simple_config(&pki, port, be.local_addr(), "set ssl vserver v1 -handshakeTimeout 1\n");
    let proxy = Proxy::start(&cfg, SHARDS);
    let client_cfg = pki.client_config();

    // A live client, established before the attack.
    let mut live = Client::connect(lo(port), "www.test", client_cfg.clone()).expect("live client");
    assert_eq!(live.echo(b"hello").unwrap(), b"hello");
    let stop = Arc::new(AtomicBool::new(false));
    let rtts = Arc::new(Mutex::new(Vec::<Duration>::new()));
    let live_thread = {
        let (stop, rtts) = (stop.clone(), rtts.clone());
        std::thread::spawn(move || -> Result<(), String> {
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let r = live
                    .echo(b"ping-ping-ping")
                    .map_err(|e| format!("live echo failed: {e}"))?;
                if r != b"ping-ping-ping" {
                    return Err("live echo returned other bytes".into());
                }
                rtts.lock().unwrap().push(t.elapsed());
                std::thread::sleep(Duration::from_millis(20));
            }
            live.close();
            Ok(())
        })
    };

    let hello = client_hello(&client_cfg, "www.test");
    assert!(hello.len() > 100, "ClientHello of {} bytes", hello.len());
    struct Loris {
        sock: TcpStream,
        opened: Instant,
        kind: &'static str,
        closed: Option<Duration>,
        sent: usize,
    }
    let mut all: Vec<Loris> = Vec::new();
    for i in 0..IDLE + PARTIAL + TRICKLE {
        let mut sock = raw(port);
        let opened = Instant::now();
        let kind = if i < IDLE {
            "idle"
        } else if i < IDLE + PARTIAL {
            sock.write_all(&hello[..hello.len() / 2]).unwrap();
            "partial"
        } else {
            sock.write_all(&hello[..1]).unwrap();
            "trickle"
        };
        sock.set_nonblocking(true).unwrap();
        let sent = if kind == "trickle" { 1 } else { 0 };
        all.push(Loris {
            sock,
            opened,
            kind,
            closed: None,
            sent,
        });
    }
    let opened_all = Instant::now();

    // A new client completes its handshake while the attack is on.
    let t = Instant::now();
    let mut fresh = Client::connect(lo(port), "www.test", client_cfg.clone()).expect("new client during the attack");
    assert_eq!(fresh.echo(b"fresh").unwrap(), b"fresh");
    let fresh_time = t.elapsed();
    fresh.close();

    // Watch every attacking socket until all are closed (a generous bound
    // for a loaded machine); trickle one byte a second.
    let deadline = opened_all + Duration::from_secs(20);
    let mut last_trickle = Instant::now();
    let mut buf = [0u8; 512];
    while Instant::now() < deadline && all.iter().any(|l| l.closed.is_none()) {
        let trickle_now = last_trickle.elapsed() >= Duration::from_secs(1);
        if trickle_now {
            last_trickle = Instant::now();
        }
        for l in all.iter_mut().filter(|l| l.closed.is_none()) {
            if trickle_now
                && l.kind == "trickle"
                && l.sent < hello.len()
                && l.sock.write_all(&hello[l.sent..l.sent + 1]).is_ok()
            {
                l.sent += 1;
            }
            match l.sock.read(&mut buf) {
                Ok(0) => l.closed = Some(l.opened.elapsed()),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => l.closed = Some(l.opened.elapsed()),
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    live_thread.join().unwrap().expect("the live client kept working");

    let still_open: Vec<_> = all.iter().filter(|l| l.closed.is_none()).map(|l| l.kind).collect();
    assert!(
        still_open.is_empty(),
        "{} slowloris connections still open 20 s after the last was opened (timeout 1 s): {:?}",
        still_open.len(),
        still_open
    );
    let earliest = all.iter().filter_map(|l| l.closed).min().unwrap();
    assert!(
        earliest >= Duration::from_millis(900),
        "a slow connection was closed after {earliest:?}, before the 1 s handshake timeout"
    );
    let latest = all.iter().filter_map(|l| l.closed).max().unwrap();

    // Live traffic kept flowing (every round trip succeeded: the thread's
    // result above); how fast is a figure for the log, not a test.
    let mut rtts = rtts.lock().unwrap().clone();
    assert!(
        rtts.len() >= 5,
        "only {} live round trips during the attack",
        rtts.len()
    );
    let med = median(&mut rtts);
    let p90 = rtts[rtts.len() * 9 / 10];
    eprintln!(
        "slowloris: {} conns closed in {:?}..{:?}; live rtt median {med:?} p90 {p90:?} over {}; new handshake {fresh_time:?}",
        all.len(),
        earliest,
        latest,
        rtts.len()
    );

    let stats = proxy.stats();
    let hs = core_total(&stats, "handshake_timeouts");
    let unbound = core_total(&stats, "unbound_timeouts");
    assert!(
        hs >= (PARTIAL + TRICKLE) as u64,
        "handshake_timeouts {hs}, wanted >= {}",
        PARTIAL + TRICKLE
    );
    assert!(
        hs + unbound >= (IDLE + PARTIAL + TRICKLE) as u64,
        "stats count {hs} handshake timeouts and {unbound} timeouts before the first byte for {} slow connections",
        IDLE + PARTIAL + TRICKLE
    );
    assert_no_panic(&proxy);
    serves_on_every_shard(&proxy, port, &client_cfg);
}

/// CPU seconds (user + system) the process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime); `after` starts at field 3.
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

fn idle_cpu_share(pid: u32, over: Duration) -> f64 {
    let c0 = cpu_seconds(pid);
    std::thread::sleep(over);
    (cpu_seconds(pid) - c0) / over.as_secs_f64()
}

#[test]
fn flood_above_max_clients_is_refused_early_and_established_connections_keep_working() {
    const MAX: usize = 20;
    const ESTABLISHED: usize = 5;
    const FLOOD: usize = 200;
    let pki = Pki::new();
    let be = backend(TestServerMode::Echo);
    let port = free_port();
    let (ck, _) = certkey(&pki, "site", &["www.test"]);
    let cfg = format!(
        "{ck}add service echo 127.0.0.1 {} TCP\n\
         add lb vserver v1 SSL_TCP 127.0.0.1 {port} -maxClients {MAX}\n\
         set ssl vserver v1 -handshakeTimeout 3\n\
         bind ssl vserver v1 -certkeyName site\n\
         bind lb vserver v1 echo\n",
        be.local_addr().port()
    );
    let proxy = Proxy::start(&cfg, 1);
    let pid = proxy.child.id();
    let client_cfg = pki.client_config();
    let idle_before = idle_cpu_share(pid, Duration::from_secs(1));

    let mut clients: Vec<Client> = (0..ESTABLISHED)
        .map(|i| {
            Client::connect(lo(port), "www.test", client_cfg.clone()).unwrap_or_else(|e| panic!("client {i}: {e}"))
        })
        .collect();
    for c in &mut clients {
        assert_eq!(c.echo(b"before").unwrap(), b"before");
    }

    // The flood: connections that send nothing.
    let t0 = Instant::now();
    let mut flood: Vec<(TcpStream, Option<Duration>)> = Vec::new();
    for _ in 0..FLOOD {
        let s = raw(port);
        s.set_nonblocking(true).unwrap();
        flood.push((s, None));
    }
    let flood_opened = t0.elapsed();
    // Established connections keep working while the flood holds every slot.
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(
            c.echo(b"during the flood")
                .unwrap_or_else(|e| panic!("client {i} during the flood: {e}")),
            b"during the flood"
        );
    }
    // Extra connections are refused at accept (the refused counter, not the
    // 3 s handshake timeout that the admitted ones would meet), and their
    // sockets see the close.
    let want = (FLOOD - (MAX - ESTABLISHED)) as u64;
    let refused_now = || shard_counter(&proxy.stats(), "refused").iter().sum::<u64>();
    assert!(
        wait_for(Duration::from_secs(20), || refused_now() >= want),
        "refused counter {} of {want} within 20 s (limit {MAX}, {ESTABLISHED} established); opening took {flood_opened:?}",
        refused_now()
    );
    let refused = refused_now();
    assert_eq!(refused, want, "the limit let fewer in than it should");
    let mut buf = [0u8; 64];
    wait_for(Duration::from_secs(20), || {
        for (s, closed) in flood.iter_mut().filter(|(_, c)| c.is_none()) {
            match s.read(&mut buf) {
                Ok(0) => *closed = Some(t0.elapsed()),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => *closed = Some(t0.elapsed()),
            }
        }
        flood.iter().filter(|(_, c)| c.is_some()).count() as u64 >= want
    });
    let closed = flood.iter().filter(|(_, c)| c.is_some()).count();
    assert!(
        closed as u64 >= want,
        "only {closed} of {FLOOD} flood sockets saw their close; {refused} refused"
    );
    log_line_with(&proxy, &["refused", "full"]).expect("refusals are logged");

    // A new client is refused while full, and served once the flood ends.
    drop(flood);
    assert!(
        wait_for(Duration::from_secs(5), || shard_counter(
            &proxy.stats(),
            "live_client_connections"
        )
        .iter()
        .sum::<u64>()
            == ESTABLISHED as u64),
        "the proxy still counts {:?} open client connections after the flood closed",
        shard_counter(&proxy.stats(), "live_client_connections")
    );
    let mut after = Client::connect(lo(port), "www.test", client_cfg.clone()).expect("new client after the flood");
    assert_eq!(after.echo(b"after").unwrap(), b"after");
    after.close();
    for c in &mut clients {
        assert_eq!(c.echo(b"after the flood").unwrap(), b"after the flood");
    }

    // Accept never spins: the idle proxy burns (almost) no CPU after the
    // flood. A spinning accept loop takes a whole core (half of one even on
    // a loaded machine); an idle proxy a few hundredths.
    let idle_after = idle_cpu_share(pid, Duration::from_secs(2));
    eprintln!("flood: {closed} refused; idle CPU before {idle_before:.3} after {idle_after:.3} cores");
    assert!(
        idle_after < 0.25,
        "idle proxy uses {idle_after:.3} cores after the flood (before: {idle_before:.3})"
    );
    assert_no_panic(&proxy);
}

// ---------------------------------------------------------------------------
// Broken and hostile TLS input
// ---------------------------------------------------------------------------

struct Served {
    proxy: Proxy,
    port: u16,
    pki: Pki,
    _be: shardtls::test_server::TestServerHandle,
}

fn serve_simple(extra: &str) -> Served {
    let pki = Pki::new();
    let be = backend(TestServerMode::Echo);
    let port = free_port();
    let cfg = simple_config(&pki, port, be.local_addr(), extra);
    let proxy = Proxy::start(&cfg, SHARDS);
    Served {
        proxy,
        port,
        pki,
        _be: be,
    }
}

/// Send `bytes` (then FIN when `fin`), expect the proxy to end the
/// connection within 3 s; returns (what it sent, how it ended, our address).
fn send_bad(port: u16, bytes: &[u8], fin: bool) -> (Vec<u8>, Ending, String) {
    let mut s = raw(port);
    let me = s.local_addr().unwrap().to_string();
    // The proxy may close (even reset) before it has read everything: fine.
    let _ = s.write_all(bytes);
    if fin {
        let _ = s.shutdown(Shutdown::Write);
    }
    let (got, end) = read_to_end_within(&mut s, Duration::from_secs(3))
        .unwrap_or_else(|e| panic!("bad input {:02x?}..: {e}", &bytes[..bytes.len().min(8)]));
    (got, end, me)
}

#[test]
fn garbage_bytes_end_the_connection_with_an_alert_and_a_log_line() {
    let s = serve_simple("");
    let (got, end, me) = send_bad(s.port, b"GET / HTTP/1.1\r\nHost: www.test\r\n\r\n", false);
    let line = log_line_about(&s.proxy, &me, &["handshake failed"]).unwrap();
    eprintln!("garbage: {end:?} after {:02x?}; log: {line}", &got[..got.len().min(7)]);
    assert!(starts_with_alert(&got), "no TLS alert before the close, got {got:02x?}");
    assert_no_panic(&s.proxy);
    serves_on_every_shard(&s.proxy, s.port, &s.pki.client_config());
}

#[test]
fn random_binary_garbage_never_stalls_a_shard() {
    let s = serve_simple("");
    // Many kinds of junk, including what looks like a record header.
    let mut seed = 0x9e3779b97f4a7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..40 {
        let len = 1 + (next() % 3000) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if i % 4 == 0 {
            bytes[0] = 0x16;
            if len > 2 {
                bytes[1] = 3;
                bytes[2] = 1;
            }
        }
        let _ = send_bad(s.port, &bytes, true);
    }
    assert_no_panic(&s.proxy);
    serves_on_every_shard(&s.proxy, s.port, &s.pki.client_config());
}

#[test]
fn truncated_record_then_eof_ends_the_connection_with_a_log_line() {
    let s = serve_simple("");
    let hello = client_hello(&s.pki.client_config(), "www.test");
    let (got, end, me) = send_bad(s.port, &hello[..hello.len() - 20], true);
    let line = log_line_about(&s.proxy, &me, &["handshake failed"]).unwrap();
    eprintln!("truncated: {end:?} after {} bytes; log: {line}", got.len());
    assert_no_panic(&s.proxy);
    serves_on_every_shard(&s.proxy, s.port, &s.pki.client_config());
}

#[test]
fn oversized_record_header_gets_an_alert_and_a_log_line() {
    let s = serve_simple("");
    let mut bytes = vec![0x16, 0x03, 0x01, 0xff, 0xff];
    bytes.extend(std::iter::repeat_n(0x41, 1000));
    let (got, end, me) = send_bad(s.port, &bytes, false);
    let line = log_line_about(&s.proxy, &me, &["handshake failed"]).unwrap();
    eprintln!(
        "oversized: {end:?} after {:02x?}; log: {line}",
        &got[..got.len().min(7)]
    );
    assert!(starts_with_alert(&got), "no TLS alert before the close, got {got:02x?}");
    // record_overflow (22) or decode_error (50).
    assert!(matches!(got[6], 22 | 50), "alert {} for an oversized record", got[6]);
    assert_no_panic(&s.proxy);
    serves_on_every_shard(&s.proxy, s.port, &s.pki.client_config());
}

fn trust_anything() -> Arc<rustls::ClientConfig> {
    let prov = provider();
    Arc::new(
        rustls::ClientConfig::builder_with_provider(prov.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(shardtls::tls::AnyServerCert::new(&prov)))
            .with_no_client_auth(),
    )
}

#[test]
fn unknown_sni_gets_the_default_certificate() {
    let pki = Pki::new();
    let be = backend(TestServerMode::Echo);
    let port = free_port();
    let (site, site_serial) = certkey(&pki, "site", &["www.test"]);
    let (other, other_serial) = certkey(&pki, "other", &["other.test"]);
    let cfg = format!(
        "{site}{other}add service echo 127.0.0.1 {} TCP\n\
         add lb vserver v1 SSL_TCP 127.0.0.1 {port}\n\
         set ssl vserver v1 -SNIEnable ENABLED\n\
         bind ssl vserver v1 -certkeyName site\n\
         bind ssl vserver v1 -certkeyName other -SNICert\n\
         bind lb vserver v1 echo\n",
        be.local_addr().port()
    );
    let proxy = Proxy::start(&cfg, SHARDS);
    let any = trust_anything();
    let c = Client::connect(lo(port), "other.test", any.clone()).expect("SNI other.test");
    assert_eq!(c.serial(), other_serial, "SNI other.test");
    c.close();
    let mut c = Client::connect(lo(port), "unknown.example", any.clone()).expect("unknown SNI");
    assert_eq!(
        c.serial(),
        site_serial,
        "an unknown SNI must get the default certificate"
    );
    assert_eq!(c.echo(b"unknown sni").unwrap(), b"unknown sni");
    c.close();
    // No SNI at all (an IP address as the name): the default too.
    let c = Client::connect(lo(port), "127.0.0.1", any).expect("no SNI");
    assert_eq!(c.serial(), site_serial, "no SNI");
    c.close();
    // A client that verifies names and asked for the unknown one fails on its side, cleanly.
    assert!(Client::connect(lo(port), "unknown.example", pki.client_config()).is_err());
    assert_no_panic(&proxy);
    serves_on_every_shard(&proxy, port, &pki.client_config());
}

fn client_cert_config(ca: &shardtls::pki::Ca, cert: &Path, key: &Path) -> Arc<rustls::ClientConfig> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&std::fs::read(cert).unwrap())
        .collect::<Result<_, _>>()
        .unwrap();
    let key: PrivateKeyDer<'static> = PrivateKeyDer::from_pem_slice(&std::fs::read(key).unwrap()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der()).unwrap();
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .unwrap(),
    )
}

/// Handshake then echo; Err with the reason when either fails.
fn try_echo(port: u16, cfg: Arc<rustls::ClientConfig>) -> Result<(Client, String), String> {
    let mut c = Client::connect(lo(port), "www.test", cfg).map_err(|e| format!("handshake: {e}"))?;
    let me = c.tls.sock.local_addr().unwrap().to_string();
    match c.echo(b"who am i") {
        Ok(b) if b == b"who am i" => Ok((c, me)),
        Ok(_) => Err(format!("{me}: wrong echo")),
        Err(e) => Err(format!("{me}: {e}")),
    }
}

#[test]
fn client_certificate_that_fails_verification_is_rejected_with_a_log_line() {
    let pki = Pki::new();
    let be = backend(TestServerMode::Echo);
    let port = free_port();
    let (site, _) = certkey(&pki, "site", &["www.test"]);
    let cfg = format!(
        "{site}add ssl certKey clients -cert {}\n\
         add service echo 127.0.0.1 {} TCP\n\
         add lb vserver v1 SSL_TCP 127.0.0.1 {port}\n\
         set ssl vserver v1 -clientAuth ENABLED -clientCert MANDATORY\n\
         bind ssl vserver v1 -certkeyName site\n\
         bind ssl vserver v1 -certkeyName clients -CA\n\
         bind lb vserver v1 echo\n",
        p(&pki.ca_file()),
        be.local_addr().port()
    );
    let proxy = Proxy::start(&cfg, SHARDS);

    // A client certificate from the trusted CA works.
    let (gc, gk, _) = pki.issue("good-client", &["client.test"]);
    let (c, _) = try_echo(port, client_cert_config(&pki.ca, &gc, &gk)).expect("a client with a good certificate");
    c.close();

    // One from another CA is refused, with the reason in the log.
    let stranger = Pki::new();
    let (bc, bk, _) = stranger.issue("bad-client", &["client.test"]);
    let err = match try_echo(port, client_cert_config(&pki.ca, &bc, &bk)) {
        Ok(_) => panic!("a client certificate from an unknown CA was accepted"),
        Err(e) => e,
    };
    eprintln!("foreign client cert: {err}");
    assert!(err.contains("alert") || err.contains("handshake"), "{err}");
    let me = err.split(": ").next().unwrap();
    let line = if me.starts_with("127.0.0.1:") {
        log_line_about(&proxy, me, &["handshake failed", "certificate"]).unwrap()
    } else {
        log_line_with(&proxy, &["handshake failed", "certificate"]).unwrap()
    };
    eprintln!("log: {line}");
    assert!(
        line.contains("UnknownIssuer") || line.contains("issuer") || line.contains("BadSignature"),
        "{line}"
    );

    // No certificate at all: refused too.
    let no_cert = pki.client_config();
    assert!(
        try_echo(port, no_cert).is_err(),
        "a client without a certificate was accepted"
    );
    log_line_with(&proxy, &["handshake failed", "no certificate"])
        .or_else(|_| log_line_with(&proxy, &["handshake failed", "NoCertificates"]))
        .unwrap();

    assert_no_panic(&proxy);
    let good = client_cert_config(&pki.ca, &gc, &gk);
    // every shard still serves clients with good certificates
    let base = shard_counter(&proxy.stats(), "accepted");
    let mut served = vec![false; base.len()];
    for _ in 0..60 {
        let (c, _) = try_echo(port, good.clone()).expect("good client after the bad ones");
        c.close();
        for (i, (a, b)) in base.iter().zip(shard_counter(&proxy.stats(), "accepted")).enumerate() {
            served[i] |= b > *a;
        }
        if served.iter().all(|s| *s) {
            break;
        }
    }
    assert!(served.iter().all(|s| *s), "{served:?}");
}

// ---------------------------------------------------------------------------
// Failing back ends
// ---------------------------------------------------------------------------

/// A vserver v1 on `port` in front of `targets` (lines defining them) bound as `bind`.
fn vserver_config(pki: &Pki, port: u16, targets: &str, bind: &str, vs_flags: &str) -> String {
    let (ck, _) = certkey(pki, "site", &["www.test"]);
    format!(
        "{ck}{targets}add lb vserver v1 SSL_TCP 127.0.0.1 {port}{vs_flags}\n\
         bind ssl vserver v1 -certkeyName site\n\
         bind lb vserver v1 {bind}\n"
    )
}

/// After the handshake, expect the proxy to close: our read sees the
/// close_notify (a clean end), within `within`. Returns the elapsed time.
fn expect_close_notify(c: &mut Client, within: Duration) -> Result<Duration, String> {
    let t0 = Instant::now();
    c.tls.sock.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match c.tls.read(&mut buf) {
            Ok(0) => return Ok(t0.elapsed()),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                return Err(format!("connection still open after {:?}", t0.elapsed()))
            }
            Err(e) => return Err(format!("ended without close_notify after {:?}: {e}", t0.elapsed())),
        }
    }
}

#[test]
fn refusing_back_end_ends_the_client_with_close_notify_and_a_log_line() {
    let pki = Pki::new();
    let port = free_port();
    let dead = free_port();
    let cfg = vserver_config(
        &pki,
        port,
        &format!("add service dead 127.0.0.1 {dead} TCP\n"),
        "dead",
        "",
    );
    let proxy = Proxy::start(&cfg, SHARDS);
    let mut c = Client::connect(lo(port), "www.test", pki.client_config()).expect("handshake");
    let me = c.tls.sock.local_addr().unwrap().to_string();
    let took = expect_close_notify(&mut c, Duration::from_secs(3)).unwrap();
    let line = log_line_about(&proxy, &me, &["no back end"]).unwrap();
    eprintln!("refused back end: closed after {took:?}; log: {line}");
    assert!(
        line.contains(&dead.to_string()) && line.to_lowercase().contains("refused"),
        "{line}"
    );
    assert_no_panic(&proxy);
}

/// A back end that reads a little, then resets the connection.
fn resetting_backend() -> (SocketAddr, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = std::thread::spawn(move || {
        l.set_nonblocking(false).unwrap();
        if let Ok((mut s, _)) = l.accept() {
            let mut buf = [0u8; 64];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"partial answer");
            std::thread::sleep(Duration::from_millis(100));
            let linger = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            use std::os::fd::AsRawFd;
            unsafe {
                libc::setsockopt(
                    s.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    &linger as *const _ as *const libc::c_void,
                    std::mem::size_of::<libc::linger>() as u32,
                );
            }
            drop(s);
        }
    });
    (addr, h)
}

#[test]
fn back_end_reset_mid_transfer_ends_the_client_cleanly_with_a_log_line() {
    let pki = Pki::new();
    let port = free_port();
    let (addr, h) = resetting_backend();
    let cfg = vserver_config(
        &pki,
        port,
        &format!("add service rst 127.0.0.1 {} TCP\n", addr.port()),
        "rst",
        "",
    );
    let proxy = Proxy::start(&cfg, SHARDS);
    let mut c = Client::connect(lo(port), "www.test", pki.client_config()).expect("handshake");
    let me = c.tls.sock.local_addr().unwrap().to_string();
    c.tls.write_all(b"request").unwrap();
    c.tls.flush().unwrap();
    let mut got = [0u8; 14];
    c.tls.read_exact(&mut got).expect("the first part of the answer");
    assert_eq!(&got, b"partial answer");
    let took = expect_close_notify(&mut c, Duration::from_secs(3)).unwrap();
    h.join().unwrap();
    let line = log_line_about(&proxy, &me, &["back-end connection failed"]).unwrap();
    eprintln!("reset back end: closed after {took:?}; log: {line}");
    assert!(line.to_lowercase().contains("reset"), "{line}");
    assert_no_panic(&proxy);
}

#[test]
fn stalled_back_end_is_closed_by_the_idle_timeout() {
    let pki = Pki::new();
    let port = free_port();
    // Accepts (the kernel completes the handshake) but never reads or writes.
    let stall = TcpListener::bind("127.0.0.1:0").unwrap();
    let saddr = stall.local_addr().unwrap();
    let cfg = vserver_config(
        &pki,
        port,
        &format!("add service stall 127.0.0.1 {} TCP\n", saddr.port()),
        "stall",
        " -cltTimeout 1",
    );
    let proxy = Proxy::start(&cfg, SHARDS);
    let mut c = Client::connect(lo(port), "www.test", pki.client_config()).expect("handshake");
    let me = c.tls.sock.local_addr().unwrap().to_string();
    c.tls.write_all(b"anyone there?").unwrap();
    c.tls.flush().unwrap();
    let took = expect_close_notify(&mut c, Duration::from_secs(15)).unwrap();
    assert!(
        took >= Duration::from_millis(800),
        "closed after {took:?}, before the 1 s idle timeout"
    );
    let line = log_line_about(&proxy, &me, &["idle timeout"]).unwrap();
    eprintln!("stalled back end: closed after {took:?}; log: {line}");
    assert_no_panic(&proxy);
    drop(stall);
}

#[test]
fn tls_back_end_with_a_wrong_certificate_ends_the_client_with_a_log_line() {
    let pki = Pki::new();
    let port = free_port();
    // The back end's certificate comes from a CA the proxy does not trust.
    let stranger = Pki::new();
    let (bc, bk, _) = stranger.issue("backend", &["api.internal"]);
    let be = tls_backend(TestServerMode::Echo, server_config_from(&bc, &bk));
    let targets = format!(
        "add ssl certKey backend-ca -cert {}\n\
         add service api 127.0.0.1 {} SSL_TCP\n\
         set ssl service api -serverAuth ENABLED -commonName api.internal\n\
         bind ssl service api -certkeyName backend-ca -CA\n",
        p(&pki.ca_file()),
        be.local_addr().port()
    );
    let cfg = vserver_config(&pki, port, &targets, "api", "");
    let proxy = Proxy::start(&cfg, SHARDS);
    let mut c = Client::connect(lo(port), "www.test", pki.client_config()).expect("handshake");
    let me = c.tls.sock.local_addr().unwrap().to_string();
    let took = expect_close_notify(&mut c, Duration::from_secs(3)).unwrap();
    let line = log_line_about(&proxy, &me, &["no back end"]).unwrap();
    eprintln!("wrong back-end certificate: closed after {took:?}; log: {line}");
    assert!(
        line.contains("certificate") && (line.contains("UnknownIssuer") || line.contains("BadSignature")),
        "{line}"
    );
    assert_no_panic(&proxy);

    // The same back end with a name it does not have is refused too, naming why.
    let (gc, gk, _) = pki.issue("backend2", &["other.internal"]);
    let be2 = tls_backend(TestServerMode::Echo, server_config_from(&gc, &gk));
    proxy
        .ctl(&format!("add service api2 127.0.0.1 {} SSL_TCP\nset ssl service api2 -serverAuth ENABLED -commonName api.internal\nbind ssl service api2 -certkeyName backend-ca -CA\nunbind lb vserver v1 api\nbind lb vserver v1 api2", be2.local_addr().port()))
        .expect("switch to the misnamed back end");
    let mut c = Client::connect(lo(port), "www.test", pki.client_config()).expect("handshake");
    let me = c.tls.sock.local_addr().unwrap().to_string();
    expect_close_notify(&mut c, Duration::from_secs(3)).unwrap();
    let line = log_line_about(&proxy, &me, &["no back end"]).unwrap();
    eprintln!("misnamed back-end certificate: {line}");
    assert!(
        line.contains("NotValidForName") || line.to_lowercase().contains("name"),
        "{line}"
    );
}

#[test]
fn whole_service_group_down_closes_new_connections_quickly_with_a_log_line() {
    let pki = Pki::new();
    let port = free_port();
    let dead: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut targets = "add serviceGroup web TCP\n".to_string();
    for d in &dead {
        targets.push_str(&format!("bind serviceGroup web 127.0.0.1 {d}\n"));
    }
    let cfg = vserver_config(&pki, port, &targets, "web", "");
    let proxy = Proxy::start(&cfg, SHARDS);
    for _ in 0..4 {
        let t0 = Instant::now();
        let mut c = Client::connect(lo(port), "www.test", pki.client_config()).expect("handshake");
        let me = c.tls.sock.local_addr().unwrap().to_string();
        expect_close_notify(&mut c, Duration::from_secs(3)).unwrap();
        let took = t0.elapsed();
        assert!(
            took < Duration::from_secs(1),
            "a client waited {took:?} for a group that is all down"
        );
        let line = log_line_about(&proxy, &me, &["no back end"]).unwrap();
        assert!(line.contains("web"), "the log line does not name the group: {line}");
    }
    // Disabled group: refused at once too, with its own reason.
    proxy.ctl("disable serviceGroup web").expect("disable");
    let mut c = Client::connect(lo(port), "www.test", pki.client_config()).expect("handshake");
    let me = c.tls.sock.local_addr().unwrap().to_string();
    expect_close_notify(&mut c, Duration::from_secs(2)).unwrap();
    let line = log_line_about(&proxy, &me, &["no back end"]).unwrap();
    eprintln!("disabled group: {line}");
    assert_no_panic(&proxy);
}

#[test]
fn dead_group_member_is_skipped_and_the_others_keep_serving() {
    let pki = Pki::new();
    let port = free_port();
    let be = backend(TestServerMode::Echo);
    let dead = free_port();
    let targets = format!(
        "add serviceGroup web TCP\nbind serviceGroup web 127.0.0.1 {dead}\nbind serviceGroup web 127.0.0.1 {}\n",
        be.local_addr().port()
    );
    let cfg = vserver_config(&pki, port, &targets, "web", "");
    let proxy = Proxy::start(&cfg, SHARDS);
    for i in 0..12 {
        let (c, _) = try_echo(port, pki.client_config()).unwrap_or_else(|e| panic!("client {i}: {e}"));
        c.close();
    }
    assert_no_panic(&proxy);
}

/// Members `stats` reports down on any shard.
fn members_down(stats: &serde_json::Value) -> Vec<String> {
    let mut v: Vec<String> = stats["shards"]
        .as_array()
        .map(|shards| {
            shards
                .iter()
                .flat_map(|s| s["members_down"].as_array().cloned().unwrap_or_default())
                .filter_map(|m| m.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    v.dedup();
    v
}

#[test]
fn down_member_is_probed_and_back_in_service_without_client_traffic() {
    let pki = Pki::new();
    let port = free_port();
    let dead = free_port();
    let member = lo(dead).to_string();
    let targets = format!("add service svc 127.0.0.1 {dead} TCP -healthInterval 1 -healthRetries 2\n");
    let cfg = vserver_config(&pki, port, &targets, "svc", "");
    let proxy = Proxy::start(&cfg, 1);
    // Two refused connects in a row mark the member down (not one).
    for i in 0..2 {
        assert!(members_down(&proxy.stats()).is_empty(), "down after {i} failures");
        let mut c = Client::connect(lo(port), "www.test", pki.client_config()).expect("handshake");
        expect_close_notify(&mut c, Duration::from_secs(3)).unwrap();
    }
    assert!(
        wait_for(Duration::from_secs(2), || members_down(&proxy.stats())
            == vec![member.clone()]),
        "member not marked down: {:#}",
        proxy.stats()
    );
    log_line_with(&proxy, &["marked down", &member]).unwrap();
    // While it is down, a client is refused at once, without a connect.
    let t0 = Instant::now();
    let mut c = Client::connect(lo(port), "www.test", pki.client_config()).expect("handshake");
    expect_close_notify(&mut c, Duration::from_secs(3)).unwrap();
    assert!(t0.elapsed() < Duration::from_secs(1), "refusal took {:?}", t0.elapsed());

    // The member comes back; the probe finds it with no client traffic.
    let be = shardtls::test_server::spawn(shardtls::test_server::TestServerConfig {
        listen: lo(dead),
        mode: TestServerMode::Echo,
        response_size: 64,
        tls: None,
        threads: 1,
    })
    .expect("back end on the dead port");
    assert!(
        wait_for(Duration::from_secs(4), || members_down(&proxy.stats()).is_empty()),
        "member still down 4 s after it came back (interval 1 s): {:#}",
        proxy.stats()
    );
    assert!(be.connections() >= 1, "no probe reached the back end");
    let probes: u64 = shard_counter(&proxy.stats(), "health_probes").iter().sum();
    assert!(probes >= 1, "no health probe counted");
    log_line_with(&proxy, &["up again", &member]).unwrap();
    let before = be.connections();
    let (c, _) = try_echo(port, pki.client_config()).expect("served once the member is up");
    c.close();
    assert!(be.connections() > before);
    assert_no_panic(&proxy);
}

#[test]
fn tls_member_with_a_wrong_certificate_stays_down_while_probed() {
    let pki = Pki::new();
    let port = free_port();
    let stranger = Pki::new();
    let (bc, bk, _) = stranger.issue("backend", &["api.internal"]);
    let be = tls_backend(TestServerMode::Echo, server_config_from(&bc, &bk));
    let member = be.local_addr().to_string();
    let targets = format!(
        "add ssl certKey backend-ca -cert {}\n\
         add service api 127.0.0.1 {} SSL_TCP -healthInterval 1 -healthRetries 1\n\
         set ssl service api -serverAuth ENABLED -commonName api.internal\n\
         bind ssl service api -certkeyName backend-ca -CA\n",
        p(&pki.ca_file()),
        be.local_addr().port()
    );
    let cfg = vserver_config(&pki, port, &targets, "api", "");
    let proxy = Proxy::start(&cfg, 1);
    let mut c = Client::connect(lo(port), "www.test", pki.client_config()).expect("handshake");
    expect_close_notify(&mut c, Duration::from_secs(3)).unwrap();
    assert!(
        wait_for(Duration::from_secs(2), || members_down(&proxy.stats())
            == vec![member.clone()]),
        "member not marked down: {:#}",
        proxy.stats()
    );
    // The port answers, but the probe's handshake fails verification each time.
    assert!(
        wait_for(Duration::from_secs(5), || shard_counter(
            &proxy.stats(),
            "health_probes"
        )
        .iter()
        .sum::<u64>()
            >= 2),
        "fewer than 2 probes in 5 s with a 1 s interval: {:#}",
        proxy.stats()
    );
    assert_eq!(
        members_down(&proxy.stats()),
        vec![member.clone()],
        "a TCP-only probe let it up"
    );
    assert!(
        be.connections() >= 3,
        "probes did not reach the back end: {}",
        be.connections()
    );
    assert_no_panic(&proxy);
}
