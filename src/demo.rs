//! `shardtls demo`: the whole product on loopback with nothing to write.
//!
//! Makes a throwaway CA and certificate in memory, starts the built-in back
//! end and the proxy (2 shards, admin API on a private Unix socket), drives
//! real TLS connections through it, then rotates the certificate several
//! times under load while long-lived connections keep talking, and prints
//! what every phase saw: which certificate each new connection got, that no
//! established connection was lost, and the per-epoch report.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;

use crate::control::{admin::client_request, RunOptions};
use crate::pki::Ca;
use crate::test_server::{self, TestServerConfig, TestServerMode};

type BoxError = Box<dyn std::error::Error>;

const SNI: &str = "demo.shardtls.test";

/// A blocking TLS client connection through the proxy.
pub struct DemoClient {
    tls: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
}

impl DemoClient {
    pub fn connect(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> Result<Self, BoxError> {
        let sock = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
        sock.set_read_timeout(Some(Duration::from_secs(5)))?;
        sock.set_nodelay(true)?;
        let conn = rustls::ClientConnection::new(config, ServerName::try_from(SNI)?)?;
        let mut tls = rustls::StreamOwned::new(conn, sock);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        Ok(DemoClient { tls })
    }

    /// Serial number (hex) of the certificate the proxy presented.
    pub fn cert_serial(&self) -> String {
        self.tls
            .conn
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|der| x509_parser::parse_x509_certificate(der.as_ref()).ok())
            .map(|(_, x)| x.tbs_certificate.raw_serial_as_string())
            .unwrap_or_else(|| "?".into())
    }

    pub fn resumed(&self) -> bool {
        self.tls.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
    }

    /// One HTTP/1.1 request; returns the body length.
    pub fn get(&mut self) -> Result<usize, BoxError> {
        self.tls.write_all(b"GET / HTTP/1.1\r\nHost: demo\r\n\r\n")?;
        self.tls.flush()?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = self.tls.read(&mut chunk)?;
            if n == 0 {
                return Err("connection closed mid-response".into());
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .ok_or("response without Content-Length")?;
                if buf.len() >= end + 4 + len {
                    return Ok(len);
                }
            }
        }
    }

    pub fn close(mut self) {
        self.tls.conn.send_close_notify();
        let _ = self.tls.conn.complete_io(&mut self.tls.sock);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn free_port() -> Result<u16, BoxError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn write_pair(dir: &Path, name: &str, issued: &crate::pki::Issued) -> Result<(PathBuf, PathBuf), BoxError> {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, &issued.cert_pem)?;
    crate::pki::write_private(&key, issued.key_pem.as_bytes())?;
    Ok((cert, key))
}

fn ctl(admin: &str, cmd: &str) -> Result<String, BoxError> {
    let (ok, body) = client_request(admin, "POST", "/cmd", cmd, None)?;
    if ok {
        Ok(body)
    } else {
        Err(format!("`{cmd}` refused: {body}").into())
    }
}

/// The files `examples/shardtls.conf` names, in `dir` (created if need
/// be): `site.pem`/`site.key` (a leaf for www.example.test, issued by
/// the intermediate), `intermediate.pem` and `backend-ca.pem`, each from a
/// throwaway CA made now. For trying the example, never for production.
/// Refuses to replace a file that is there. Returns the files written.
pub fn write_example_certs(dir: &Path) -> Result<Vec<PathBuf>, BoxError> {
    let names = ["site.pem", "site.key", "intermediate.pem", "backend-ca.pem"];
    let paths: Vec<PathBuf> = names.iter().map(|n| dir.join(n)).collect();
    if let Some(there) = paths.iter().find(|p| std::fs::symlink_metadata(p).is_ok()) {
        return Err(format!("{} is already there; nothing written", there.display()).into());
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let root = Ca::new("shardtls example root CA (throwaway)")?;
    let intermediate = root.intermediate("shardtls example intermediate CA (throwaway)")?;
    let site = intermediate.issue(&["www.example.test"], 1)?;
    let backend_ca = Ca::new("shardtls example back-end CA (throwaway)")?;
    let write = |path: &Path, text: &[u8]| {
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    write(&paths[0], site.cert_pem.as_bytes())?;
    crate::pki::write_private(&paths[1], site.key_pem.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", paths[1].display()))?;
    write(&paths[2], intermediate.cert_pem().as_bytes())?;
    write(&paths[3], backend_ca.cert_pem().as_bytes())?;
    Ok(paths)
}

/// A line of the demo's story: on standard output, or on standard error
/// when standard output carries the JSON (`--json`).
macro_rules! say {
    ($json:expr, $($arg:tt)*) => {
        if $json {
            eprintln!($($arg)*)
        } else {
            println!($($arg)*)
        }
    };
}

/// Run the demo; returns an error if any invariant was broken.
pub fn main(json: bool) -> Result<(), BoxError> {
    // A fresh folder only this user can enter: its keys are nobody else's.
    let dir = crate::pki::private_dir("shardtls-demo")?;
    let result = run_demo(&dir, json);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_demo(dir: &Path, json: bool) -> Result<(), BoxError> {
    say!(json, "shardtls demo: everything on loopback, in {}", dir.display());
    let ca = Ca::new("shardtls demo CA")?;
    let (cert, key) = write_pair(dir, "site-1", &ca.issue(&[SNI], 1)?)?;

    let backend = test_server::spawn(TestServerConfig {
        listen: "127.0.0.1:0".parse()?,
        mode: TestServerMode::Http,
        response_size: 256,
        tls: None,
        threads: 1,
    })?;
    let port = free_port()?;
    let vserver: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let config = dir.join("demo.conf");
    std::fs::write(
        &config,
        format!(
            "# written by shardtls demo\n\
             add ssl certKey site -cert {} -key {}\n\
             add service web {} {} TCP\n\
             add lb vserver demo SSL_TCP 127.0.0.1 {port}\n\
             set ssl vserver demo -drainTimeout 30\n\
             bind ssl vserver demo -certkeyName site\n\
             bind lb vserver demo web\n",
            cert.display(),
            key.display(),
            backend.local_addr().ip(),
            backend.local_addr().port()
        ),
    )?;
    say!(
        json,
        "config ({}):\n{}",
        config.display(),
        std::fs::read_to_string(&config)?
    );

    let admin = dir.join("admin.sock").to_string_lossy().into_owned();
    let shards = crate::control::runtime::allowed_cpus().len().clamp(1, 2);
    let opts = RunOptions {
        config: config.clone(),
        shards: Some(shards),
        admin: crate::control::access::AdminOptions {
            endpoint: Some(admin.clone()),
            ..Default::default()
        },
        batch_wait_us: crate::control::DEFAULT_BATCH_WAIT_US,
        files: Default::default(),
        access_log: None,
    };
    let proxy = std::thread::spawn(move || crate::control::run(opts));
    let t0 = Instant::now();
    while client_request(&admin, "GET", "/stats", "", None).is_err() {
        if t0.elapsed() > Duration::from_secs(10) || proxy.is_finished() {
            return Err(match proxy.join() {
                Ok(Err(e)) => format!("proxy failed to start: {e}").into(),
                _ => "proxy did not start in 10 s".into(),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    say!(
        json,
        "proxy up: vserver demo on {vserver}, {shards} shard(s), back end on {}",
        backend.local_addr()
    );

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der())?;
    let client_cfg = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );

    // Phase 1: a burst of new connections, each one request.
    let n = 400;
    let t = Instant::now();
    let mut resumed = 0;
    for _ in 0..n {
        let mut c = DemoClient::connect(vserver, client_cfg.clone())?;
        c.get()?;
        resumed += usize::from(c.resumed());
        c.close();
    }
    let el = t.elapsed();
    say!(json,
        "\nphase 1: {n} TLS connections through the proxy, one request each: {:.0} conn/s from one client thread, {resumed} resumed, 0 errors",
        n as f64 / el.as_secs_f64()
    );

    // Phase 2: rotations under load.
    say!(json, "\nphase 2: rotating the certificate 3 times under load");
    let mut long_lived: Vec<DemoClient> = (0..8)
        .map(|_| DemoClient::connect(vserver, client_cfg.clone()))
        .collect::<Result<_, _>>()?;
    let old_serial = long_lived[0].cert_serial();
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<std::collections::BTreeMap<String, u64>>> = Arc::default();
    let errors = Arc::new(AtomicU64::new(0));
    let retried = Arc::new(AtomicU64::new(0));
    let load = {
        let (stop, seen, errors, retried, cfg) = (
            stop.clone(),
            seen.clone(),
            errors.clone(),
            retried.clone(),
            client_cfg.clone(),
        );
        std::thread::spawn(move || {
            let once = |cfg: &Arc<rustls::ClientConfig>| {
                DemoClient::connect(vserver, cfg.clone()).and_then(|mut c| {
                    c.get()?;
                    Ok(c)
                })
            };
            while !stop.load(Ordering::Relaxed) {
                // A handshake in flight when a rotation lands is killed (R2);
                // like a browser, the client retries it once.
                let outcome = once(&cfg).or_else(|_| {
                    retried.fetch_add(1, Ordering::Relaxed);
                    once(&cfg)
                });
                match outcome {
                    Ok(c) => {
                        *seen.lock().unwrap().entry(c.cert_serial()).or_default() += 1;
                        c.close();
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    let mut long_lived_requests = 0u64;
    for round in 2..=4u64 {
        for _ in 0..5 {
            for c in long_lived.iter_mut() {
                c.get()
                    .map_err(|e| format!("an established connection broke during rotation: {e}"))?;
                long_lived_requests += 1;
            }
            std::thread::sleep(Duration::from_millis(40));
        }
        let (cert, key) = write_pair(dir, &format!("site-{round}"), &ca.issue(&[SNI], round)?)?;
        let report = ctl(
            &admin,
            &format!(
                "update ssl certKey site -cert {} -key {}",
                cert.display(),
                key.display()
            ),
        )?;
        let line: Vec<&str> = report
            .lines()
            .filter(|l| l.contains("epoch opened") || l.contains("propagation"))
            .collect();
        say!(
            json,
            "  rotation {}: {}",
            round - 1,
            line.iter().map(|s| s.trim()).collect::<Vec<_>>().join("; ")
        );
    }
    for _ in 0..5 {
        for c in long_lived.iter_mut() {
            c.get()
                .map_err(|e| format!("an established connection broke after rotation: {e}"))?;
            long_lived_requests += 1;
        }
        std::thread::sleep(Duration::from_millis(40));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = load.join();
    let still_old = long_lived.iter().all(|c| c.cert_serial() == old_serial);
    for c in long_lived {
        c.close();
    }
    let fresh = DemoClient::connect(vserver, client_cfg.clone())?;
    let new_serial = fresh.cert_serial();
    fresh.close();

    say!(json, "\n  new connections by certificate serial seen:");
    for (serial, count) in seen.lock().unwrap().iter() {
        say!(json, "    serial {serial}: {count} connections");
    }
    say!(json,
        "  8 long-lived connections made {long_lived_requests} requests across all rotations: 0 lost; still on their original certificate: {still_old}"
    );
    say!(json, "  a connection opened now gets serial {new_serial}");
    let (_, stats) = client_request(&admin, "GET", "/stats", "", None)?;
    let killed = epoch_rows(&stats).iter().map(|r| r.killed).sum::<u64>();
    say!(json,
        "  handshakes killed by the rotations (R2, shards' count): {killed}; retried by the client: {}, failed after a retry: {}",
        retried.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed)
    );
    if json {
        // The one thing on standard output: `shardtls demo --json | jq` works.
        println!("{stats}");
    } else {
        println!("\nper shard and epoch of vserver demo (GET /stats; `shardtls demo --json` for all of it):");
        println!(
            "  {:>5} {:>5} {:>9} {:>11} {:>8} {:>7} {:>6}  status",
            "shard", "epoch", "handshakes", "resumed", "killed", "drained", "live"
        );
        for r in epoch_rows(&stats) {
            println!(
                "  {:>5} {:>5} {:>9} {:>11} {:>8} {:>7} {:>6}  {}",
                r.shard, r.epoch, r.handshakes, r.resumed, r.killed, r.drained, r.live, r.status
            );
        }
    }

    // SIGTERM drains the proxy.
    // SAFETY: raising a signal we installed a handler for.
    unsafe { libc::raise(libc::SIGTERM) };
    match proxy.join() {
        Ok(Ok(())) => say!(json, "proxy drained and stopped"),
        Ok(Err(e)) => return Err(e.into()),
        Err(_) => return Err("proxy thread panicked".into()),
    }
    if !still_old {
        return Err("an established connection changed certificate (R1 broken)".into());
    }
    // A kill the client's retry got past is the contract at work; a failure
    // after the retry, or more retries than kills, is not explained by it.
    let unexplained = errors.load(Ordering::Relaxed) + retried.load(Ordering::Relaxed).saturating_sub(killed);
    if unexplained > 0 {
        return Err(
            format!("{unexplained} new connection(s) failed during rotation with no kill to explain it").into(),
        );
    }
    if new_serial == old_serial {
        return Err("rotation did not reach new connections".into());
    }
    Ok(())
}

/// One line of the demo's report: a (shard, epoch) of the demo vserver.
struct EpochRow {
    shard: u64,
    epoch: u64,
    handshakes: u64,
    resumed: u64,
    killed: u64,
    drained: u64,
    live: u64,
    status: String,
}

fn epoch_rows(stats: &str) -> Vec<EpochRow> {
    let v: serde_json::Value = serde_json::from_str(stats).unwrap_or_default();
    let mut rows = Vec::new();
    for shard in v["shards"].as_array().into_iter().flatten() {
        for e in shard["core"]["entities"].as_array().into_iter().flatten() {
            if e["kind"] != "vserver" {
                continue;
            }
            for ep in e["epochs"].as_array().into_iter().flatten() {
                let n = |k: &str| ep[k].as_u64().unwrap_or(0);
                rows.push(EpochRow {
                    shard: shard["shard"].as_u64().unwrap_or(0),
                    epoch: n("epoch"),
                    handshakes: n("handshakes_completed"),
                    resumed: n("resumed"),
                    killed: n("killed"),
                    drained: n("closed_by_drain"),
                    live: n("live"),
                    status: ep["status"].as_str().unwrap_or("").to_string(),
                });
            }
        }
    }
    rows.sort_by_key(|r| (r.shard, r.epoch));
    rows
}
