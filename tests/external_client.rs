//! End-to-end tests with TLS clients from outside this project:
//! `openssl s_client` and Python's `ssl` module, through the proxy (two
//! shards) to an echo back end.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use shardtls::test_server::{TestServerHandle, TestServerMode};

struct Setup {
    pki: Pki,
    _origin: TestServerHandle,
    proxy: Proxy,
    addr: SocketAddr,
}

/// A vserver with a default certificate for `site.test` and an SNI
/// certificate for `other.test`, in front of an echo back end.
fn setup() -> Setup {
    let pki = Pki::new();
    let origin = backend(TestServerMode::Echo);
    let port = free_port();
    let (c1, k1, _) = pki.issue("site", &["site.test"]);
    let (c2, k2, _) = pki.issue("other", &["other.test"]);
    let config = format!(
        "add ssl certKey site -cert {} -key {}\n\
         add ssl certKey other -cert {} -key {}\n\
         add service web {} {} TCP\n\
         add lb vserver v1 SSL_TCP 127.0.0.1 {port}\n\
         set ssl vserver v1 -SNIEnable ENABLED\n\
         bind ssl vserver v1 -certkeyName site\n\
         bind ssl vserver v1 -certkeyName other -SNICert\n\
         bind lb vserver v1 web\n",
        c1.display(),
        k1.display(),
        c2.display(),
        k2.display(),
        origin.local_addr().ip(),
        origin.local_addr().port(),
    );
    let proxy = Proxy::start(&config, 2);
    Setup {
        pki,
        _origin: origin,
        proxy,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    }
}

fn have(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Collect a child's stdout and stderr into one shared string.
/// The child's stdout and stderr as they arrive, and the threads reading
/// them (joined once the child exits: then every byte is in).
fn collect(child: &mut Child) -> (Arc<Mutex<String>>, Vec<std::thread::JoinHandle<()>>) {
    let out = Arc::new(Mutex::new(String::new()));
    let streams: Vec<Box<dyn Read + Send>> = vec![
        Box::new(child.stdout.take().unwrap()),
        Box::new(child.stderr.take().unwrap()),
    ];
    let mut readers = Vec::new();
    for mut s in streams {
        let out = out.clone();
        readers.push(std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                out.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }));
    }
    (out, readers)
}

fn wait_exit(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let t0 = Instant::now();
    while t0.elapsed() < within {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Run `openssl s_client`, send one line, and return everything it printed
/// once the echo and the verification result are both there.
fn s_client(s: &Setup, version_flag: &str, name: &str) -> String {
    let ca = s.pki.ca_file();
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            version_flag,
            "-connect",
            &s.addr.to_string(),
            "-servername",
            name,
            "-verify_hostname",
            name,
        ])
        .arg("-CAfile")
        .arg(&ca)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (out, readers) = collect(&mut child);
    let line = format!("hello from openssl {name} {version_flag}");
    child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(format!("{line}\n").as_bytes())
        .unwrap();
    let t0 = Instant::now();
    let mut done = false;
    while t0.elapsed() < Duration::from_secs(8) {
        {
            let o = out.lock().unwrap();
            if o.contains("Verify return code") && o.lines().any(|l| l.trim_end() == line) {
                done = true;
                break;
            }
        }
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // End of input: s_client sends close_notify and exits.
    drop(child.stdin.take());
    let status = wait_exit(&mut child, Duration::from_secs(5));
    for r in readers {
        let _ = r.join();
    }
    let text = out.lock().unwrap().clone();
    assert!(
        done,
        "s_client {version_flag} {name}: no echo or no verification (exit {status:?}):\n{text}\n{}",
        s.proxy.log()
    );
    assert!(status.is_some(), "s_client did not exit after end of input:\n{text}");
    text
}

// 11. openssl s_client verifies the proxy's certificate and gets its data echoed.
#[test]
fn openssl_s_client_through_proxy() {
    if !have("openssl", "version") {
        println!("SKIPPED: openssl is not installed");
        return;
    }
    let s = setup();
    for (flag, proto) in [("-tls1_3", "TLSv1.3"), ("-tls1_2", "TLSv1.2")] {
        for name in ["site.test", "other.test"] {
            let text = s_client(&s, flag, name);
            assert!(
                text.contains("Verify return code: 0 (ok)"),
                "{flag} {name}: verification failed:\n{text}"
            );
            assert!(
                text.contains(&format!("New, {proto}")),
                "{flag} {name}: not {proto}:\n{text}"
            );
            assert!(
                text.contains(&format!("subject=CN = {name}")) || text.contains(name),
                "{flag} {name}:\n{text}"
            );
        }
    }
    // A name the proxy has no certificate for gets the default one, which
    // fails hostname verification.
    let ca = s.pki.ca_file();
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &s.addr.to_string(),
            "-servername",
            "nobody.test",
            "-verify_hostname",
            "nobody.test",
        ])
        .args(["-verify_return_error", "-CAfile"])
        .arg(&ca)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "hostname mismatch accepted:\n{text}");
    assert!(
        text.contains("Hostname mismatch") || text.contains("verify error"),
        "{text}"
    );
}

const PY_CLIENT: &str = r#"
import socket, ssl, sys
port, ca, name, version = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
v = ssl.TLSVersion.TLSv1_3 if version == "1.3" else ssl.TLSVersion.TLSv1_2
ctx.minimum_version = v
ctx.maximum_version = v
with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
    with ctx.wrap_socket(raw, server_hostname=name) as s:
        cn = dict(x[0] for x in s.getpeercert()["subject"])["commonName"]
        ver = s.version()
        data = bytes(range(256)) * 200
        s.sendall(data)
        got = b""
        while len(got) < len(data):
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        # Bidirectional close_notify: waits for the proxy's own close_notify.
        s.unwrap()
        print("version", ver)
        print("cn", cn)
        print("echo", "ok" if got == data else "MISMATCH %d" % len(got))
        print("unwrap", "ok")
"#;

// 11b. Python's ssl module, TLS 1.3 and 1.2, with a clean bidirectional close.
#[test]
fn python_ssl_through_proxy() {
    if !have("python3", "--version") {
        println!("SKIPPED: python3 is not installed");
        return;
    }
    let s = setup();
    let ca = s.pki.ca_file();
    for (version, proto) in [("1.3", "TLSv1.3"), ("1.2", "TLSv1.2")] {
        for name in ["site.test", "other.test"] {
            let mut child = Command::new("python3")
                .args(["-c", PY_CLIENT, &s.addr.port().to_string()])
                .arg(&ca)
                .args([name, version])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let (out, readers) = collect(&mut child);
            let status = wait_exit(&mut child, Duration::from_secs(10));
            for r in readers {
                let _ = r.join();
            }
            let text = out.lock().unwrap().clone();
            assert!(
                status.is_some_and(|s| s.success()),
                "python {version} {name} failed ({status:?}):\n{text}\n{}",
                s.proxy.log()
            );
            assert!(text.contains(&format!("version {proto}")), "{text}");
            assert!(text.contains(&format!("cn {name}")), "{text}");
            assert!(text.contains("echo ok"), "{text}");
            assert!(text.contains("unwrap ok"), "{text}");
        }
    }
}
