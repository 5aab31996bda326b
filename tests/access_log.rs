//! The access log (`run --access-log PATH --access-log-format plain|json`):
//! one line per client connection when it ends, checked field by field for
//! each way a connection can end, in both formats; escaping of what a peer
//! sends; reopening on SIGUSR1; its counters in `/stats` and `/metrics`.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use shardtls::test_server::{TestServerHandle, TestServerMode};

const SNI: &str = "site.test";

/// A proxy (one shard) with vserver `v1` in front of `backend`, logging to
/// `log` in `format`.
struct Rig {
    pki: Pki,
    proxy: Proxy,
    addr: SocketAddr,
    backend: SocketAddr,
    log: PathBuf,
    _echo: Option<TestServerHandle>,
}

fn rig(format: &str, vserver_flags: &str, extra: &str) -> Rig {
    let echo = backend(TestServerMode::Echo);
    let addr = echo.local_addr();
    rig_to(format, vserver_flags, extra, addr, Some(echo))
}

fn rig_to(format: &str, vserver_flags: &str, extra: &str, backend: SocketAddr, echo: Option<TestServerHandle>) -> Rig {
    let pki = Pki::new();
    let (ck, _) = certkey(&pki, "site", &[SNI]);
    let port = free_port();
    let config = format!(
        "{ck}add service web {} {} TCP\n\
         add lb vserver v1 SSL_TCP 127.0.0.1 {port}{vserver_flags}\n\
         bind ssl vserver v1 -certkeyName site\n\
         bind lb vserver v1 web\n{extra}",
        backend.ip(),
        backend.port()
    );
    let log = pki.path("access.log");
    let tmp = std::env::temp_dir();
    let proxy = Proxy::try_start_args(
        &config,
        1,
        &[
            "--access-log",
            &p(&log),
            "--access-log-format",
            format,
            "--allow-dir",
            &tmp.to_string_lossy(),
            "--allow-core-dumps",
        ],
    )
    .unwrap();
    Rig {
        pki,
        proxy,
        addr: lo(port),
        backend,
        log,
        _echo: echo,
    }
}

/// One line as field -> value; JSON values written as in plain lines
/// (`-` for null, `yes`/`no` for booleans) so both formats check alike.
type Line = BTreeMap<String, String>;

fn parse_plain(line: &str) -> Line {
    line.split(' ')
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .unwrap_or_else(|| panic!("not key=value: {kv:?} in {line}"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn parse_json(line: &str) -> Line {
    let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let s = match v {
                serde_json::Value::Null => "-".to_string(),
                serde_json::Value::Bool(b) => (if *b { "yes" } else { "no" }).to_string(),
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), s)
        })
        .collect()
}

const FIELDS: [&str; 16] = [
    "time",
    "shard",
    "vserver",
    "client",
    "sni",
    "alpn",
    "tls",
    "cipher",
    "resumed",
    "handshake_ms",
    "backend",
    "bytes_in",
    "bytes_out",
    "duration_ms",
    "end",
    "epoch",
];

fn lines_in(path: &Path) -> Vec<Line> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| {
            let line = if l.starts_with('{') {
                parse_json(l)
            } else {
                parse_plain(l)
            };
            let keys: Vec<&str> = if l.starts_with('{') {
                let mut k: Vec<&str> = line.keys().map(String::as_str).collect();
                k.sort();
                k
            } else {
                l.split(' ').map(|kv| kv.split_once('=').unwrap().0).collect()
            };
            let mut want: Vec<&str> = FIELDS.to_vec();
            if l.starts_with('{') {
                want.sort();
            }
            assert_eq!(keys, want, "fields of {l}");
            line
        })
        .collect()
}

impl Rig {
    fn lines(&self) -> Vec<Line> {
        lines_in(&self.log)
    }

    /// The first line that ends as `end`, waited for.
    fn line_ending(&self, end: &str) -> Line {
        let mut found = None;
        wait_for(Duration::from_secs(10), || {
            found = self.lines().into_iter().find(|l| l["end"] == end);
            found.is_some()
        });
        found.unwrap_or_else(|| panic!("no line ending {end}: {:#?}\n{}", self.lines(), self.proxy.log()))
    }

    fn client(&self) -> Client {
        Client::connect(self.addr, SNI, self.pki.client_config()).unwrap()
    }
}

fn ms(line: &Line, field: &str) -> f64 {
    line[field]
        .parse()
        .unwrap_or_else(|e| panic!("{field}={}: {e}", line[field]))
}

/// The fields every line of a connection that completed its handshake on
/// the rig has.
fn assert_established(line: &Line, rig: &Rig, client: SocketAddr) {
    let time = &line["time"];
    assert!(
        time.len() == 24 && time.as_bytes()[10] == b'T' && time.ends_with('Z'),
        "time={time}"
    );
    assert_eq!(line["shard"], "0");
    assert_eq!(line["vserver"], "v1");
    assert_eq!(line["client"], client.to_string());
    assert_eq!(line["sni"], SNI);
    assert_eq!(line["alpn"], "-");
    assert_eq!(line["tls"], "TLSv1.3");
    assert!(line["cipher"].starts_with("TLS13_"), "cipher={}", line["cipher"]);
    assert!(ms(line, "handshake_ms") > 0.0);
    assert!(ms(line, "duration_ms") >= ms(line, "handshake_ms"));
    assert_eq!(line["backend"], rig.backend.to_string());
    assert_eq!(line["epoch"], "1");
}

fn clean_and_resumed(format: &str) {
    let rig = rig(format, "", "");
    let cfg = rig.pki.client_config();
    let mut c = Client::connect(rig.addr, SNI, cfg.clone()).unwrap();
    let me = c.tls.sock.local_addr().unwrap();
    assert_eq!(c.echo(b"hello").unwrap(), b"hello");
    c.close();
    let first = rig.line_ending("clean");
    assert_established(&first, &rig, me);
    assert_eq!(first["resumed"], "no");
    assert_eq!((first["bytes_in"].as_str(), first["bytes_out"].as_str()), ("5", "5"));

    let mut again = Client::connect(rig.addr, SNI, cfg).unwrap();
    assert!(again.resumed());
    let me = again.tls.sock.local_addr().unwrap();
    assert_eq!(again.echo(b"hi").unwrap(), b"hi");
    again.close();
    assert!(wait_for(Duration::from_secs(10), || rig.lines().len() == 2));
    let second = rig.lines().pop().unwrap();
    assert_established(&second, &rig, me);
    assert_eq!((second["end"].as_str(), second["resumed"].as_str()), ("clean", "yes"));
    assert_eq!(second["bytes_in"], "2");

    let stats = rig.proxy.stats();
    assert_eq!(stats["access_log"]["lines_written"], 2, "{stats:#}");
    assert_eq!(stats["access_log"]["lines_dropped"], 0, "{stats:#}");
    let (_, metrics) = shardtls::control::admin::client_request(&rig.proxy.admin, "GET", "/metrics", "", None).unwrap();
    assert!(
        metrics.contains("shardtls_access_log_lines_written_total 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("shardtls_access_log_lines_dropped_total 0"),
        "{metrics}"
    );
}

#[test]
fn a_clean_close_and_a_resumption_are_logged_field_by_field_in_plain_lines() {
    clean_and_resumed("plain");
}

#[test]
fn a_clean_close_and_a_resumption_are_logged_field_by_field_in_json_lines() {
    clean_and_resumed("json");
}

/// Reset `sock` (SO_LINGER 0, then close).
fn reset(sock: TcpStream) {
    socket2::SockRef::from(&sock).set_linger(Some(Duration::ZERO)).unwrap();
    drop(sock);
}

#[test]
fn a_client_reset_is_logged() {
    let rig = rig("plain", "", "");
    let mut c = rig.client();
    let me = c.tls.sock.local_addr().unwrap();
    assert_eq!(c.echo(b"abc").unwrap(), b"abc");
    reset(c.tls.sock);
    let line = rig.line_ending("client_reset");
    assert_established(&line, &rig, me);
    assert_eq!(line["bytes_in"], "3");
}

#[test]
fn a_back_end_reset_is_logged() {
    // A back end that reads one request, then resets its connection.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let backend = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for sock in listener.incoming().flatten() {
            let mut sock = sock;
            let mut buf = [0u8; 64];
            let _ = sock.read(&mut buf);
            reset(sock);
        }
    });
    let rig = rig_to("json", "", "", backend, None);
    let mut c = rig.client();
    let me = c.tls.sock.local_addr().unwrap();
    c.tls.write_all(b"ping").unwrap();
    c.tls.flush().unwrap();
    let mut buf = [0u8; 16];
    assert!(!matches!(c.tls.read(&mut buf), Ok(n) if n > 0), "the back end answered");
    let line = rig.line_ending("backend_reset");
    assert_established(&line, &rig, me);
    assert_eq!((line["bytes_in"].as_str(), line["bytes_out"].as_str()), ("4", "0"));
}

#[test]
fn a_back_end_that_cannot_be_reached_is_logged() {
    let rig = rig_to("plain", "", "", lo(unreserved_port()), None);
    let mut c = rig.client();
    let me = c.tls.sock.local_addr().unwrap();
    let mut buf = [0u8; 16];
    assert!(!matches!(c.tls.read(&mut buf), Ok(n) if n > 0));
    let line = rig.line_ending("no_backend");
    assert_eq!(
        (line["client"].as_str(), line["sni"].as_str()),
        (me.to_string().as_str(), SNI)
    );
    assert_eq!((line["backend"].as_str(), line["resumed"].as_str()), ("-", "no"));
    assert_eq!(line["epoch"], "1");
}

#[test]
fn an_idle_timeout_is_logged() {
    let rig = rig("plain", " -cltTimeout 1", "");
    let mut c = rig.client();
    let me = c.tls.sock.local_addr().unwrap();
    assert_eq!(c.echo(b"x").unwrap(), b"x");
    let line = rig.line_ending("idle_timeout");
    assert_established(&line, &rig, me);
    assert_eq!(line["resumed"], "no");
    drop(c);
}

#[test]
fn a_handshake_timeout_of_a_silent_client_is_logged() {
    let rig = rig("plain", "", "set ssl vserver v1 -handshakeTimeout 1\n");
    let sock = TcpStream::connect(rig.addr).unwrap();
    let me = sock.local_addr().unwrap();
    let line = rig.line_ending("handshake_timeout");
    assert_eq!(line["client"], me.to_string());
    assert_eq!(line["vserver"], "v1");
    for absent in [
        "sni",
        "alpn",
        "tls",
        "cipher",
        "resumed",
        "handshake_ms",
        "backend",
        "epoch",
    ] {
        assert_eq!(line[absent], "-", "{absent} of {line:?}");
    }
    assert_eq!((line["bytes_in"].as_str(), line["bytes_out"].as_str()), ("0", "0"));
    drop(sock);
}

#[test]
fn a_handshake_killed_by_a_change_is_logged() {
    let rig = rig("plain", "", "");
    let cfg = rig.pki.client_config();
    let half = half_handshake(rig.addr, SNI, &cfg);
    let me = half.sock.local_addr().unwrap();
    let (c, k, _) = rig.pki.issue("site-2", &[SNI]);
    let reply = rig
        .proxy
        .ctl(&format!(
            "update ssl certKey site -cert {} -key {}",
            c.display(),
            k.display()
        ))
        .unwrap();
    assert!(reply.contains("handshakes killed: 1"), "{reply}");
    let line = rig.line_ending("killed");
    assert_eq!(line["client"], me.to_string());
    assert_eq!(line["sni"], SNI);
    assert_eq!(line["epoch"], "1");
    assert_eq!((line["resumed"].as_str(), line["handshake_ms"].as_str()), ("-", "-"));
    assert_eq!(line["backend"], "-");
    drop(half);
}

#[test]
fn a_connection_closed_at_the_drain_deadline_is_logged() {
    let rig = rig("plain", "", "set ssl vserver v1 -drainTimeout 1\n");
    let mut c = rig.client();
    let me = c.tls.sock.local_addr().unwrap();
    assert_eq!(c.echo(b"ab").unwrap(), b"ab");
    let (cert, key, _) = rig.pki.issue("site-2", &[SNI]);
    rig.proxy
        .ctl(&format!(
            "update ssl certKey site -cert {} -key {}",
            cert.display(),
            key.display()
        ))
        .unwrap();
    let line = rig.line_ending("drained");
    assert_established(&line, &rig, me);
    assert_eq!(line["bytes_in"], "2");
    drop(c);
}

#[test]
fn a_connection_refused_at_max_clients_is_logged() {
    let rig = rig("json", " -maxClients 1", "");
    let mut a = rig.client();
    assert_eq!(a.echo(b"a").unwrap(), b"a");
    let b = TcpStream::connect(rig.addr).unwrap();
    let me = b.local_addr().unwrap();
    let line = rig.line_ending("refused");
    assert_eq!(
        (line["client"].as_str(), line["vserver"].as_str()),
        (me.to_string().as_str(), "v1")
    );
    for absent in ["sni", "tls", "cipher", "resumed", "handshake_ms", "backend", "epoch"] {
        assert_eq!(line[absent], "-", "{absent} of {line:?}");
    }
    assert_eq!(a.echo(b"b").unwrap(), b"b");
    drop(b);
}

#[test]
fn a_hostile_sni_never_reaches_the_line_raw() {
    let rig = rig("plain", "", "");
    // A real ClientHello whose SNI is overwritten, length for length, with
    // a space, quotes, a backslash, control and non-ASCII bytes.
    let cfg = rig.pki.client_config();
    let placeholder = "abcdefghijklmnop.test";
    let hostile: &[u8] = b"a b\"\\\n\x1b\xff=-%s'xyz.test";
    assert_eq!(placeholder.len(), hostile.len());
    let mut conn = rustls::ClientConnection::new(
        cfg,
        rustls::pki_types::ServerName::try_from(placeholder.to_string()).unwrap(),
    )
    .unwrap();
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello).unwrap();
    }
    let at = hello
        .windows(placeholder.len())
        .position(|w| w == placeholder.as_bytes())
        .unwrap();
    hello[at..at + hostile.len()].copy_from_slice(hostile);
    let mut sock = TcpStream::connect(rig.addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sock.write_all(&hello).unwrap();
    let mut buf = [0u8; 512];
    let _ = sock.read(&mut buf);
    assert!(wait_for(Duration::from_secs(10), || !rig.lines().is_empty()));
    let text = std::fs::read_to_string(&rig.log).unwrap();
    assert!(
        text.is_ascii() && !text.contains('\x1b') && !text.contains('"'),
        "{text:?}"
    );
    assert_eq!(text.matches('\n').count(), 1, "{text:?}");
    let line = &rig.lines()[0];
    // rustls refuses a name that is no host name: the SNI is absent.
    assert_eq!((line["end"].as_str(), line["sni"].as_str()), ("protocol_error", "-"));
}

#[test]
fn sigusr1_reopens_the_file_at_its_path() {
    let mut rig = rig("plain", "", "");
    rig.client().close();
    assert!(wait_for(Duration::from_secs(10), || rig.lines().len() == 1));
    let rotated = rig.pki.path("access.log.1");
    std::fs::rename(&rig.log, &rotated).unwrap();
    // SAFETY: a signal to the child this test started.
    unsafe { libc::kill(rig.proxy.child.id() as i32, libc::SIGUSR1) };
    assert!(
        wait_for(Duration::from_secs(10), || rig.log.exists()),
        "no new file at the path\n{}",
        rig.proxy.log()
    );
    let mut c = rig.client();
    let me = c.tls.sock.local_addr().unwrap();
    assert_eq!(c.echo(b"after").unwrap(), b"after");
    c.close();
    let line = rig.line_ending("clean");
    assert_eq!(
        (line["client"].as_str(), line["bytes_in"].as_str()),
        (me.to_string().as_str(), "5")
    );
    assert_eq!(lines_in(&rotated).len(), 1, "the rotated file got later lines");
    assert_eq!(rig.lines().len(), 1);
    assert!(
        rig.proxy.child.try_wait().unwrap().is_none(),
        "the proxy survives SIGUSR1"
    );
}

#[test]
fn without_the_flag_there_is_no_access_log() {
    let s = echo_setup(1, "");
    let mut c = Client::connect(s.addr, SNI, s.pki.client_config()).unwrap();
    assert_eq!(c.echo(b"a").unwrap(), b"a");
    c.close();
    let stats = s.proxy.stats();
    assert!(stats["access_log"].is_null(), "{stats:#}");
    // SIGUSR1 without an access log is harmless.
    let mut s = s;
    unsafe { libc::kill(s.proxy.child.id() as i32, libc::SIGUSR1) };
    assert!(s.proxy.stats()["shards"].is_array());
    assert_eq!(s.proxy.terminate(Duration::from_secs(15)), Some(0));
}
