//! Who may reach the admin API: by default a private Unix socket; over TCP
//! on loopback only, with a bearer token; requests a browser could send
//! refused; refusals counted; idle connections never lock the operator out;
//! a request never waits for ever on a stuck control loop.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use shardtls::control::admin::{client_request, client_request_within, MAX_CONNECTIONS};

const PROMPTLY: Duration = Duration::from_secs(3);

fn config() -> String {
    format!("add service echo 127.0.0.1 {} TCP\n", free_port())
}

/// `shardtls` with `args`, the environment cleared of `SHARDTLS_ADMIN` and
/// `RUNTIME_DIRECTORY`, then `env` set.
fn shardtls(args: &[&str], env: &[(&str, &Path)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shardtls"));
    cmd.args(args)
        .env_remove("SHARDTLS_ADMIN")
        .env_remove("RUNTIME_DIRECTORY")
        .env("SHARDTLS_LOG", "info");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// `shardtls run` on a one-service config in `dir` with `args`; the proxy
/// once `admin` answers `/stats` with `token`.
fn start(dir: tempfile::TempDir, args: &[&str], env: &[(&str, &Path)], admin: &str, token: Option<&str>) -> Proxy {
    let path = dir.path().join("shardtls.conf");
    std::fs::write(&path, config()).unwrap();
    let log = std::fs::File::create(dir.path().join("proxy.log")).unwrap();
    let child = shardtls(&["run", "-c", &p(&path), "--shards", "1"], env)
        .args(args)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut proxy = Proxy {
        child,
        admin: admin.to_string(),
        config: path,
        dir,
    };
    let up = wait_for(Duration::from_secs(15), || {
        client_request(admin, "GET", "/stats", "", token).is_ok_and(|(ok, _)| ok)
            || matches!(proxy.child.try_wait(), Ok(Some(_)))
    });
    assert!(
        up && matches!(proxy.child.try_wait(), Ok(None)),
        "proxy did not start: {}",
        proxy.log()
    );
    proxy
}

/// `shardtls run` that must refuse to start: its exit status and stderr.
fn refused_start(dir: &Path, args: &[&str], env: &[(&str, &Path)]) -> (Option<i32>, String) {
    let path = dir.join("refused.conf");
    std::fs::write(&path, config()).unwrap();
    let mut child = shardtls(&["run", "-c", &p(&path), "--shards", "1"], env)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let exited = wait_for(Duration::from_secs(10), || matches!(child.try_wait(), Ok(Some(_))));
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let code = if exited { out.status.code() } else { None };
    (code, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A 0600 token file holding `token`.
fn token_file(dir: &Path, token: &str) -> PathBuf {
    let path = dir.join("token");
    std::fs::write(&path, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
}

/// Everything a TCP server sends back to `req` until it closes.
fn raw_tcp(addr: &str, req: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(req.as_bytes());
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn the_default_admin_endpoint_is_a_private_socket_that_ctl_finds() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = dir.path().join("runtime");
    let env = [("RUNTIME_DIRECTORY", runtime.as_path())];
    let socket = runtime.join("admin.sock");
    let proxy = start(tempfile::tempdir().unwrap(), &[], &env, &p(&socket), None);
    assert_eq!(mode(&runtime), 0o700, "the admin folder");
    assert_eq!(mode(&socket), 0o600, "the admin socket");

    // ctl finds it with neither --admin nor SHARDTLS_ADMIN.
    let out = shardtls(&["ctl", "show", "ns", "runningConfig"], &env)
        .output()
        .unwrap();
    assert!(out.status.success(), "ctl: {out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("add service echo"),
        "{out:?}"
    );
    let out = shardtls(&["ctl", "stats"], &env).output().unwrap();
    assert!(out.status.success(), "ctl stats: {out:?}");
    // So does `ctl show stats --watch`: a block drawn, and still watching.
    let mut watch = shardtls(&["ctl", "show", "stats", "--watch", "--interval", "0.2"], &env)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut block = [0u8; 256];
    let n = watch.stdout.as_mut().unwrap().read(&mut block).unwrap_or(0);
    let running = matches!(watch.try_wait(), Ok(None));
    let _ = watch.kill();
    let status = watch.wait().unwrap();
    assert!(
        n > 0 && running,
        "ctl show stats --watch: {status} {:?}",
        String::from_utf8_lossy(&block[..n])
    );
    drop(proxy);

    // An existing folder others may enter is refused, with the reason.
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (code, err) = refused_start(dir.path(), &[], &[("RUNTIME_DIRECTORY", open.as_path())]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&p(&open)) && err.contains("open to group or others"),
        "{err}"
    );
    assert!(!open.join("admin.sock").exists());
}

#[test]
fn requests_a_browser_could_send_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path(), "s3cret-token");
    let addr = format!("127.0.0.1:{}", unreserved_port());
    let proxy = start(
        dir,
        &["--admin", &addr, "--admin-token-file", &p(&token)],
        &[],
        &addr,
        Some("s3cret-token"),
    );
    let before = client_request(&addr, "GET", "/config", "", Some("s3cret-token"))
        .unwrap()
        .1;
    let change = "add service evil 127.0.0.1 9 TCP";
    let post = |host: &str, extra: &str| {
        format!(
            "POST /cmd HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer s3cret-token\r\n{extra}Content-Length: {}\r\n\r\n{change}",
            change.len()
        )
    };
    let own = addr.clone();
    for (what, req) in [
        ("a page's Origin", post(&own, "Content-Type: text/plain\r\nOrigin: http://evil.example\r\n")),
        ("DNS rebinding", post("evil.example", "Content-Type: text/plain\r\n")),
        ("rebinding with the port", post(&format!("evil.example:{}", &own[10..]), "Content-Type: text/plain\r\n")),
        ("no Host", post(&own, "Content-Type: text/plain\r\n").replace(&format!("Host: {own}\r\n"), "")),
        ("a form post", post(&own, "Content-Type: application/x-www-form-urlencoded\r\n")),
        ("no Content-Type", post(&own, "")),
        (
            "a config read from a page",
            format!("GET /config HTTP/1.1\r\nHost: {own}\r\nAuthorization: Bearer s3cret-token\r\nOrigin: http://evil.example\r\n\r\n"),
        ),
    ] {
        let reply = raw_tcp(&addr, &req);
        assert_eq!(status_of(&reply), 403, "{what}: {reply}");
        assert!(!reply.contains("add service"), "{what}: {reply}");
    }
    // What ctl and curl send is served, under any of the admin API's names.
    let port = &own[10..];
    for host in [own.clone(), format!("localhost:{port}"), format!("[::1]:{port}")] {
        let reply = raw_tcp(
            &addr,
            &post(&host, "Content-Type: text/plain\r\n").replace("evil", "fine"),
        );
        assert_eq!(status_of(&reply), 200, "Host {host}: {reply}");
        let rm = "rm service fine";
        let req = format!(
            "POST /cmd HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer s3cret-token\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{rm}",
            rm.len()
        );
        assert_eq!(status_of(&raw_tcp(&addr, &req)), 200);
    }
    let after = client_request(&addr, "GET", "/config", "", Some("s3cret-token"))
        .unwrap()
        .1;
    assert_eq!(before, after, "a refused request changed the configuration");
    drop(proxy);
}

#[test]
fn a_tcp_admin_api_without_a_token_file_generates_one_that_ctl_finds() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = dir.path().join("runtime");
    let env = [("RUNTIME_DIRECTORY", runtime.as_path())];
    let addr = format!("127.0.0.1:{}", unreserved_port());
    let token_path = runtime.join("admin.token");
    let path = dir.path().join("shardtls.conf");
    std::fs::write(&path, config()).unwrap();
    let log = std::fs::File::create(dir.path().join("proxy.log")).unwrap();
    let child = shardtls(&["run", "-c", &p(&path), "--shards", "1", "--admin", &addr], &env)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut proxy = Proxy {
        child,
        admin: addr.clone(),
        config: path,
        dir,
    };
    let up = wait_for(Duration::from_secs(15), || {
        client_request(&addr, "GET", "/stats", "", None).is_ok() || matches!(proxy.child.try_wait(), Ok(Some(_)))
    });
    assert!(up && matches!(proxy.child.try_wait(), Ok(None)), "{}", proxy.log());
    // Without the token: refused.
    let (ok, body) = client_request(&addr, "GET", "/config", "", None).unwrap();
    assert!(!ok && !body.contains("add service"), "served without a token: {body}");
    assert_eq!(mode(&token_path), 0o600, "the generated token file");
    assert!(
        proxy.log().contains(&p(&token_path)),
        "the log says where the token is: {}",
        proxy.log()
    );
    let token = std::fs::read_to_string(&token_path).unwrap();
    assert!(!proxy.log().contains(token.trim()), "the token appears in the log");
    // ctl finds it.
    let out = shardtls(&["ctl", "--admin", &addr, "show", "ns", "runningConfig"], &env)
        .output()
        .unwrap();
    assert!(out.status.success(), "ctl: {out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("add service echo"),
        "{out:?}"
    );
}

#[test]
fn a_remote_admin_address_needs_allow_remote_and_a_token_file() {
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path(), "s3cret-token");
    let token = p(&token);
    // TEST-NET-1: no interface has it, so nothing ever listens there.
    let remote = format!("192.0.2.1:{}", unreserved_port());
    for args in [
        vec!["--admin", &remote],
        vec!["--admin", &remote, "--admin-allow-remote"],
        vec!["--admin", &remote, "--admin-token-file", &token],
    ] {
        let (code, err) = refused_start(dir.path(), &args, &[]);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(
            err.contains("--admin-allow-remote") && err.contains("--admin-token-file"),
            "{args:?}: {err}"
        );
    }
    // With both, the address is let through (and fails to bind here).
    let args = ["--admin", &remote, "--admin-allow-remote", "--admin-token-file", &token];
    let (code, err) = refused_start(dir.path(), &args, &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("cannot listen on 192.0.2.1"), "{err}");
}

#[test]
fn empty_and_open_token_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let admin = p(&dir.path().join("admin.sock"));
    let token = dir.path().join("token");
    for (text, mode, reason) in [
        ("", 0o600, "is empty"),
        (" \n\t\n", 0o600, "is empty"),
        ("s3cret\n", 0o640, "open to group or others"),
        ("s3cret\n", 0o604, "open to group or others"),
    ] {
        std::fs::write(&token, text).unwrap();
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(mode)).unwrap();
        let (code, err) = refused_start(dir.path(), &["--admin", &admin, "--admin-token-file", &p(&token)], &[]);
        assert_eq!(code, Some(1), "{text:?} {mode:o}: {err}");
        assert!(
            err.contains(&p(&token)) && err.contains(reason),
            "{text:?} {mode:o}: {err}"
        );
    }
    // The operator may say a readable file is meant.
    let proxy = start(
        tempfile::tempdir().unwrap(),
        &[
            "--admin",
            &admin,
            "--admin-token-file",
            &p(&token),
            "--admin-token-file-insecure",
        ],
        &[],
        &admin,
        Some("s3cret"),
    );
    drop(proxy);
}

#[test]
fn failed_authentications_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path(), "s3cret-token");
    let admin = p(&dir.path().join("admin.sock"));
    let proxy = start(
        dir,
        &["--admin", &admin, "--admin-token-file", &p(&token)],
        &[],
        &admin,
        Some("s3cret-token"),
    );
    for wrong in [None, Some("wrong"), Some("s3cret-token-and-more")] {
        let (ok, body) = client_request(&admin, "GET", "/stats", "", wrong).unwrap();
        assert!(!ok && !body.contains("shards"), "{wrong:?}: {body}");
    }
    let (ok, stats) = client_request(&admin, "GET", "/stats", "", Some("s3cret-token")).unwrap();
    assert!(ok, "{stats}");
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["admin"]["auth_failures"], 3, "{stats:#}");
    let (ok, metrics) = client_request(&admin, "GET", "/metrics", "", Some("s3cret-token")).unwrap();
    assert!(
        ok && metrics.contains("\nshardtls_admin_auth_failures_total 3\n"),
        "{metrics}"
    );
    assert!(proxy.log().contains("admin API refused"), "not logged: {}", proxy.log());
    assert!(!proxy.log().contains("s3cret-token"), "the token appears in the log");
}

#[test]
fn a_socket_path_taken_by_something_else_is_never_replaced() {
    let dir = tempfile::tempdir().unwrap();
    // A regular file: refused, and left as it was.
    let file = dir.path().join("admin.sock");
    std::fs::write(&file, "precious").unwrap();
    let (code, err) = refused_start(dir.path(), &["--admin", &p(&file)], &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&p(&file)) && err.contains("not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "precious");
    // A socket something answers on: refused, and still there.
    let live = dir.path().join("live.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&live).unwrap();
    let (code, err) = refused_start(dir.path(), &["--admin", &p(&live)], &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&p(&live)) && err.contains("answers on it"), "{err}");
    assert!(
        std::os::unix::net::UnixStream::connect(&live).is_ok(),
        "the live socket was replaced"
    );
    // A stale socket (nobody answers): replaced.
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let proxy = start(
        tempfile::tempdir().unwrap(),
        &["--admin", &p(&stale)],
        &[],
        &p(&stale),
        None,
    );
    assert_eq!(mode(&stale), 0o600);
    drop(proxy);
}

#[test]
fn idle_connections_never_lock_out_an_operator_with_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path(), "s3cret-token");
    let addr = format!("127.0.0.1:{}", unreserved_port());
    let proxy = start(
        dir,
        &["--admin", &addr, "--admin-token-file", &p(&token)],
        &[],
        &addr,
        Some("s3cret-token"),
    );
    let fds = open_fds(proxy.child.id());
    let idle: Vec<TcpStream> = (0..MAX_CONNECTIONS + 8)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    assert!(
        wait_for(Duration::from_secs(10), || open_fds(proxy.child.id())
            >= fds + MAX_CONNECTIONS),
        "the admin API did not accept the idle connections"
    );
    let t = Instant::now();
    let (status, body) = client_request_within(
        &addr,
        "GET",
        "/stats",
        "",
        Some("s3cret-token"),
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(status, 200, "the operator was locked out: {body}");
    assert!(t.elapsed() < PROMPTLY, "the operator waited {:?}", t.elapsed());
    // A request without the token is told so and closed at once, body unread.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(PROMPTLY)).unwrap();
    write!(
        s,
        "POST /cmd HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/plain\r\nContent-Length: 100000\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    assert_eq!(status_of(&reply), 401, "{reply}");
    drop(idle);
}

#[test]
fn idle_connections_over_the_cap_make_room_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let admin = p(&dir.path().join("admin.sock"));
    let proxy = start(dir, &["--admin", &admin], &[], &admin, None);
    let connect = || std::os::unix::net::UnixStream::connect(&admin).unwrap();
    let fds = open_fds(proxy.child.id());
    let oldest: Vec<_> = (0..8).map(|_| connect()).collect();
    assert!(wait_for(PROMPTLY, || open_fds(proxy.child.id()) >= fds + 8));
    let newer: Vec<_> = (0..MAX_CONNECTIONS).map(|_| connect()).collect();
    // The oldest idle connections are closed to make room, the newer kept.
    for mut s in oldest {
        s.set_read_timeout(Some(PROMPTLY)).unwrap();
        let mut out = Vec::new();
        assert!(s.read_to_end(&mut out).is_ok(), "an old idle connection was not closed");
    }
    assert!(
        wait_for(PROMPTLY, || open_fds(proxy.child.id()) == fds + MAX_CONNECTIONS),
        "more than {MAX_CONNECTIONS} admin connections held"
    );
    for s in &newer {
        s.set_nonblocking(true).unwrap();
        let mut byte = [0u8; 1];
        assert!(
            matches!((&*s).read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "a newer idle connection was closed"
        );
    }
    let (ok, _) = client_request(&admin, "GET", "/stats", "", None).unwrap();
    assert!(ok);
}

#[test]
fn a_request_waiting_on_a_stuck_control_loop_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let admin = p(&dir.path().join("admin.sock"));
    let failpoint = PathBuf::from("control-stalls-on-save");
    let proxy = start(
        dir,
        &["--admin", &admin],
        &[("SHARDTLS_FAILPOINT", &failpoint)],
        &admin,
        None,
    );
    let fds = open_fds(proxy.child.id());
    let limit = Duration::from_secs(30);
    let request = |method: &'static str, path: &'static str, body: &'static str| {
        let admin = admin.clone();
        std::thread::spawn(move || client_request_within(&admin, method, path, body, None, limit))
    };
    let stuck = request("POST", "/cmd", "save ns config");
    assert!(
        wait_for(Duration::from_secs(10), || proxy
            .log()
            .contains("failpoint: the control loop stalls")),
        "{}",
        proxy.log()
    );
    // Every place taken by a request waiting for the control loop: one
    // more connection is turned away at once.
    let waiting: Vec<_> = (1..MAX_CONNECTIONS).map(|_| request("GET", "/stats", "")).collect();
    assert!(
        wait_for(Duration::from_secs(10), || open_fds(proxy.child.id())
            >= fds + MAX_CONNECTIONS),
        "the waiting requests were not accepted"
    );
    let mut last = Err(String::new());
    let turned_away = wait_for(Duration::from_secs(10), || {
        last = client_request_within(&admin, "GET", "/stats", "", None, Duration::from_secs(2));
        last.as_ref()
            .is_ok_and(|(status, body)| *status == 503 && body.contains("too many admin connections"))
    });
    assert!(turned_away, "a request over the cap got {last:?}");
    // The requests still queued give up, unhandled; the one being handled
    // says it may still take effect.
    for w in waiting {
        let r = w.join().unwrap();
        assert!(
            matches!(&r, Ok((503, body)) if body.contains("nothing was done")),
            "a queued request got {r:?}"
        );
    }
    let (status, body) = stuck.join().unwrap().unwrap();
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("may still"), "{body}");
}
