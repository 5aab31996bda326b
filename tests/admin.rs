//! The admin API serves connections concurrently: a client that stalls
//! delays no other request (the cap on connections is in admin_access.rs).

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::*;
use shardtls::control::admin::{client_request, client_request_status};

/// Well within the admin API's 10 s request timeout.
const PROMPTLY: Duration = Duration::from_secs(3);

/// A proxy with one service on one shard.
fn proxy() -> Proxy {
    let config = format!("add service echo 127.0.0.1 {} TCP\n", free_port());
    Proxy::start(&config, 1)
}

/// An admin connection that has sent `bytes` and then nothing more.
fn stalled(admin: &str, bytes: &[u8]) -> UnixStream {
    let mut s = UnixStream::connect(admin).unwrap();
    s.write_all(bytes).unwrap();
    s
}

/// Everything the server sends until it closes, waiting at most `within`.
fn reply_of(mut s: UnixStream, within: Duration) -> String {
    s.set_read_timeout(Some(within)).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn stalled_admin_clients_delay_no_other_request() {
    let mut proxy = proxy();
    let fds = open_fds(proxy.child.id());
    let opened = Instant::now();
    let silent = stalled(&proxy.admin, b"");
    let half_head = stalled(&proxy.admin, b"POST /cmd HTTP/1.1\r\nHost: localhost\r\nContent-Le");
    // The server has accepted both before the requests that must not wait for them.
    assert!(
        wait_for(Duration::from_secs(10), || open_fds(proxy.child.id()) >= fds + 2),
        "the admin server did not accept the stalled connections"
    );

    let t = Instant::now();
    let (ok, body) = client_request(&proxy.admin, "GET", "/stats", "", None).unwrap();
    let took = t.elapsed();
    assert!(ok, "GET /stats: {body}");
    assert!(took < PROMPTLY, "GET /stats waited {took:?} behind stalled connections");
    serde_json::from_str::<serde_json::Value>(&body).expect("stats are JSON");

    let change = format!("add service echo2 127.0.0.1 {} TCP", free_port());
    let t = Instant::now();
    let (ok, body) = client_request(&proxy.admin, "POST", "/cmd", &change, None).unwrap();
    let took = t.elapsed();
    assert!(ok, "POST /cmd {change:?}: {body}");
    assert!(took < PROMPTLY, "POST /cmd waited {took:?} behind stalled connections");
    let (ok, config) = client_request(&proxy.admin, "GET", "/config", "", None).unwrap();
    assert!(
        ok && config.contains("add service echo2"),
        "change not applied: {config}"
    );

    // The stalled connections still get their timeout.
    for (what, s) in [("silent", silent), ("half a head", half_head)] {
        let reply = reply_of(s, Duration::from_secs(15));
        assert_eq!(status_of(&reply), 408, "{what} connection got {reply:?}");
    }
    let held = opened.elapsed();
    assert!(held < Duration::from_secs(13), "stalled connections were held {held:?}");
    assert!(
        matches!(proxy.child.try_wait(), Ok(None)),
        "proxy exited: {}",
        proxy.log()
    );
}

#[test]
fn signals_are_handled_while_admin_clients_stall() {
    let mut proxy = proxy();
    let fds = open_fds(proxy.child.id());
    let _silent = stalled(&proxy.admin, b"");
    let _half_head = stalled(&proxy.admin, b"GET /stats HTTP/1.1\r\nHost: localhost\r\n");
    assert!(
        wait_for(Duration::from_secs(10), || open_fds(proxy.child.id()) >= fds + 2),
        "the admin server did not accept the stalled connections"
    );

    // SIGHUP reloads the file at once.
    let mut config = std::fs::read_to_string(&proxy.config).unwrap();
    config.push_str(&format!("add service reloaded 127.0.0.1 {} TCP\n", free_port()));
    std::fs::write(&proxy.config, config).unwrap();
    let t = Instant::now();
    unsafe { libc::kill(proxy.child.id() as i32, libc::SIGHUP) };
    let reloaded = wait_for(PROMPTLY, || {
        client_request(&proxy.admin, "GET", "/config", "", None)
            .is_ok_and(|(ok, body)| ok && body.contains("add service reloaded"))
    });
    let took = t.elapsed();
    assert!(reloaded, "SIGHUP not handled: {}", proxy.log());
    assert!(took < PROMPTLY, "SIGHUP handled after {took:?}");

    // SIGTERM drains (no client connections here), removes the socket and
    // exits, with stalled admin connections open.
    let fds = open_fds(proxy.child.id());
    let _silent_too = stalled(&proxy.admin, b"");
    assert!(
        wait_for(Duration::from_secs(10), || open_fds(proxy.child.id()) > fds),
        "the admin server did not accept the stalled connection"
    );
    let t = Instant::now();
    let code = proxy.terminate(PROMPTLY);
    assert_eq!(code, Some(0), "after {:?}: {}", t.elapsed(), proxy.log());
    assert!(
        !std::path::Path::new(&proxy.admin).exists(),
        "the admin socket file is left behind"
    );
}

/// Fail-stop: a shard that dies while applying a change never leaves the
/// process serving with a dead core. The change is not reported as applied,
/// the log names the shard, and the process exits non-zero (70) so the
/// service manager restarts it. Control: the same change on a healthy
/// proxy applies and the proxy keeps running.
#[test]
fn a_shard_that_dies_stops_the_process_instead_of_leaving_a_dead_core() {
    let config = format!("add service echo 127.0.0.1 {} TCP\n", free_port());
    let change = "add service echo2 127.0.0.1 1 TCP";

    let healthy = Proxy::start(&config, 2);
    healthy
        .ctl(change)
        .expect("control: the change applies on a healthy proxy");
    let mut healthy = healthy;
    assert!(healthy.child.try_wait().unwrap().is_none(), "control: still running");

    let mut p = Proxy::try_start_with_env(&config, 2, &[("SHARDTLS_FAILPOINT", "shard-1-panic-on-change")])
        .expect("starts: the fault fires only on a change");
    let reply = p.ctl(change);
    assert!(
        reply.is_err(),
        "a change a shard died applying was reported applied: {reply:?}"
    );
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = p.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "still running with a dead shard\n{}",
            p.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(70), "exit status\n{}", p.log());
    assert!(
        p.log().contains("shard-1 panicked"),
        "the log names the shard\n{}",
        p.log()
    );
}

/// Fail-stop with live connections: the shard that dies holds a listener
/// and TLS connections, whose drops must not run while the process exits.
/// It still exits 70 (not by a signal), the log names the shard, and lines
/// logged just before the exit are written out.
#[test]
fn a_shard_that_dies_holding_connections_exits_70_not_by_a_signal() {
    let pki = Pki::new();
    let origin = backend(shardtls::test_server::TestServerMode::Echo);
    let port = free_port();
    let (ck, _) = certkey(&pki, "site", &["site.test"]);
    let config = format!(
        "{ck}add service web {} TCP\n\
         add lb vserver v1 SSL_TCP 127.0.0.1 {port}\n\
         bind ssl vserver v1 -certkeyName site\n\
         bind lb vserver v1 web\n",
        origin.local_addr().to_string().replace(':', " ")
    );
    let mut p = Proxy::try_start_with_env(&config, 2, &[("SHARDTLS_FAILPOINT", "shard-1-panic-on-change")])
        .expect("starts: the fault fires only on a change");
    let mut clients = Vec::new();
    for _ in 0..8 {
        let mut c = Client::connect(lo(port), "site.test", pki.client_config()).unwrap();
        assert_eq!(c.echo(b"ping").unwrap(), b"ping");
        clients.push(c);
    }
    let reply = p.ctl("add service echo2 127.0.0.1 1 TCP");
    assert!(reply.is_err(), "reported applied: {reply:?}");
    let mut status = None;
    assert!(
        wait_for(Duration::from_secs(10), || {
            status = p.child.try_wait().unwrap();
            status.is_some()
        }),
        "still running with a dead shard\n{}",
        p.log()
    );
    let status = status.unwrap();
    assert_eq!(status.code(), Some(70), "exit status {status:?}\n{}", p.log());
    let log = p.log();
    assert!(log.contains("shard-1 panicked"), "the log names the shard\n{log}");
    assert!(
        log.contains("failpoint: shard 1 is about to panic"),
        "the line logged before the panic is written out\n{log}"
    );
    drop(clients);
}

#[test]
fn mistakes_are_told_apart_from_faults_by_status() {
    let proxy = proxy();
    let status = |body: &str| {
        client_request_status(&proxy.admin, "POST", "/cmd", body, None)
            .unwrap()
            .0
    };
    let before = client_request(&proxy.admin, "GET", "/config", "", None).unwrap().1;
    // Not a command of the language: a mistake.
    assert_eq!(status("frobnicate the proxy"), 400);
    // An unknown flag: a mistake.
    assert_eq!(status("add service echo3 127.0.0.1 9 TCP -noSuchFlag 1"), 400);
    // An entity that already exists: a conflict with the running configuration.
    assert_eq!(status("add service echo 127.0.0.1 9 TCP"), 409);
    // Removing what is not there: a mistake, not a fault.
    assert_eq!(status("rm service nosuch"), 400);
    let after = client_request(&proxy.admin, "GET", "/config", "", None).unwrap().1;
    assert_eq!(before, after, "a refused command changed the configuration");
    // And a good one is 200.
    assert_eq!(status("add service echo2 127.0.0.1 9 TCP"), 200);
}

#[test]
fn ctl_exits_1_on_a_refusal_and_70_when_the_proxy_cannot_be_reached() {
    let proxy = proxy();
    let run = |admin: &str, line: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_shardtls"))
            .args(["ctl", "--admin", admin, line])
            .output()
            .unwrap()
    };
    let out = run(&proxy.admin, "add service echo 127.0.0.1 9 TCP");
    assert_eq!(out.status.code(), Some(1), "refused: {out:?}");
    let out = run(&proxy.admin, "show ns runningConfig");
    assert_eq!(out.status.code(), Some(0), "query: {out:?}");
    let dir = tempfile::tempdir().unwrap();
    let nowhere = dir.path().join("no-such.sock");
    let out = run(nowhere.to_str().unwrap(), "show ns runningConfig");
    assert_eq!(out.status.code(), Some(70), "unreachable: {out:?}");
}

#[test]
fn a_bad_admin_address_is_the_operators_mistake_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("ns.conf");
    std::fs::write(&conf, format!("add service echo 127.0.0.1 {} TCP\n", free_port())).unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    for admin in ["nonsense", taken.as_str()] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_shardtls"))
            .args(["run", "-c", conf.to_str().unwrap(), "--shards", "1", "--admin", admin])
            .args(["--admin-token-file", token.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "--admin {admin}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("admin"),
            "--admin {admin}: the error names the admin address: {out:?}"
        );
    }
}
