//! A host that does not let the proxy run: where io_uring is blocked (a
//! container runtime's default seccomp profile, `kernel.io_uring_disabled`),
//! `run` and `check` exit 1 with one message that names io_uring, the errno
//! and what to change, instead of dying by a signal.

mod common;

use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};

use common::*;

/// `shardtls ARGS` under a seccomp filter that fails `io_uring_setup` with
/// EPERM, as container runtimes' default profiles do.
fn without_io_uring(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shardtls"));
    cmd.args(args).stdin(Stdio::null());
    // SAFETY: prctl is async-signal-safe; the filter is built before the
    // fork and only read in the child.
    unsafe {
        cmd.pre_exec(|| {
            const IO_URING_SETUP: u32 = 425; // the same on every architecture
            let stmt = |code: u16, k: u32| libc::sock_filter { code, jt: 0, jf: 0, k };
            let filter = [
                // A = the syscall number (seccomp_data.nr)
                stmt(0x20, 0), // BPF_LD | BPF_W | BPF_ABS
                libc::sock_filter {
                    code: 0x15, // BPF_JMP | BPF_JEQ | BPF_K
                    jt: 0,
                    jf: 1,
                    k: IO_URING_SETUP,
                },
                stmt(0x06, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32), // BPF_RET | BPF_K
                stmt(0x06, libc::SECCOMP_RET_ALLOW),
            ];
            let prog = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr() as *mut libc::sock_filter,
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog as *const _) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.output().unwrap()
}

fn assert_explains_io_uring(what: &str, out: &Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{what}: exit status {:?}\n{stderr}",
        out.status
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("io_uring")).collect();
    assert_eq!(lines.len(), 1, "{what}: one message\n{stderr}");
    for part in ["EPERM", "kernel.io_uring_disabled", "seccomp"] {
        assert!(lines[0].contains(part), "{what}: the message names {part}\n{stderr}");
    }
}

#[test]
fn run_and_check_where_io_uring_is_blocked_exit_1_and_say_what_to_change() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("shardtls.conf");
    std::fs::write(&config, format!("add service echo 127.0.0.1 {} TCP\n", free_port())).unwrap();
    let admin = dir.path().join("admin.sock");
    let config = config.to_str().unwrap();
    let check = without_io_uring(&["check", "-c", config]);
    assert_explains_io_uring("check", &check);
    let run = without_io_uring(&["run", "-c", config, "--shards", "1", "--admin", admin.to_str().unwrap()]);
    assert_explains_io_uring("run", &run);
}
