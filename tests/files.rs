//! Files the proxy reads: certificate and key paths that are FIFOs,
//! devices or too large, paths outside the folders allowed at run time,
//! private keys others can read; and a process that keeps its memory out
//! of core dumps.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use shardtls::control::admin::client_request;

fn get(proxy: &Proxy, path: &str) -> String {
    let (ok, body) = client_request(&proxy.admin, "GET", path, "", None).unwrap();
    assert!(ok, "GET {path}: {body}");
    body
}

/// `cmd` sent on another thread: its reply within `within`, or a failure
/// saying the control thread is stuck.
fn ctl_within(proxy: &Proxy, cmd: &str, within: Duration) -> Result<String, String> {
    let (tx, rx) = mpsc::channel();
    let (admin, line) = (proxy.admin.clone(), cmd.to_string());
    std::thread::spawn(move || {
        let _ = tx.send(client_request(&admin, "POST", "/cmd", &line, None));
    });
    match rx.recv_timeout(within) {
        Ok(Ok((true, body))) => Ok(body),
        Ok(Ok((false, body))) => Err(body),
        Ok(Err(e)) => panic!("`{cmd}`: admin API unreachable: {e}"),
        Err(_) => panic!("`{cmd}` got no answer within {within:?}: the control thread is blocked"),
    }
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: c is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// A config with certKey `site` and a vserver, plus `extra` lines.
fn site_config(pki: &Pki, extra: &str) -> String {
    let (cert, key, _) = pki.issue("site", &["www.test"]);
    format!(
        "add ssl certKey site -cert {} -key {}\n\
         add service echo 127.0.0.1 {} TCP\n\
         add lb vserver v1 SSL_TCP 127.0.0.1 {}\n\
         bind ssl vserver v1 -certkeyName site\n\
         bind lb vserver v1 echo\n{extra}",
        p(&cert),
        p(&key),
        free_port(),
        free_port()
    )
}

fn check(config: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_shardtls"))
        .args(["check", "-c"])
        .arg(config)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn fifo_device_and_oversized_files_are_refused_at_once_and_change_nothing() {
    let pki = Pki::new();
    let proxy = Proxy::try_start_args(&site_config(&pki, ""), 1, &[]).unwrap();
    let config0 = get(&proxy, "/config");
    // In the config file's folder, where run-time commands may read.
    let dir = proxy.dir.path();
    let (cert, key, _) = pki.issue("new", &["new.test"]);
    std::fs::copy(&cert, dir.join("new.pem")).unwrap();
    shardtls::pki::write_private(&dir.join("new.key"), &std::fs::read(&key).unwrap()).unwrap();
    mkfifo(&dir.join("fifo.pem"));
    mkfifo(&dir.join("fifo.key"));
    let big = dir.join("big.pem");
    let mut pem = std::fs::read(&cert).unwrap();
    pem.resize(2 << 20, b'\n');
    std::fs::write(&big, pem).unwrap();
    let cases = [
        (
            "FIFO certificate",
            "add ssl certKey x -cert fifo.pem -key new.key",
            "a FIFO, not a regular file",
        ),
        (
            "FIFO key",
            "add ssl certKey x -cert new.pem -key fifo.key",
            "a FIFO, not a regular file",
        ),
        (
            "FIFO on update",
            "update ssl certKey site -cert fifo.pem -key new.key",
            "a FIFO",
        ),
        (
            "oversized certificate",
            "add ssl certKey x -cert big.pem -key new.key",
            "larger than the",
        ),
    ];
    for (what, cmd, expect) in cases {
        let err = ctl_within(&proxy, cmd, Duration::from_secs(5)).expect_err(what);
        assert!(err.contains(expect), "{what}: {err}");
        assert_eq!(
            get(&proxy, "/config"),
            config0,
            "{what}: the running configuration changed"
        );
    }
    // Still answering, and a good file still loads.
    ctl_within(
        &proxy,
        "add ssl certKey x -cert new.pem -key new.key",
        Duration::from_secs(5),
    )
    .unwrap();

    // In a config file: check and start refuse, promptly.
    for (bad, expect) in [
        ("fifo.pem", "a FIFO"),
        ("/dev/zero", "a character device"),
        ("big.pem", "larger than"),
    ] {
        let text = format!("add ssl certKey x -cert {bad} -key new.key\n");
        let path = dir.join("bad.conf");
        std::fs::write(&path, text).unwrap();
        let (ok, out) = check(&path);
        assert!(!ok && out.contains(expect), "check with {bad}: {out}");
    }
}

#[test]
fn run_time_paths_stay_in_the_allowed_folders() {
    let pki = Pki::new();
    let proxy = Proxy::try_start_args(&site_config(&pki, ""), 1, &[]).unwrap();
    let config0 = get(&proxy, "/config");
    let dir = proxy.dir.path();
    // The certificate folder is not the config file's: not allowed at run time.
    let (cert, key, _) = pki.issue("out", &["out.test"]);
    std::os::unix::fs::symlink(&cert, dir.join("link.pem")).unwrap();
    std::os::unix::fs::symlink(pki.dir.path(), dir.join("linkdir")).unwrap();
    let up = format!("../{}", pki.dir.path().file_name().unwrap().to_string_lossy());
    let refused = "no such file in the folders allowed for run-time changes";
    for (what, cert_arg) in [
        ("absolute path outside", p(&cert)),
        ("symlink to a file outside", "link.pem".to_string()),
        ("symlinked folder outside", "linkdir/out.pem".to_string()),
        ("relative path up and out", format!("{up}/out.pem")),
        ("system file", "/etc/passwd".to_string()),
    ] {
        let err = proxy
            .ctl(&format!("add ssl certKey x -cert {cert_arg} -key {}", p(&key)))
            .expect_err(what);
        assert!(err.contains(refused), "{what}: {err}");
        assert_eq!(
            get(&proxy, "/config"),
            config0,
            "{what}: the running configuration changed"
        );
    }
    // Whether a file is there or not, the reply is the same.
    let present = proxy.ctl(&format!("add ssl certKey x -cert {}", p(&cert))).unwrap_err();
    let missing = proxy
        .ctl(&format!("add ssl certKey x -cert {}", p(&pki.path("missing.pem"))))
        .unwrap_err();
    assert_eq!(present.replace("out.pem", "F"), missing.replace("missing.pem", "F"));

    // Copied into the config file's folder, relative to it: accepted.
    std::fs::copy(&cert, dir.join("in.pem")).unwrap();
    shardtls::pki::write_private(&dir.join("in.key"), &std::fs::read(&key).unwrap()).unwrap();
    proxy.ctl("add ssl certKey x -cert in.pem -key in.key").unwrap();
    drop(proxy);

    // With --allow-dir, that folder too.
    let proxy = Proxy::try_start_args(&site_config(&pki, ""), 1, &["--allow-dir", &p(pki.dir.path())]).unwrap();
    proxy
        .ctl(&format!("add ssl certKey x -cert {} -key {}", p(&cert), p(&key)))
        .unwrap();
    // A folder to allow must exist.
    match Proxy::try_start_args("", 1, &["--allow-dir", "/no/such/folder"]) {
        Ok(_) => panic!("started with an allowed folder that does not exist"),
        Err(e) => assert!(
            e.contains("allowed folder /no/such/folder") && e.contains("exit status: 1"),
            "{e}"
        ),
    }
}

#[test]
fn private_keys_readable_by_others_are_refused_unless_allowed() {
    use std::os::unix::fs::PermissionsExt;
    let pki = Pki::new();
    let config = site_config(&pki, "");
    let proxy = Proxy::try_start_args(&config, 1, &[]).unwrap();
    let config0 = get(&proxy, "/config");
    let dir = proxy.dir.path();
    let (cert, key, _) = pki.issue("open", &["open.test"]);
    std::fs::copy(&cert, dir.join("open.pem")).unwrap();
    std::fs::copy(&key, dir.join("open.key")).unwrap();
    std::fs::set_permissions(dir.join("open.key"), std::fs::Permissions::from_mode(0o640)).unwrap();
    for cmd in [
        "add ssl certKey x -cert open.pem -key open.key",
        "update ssl certKey site -cert open.pem -key open.key",
    ] {
        let err = proxy.ctl(cmd).expect_err(cmd);
        assert!(
            err.contains("open.key is readable by group or others (mode 640"),
            "{cmd}: {err}"
        );
        assert_eq!(
            get(&proxy, "/config"),
            config0,
            "{cmd}: the running configuration changed"
        );
    }
    drop(proxy);

    // In the config file, at start-up: refused, the reason said.
    std::fs::set_permissions(pki.path("site.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let Err(err) = Proxy::try_start_args(&config, 1, &[]) else {
        panic!("started with a key others can read");
    };
    assert!(
        err.contains("site.key is readable by group or others (mode 644"),
        "{err}"
    );

    // With the flag: loaded, with a warning.
    let proxy = Proxy::try_start_args(&config, 1, &["--allow-insecure-key-mode"]).unwrap();
    let dir = proxy.dir.path();
    std::fs::copy(&cert, dir.join("open.pem")).unwrap();
    std::fs::copy(&key, dir.join("open.key")).unwrap();
    std::fs::set_permissions(dir.join("open.key"), std::fs::Permissions::from_mode(0o640)).unwrap();
    proxy.ctl("add ssl certKey x -cert open.pem -key open.key").unwrap();
    let warned = wait_for(Duration::from_secs(5), || {
        let log = proxy.log();
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("site.key is readable by group or others"))
            && log
                .lines()
                .any(|l| l.contains("WARN") && l.contains("open.key is readable by group or others"))
    });
    assert!(warned, "no warning about the keys others can read:\n{}", proxy.log());
}

/// The owner of `/proc/PID`'s files: the process's user while it is
/// dumpable, root once it is not (proc(5), PR_SET_DUMPABLE).
fn proc_owner(pid: u32) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/status")).unwrap().uid()
}

#[test]
fn run_keeps_its_memory_out_of_core_dumps_unless_allowed() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    raise_limits();
    // As root every /proc file is root's: run the proxy as nobody then.
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let user = if me == 0 { 65534 } else { me };
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let config = dir.path().join("empty.conf");
    std::fs::write(&config, "# nothing to serve\n").unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    for (args, dumpable) in [(&[][..], false), (&["--allow-core-dumps"][..], true)] {
        let admin = dir.path().join(format!("admin{}.sock", args.len()));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_shardtls"));
        cmd.args(["run", "--shards", "1", "-c"])
            .arg(&config)
            .arg("--admin")
            .arg(&admin)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if me == 0 {
            cmd.uid(user).gid(user);
        }
        let mut child = cmd.spawn().unwrap();
        let up = wait_for(Duration::from_secs(15), || {
            client_request(&p(&admin), "GET", "/stats", "", None).is_ok()
        });
        let owner = proc_owner(child.id());
        let _ = child.kill();
        let _ = child.wait();
        assert!(up, "the proxy did not start with {args:?}");
        let expect = if dumpable { user } else { 0 };
        assert_eq!(
            owner, expect,
            "owner of /proc/PID with {args:?} (the proxy runs as uid {user})"
        );
    }
}
