//! `shardtls ctl` as operators type it, against a live proxy: ADC words with
//! their own `-flags`, one quoted line, a batch on standard input, and the
//! admin address from `SHARDTLS_ADMIN`. Each form's effect is checked in the
//! running configuration, not just its exit status.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::*;
use shardtls::control::admin::client_request;

fn running_config(proxy: &Proxy) -> String {
    let (ok, body) = client_request(&proxy.admin, "GET", "/config", "", None).unwrap();
    assert!(ok, "GET /config: {body}");
    body
}

/// `shardtls ctl ARGS...` with `SHARDTLS_ADMIN` pointing at `proxy` (no
/// `--admin`), and `stdin` fed to it.
fn ctl(proxy: &Proxy, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shardtls"))
        .arg("ctl")
        .args(args)
        .env("SHARDTLS_ADMIN", &proxy.admin)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn site(pki: &Pki) -> (String, std::path::PathBuf, std::path::PathBuf) {
    let (cert, key, _) = pki.issue("site", &["www.test"]);
    let config = format!(
        "add ssl certKey site -cert {} -key {}\n\
         add service echo 127.0.0.1 {} TCP\n\
         add lb vserver v1 SSL_TCP 127.0.0.1 {}\n\
         bind ssl vserver v1 -certkeyName site\n\
         bind lb vserver v1 echo\n",
        p(&cert),
        p(&key),
        free_port(),
        free_port()
    );
    (config, cert, key)
}

#[test]
fn adc_words_with_their_own_flags_pass_through_untouched() {
    let pki = Pki::new();
    let (config, _, _) = site(&pki);
    let proxy = Proxy::start(&config, 1);
    let (cert2, key2, _) = pki.issue("site-2", &["www.test"]);
    let (cert2, key2) = (p(&cert2), p(&key2));
    let out = ctl(
        &proxy,
        &["update", "ssl", "certKey", "site", "-cert", &cert2, "-key", &key2],
        "",
    );
    ok(&out, "update ssl certKey with -cert and -key");
    assert!(running_config(&proxy).contains(&cert2), "the update did not apply");
    // -sessTimeout is the vserver's flag, not ctl's.
    let out = ctl(&proxy, &["set", "ssl", "vserver", "v1", "-sessTimeout", "240"], "");
    ok(&out, "set ssl vserver with a flag");
    assert!(running_config(&proxy).contains("-sessTimeout 240"));
}

#[test]
fn one_quoted_line_is_one_command() {
    let pki = Pki::new();
    let (config, _, _) = site(&pki);
    let proxy = Proxy::start(&config, 1);
    let out = ctl(&proxy, &["set ssl vserver v1 -sessTimeout 300"], "");
    ok(&out, "one quoted line");
    assert!(running_config(&proxy).contains("-sessTimeout 300"));
    // A refused line exits non-zero and says why.
    let out = ctl(&proxy, &["set ssl vserver nosuch -sessTimeout 300"], "");
    assert!(!out.status.success(), "a refused command exited 0");
    assert!(String::from_utf8_lossy(&out.stdout).contains("nosuch"));
}

#[test]
fn a_batch_on_standard_input_is_one_transaction() {
    let pki = Pki::new();
    let (config, _, _) = site(&pki);
    let proxy = Proxy::start(&config, 1);
    let before = running_config(&proxy);
    // The last line fails: nothing of the batch applies.
    let out = ctl(
        &proxy,
        &["-f", "-"],
        "set ssl vserver v1 -sessTimeout 111\nbind ssl vserver v1 -certkeyName nosuch\n",
    );
    assert!(!out.status.success(), "a failing batch exited 0");
    assert_eq!(running_config(&proxy), before, "part of a refused batch applied");
    let out = ctl(
        &proxy,
        &["-f", "-"],
        "set ssl vserver v1 -sessTimeout 111\nset ssl vserver v1 -tls12 DISABLED\n",
    );
    ok(&out, "batch on standard input");
    let after = running_config(&proxy);
    assert!(
        after.contains("-sessTimeout 111") && after.contains("-tls12 DISABLED"),
        "{after}"
    );
}

#[test]
fn help_shows_real_examples() {
    let out = Command::new(env!("CARGO_BIN_EXE_shardtls"))
        .args(["ctl", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for example in [
        "shardtls ctl update ssl certKey",
        "shardtls ctl \"set ssl vserver",
        "shardtls ctl -f -",
        "SHARDTLS_ADMIN",
    ] {
        assert!(text.contains(example), "ctl --help lacks {example:?}:\n{text}");
    }
}

#[test]
fn show_stats_watch_appends_a_block_per_interval_and_ctrl_c_ends_it() {
    use std::io::Read;
    use std::sync::{Arc, Mutex};
    let pki = Pki::new();
    let (config, _, _) = site(&pki);
    let proxy = Proxy::start(&config, 2);
    // Stdout is a pipe, not a terminal: blocks are appended, no screen control.
    let mut child = Command::new(env!("CARGO_BIN_EXE_shardtls"))
        .args(["ctl", "show", "stats", "--watch", "--interval", "0.5"])
        .env("SHARDTLS_ADMIN", &proxy.admin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let seen = Arc::new(Mutex::new(String::new()));
    let reader = {
        let (seen, mut stdout) = (seen.clone(), child.stdout.take().unwrap());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stdout.read(&mut buf) {
                seen.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    let blocks = |text: &str| text.matches("shardtls stats: ").count();
    let enough = wait_for(std::time::Duration::from_secs(15), || {
        blocks(&seen.lock().unwrap()) >= 3
    });
    // Ctrl-C.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    reader.join().unwrap();
    let text = seen.lock().unwrap().clone();
    assert!(enough, "fewer than three blocks in 15 s:\n{text}");
    assert!(out.status.success(), "Ctrl-C: exit {:?}", out.status.code());
    assert!(!text.contains('\x1b'), "screen control sent to a pipe");
    let parsed: Vec<Vec<Vec<String>>> = text
        .split("\n\n")
        .filter(|b| b.starts_with("shardtls stats: "))
        .map(|b| {
            b.lines()
                .skip(2)
                .map(|l| l.split_whitespace().map(String::from).collect())
                .collect()
        })
        .collect();
    assert!(parsed.len() >= 3, "{text}");
    for (i, rows) in parsed.iter().enumerate() {
        let vserver_rows: Vec<&Vec<String>> = rows.iter().filter(|r| r[1] == "vserver" && r[2] == "v1").collect();
        let shards: Vec<&str> = vserver_rows.iter().map(|r| r[0].as_str()).collect();
        assert_eq!(shards, ["0", "1"], "block {i}: a row per shard for v1:\n{text}");
        for r in &vserver_rows {
            assert_eq!(&r[3..6], ["1", "current", "0"], "block {i}: {r:?}");
            // Rates need a previous sample: none in the first block.
            assert_eq!(r[6] == "-", i == 0, "block {i}: handshakes/s {}", r[6]);
        }
    }
}

/// `shardtls ctl show stats --watch ARGS...` against the admin API at `admin`.
fn spawn_watch(admin: &std::path::Path, args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_shardtls"))
        .args(["ctl", "show", "stats", "--watch"])
        .args(args)
        .env("SHARDTLS_ADMIN", admin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for `child` for up to a minute (killing it after that), with its
/// exit code and standard error.
fn finish(mut child: std::process::Child) -> (Option<i32>, String) {
    let ended = wait_for(std::time::Duration::from_secs(60), || {
        child.try_wait().is_ok_and(|s| s.is_some())
    });
    if !ended {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(ended, "still running after a minute; stderr: {stderr}");
    (out.status.code(), stderr)
}

/// An admin socket in `dir` that answers each connection, after reading
/// its request, with `reply` and closes it; with None, it accepts, never
/// answers, and sends the connection on the returned channel (kept open).
fn fake_admin(
    dir: &tempfile::TempDir,
    reply: Option<&'static str>,
) -> (
    std::path::PathBuf,
    std::sync::mpsc::Receiver<std::os::unix::net::UnixStream>,
) {
    use std::io::Read;
    let path = dir.path().join("admin.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for mut s in listener.incoming().map_while(Result::ok) {
            if let Some(reply) = reply {
                let mut head = [0u8; 4096];
                let _ = s.read(&mut head);
                let _ = s.write_all(reply.as_bytes());
            } else if tx.send(s).is_err() {
                return;
            }
        }
    });
    (path, rx)
}

#[test]
fn show_stats_watch_exits_70_when_no_admin_api_listens() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = finish(spawn_watch(&dir.path().join("absent.sock"), &[]));
    assert_eq!(code, Some(70), "{stderr}");
    assert!(stderr.contains("cannot reach admin socket"), "{stderr}");
}

#[test]
fn show_stats_watch_exits_like_ctl_on_a_refusal_or_a_fault() {
    for (reply, want) in [
        ("HTTP/1.1 409 Conflict\r\nContent-Length: 4\r\n\r\nbusy", 1),
        ("HTTP/1.1 400 Bad Request\r\nContent-Length: 2\r\n\r\nno", 1),
        (
            "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 6\r\n\r\nfailed",
            70,
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (admin, _accepted) = fake_admin(&dir, Some(reply));
        let (code, stderr) = finish(spawn_watch(&admin, &[]));
        assert_eq!(code, Some(want), "{reply:?}: {stderr}");
    }
}

#[test]
fn show_stats_watch_gives_up_on_an_admin_api_that_never_answers() {
    let dir = tempfile::tempdir().unwrap();
    let (admin, _accepted) = fake_admin(&dir, None);
    let (code, stderr) = finish(spawn_watch(&admin, &["--interval", "0.1"]));
    assert_eq!(code, Some(70), "{stderr}");
    assert!(stderr.contains("did not answer within"), "{stderr}");
}

#[test]
fn a_second_ctrl_c_ends_show_stats_watch_while_a_request_hangs() {
    let dir = tempfile::tempdir().unwrap();
    let (admin, accepted) = fake_admin(&dir, None);
    // A long interval: the request would wait 10 s before giving up.
    let child = spawn_watch(&admin, &["--interval", "5"]);
    // Connected, so the signal handlers are in place (they come first).
    let conn = accepted.recv_timeout(std::time::Duration::from_secs(30));
    let pid = child.id() as i32;
    unsafe { libc::kill(pid, libc::SIGINT) };
    std::thread::sleep(std::time::Duration::from_millis(200));
    unsafe { libc::kill(pid, libc::SIGINT) };
    let (code, stderr) = finish(child);
    assert!(conn.is_ok(), "ctl never connected: {stderr}");
    // 130 (128 + SIGINT) from the second Ctrl-C, not 0 from the first
    // after the request timed out.
    assert_eq!(code, Some(130), "{stderr}");
}

#[test]
fn a_save_that_cannot_write_is_the_operators_to_fix_and_says_why_once() {
    let pki = Pki::new();
    let (config, _, _) = site(&pki);
    let proxy = Proxy::start(&config, 1);
    // A folder now stands where the file is: the rename onto it fails.
    std::fs::remove_file(&proxy.config).unwrap();
    std::fs::create_dir(&proxy.config).unwrap();
    let (status, _) =
        shardtls::control::admin::client_request_status(&proxy.admin, "POST", "/cmd", "save ns config", None).unwrap();
    assert!(
        (400..500).contains(&status),
        "HTTP {status} for a file that cannot be written"
    );
    let out = ctl(&proxy, &["save", "ns", "config"], "");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert_eq!(text.matches("cannot save").count(), 1, "said more than once: {text}");
    assert_eq!(text.matches(&p(&proxy.config)).count(), 1, "the path, once: {text}");
    assert!(text.contains("Is a directory"), "the OS error: {text}");
    assert!(!text.contains("proxy failed"), "{text}");
}

#[test]
fn warnings_a_command_causes_reach_the_ctl_user_on_stderr() {
    let pki = Pki::new();
    let (config, _, _) = site(&pki);
    let proxy = Proxy::start(&config, 1);
    let port = free_port().to_string();
    let out = ctl(&proxy, &["add", "service", "open", "127.0.0.1", &port, "SSL_TCP"], "");
    ok(&out, "add service SSL_TCP");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("Done"), "{stdout}");
    assert!(
        stderr.contains("warning: service open: SSL_TCP without -serverAuth ENABLED"),
        "the warning did not reach the user: stdout {stdout}\nstderr {stderr}"
    );
    assert!(!stdout.contains("warning"), "warnings go to stderr: {stdout}");
}
