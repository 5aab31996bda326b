//! Operators and files that misbehave: failing commands, broken config
//! files at start-up and on SIGHUP, saves that cannot be written, secrets
//! that must not leak, and an admin API that bounds what it accepts.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use shardtls::control::admin::client_request;
use shardtls::test_server::TestServerMode;

const SHARDS: usize = 2;

fn get(proxy: &Proxy, path: &str) -> String {
    let (ok, body) = client_request(&proxy.admin, "GET", path, "", None).unwrap();
    assert!(ok, "GET {path}: {body}");
    body
}

/// Every shard's view of every entity: "shard kind name epoch enabled", plus the generation.
fn epochs(proxy: &Proxy) -> Vec<String> {
    let stats = proxy.stats();
    let mut out = vec![format!("generation {}", stats["generation"])];
    for s in stats["shards"].as_array().unwrap() {
        for e in s["core"]["entities"].as_array().into_iter().flatten() {
            out.push(format!(
                "{} {} {} {} {}",
                s["shard"], e["kind"], e["name"], e["current_epoch"], e["enabled"]
            ));
        }
    }
    out.sort();
    out
}

fn live_per_shard(proxy: &Proxy) -> Vec<u64> {
    proxy.stats()["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["live_client_connections"].as_u64().unwrap())
        .collect()
}

/// A site with a cipher group, a profile, a vserver v1 on `port` and an echo service.
struct Site {
    pki: Pki,
    port: u16,
    config: String,
    cert: PathBuf,
    key: PathBuf,
    _be: shardtls::test_server::TestServerHandle,
}

fn site() -> Site {
    let pki = Pki::new();
    let be = backend(TestServerMode::Echo);
    let port = free_port();
    let (cert, key, _) = pki.issue("site", &["www.test"]);
    let config = format!(
        "add ssl certKey site -cert {} -key {}\n\
         add ssl cipher modern\n\
         bind ssl cipher modern -cipherName TLS1.3-AES128-GCM-SHA256\n\
         bind ssl cipher modern -cipherName TLS1.2-ECDHE-ECDSA-AES128-GCM-SHA256\n\
         add ssl profile fe -sessTimeout 300\n\
         add service echo 127.0.0.1 {} TCP\n\
         add lb vserver v1 SSL_TCP 127.0.0.1 {port}\n\
         set ssl vserver v1 -sslProfile fe\n\
         bind ssl vserver v1 -certkeyName site\n\
         bind ssl vserver v1 -cipherName modern\n\
         bind lb vserver v1 echo\n",
        p(&cert),
        p(&key),
        be.local_addr().port()
    );
    Site {
        pki,
        port,
        config,
        cert,
        key,
        _be: be,
    }
}

/// Clients established until every shard holds at least one.
fn clients_on_every_shard(proxy: &Proxy, s: &Site) -> Vec<Client> {
    let mut clients = Vec::new();
    for _ in 0..40 {
        let mut c = Client::connect(lo(s.port), "www.test", s.pki.client_config()).expect("client");
        assert_eq!(c.echo(b"hi").unwrap(), b"hi");
        clients.push(c);
        if live_per_shard(proxy).iter().all(|n| *n > 0) {
            return clients;
        }
    }
    panic!("could not place a client on every shard: {:?}", live_per_shard(proxy));
}

fn all_echo(clients: &mut [Client], what: &str) {
    for (i, c) in clients.iter_mut().enumerate() {
        let r = c
            .echo(b"still here")
            .unwrap_or_else(|e| panic!("established client {i} broken after {what}: {e}"));
        assert_eq!(r, b"still here");
    }
}

#[test]
fn failing_commands_leave_the_running_config_and_connections_untouched_on_every_shard() {
    let s = site();
    let proxy = Proxy::start(&s.config, SHARDS);
    let mut clients = clients_on_every_shard(&proxy, &s);
    let config0 = get(&proxy, "/config");
    let epochs0 = epochs(&proxy);
    let live0 = live_per_shard(&proxy);

    let (other_cert, other_key, _) = s.pki.issue("other", &["other.test"]);
    let dir_as_key = s.pki.path("a-directory.key");
    std::fs::create_dir(&dir_as_key).unwrap();
    let garbage = s.pki.path("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let bad = [
        ("bad syntax", "bind ssl vserver".to_string()),
        ("unknown command", "frobnicate ssl vserver v1".to_string()),
        ("unknown flag", "set ssl vserver v1 -noSuchFlag 3".to_string()),
        ("missing key file", format!("add ssl certKey k2 -cert {} -key /nonexistent/k2.key", p(&other_cert))),
        ("unreadable key file", format!("update ssl certKey site -cert {} -key {}", p(&other_cert), p(&dir_as_key))),
        ("key not matching cert (add)", format!("add ssl certKey k3 -cert {} -key {}", p(&other_cert), p(&s.key))),
        ("key not matching cert (update)", format!("update ssl certKey site -cert {} -key {}", p(&s.cert), p(&other_key))),
        ("not a certificate", format!("update ssl certKey site -cert {} -key {}", p(&garbage), p(&s.key))),
        ("unknown cipher", "bind ssl cipher modern -cipherName TLS1.3-AES999-GCM-SHA256".to_string()),
        ("unknown cipher on vserver", "bind ssl vserver v1 -cipherName NOT-A-CIPHER".to_string()),
        ("unknown curve", "bind ssl vserver v1 -eccCurveName P_999".to_string()),
        ("no protocol left", "set ssl vserver v1 -tls12 DISABLED -tls13 DISABLED".to_string()),
        ("in use", "rm ssl certKey site".to_string()),
        ("unknown entity", "set ssl vserver nosuch -tls12 DISABLED".to_string()),
        ("batch with a bad last line", "set ssl profile fe -sessTimeout 120\nset ssl vserver v1 -tls12 DISABLED\nbind ssl vserver v1 -certkeyName nosuch".to_string()),
        ("batch with a bad first line", "unbind ssl vserver v1 -certkeyName nosuch\nset ssl vserver v1 -tls12 DISABLED".to_string()),
        ("port conflict batch", format!("add lb vserver v2 SSL_TCP 127.0.0.1 {}\nbind ssl vserver v2 -certkeyName site\nset ssl vserver v1 -tls12 DISABLED\nrm ssl cipher nosuch", s.port)),
    ];
    for (what, cmd) in &bad {
        let err = match proxy.ctl(cmd) {
            Ok(reply) => panic!("{what}: '{cmd}' was accepted: {reply}"),
            Err(e) => e,
        };
        assert!(err.contains("ERROR"), "{what}: reply without a reason: {err}");
        assert_eq!(
            get(&proxy, "/config"),
            config0,
            "{what}: the running configuration changed"
        );
        assert_eq!(epochs(&proxy), epochs0, "{what}: an epoch or the generation moved");
        assert_eq!(live_per_shard(&proxy), live0, "{what}: established connections changed");
        all_echo(&mut clients, what);
    }
    // New connections still get the old certificate and work on every shard.
    for _ in 0..6 {
        let mut c = Client::connect(lo(s.port), "www.test", s.pki.client_config()).expect("new client");
        assert_eq!(c.echo(b"new").unwrap(), b"new");
        c.close();
    }
    // A good command still applies afterwards.
    proxy
        .ctl("set ssl profile fe -sessTimeout 120")
        .expect("a good command");
    assert_ne!(get(&proxy, "/config"), config0);
    all_echo(&mut clients, "a good change");
    assert!(!proxy.log().contains("panicked"));
}

#[test]
fn update_with_an_expired_certificate_is_refused() {
    let s = site();
    let proxy = Proxy::start(&s.config, SHARDS);
    let config0 = get(&proxy, "/config");
    let epochs0 = epochs(&proxy);
    // A self-signed certificate that expired in 2020.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["www.test".to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2019, 1, 1);
    params.not_after = rcgen::date_time_ymd(2020, 1, 1);
    let cert = params.self_signed(&key).unwrap();
    let (cp, kp) = (s.pki.path("expired.pem"), s.pki.path("expired.key"));
    std::fs::write(&cp, cert.pem()).unwrap();
    shardtls::pki::write_private(&kp, key.serialize_pem().as_bytes()).unwrap();
    let r = proxy.ctl(&format!("update ssl certKey site -cert {} -key {}", p(&cp), p(&kp)));
    assert_eq!(
        get(&proxy, "/config"),
        config0,
        "an expired certificate replaced the running one: {r:?}"
    );
    assert_eq!(epochs(&proxy), epochs0);
    let err = r.expect_err("update with an expired certificate was accepted");
    assert!(err.to_lowercase().contains("expired"), "{err}");
}

fn run_binary(args: &[&str], within: Duration) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shardtls"))
        .args(args)
        .env("SHARDTLS_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while t0.elapsed() < within {
        if let Ok(Some(_)) = child.try_wait() {
            let out = child.wait_with_output().unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            return (out.status.code(), text);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    (None, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A test server whose threads cannot set up their io_uring (here: no
/// descriptor left for the ring) says why and exits with status 1, instead
/// of aborting without a word.
#[test]
fn test_server_that_cannot_set_up_its_ring_says_why_and_exits_non_zero() {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shardtls"));
    cmd.args(["test-server", "--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Standard streams and the signal pipe fit under 5 descriptors; the
    // first ring does not.
    // SAFETY: setrlimit is async-signal-safe; it runs in the child only.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 5,
                rlim_max: 5,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{:?}: {stderr}", out.status);
    assert!(
        stderr.contains("cannot start") && stderr.contains("open files"),
        "{stderr}"
    );
}

#[test]
fn broken_config_at_start_up_names_the_line_and_exits_non_zero() {
    let s = site();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.conf");
    let name = p(&path);
    let cases = [
        (
            s.config.replace(
                "bind ssl cipher modern -cipherName TLS1.3-AES128-GCM-SHA256",
                "bind ssl cipher modern -cipherName TLS1.3-NOPE",
            ),
            3,
            "unknown cipher",
        ),
        (s.config.replace(&p(&s.key), "/nonexistent/site.key"), 1, "cannot read"),
        (format!("{}\nthis is not a command\n", s.config), 13, "unknown command"),
    ];
    for (text, line, reason) in cases {
        std::fs::write(&path, &text).unwrap();
        let admin = dir.path().join("admin.sock");
        let (code, out) = run_binary(
            &["run", "-c", &name, "--shards", "1", "--admin", &p(&admin)],
            Duration::from_secs(10),
        );
        assert!(
            matches!(code, Some(c) if c != 0),
            "run with a broken file: exit {code:?}\n{out}"
        );
        let want = format!("{name}:{line}: ");
        assert!(
            out.lines().any(|l| l.contains(&want) && l.contains(reason)),
            "run: no line naming {want}...{reason}:\n{out}"
        );
        let (code, out) = run_binary(&["check", "-c", &name], Duration::from_secs(10));
        assert_eq!(code, Some(1), "check: {out}");
        assert!(
            out.lines().any(|l| l.contains(&want) && l.contains(reason)),
            "check: no line naming {want}...{reason}:\n{out}"
        );
    }
}

#[test]
fn sighup_with_a_broken_file_keeps_the_running_config_and_a_good_file_applies() {
    let s = site();
    let proxy = Proxy::start(&s.config, SHARDS);
    let mut clients = clients_on_every_shard(&proxy, &s);
    let config0 = get(&proxy, "/config");
    let epochs0 = epochs(&proxy);
    let hup = || unsafe { libc::kill(proxy.child.id() as i32, libc::SIGHUP) };

    // Broken: a mismatched key on line 1.
    let (_, other_key, _) = s.pki.issue("other", &["other.test"]);
    std::fs::write(&proxy.config, s.config.replace(&p(&s.key), &p(&other_key))).unwrap();
    hup();
    assert!(
        wait_for(Duration::from_secs(5), || proxy.log().contains("reload refused")),
        "no log line about the refused reload:\n{}",
        proxy.log()
    );
    let log = proxy.log();
    let line = log.lines().find(|l| l.contains("reload refused")).unwrap().to_string();
    let full = &log[log.find("reload refused").unwrap()..];
    assert!(
        full.contains(&format!("{}:1:", p(&proxy.config))) && full.contains("does not match"),
        "the log does not say why: {line}"
    );
    assert_eq!(
        get(&proxy, "/config"),
        config0,
        "a broken file changed the running config"
    );
    assert_eq!(epochs(&proxy), epochs0);
    all_echo(&mut clients, "SIGHUP with a broken file");

    // Unparseable file.
    std::fs::write(&proxy.config, format!("{}bind ssl vserver\n", s.config)).unwrap();
    let refusals = proxy.log().matches("reload refused").count();
    hup();
    assert!(wait_for(Duration::from_secs(5), || proxy
        .log()
        .matches("reload refused")
        .count()
        > refusals));
    assert_eq!(get(&proxy, "/config"), config0);
    all_echo(&mut clients, "SIGHUP with an unparseable file");

    // Good and changed: a new session timeout and a second vserver.
    let port2 = free_port();
    let good = format!(
        "{}add lb vserver v2 SSL_TCP 127.0.0.1 {port2}\nbind ssl vserver v2 -certkeyName site\nbind lb vserver v2 echo\n",
        s.config.replace("-sessTimeout 300", "-sessTimeout 120")
    );
    std::fs::write(&proxy.config, &good).unwrap();
    hup();
    assert!(
        wait_for(Duration::from_secs(5), || get(&proxy, "/config").contains("vserver v2")),
        "a good file was not applied on SIGHUP:\n{}",
        proxy.log()
    );
    assert!(get(&proxy, "/config").contains("-sessTimeout 120"));
    assert!(
        wait_for(Duration::from_secs(5), || proxy
            .log()
            .contains("configuration reloaded")),
        "{}",
        proxy.log()
    );
    let mut c = Client::connect(lo(port2), "www.test", s.pki.client_config()).expect("the new vserver serves");
    assert_eq!(c.echo(b"v2").unwrap(), b"v2");
    all_echo(&mut clients, "SIGHUP with a good file");
}

#[test]
fn save_that_cannot_write_fails_clearly_and_leaves_the_old_file_intact() {
    let s = site();
    let proxy = Proxy::start(&s.config, SHARDS);
    // A normal save works and round-trips.
    proxy.ctl("save ns config").expect("save");
    let saved = std::fs::read(&proxy.config).unwrap();
    assert!(String::from_utf8_lossy(&saved).contains("add lb vserver v1"));
    proxy.ctl("set ssl profile fe -sessTimeout 77").unwrap();

    // Block every temporary name the proxy could use: a directory stands where
    // each temporary file would be created (works as root too).
    let dir = proxy.config.parent().unwrap().to_path_buf();
    let name = proxy.config.file_name().unwrap().to_string_lossy().into_owned();
    let pid = proxy.child.id();
    for n in 0..256 {
        std::fs::create_dir(dir.join(format!(".{name}.tmp.{pid}.{n}"))).unwrap();
    }
    let before: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let err = proxy
        .ctl("save ns config")
        .expect_err("save into a blocked folder succeeded");
    assert!(
        err.contains("ERROR") && err.contains("cannot save") && err.contains(&name),
        "unclear error: {err}"
    );
    assert_eq!(std::fs::read(&proxy.config).unwrap(), saved, "the old file was touched");
    let after: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        before.len(),
        after.len(),
        "a save that failed left files behind: {after:?}"
    );
    // The running configuration is still the changed one.
    assert!(get(&proxy, "/config").contains("-sessTimeout 77"));
}

#[test]
fn save_when_the_config_folder_became_a_file_fails_clearly() {
    let s = site();
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    std::fs::create_dir(&etc).unwrap();
    let config = etc.join("shardtls.conf");
    std::fs::write(&config, &s.config).unwrap();
    let proxy = start_proxy(dir, config.clone(), 1, &[]);
    // The folder is moved away and a plain file takes its name.
    let moved = proxy.dir.path().join("etc.moved");
    std::fs::rename(&etc, &moved).unwrap();
    std::fs::write(&etc, "not a folder").unwrap();
    let err = proxy.ctl("save ns config").expect_err("save through a file succeeded");
    assert!(
        err.contains("ERROR") && err.contains("cannot save") && err.contains("shardtls.conf"),
        "unclear error: {err}"
    );
    assert_eq!(std::fs::read_to_string(&etc).unwrap(), "not a folder");
    assert_eq!(
        std::fs::read_to_string(moved.join("shardtls.conf")).unwrap(),
        s.config,
        "the old file was touched"
    );
    // Put the folder back: saving works again.
    std::fs::remove_file(&etc).unwrap();
    std::fs::rename(&moved, &etc).unwrap();
    proxy.ctl("save ns config").expect("save after the folder came back");
}

/// Start `shardtls run` on `config` with its admin socket and log in `dir`.
fn start_proxy(dir: tempfile::TempDir, config: PathBuf, shards: usize, extra: &[&str]) -> Proxy {
    let admin = p(&dir.path().join("admin.sock"));
    let log = std::fs::File::create(dir.path().join("proxy.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_shardtls"))
        .args([
            "run",
            "-c",
            &p(&config),
            "--shards",
            &shards.to_string(),
            "--admin",
            &admin,
        ])
        .args(extra)
        .env("SHARDTLS_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut proxy = Proxy {
        child,
        admin: admin.clone(),
        config,
        dir,
    };
    let token = extra
        .iter()
        .position(|a| *a == "--admin-token-file")
        .map(|i| std::fs::read_to_string(extra[i + 1]).unwrap());
    let up = wait_for(Duration::from_secs(15), || {
        client_request(&admin, "GET", "/stats", "", token.as_deref().map(str::trim)).is_ok_and(|(ok, _)| ok)
            || matches!(proxy.child.try_wait(), Ok(Some(_)))
    });
    assert!(
        up && matches!(proxy.child.try_wait(), Ok(None)),
        "proxy did not start: {}",
        proxy.log()
    );
    proxy
}

/// A distinctive chunk of a PEM key's base64.
fn key_chunk(key: &Path) -> String {
    let text = std::fs::read_to_string(key).unwrap();
    let b64: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    b64[10..50].to_string()
}

fn assert_no_secret(what: &str, text: &str, chunk: &str) {
    assert!(!text.contains("PRIVATE KEY"), "{what} shows a private key:\n{text}");
    assert!(!text.contains(chunk), "{what} shows key material:\n{text}");
}

#[test]
fn private_keys_never_appear_in_show_config_stats_saves_errors_or_the_log() {
    let s = site();
    let proxy = Proxy::start(&s.config, SHARDS);
    let chunk = key_chunk(&s.key);
    let mut c = Client::connect(lo(s.port), "www.test", s.pki.client_config()).unwrap();
    c.echo(b"x").unwrap();
    c.close();
    for cmd in [
        "show ssl certKey",
        "show ssl certKey site",
        "show ssl vserver v1",
        "show ns runningConfig",
        "show stats",
        "show lb vserver",
    ] {
        let out = proxy.ctl(cmd).unwrap_or_else(|e| panic!("{cmd}: {e}"));
        assert_no_secret(cmd, &out, &chunk);
    }
    for path in ["/config", "/stats", "/metrics"] {
        assert_no_secret(path, &get(&proxy, path), &chunk);
    }
    // Errors that involve the key file must not quote it either.
    let (other, other_key, _) = s.pki.issue("other", &["other.test"]);
    let other_chunk = key_chunk(&other_key);
    for cmd in [
        format!("add ssl certKey k -cert {} -key {}", p(&s.key), p(&s.key)),
        format!("add ssl certKey k -cert {} -key {}", p(&other), p(&s.key)),
        format!("add ssl certKey k -cert {} -key {}", p(&other_key), p(&other_key)),
        format!("update ssl certKey site -cert {} -key {}", p(&s.cert), p(&s.cert)),
    ] {
        let err = proxy.ctl(&cmd).expect_err("a bad certKey was accepted");
        assert_no_secret(&cmd, &err, &chunk);
        assert_no_secret(&cmd, &err, &other_chunk);
    }
    proxy.ctl("save ns config").unwrap();
    assert_no_secret(
        "the saved config",
        &std::fs::read_to_string(&proxy.config).unwrap(),
        &chunk,
    );
    assert!(
        std::fs::read_to_string(&proxy.config).unwrap().contains(&p(&s.key)),
        "the saved config names the key by path"
    );
    let log = proxy.log();
    assert_no_secret("the log", &log, &chunk);
    assert_no_secret("the log", &log, &other_chunk);
}

#[test]
fn ssl_back_ends_that_accept_any_certificate_are_warned_about_once_and_shown() {
    let s = site();
    let config = format!(
        "{}add service open 127.0.0.1 {} SSL_TCP\n\
         add service checked 127.0.0.1 {} SSL_TCP\n\
         add ssl certKey ca -cert {}\n\
         bind ssl service checked -certkeyName ca -CA\n\
         set ssl service checked -serverAuth ENABLED\n\
         add serviceGroup pool SSL_TCP\n",
        s.config,
        free_port(),
        free_port(),
        p(&s.pki.ca_file())
    );
    let proxy = Proxy::start(&config, 1);
    proxy
        .ctl(&format!("add service late 127.0.0.1 {} SSL_TCP", free_port()))
        .unwrap();
    // Another change re-warns nothing.
    proxy.ctl("set ssl vserver v1 -sessTimeout 120").unwrap();
    let warnings = |name: &str| {
        proxy
            .log()
            .lines()
            .filter(|l| l.contains("WARN") && l.contains(&format!("{name}: SSL_TCP without -serverAuth ENABLED")))
            .count()
    };
    assert!(
        wait_for(Duration::from_secs(5), || warnings("service late") == 1),
        "no warning for the service added at run time:\n{}",
        proxy.log()
    );
    assert_eq!(warnings("service open"), 1, "{}", proxy.log());
    assert_eq!(warnings("serviceGroup pool"), 1, "{}", proxy.log());
    assert_eq!(warnings("service late"), 1, "{}", proxy.log());
    assert_eq!(warnings("service checked"), 0, "{}", proxy.log());
    assert_eq!(warnings("service echo"), 0, "a TCP service: {}", proxy.log());

    let show = proxy.ctl("show service open").unwrap();
    assert!(
        show.contains("serverAuth: DISABLED (back-end certificate not verified)"),
        "{show}"
    );
    let show = proxy.ctl("show serviceGroup pool").unwrap();
    assert!(
        show.contains("serverAuth: DISABLED (back-end certificate not verified)"),
        "{show}"
    );
    assert!(proxy
        .ctl("show service checked")
        .unwrap()
        .contains("serverAuth: ENABLED"));
    assert!(!proxy.ctl("show service echo").unwrap().contains("serverAuth"));
}

/// Send raw bytes to the admin socket; the whole reply.
fn raw_admin(admin: &str, req: &[u8], read_within: Duration) -> String {
    let mut s = UnixStream::connect(admin).unwrap();
    s.set_read_timeout(Some(read_within)).unwrap();
    let _ = s.write_all(req);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn admin_api_rejects_oversized_bodies() {
    let s = site();
    let proxy = Proxy::start(&s.config, 1);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&proxy.admin).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "admin socket mode {mode:o}");

    // Announced: the head alone is enough to refuse.
    let r = raw_admin(
        &proxy.admin,
        b"POST /cmd HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\nContent-Length: 1048577\r\n\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(status_of(&r), 413, "{r}");
    // Sent: 2 MiB of commands.
    let body = "show ssl certKey\n".repeat(2 * 1024 * 1024 / 17);
    let mut req = format!(
        "POST /cmd HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body.as_bytes());
    let r = raw_admin(&proxy.admin, &req, Duration::from_secs(5));
    assert_eq!(status_of(&r), 413, "{}", &r[..r.len().min(200)]);
    // A huge head.
    let mut req = b"GET /stats HTTP/1.1\r\n".to_vec();
    for i in 0..2000 {
        req.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "y".repeat(40)).as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    let r = raw_admin(&proxy.admin, &req, Duration::from_secs(5));
    assert!(matches!(status_of(&r), 431 | 400 | 413), "{}", &r[..r.len().min(200)]);
    // Still answering.
    assert!(client_request(&proxy.admin, "GET", "/stats", "", None).unwrap().0);
}

#[test]
fn admin_api_times_out_slow_requests() {
    let s = site();
    let proxy = Proxy::start(&s.config, 1);
    let t0 = Instant::now();
    let mut slow = UnixStream::connect(&proxy.admin).unwrap();
    slow.write_all(b"POST /cmd HTTP/1.1\r\nContent-Le").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(14))).unwrap();
    // Meanwhile another request: served, or held until the slow one times out.
    let admin = proxy.admin.clone();
    let other = std::thread::spawn(move || {
        let t = Instant::now();
        let r = client_request(&admin, "GET", "/stats", "", None);
        (r.map(|(ok, _)| ok), t.elapsed())
    });
    let mut out = Vec::new();
    let _ = slow.read_to_end(&mut out);
    let took = t0.elapsed();
    let reply = String::from_utf8_lossy(&out);
    assert_eq!(status_of(&reply), 408, "slow request got: {reply:?} after {took:?}");
    assert!(took < Duration::from_secs(12), "the slow request was held {took:?}");
    let (ok, waited) = other.join().unwrap();
    assert_eq!(ok, Ok(true));
    eprintln!("slow admin request timed out after {took:?}; a concurrent request waited {waited:?}");
}

#[test]
fn admin_api_with_a_token_requires_it() {
    let s = site();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("shardtls.conf");
    std::fs::write(&config, &s.config).unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let proxy = start_proxy(dir, config, 1, &["--admin-token-file", &p(&token_file)]);
    let admin = proxy.admin.clone();
    for req in [
        "GET /stats HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "GET /config HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "POST /cmd HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\nContent-Length: 16\r\n\r\nshow ssl certKey",
        "GET /stats HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer wrong\r\n\r\n",
        "GET /stats HTTP/1.1\r\nHost: localhost\r\nAuthorization: s3cret-token\r\n\r\n",
        "GET /stats HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer s3cret-token-and-more\r\n\r\n",
        "POST /cmd HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\nContent-Length: 19\r\n\r\nrm lb vserver v1\r\n\r\n",
    ] {
        let r = raw_admin(&admin, req.as_bytes(), Duration::from_secs(5));
        assert_eq!(status_of(&r), 401, "{req:?} got {r}");
        assert!(!r.contains("add ssl certKey"), "{r}");
    }
    let (ok, body) = client_request(&admin, "GET", "/config", "", Some("s3cret-token")).unwrap();
    assert!(ok && body.contains("add lb vserver v1"), "{body}");
    assert!(!proxy.log().contains("s3cret-token"), "the token appears in the log");
}

#[test]
fn a_vserver_can_never_take_the_admin_api_address() {
    let s = site();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clash.conf");
    let name = p(&path);
    // The admin API binds without SO_REUSEPORT: a port nobody holds.
    let admin_port = unreserved_port();
    let admin = format!("127.0.0.1:{admin_port}");
    // Over TCP the admin API requires a token.
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let token_arg = p(&token_file);
    let token = Some("s3cret-token");
    // At start-up: the same address, or a wildcard vserver on the admin port.
    for ip in ["127.0.0.1", "0.0.0.0"] {
        let text = s
            .config
            .replace(&format!("127.0.0.1 {}\n", s.port), &format!("{ip} {admin_port}\n"));
        assert!(text.contains(&format!("{ip} {admin_port}")), "{text}");
        std::fs::write(&path, text).unwrap();
        let (code, out) = run_binary(
            &[
                "run",
                "-c",
                &name,
                "--shards",
                "1",
                "--admin",
                &admin,
                "--admin-token-file",
                &token_arg,
            ],
            Duration::from_secs(10),
        );
        assert!(
            matches!(code, Some(c) if c != 0),
            "started with a clash: {code:?}\n{out}"
        );
        assert!(
            out.contains("vserver v1") && out.contains("admin API"),
            "no clear reason:\n{out}"
        );
    }
    // At run time: adding such a vserver is refused and changes nothing.
    std::fs::write(&path, &s.config).unwrap();
    let log = std::fs::File::create(dir.path().join("proxy.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_shardtls"))
        .args(["run", "-c", &name, "--shards", "1", "--admin", &admin])
        .args(["--admin-token-file", &token_arg])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    // Killed when dropped, also when an assertion fails.
    let _proxy = Proxy {
        child,
        admin: admin.clone(),
        config: path.clone(),
        dir,
    };
    let up = wait_for(Duration::from_secs(15), || {
        client_request(&admin, "GET", "/stats", "", token).is_ok_and(|(ok, _)| ok)
    });
    assert!(up, "proxy did not start");
    let before = client_request(&admin, "GET", "/config", "", token).unwrap().1;
    let (ok, body) = client_request(
        &admin,
        "POST",
        "/cmd",
        &format!("add lb vserver v2 SSL_TCP 0.0.0.0 {admin_port}\nbind ssl vserver v2 -certkeyName site\nbind lb vserver v2 echo\n"),
        token,
    )
    .unwrap();
    assert!(!ok && body.contains("admin API"), "accepted: {body}");
    let after = client_request(&admin, "GET", "/config", "", token).unwrap().1;
    assert_eq!(before, after, "a refused change altered the configuration");
    // The admin API still answers on its address, and it is still itself.
    let (ok, stats) = client_request(&admin, "GET", "/stats", "", token).unwrap();
    assert!(ok && stats.contains("\"shards\""), "{stats}");
}

/// A small tmpfs mounted on a folder, unmounted when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    /// None when this machine does not let the test mount (not root, no tmpfs).
    fn mount(at: &Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", &p(at)])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallDisk(at.to_path_buf()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").args(["-l", &p(&self.0)]).status();
    }
}

#[test]
fn save_on_a_full_disk_fails_clearly_and_leaves_the_old_file_intact() {
    let s = site();
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small");
    let Some(_disk) = SmallDisk::mount(&small, "64k") else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root); the full-disk case is not checked");
        return;
    };
    let config = small.join("shardtls.conf");
    std::fs::write(&config, &s.config).unwrap();
    let proxy = start_proxy(dir, config.clone(), 1, &[]);
    proxy.ctl("save ns config").expect("save with room on the disk");
    let saved = std::fs::read(&config).unwrap();
    proxy.ctl("set ssl profile fe -sessTimeout 77").unwrap();

    // Fill the disk to the last byte.
    let mut filler = std::fs::File::create(small.join("filler")).unwrap();
    let chunk = vec![0u8; 1024];
    while filler.write_all(&chunk).is_ok() {}
    while filler.write_all(&chunk[..1]).is_ok() {}
    drop(filler);

    let err = proxy.ctl("save ns config").expect_err("save on a full disk succeeded");
    assert!(
        err.contains("ERROR") && err.contains("cannot save") && err.contains("No space left"),
        "unclear error: {err}"
    );
    assert_eq!(std::fs::read(&config).unwrap(), saved, "the old file was touched");
    let left: Vec<_> = std::fs::read_dir(&small)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp."))
        .collect();
    assert!(left.is_empty(), "a failed save left {left:?}");
    assert!(
        get(&proxy, "/config").contains("-sessTimeout 77"),
        "running config lost"
    );

    // With room again, the same save works.
    std::fs::remove_file(small.join("filler")).unwrap();
    proxy.ctl("save ns config").expect("save after space was freed");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("-sessTimeout 77"), "{text}");
}

/// A self-signed certificate for www.test valid through 2019 only, as
/// NAME.pem and NAME.key in `pki`'s folder.
fn expired_pair(pki: &Pki, name: &str) -> (PathBuf, PathBuf) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["www.test".to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2019, 1, 1);
    params.not_after = rcgen::date_time_ymd(2020, 1, 1);
    let cert = params.self_signed(&key).unwrap();
    let (cp, kp) = (pki.path(&format!("{name}.pem")), pki.path(&format!("{name}.key")));
    std::fs::write(&cp, cert.pem()).unwrap();
    shardtls::pki::write_private(&kp, key.serialize_pem().as_bytes()).unwrap();
    (cp, kp)
}

/// Whether `text` names the certKey, its file and the end of its validity.
fn names_the_expired_certificate(text: &str, certkey: &str, cert: &Path) -> bool {
    text.contains(&format!("certKey {certkey}")) && text.contains(&p(cert)) && text.contains("2020-01-01")
}

#[test]
fn an_expired_certificate_is_refused_by_add_update_sighup_run_and_check_alike() {
    let s = site();
    let (cp, kp) = expired_pair(&s.pki, "expired");
    let proxy = Proxy::start(&s.config, 1);
    let config0 = get(&proxy, "/config");

    let err = proxy
        .ctl(&format!("add ssl certKey old -cert {} -key {}", p(&cp), p(&kp)))
        .expect_err("add ssl certKey with an expired certificate was accepted");
    assert!(names_the_expired_certificate(&err, "old", &cp), "add: {err}");
    let err = proxy
        .ctl(&format!("update ssl certKey site -cert {} -key {}", p(&cp), p(&kp)))
        .expect_err("update ssl certKey with an expired certificate was accepted");
    assert!(names_the_expired_certificate(&err, "site", &cp), "update: {err}");
    assert_eq!(get(&proxy, "/config"), config0);

    // The file now adds it on its last line.
    let line = s.config.lines().count() + 1;
    let text = format!("{}add ssl certKey old -cert {} -key {}\n", s.config, p(&cp), p(&kp));
    std::fs::write(&proxy.config, &text).unwrap();
    unsafe { libc::kill(proxy.child.id() as i32, libc::SIGHUP) };
    assert!(
        wait_for(Duration::from_secs(5), || proxy.log().contains("reload refused")),
        "{}",
        proxy.log()
    );
    let log = proxy.log();
    let refusal = &log[log.find("reload refused").unwrap()..];
    let at = format!("{}:{line}: ", p(&proxy.config));
    assert!(
        refusal.contains(&at) && names_the_expired_certificate(refusal, "old", &cp),
        "SIGHUP: {refusal}"
    );
    assert_eq!(get(&proxy, "/config"), config0);

    let (code, out) = run_binary(&["check", "-c", &p(&proxy.config)], Duration::from_secs(10));
    assert_eq!(code, Some(1), "check: {out}");
    assert!(
        out.contains(&at) && names_the_expired_certificate(&out, "old", &cp),
        "check: {out}"
    );
    let admin = proxy.dir.path().join("second.sock");
    let (code, out) = run_binary(
        &["run", "-c", &p(&proxy.config), "--shards", "1", "--admin", &p(&admin)],
        Duration::from_secs(10),
    );
    assert_eq!(code, Some(1), "run: {out}");
    assert!(
        out.contains(&at) && names_the_expired_certificate(&out, "old", &cp),
        "run: {out}"
    );
}

/// A certKey updated in the file to a certificate the update refuses: the
/// refusal on SIGHUP names the file and the line the certKey is on.
#[test]
fn a_refused_sighup_names_the_file_and_the_line_of_the_cause() {
    let s = site();
    let (cp, kp) = expired_pair(&s.pki, "expired");
    let proxy = Proxy::start(&s.config, 1);
    let text = s.config.replace(&p(&s.cert), &p(&cp)).replace(&p(&s.key), &p(&kp));
    std::fs::write(&proxy.config, &text).unwrap();
    unsafe { libc::kill(proxy.child.id() as i32, libc::SIGHUP) };
    assert!(
        wait_for(Duration::from_secs(5), || proxy.log().contains("reload refused")),
        "{}",
        proxy.log()
    );
    let log = proxy.log();
    let refusal = &log[log.find("reload refused").unwrap()..];
    assert!(
        refusal.contains(&format!("{}:1: certKey site", p(&proxy.config))),
        "the refusal does not point at FILE:1: {refusal}"
    );
}

#[test]
fn check_takes_the_admin_address_and_refuses_a_vserver_on_it_as_run_does() {
    let s = site();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shardtls.conf");
    std::fs::write(&path, &s.config).unwrap();
    let admin = format!("127.0.0.1:{}", s.port);
    let (code, out) = run_binary(&["check", "-c", &p(&path), "--admin", &admin], Duration::from_secs(10));
    assert_eq!(code, Some(1), "check: {out}");
    assert!(out.contains("vserver v1") && out.contains("admin API"), "check: {out}");
    let (code, out) = run_binary(
        &["check", "-c", &p(&path), "--admin", &p(&dir.path().join("a.sock"))],
        Duration::from_secs(10),
    );
    assert_eq!(code, Some(0), "check with a socket path: {out}");
}

#[test]
fn demo_json_writes_json_alone_on_standard_output() {
    let out = Command::new(env!("CARGO_BIN_EXE_shardtls"))
        .args(["demo", "--json"])
        .env("SHARDTLS_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{stdout}"));
    assert!(v["shards"].is_array(), "{v}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("phase 2"),
        "the story goes to stderr"
    );
}

#[test]
fn more_shards_than_cpus_warns() {
    use std::os::unix::process::CommandExt;
    let s = site();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shardtls.conf");
    std::fs::write(&path, &s.config).unwrap();
    let admin = p(&dir.path().join("admin.sock"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shardtls"));
    cmd.args(["run", "-c", &p(&path), "--shards", "2", "--admin", &admin])
        .env("SHARDTLS_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("log")).unwrap());
    // SAFETY: sched_setaffinity is async-signal-safe; it runs in the child only.
    unsafe {
        cmd.pre_exec(|| {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(0, &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let log = || std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
    let serving = wait_for(Duration::from_secs(15), || log().contains("serving"));
    let _ = child.kill();
    let _ = child.wait();
    assert!(serving, "{}", log());
    assert!(
        log().contains("--shards 2 is more than the 1 CPU"),
        "no warning for 2 shards on 1 CPU:\n{}",
        log()
    );
}

#[test]
fn a_batch_opens_at_most_one_epoch_per_entity() {
    let s = site();
    let proxy = Proxy::start(&s.config, 1);
    let reply = proxy
        .ctl("set ssl vserver v1 -sessTimeout 111\nset ssl vserver v1 -tls12 DISABLED\n")
        .unwrap();
    assert!(reply.contains("vserver v1 -> 2"), "{reply}");
    assert_eq!(reply.matches("epoch opened: vserver v1").count(), 1, "{reply}");
    let now = epochs(&proxy);
    assert!(now.iter().any(|l| l.ends_with("\"vserver\" \"v1\" 2 true")), "{now:?}");
}

#[test]
fn the_example_config_reports_each_missing_file_once_and_checks_with_the_certificates_it_documents() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("shardtls.conf");
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/shardtls.conf"), &conf).unwrap();
    let within = Duration::from_secs(30);

    // Without its certificates: each unreadable file once, nothing that follows from it.
    let (code, out) = run_binary(&["check", "-c", &p(&conf)], within);
    assert_eq!(code, Some(1), "{out}");
    let errors: Vec<&str> = out.lines().filter(|l| l.starts_with(&p(&conf))).collect();
    assert_eq!(errors.len(), 3, "{out}");
    assert!(errors.iter().all(|l| l.contains("cannot read")), "{out}");

    // The command the example documents writes them, a private key 0600; then it checks.
    let certs = dir.path().join("certs");
    let (code, out) = run_binary(&["demo", "--write-example-certs", &p(&certs)], within);
    assert_eq!(code, Some(0), "{out}");
    let mode = std::fs::metadata(certs.join("site.key")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let (code, out) = run_binary(&["check", "-c", &p(&conf)], within);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("OK"), "{out}");

    // It never replaces what is there.
    let key = std::fs::read(certs.join("site.key")).unwrap();
    let (code, out) = run_binary(&["demo", "--write-example-certs", &p(&certs)], within);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("already there"), "{out}");
    assert_eq!(std::fs::read(certs.join("site.key")).unwrap(), key);
}

/// A client config that sends no SNI.
fn client_without_sni(pki: &Pki) -> std::sync::Arc<rustls::ClientConfig> {
    let mut cfg = (*pki.client_config()).clone();
    cfg.enable_sni = false;
    std::sync::Arc::new(cfg)
}

#[test]
fn strict_sni_refuses_an_unknown_or_missing_name_with_unrecognized_name() {
    let s = site();
    let proxy = Proxy::start(&s.config, 1);
    // By default the default certificate answers any name, or none.
    assert!(Client::connect(lo(s.port), "www.test", client_without_sni(&s.pki)).is_ok());

    proxy.ctl("set ssl vserver v1 -strictSNI ENABLED").unwrap();
    let mut c = Client::connect(lo(s.port), "www.test", s.pki.client_config()).expect("a name the certificate covers");
    assert_eq!(c.echo(b"hi").unwrap(), b"hi");
    for (what, cfg, name) in [
        ("an unknown name", s.pki.client_config(), "other.test"),
        ("no name", client_without_sni(&s.pki), "www.test"),
    ] {
        let err = Client::connect(lo(s.port), name, cfg).err().map(|e| e.to_string());
        assert!(
            err.as_deref().is_some_and(|e| e.contains("UnrecognisedName")),
            "{what}: {err:?}"
        );
    }
    assert!(get(&proxy, "/config").contains("-strictSNI ENABLED"));
    // Log lines are written by a thread of their own: wait for them.
    let reasons = ["SNI other.test: no certificate", "no SNI: no certificate"];
    assert!(
        wait_for(Duration::from_secs(5), || {
            let log = proxy.log();
            reasons.iter().all(|r| log.contains(r))
        }),
        "no log line names the refused SNI:\n{}",
        proxy.log()
    );
}
