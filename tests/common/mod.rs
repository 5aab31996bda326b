//! Shared harness for end-to-end tests: a throwaway PKI on disk, the proxy
//! binary started with a config, built-in back ends, and TLS clients.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use shardtls::control::admin::client_request;
use shardtls::pki::Ca;
use shardtls::test_server::{self, TestServerConfig, TestServerHandle, TestServerMode};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A temporary folder with a CA; issues certificates as files.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: Ca,
    serial: std::cell::Cell<u64>,
}

impl Pki {
    pub fn new() -> Self {
        Pki {
            dir: tempfile::tempdir().unwrap(),
            ca: Ca::new("test CA").unwrap(),
            serial: std::cell::Cell::new(100),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Issue a leaf for `names`, written as NAME.pem / NAME.key; returns (cert, key, serial hex).
    pub fn issue(&self, file: &str, names: &[&str]) -> (PathBuf, PathBuf, String) {
        let serial = self.serial.get() + 1;
        self.serial.set(serial);
        let issued = self.ca.issue(names, serial).unwrap();
        let cert = self.path(&format!("{file}.pem"));
        let key = self.path(&format!("{file}.key"));
        std::fs::write(&cert, &issued.cert_pem).unwrap();
        shardtls::pki::write_private(&key, issued.key_pem.as_bytes()).unwrap();
        (cert, key, serial_hex(serial))
    }

    /// The CA certificate as a file.
    pub fn ca_file(&self) -> PathBuf {
        let p = self.path("ca.pem");
        if !p.exists() {
            std::fs::write(&p, self.ca.cert_pem()).unwrap();
        }
        p
    }

    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        client_config(&self.ca, None)
    }
}

pub fn serial_hex(serial: u64) -> String {
    // x509-parser's raw_serial_as_string: colon-separated hex bytes, minimal length.
    let bytes = serial.to_be_bytes();
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(7);
    let mut v: Vec<u8> = bytes[first..].to_vec();
    if v[0] & 0x80 != 0 {
        v.insert(0, 0);
    }
    v.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls client config trusting `ca`, limited to `version` if given.
pub fn client_config(ca: &Ca, version: Option<&'static rustls::SupportedProtocolVersion>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der()).unwrap();
    let b = rustls::ClientConfig::builder_with_provider(provider());
    let b = match version {
        Some(v) => b.with_protocol_versions(&[v]).unwrap(),
        None => b.with_safe_default_protocol_versions().unwrap(),
    };
    Arc::new(b.with_root_certificates(roots).with_no_client_auth())
}

/// A loopback port that no other test, in this process or another, and no
/// kernel-chosen client port can take until this process ends.
///
/// Ports come from a process-wide counter over the ports outside the
/// kernel's ephemeral range (`net.ipv4.ip_local_port_range`, which client
/// sockets draw from), starting at an offset from the process id. Each is
/// claimed by an exclusive bind (no `SO_REUSEADDR`, no `SO_REUSEPORT`): the
/// bind fails if anyone holds the port, so two claimers cannot both win.
/// The claiming socket then stays open, bound but not listening, with
/// `SO_REUSEPORT` set after the bind: the proxy's listeners (and the
/// built-in back ends), which bind with `SO_REUSEPORT` as the same user,
/// can still bind the port, while every other binder is refused. A socket
/// that only binds takes no connections: connecting to a claimed port
/// nobody listens on is refused, as a dead back end should be.
///
/// Binding port 0 and closing the socket, as before, raced: the kernel could
/// hand the port to a parallel test, or to any client socket, before the
/// proxy bound it. Listening on port 0 in the proxy itself would need the
/// bound address reported back through the admin API; ports claimed here
/// also serve as dead back ends, which port 0 cannot give.
pub fn free_port() -> u16 {
    use socket2::{Domain, Socket, Type};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::OnceLock;
    static CANDIDATES: OnceLock<Vec<u16>> = OnceLock::new();
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let ports = CANDIDATES.get_or_init(|| {
        let (lo, hi) = ephemeral_range();
        let mut v: Vec<u16> = (2000..lo).chain(hi.saturating_add(1)..=u16::MAX).collect();
        // Each process starts elsewhere in the list: fewer failed claims.
        let n = v.len().max(1);
        v.rotate_left((std::process::id() as usize).wrapping_mul(7919) % n);
        v
    });
    for _ in 0..ports.len() {
        let port = ports[NEXT.fetch_add(1, Ordering::Relaxed) % ports.len()];
        let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        if sock.bind(&lo(port).into()).is_err() {
            continue;
        }
        sock.set_reuse_port(true).unwrap();
        HELD.lock().unwrap().push((port, sock));
        return port;
    }
    panic!("no loopback port left outside the ephemeral range");
}

/// A port as [`free_port`] gives, released for a listener that binds without
/// `SO_REUSEPORT` (the admin API). No other test of this process can get it;
/// another process could claim it between the release and the bind.
pub fn unreserved_port() -> u16 {
    let port = free_port();
    release_port(port);
    port
}

/// The sockets that hold the ports [`free_port`] handed out.
static HELD: std::sync::Mutex<Vec<(u16, socket2::Socket)>> = std::sync::Mutex::new(Vec::new());

fn release_port(port: u16) {
    HELD.lock().unwrap().retain(|(p, _)| *p != port);
}

/// The kernel's ephemeral port range (defaults when unreadable).
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|w| w.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999))
}

/// 127.0.0.1:`port`.
pub fn lo(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A path as a config-file or command-line word.
pub fn p(path: &Path) -> String {
    path.display().to_string()
}

/// Poll `cond` every 20 ms until it holds or `within` has passed.
pub fn wait_for(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if t0.elapsed() > within {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The status code of a raw HTTP reply; 0 when there is none.
pub fn status_of(reply: &str) -> u16 {
    reply
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Config lines for a certKey `name` issued for `names`; returns (lines, serial).
pub fn certkey(pki: &Pki, name: &str, names: &[&str]) -> (String, String) {
    let (cert, key, serial) = pki.issue(name, names);
    (
        format!("add ssl certKey {name} -cert {} -key {}\n", p(&cert), p(&key)),
        serial,
    )
}

/// Start a built-in back end on loopback.
pub fn backend(mode: TestServerMode) -> TestServerHandle {
    raise_limits();
    test_server::spawn(TestServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        mode,
        response_size: 64,
        tls: None,
        threads: 1,
    })
    .unwrap()
}

/// Start a built-in TLS back end with `server` config.
pub fn tls_backend(mode: TestServerMode, server: Arc<rustls::ServerConfig>) -> TestServerHandle {
    test_server::spawn(TestServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        mode,
        response_size: 64,
        tls: Some(server),
        threads: 1,
    })
    .unwrap()
}

/// A server config for a TLS back end from issued files.
pub fn server_config_from(cert: &Path, key: &Path) -> Arc<rustls::ServerConfig> {
    test_server::load_server_config(cert, key).unwrap()
}

/// The proxy binary running with a config file.
pub struct Proxy {
    pub child: Child,
    pub admin: String,
    pub config: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Proxy {
    /// Write `config` to a file and start `shardtls run --shards N` on it.
    pub fn start(config: &str, shards: usize) -> Proxy {
        Self::try_start(config, shards).unwrap()
    }

    pub fn try_start(config: &str, shards: usize) -> Result<Proxy, String> {
        Self::try_start_with_env(config, shards, &[])
    }

    /// As [`Proxy::try_start`], with extra environment variables.
    pub fn try_start_with_env(config: &str, shards: usize, env: &[(&str, &str)]) -> Result<Proxy, String> {
        Self::try_start_limited(config, shards, env, None)
    }

    /// As [`Proxy::try_start_with_env`], with the proxy's `RLIMIT_NOFILE`
    /// set to `nofile` when given.
    pub fn try_start_limited(
        config: &str,
        shards: usize,
        env: &[(&str, &str)],
        nofile: Option<u64>,
    ) -> Result<Proxy, String> {
        // Certificates of the tests live in folders of their own, outside
        // the config file's: run-time commands may read the temp folder.
        // Tests count the proxy's descriptors in /proc/PID/fd, which a
        // process that is not dumpable hides from its own user.
        let tmp = std::env::temp_dir();
        let args = ["--allow-dir".as_ref(), tmp.as_os_str(), "--allow-core-dumps".as_ref()];
        Self::spawn(config, shards, env, nofile, &args)
    }

    /// Start `shardtls run` on `config` with exactly the extra run flags `args`.
    pub fn try_start_args(config: &str, shards: usize, args: &[&str]) -> Result<Proxy, String> {
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
        Self::spawn(config, shards, &[], None, &args)
    }

    fn spawn(
        config: &str,
        shards: usize,
        env: &[(&str, &str)],
        nofile: Option<u64>,
        args: &[&std::ffi::OsStr],
    ) -> Result<Proxy, String> {
        raise_limits();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shardtls.conf");
        std::fs::write(&path, config).unwrap();
        let admin = dir.path().join("admin.sock").to_string_lossy().into_owned();
        let log = std::fs::File::create(dir.path().join("proxy.log")).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_shardtls"));
        cmd.args(["run", "-c"])
            .arg(&path)
            .args(["--shards", &shards.to_string(), "--admin", &admin])
            .args(args)
            .env("SHARDTLS_LOG", "debug")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(n) = nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe; it runs in the child only.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().unwrap();
        let mut p = Proxy {
            child,
            admin,
            config: path,
            dir,
        };
        let t0 = Instant::now();
        loop {
            if client_request(&p.admin, "GET", "/stats", "", None).is_ok() {
                return Ok(p);
            }
            if let Ok(Some(status)) = p.child.try_wait() {
                return Err(format!("proxy exited with {status}: {}", p.log()));
            }
            if t0.elapsed() > Duration::from_secs(15) {
                return Err(format!("proxy did not start: {}", p.log()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("proxy.log")).unwrap_or_default()
    }

    /// Send a command (or batch); Ok(reply) when accepted.
    pub fn ctl(&self, cmd: &str) -> Result<String, String> {
        let (ok, body) = client_request(&self.admin, "POST", "/cmd", cmd, None)?;
        if ok {
            Ok(body)
        } else {
            Err(body)
        }
    }

    pub fn stats(&self) -> serde_json::Value {
        let (_, body) = client_request(&self.admin, "GET", "/stats", "", None).unwrap();
        serde_json::from_str(&body).unwrap()
    }

    /// SIGTERM and wait for exit; returns the exit code.
    pub fn terminate(&mut self, within: Duration) -> Option<i32> {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let t0 = Instant::now();
        while t0.elapsed() < within {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking TLS client connection.
pub struct Client {
    pub tls: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
}

impl Client {
    pub fn connect(addr: SocketAddr, sni: &str, cfg: Arc<rustls::ClientConfig>) -> Result<Client, BoxError> {
        let sock = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
        sock.set_read_timeout(Some(Duration::from_secs(5)))?;
        sock.set_write_timeout(Some(Duration::from_secs(5)))?;
        let conn = rustls::ClientConnection::new(cfg, ServerName::try_from(sni.to_string())?)?;
        let mut tls = rustls::StreamOwned::new(conn, sock);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        Ok(Client { tls })
    }

    pub fn serial(&self) -> String {
        self.tls
            .conn
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|d| x509_parser::parse_x509_certificate(d.as_ref()).ok())
            .map(|(_, x)| x.tbs_certificate.raw_serial_as_string())
            .unwrap_or_default()
    }

    pub fn resumed(&self) -> bool {
        self.tls.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
    }

    pub fn version(&self) -> Option<rustls::ProtocolVersion> {
        self.tls.conn.protocol_version()
    }

    /// Write `data` and read back exactly as many bytes (echo back end).
    pub fn echo(&mut self, data: &[u8]) -> Result<Vec<u8>, BoxError> {
        self.tls.write_all(data)?;
        self.tls.flush()?;
        let mut out = vec![0u8; data.len()];
        self.tls.read_exact(&mut out)?;
        Ok(out)
    }

    /// Drive IO once so session tickets sent after the handshake are received.
    pub fn pump_tickets(&mut self) {
        let _ = self.echo(b"x");
    }

    pub fn close(mut self) {
        self.tls.conn.send_close_notify();
        let _ = self.tls.conn.complete_io(&mut self.tls.sock);
    }
}

/// Descriptors the process `pid` has open (sockets included): an accepted
/// connection shows up here the moment the process takes it.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// An entity-level field (`open`, `unbound`, ...) of (`kind`, `name`)
/// summed over every shard of a `/stats` document.
pub fn entity_total(stats: &serde_json::Value, kind: &str, name: &str, field: &str) -> u64 {
    stats["shards"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["core"]["entities"].as_array().into_iter().flatten())
        .filter(|e| e["kind"] == kind && e["name"] == name)
        .map(|e| e[field].as_u64().unwrap_or(0))
        .sum()
}

/// Every epoch line of an entity (`kind`, `name`) on every shard of a
/// `/stats` document, plus each shard's folded history of older epochs.
pub fn epoch_lines<'a>(stats: &'a serde_json::Value, kind: &str, name: &str) -> Vec<&'a serde_json::Value> {
    let mut out = Vec::new();
    for shard in stats["shards"].as_array().into_iter().flatten() {
        for e in shard["core"]["entities"].as_array().into_iter().flatten() {
            if e["kind"] == kind && e["name"] == name {
                out.extend(e["epochs"].as_array().into_iter().flatten());
                out.push(&e["older_epochs"]);
            }
        }
    }
    out
}

/// A counter of an entity summed over every epoch and shard.
pub fn total(stats: &serde_json::Value, kind: &str, name: &str, field: &str) -> u64 {
    epoch_lines(stats, kind, name)
        .iter()
        .map(|e| e[field].as_u64().unwrap_or(0))
        .sum()
}

/// Raise this test process's soft limits on open files and locked memory to
/// their hard limits, once: the tests open many sockets, and a fresh
/// machine's shell often has a soft `ulimit -n` of 1024. Children (the proxy)
/// inherit the raised limits.
pub fn raise_limits() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for res in [libc::RLIMIT_NOFILE, libc::RLIMIT_MEMLOCK] {
            // SAFETY: getrlimit/setrlimit on a struct we own.
            unsafe {
                let mut lim: libc::rlimit = std::mem::zeroed();
                if libc::getrlimit(res, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
                    lim.rlim_cur = lim.rlim_max;
                    let _ = libc::setrlimit(res, &lim);
                }
            }
        }
    });
}

/// A shard-shell counter (`accepted`, `refused`, `live_client_connections`,
/// ...) of each shard in a `/stats` document.
pub fn shard_counter(stats: &serde_json::Value, field: &str) -> Vec<u64> {
    stats["shards"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| s[field].as_u64().unwrap_or(0))
        .collect()
}

/// A TLS client that sent its ClientHello and read the server's first
/// flight, then stopped: a connection in the middle of its handshake.
pub struct HalfHandshake {
    pub conn: rustls::ClientConnection,
    pub sock: std::net::TcpStream,
    /// What the server sent so far.
    pub flight: Vec<u8>,
}

pub fn half_handshake(addr: SocketAddr, sni: &str, cfg: &Arc<rustls::ClientConfig>) -> HalfHandshake {
    use std::io::Read;
    let mut sock = std::net::TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap();
    let mut conn = rustls::ClientConnection::new(cfg.clone(), name).unwrap();
    conn.write_tls(&mut sock).unwrap();
    let mut buf = vec![0u8; 16 * 1024];
    let n = sock.read(&mut buf).unwrap();
    assert!(n > 0, "the server answered the ClientHello");
    buf.truncate(n);
    HalfHandshake {
        conn,
        sock,
        flight: buf,
    }
}

/// A proxy with one vserver `v1` (certificate for `site.test`) in front of a
/// plain echo service `web`.
pub struct EchoSetup {
    pub pki: Pki,
    pub _origin: TestServerHandle,
    pub proxy: Proxy,
    pub addr: SocketAddr,
}

pub fn echo_setup(shards: usize, vserver_extra: &str) -> EchoSetup {
    let pki = Pki::new();
    let origin = backend(TestServerMode::Echo);
    let port = free_port();
    let (ck, _) = certkey(&pki, "site", &["site.test"]);
    let config = format!(
        "{ck}add service web {} TCP\n\
         add lb vserver v1 SSL_TCP 127.0.0.1 {port}{vserver_extra}\n\
         bind ssl vserver v1 -certkeyName site\n\
         bind lb vserver v1 web\n",
        origin.local_addr().to_string().replace(':', " ")
    );
    let proxy = Proxy::start(&config, shards);
    EchoSetup {
        pki,
        _origin: origin,
        proxy,
        addr: lo(port),
    }
}
