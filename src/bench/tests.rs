//! Every scenario, briefly, against the built-in test server as a TLS server.

use std::io::{Read, Write};
use std::sync::Arc;

use clap::Parser;

use super::*;
use crate::test_server::pki::TestPki;
use crate::test_server::{self, TestServerConfig, TestServerHandle, TestServerMode};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: BenchArgs,
}

fn backend(pki: &TestPki, mode: TestServerMode, size: usize) -> TestServerHandle {
    test_server::spawn(TestServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        mode,
        response_size: size,
        tls: Some(pki.server_config().unwrap()),
        threads: 1,
    })
    .unwrap()
}

fn plan(scenario: &str, target: &TestServerHandle, ca: &std::path::Path, extra: &[&str]) -> Arc<Plan> {
    let target = target.local_addr().to_string();
    let ca = ca.to_str().unwrap();
    let mut argv = vec![
        "bench",
        scenario,
        "--target",
        &target,
        "--ca",
        ca,
        "--duration",
        "400ms",
        "--warmup",
        "100ms",
        "--threads",
        "1",
    ];
    argv.extend_from_slice(extra);
    let args = Cli::try_parse_from(argv).unwrap().args;
    let s = args.scenario.unwrap();
    let plan = Arc::new(Plan::new(s, args).unwrap());
    runner::preflight(&plan).unwrap();
    plan
}

fn metric(r: &Report, name: &str) -> f64 {
    r.to_json()["metrics"][name]["value"]
        .as_f64()
        .unwrap_or_else(|| panic!("no metric {name}"))
}

/// Answers every admin request with 200 until the listener is dropped.
fn fake_admin() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            // What the real admin API says of a change to vserver v1.
            let body = "Done. generation 2\n  epoch opened: vserver v1 -> 2\n";
            let reply = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
            let _ = s.write_all(reply.as_bytes());
        }
    });
    addr
}

#[test]
fn every_scenario_against_the_builtin_backend() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(&["localhost", "127.0.0.1"]).unwrap();
    pki.write_to(dir.path()).unwrap();
    let ca = dir.path().join("ca.pem");
    let pid = std::process::id().to_string();

    let http = backend(&pki, TestServerMode::Http, 100);
    let r = scenarios::handshake::run(plan("handshake", &http, &ca, &["--request", "--server-pid", &pid])).unwrap();
    assert!(r.failures.is_empty(), "{}", r.table());
    assert!(metric(&r, "handshakes") > 0.0 && metric(&r, "resumed") == 0.0);
    assert_eq!(metric(&r, "errors"), 0.0);
    assert!(metric(&r, "handshakes_per_s_per_server_core") > 0.0);

    let r = scenarios::handshake::run(plan("handshake", &http, &ca, &["--rate", "200", "--concurrency", "4"])).unwrap();
    assert!(r.failures.is_empty(), "{}", r.table());

    let r = scenarios::handshake::run(plan("resume", &http, &ca, &["--concurrency", "4"])).unwrap();
    assert!(metric(&r, "resumption_hit_rate") > 90.0, "{}", r.table());

    let r = scenarios::latency::run(plan("latency", &http, &ca, &["--rate", "500", "--connections", "4"])).unwrap();
    assert!(r.failures.is_empty(), "{}", r.table());
    let req = metric(&r, "requests");
    assert!((100.0..=260.0).contains(&req), "paced at 500/s for 0.4 s, got {req}");

    let r = scenarios::idle::run(plan("idle", &http, &ca, &["--connections", "50", "--server-pid", &pid])).unwrap();
    assert!(r.failures.is_empty(), "{}", r.table());
    assert_eq!(metric(&r, "connections_open"), 50.0);
    assert!(r.to_json()["metrics"]["server_bytes_per_connection"].is_object());

    let sink = backend(&pki, TestServerMode::Sink, 0);
    let r = scenarios::bulk::run(plan("bulk", &sink, &ca, &["--direction", "up", "--connections", "2"])).unwrap();
    assert!(
        r.failures.is_empty() && metric(&r, "up_gbytes_per_s") > 0.0,
        "{}",
        r.table()
    );
    let echo = backend(&pki, TestServerMode::Echo, 0);
    let r = scenarios::bulk::run(plan("bulk", &echo, &ca, &["--direction", "both", "--connections", "2"])).unwrap();
    assert!(
        metric(&r, "down_gbytes_per_s") > 0.0 && metric(&r, "up_gbytes_per_s") > 0.0,
        "{}",
        r.table()
    );
    let big = backend(&pki, TestServerMode::Http, 1 << 20);
    let r = scenarios::bulk::run(plan("bulk", &big, &ca, &["--direction", "down", "--connections", "2"])).unwrap();
    assert!(metric(&r, "down_gbytes_per_s") > 0.0, "{}", r.table());

    // The back end knows nothing of changes, so sessions from before a
    // change resume after it: rotate must notice and fail.
    let admin = fake_admin().to_string();
    let r = scenarios::rotate::run(plan(
        "rotate",
        &http,
        &ca,
        &[
            "--admin",
            &admin,
            "--vserver",
            "v1",
            "--interval",
            "10ms",
            "--concurrency",
            "2",
            "--connections",
            "2",
        ],
    ))
    .unwrap();
    assert!(metric(&r, "changes_applied") >= 10.0, "{}", r.table());
    assert_eq!(metric(&r, "established_errors"), 0.0);
    let crossed = metric(&r, "resumptions_across_change_succeeded");
    assert!(crossed > 0.0, "{}", r.table());
    assert_eq!(r.failures, vec!["no_resumption_across_a_change".to_string()]);
}

#[test]
fn unreachable_target_is_an_error() {
    let args = Cli::try_parse_from([
        "bench",
        "handshake",
        "--target",
        "127.0.0.1:1",
        "--insecure",
        "--timeout",
        "1s",
    ])
    .unwrap()
    .args;
    let plan = Arc::new(Plan::new(Scenario::Handshake, args).unwrap());
    let e = runner::preflight(&plan).unwrap_err().to_string();
    assert!(e.contains("unreachable"), "{e}");
}

#[test]
fn parses_durations_and_cpu_lists() {
    use std::time::Duration;
    assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
    assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
    assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
    assert!(parse_duration("-1").is_err() && parse_duration("5h").is_err() && parse_duration("x").is_err());
    assert_eq!(parse_cpus("1").unwrap(), vec![1]);
    assert_eq!(parse_cpus("0-2,5").unwrap(), vec![0, 1, 2, 5]);
    assert!(parse_cpus("3-1").is_err() && parse_cpus("").is_err() && parse_cpus("a").is_err());
}

#[test]
fn every_option_parses_from_the_command_line() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: super::BenchArgs,
    }
    let cli = Cli::try_parse_from([
        "bench",
        "handshake",
        "--target",
        "127.0.0.1:1",
        "--sni",
        "a.test",
        "--alpn",
        "h2,http/1.1",
        "--cipher",
        "TLS1.3-AES128-GCM-SHA256",
        "--tls-version",
        "1.3",
        "--insecure",
        "--duration",
        "2s",
        "--warmup",
        "0s",
        "--timeout",
        "1s",
        "--threads",
        "2",
        "--cpus",
        "0-1",
        "--concurrency",
        "4",
        "--rate",
        "100",
        "--connections",
        "2",
        "--request",
        "--server-pid",
        "1",
        "--server-pid",
        "2",
        "--json",
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cli.args.cpus.map(|c| c.0), Some(vec![0, 1]));
    assert_eq!(cli.args.server_pid, vec![1, 2]);
}

#[test]
fn failed_requests_are_counted_under_their_cause_and_explained() {
    // An echo back end sends the request back: no HTTP response, so every
    // request fails after a completed handshake.
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(&["localhost", "127.0.0.1"]).unwrap();
    pki.write_to(dir.path()).unwrap();
    let ca = dir.path().join("ca.pem");
    let echo = backend(&pki, TestServerMode::Echo, 0);
    let r = scenarios::handshake::run(plan(
        "handshake",
        &echo,
        &ca,
        &["--request", "--timeout", "200ms", "--concurrency", "2"],
    ))
    .unwrap();
    let j = r.to_json();
    assert!(metric(&r, "run_request_failures") > 0.0, "{}", r.table());
    assert_eq!(metric(&r, "run_connect_failures"), 0.0, "{}", r.table());
    assert!(
        j["params"]["first_request_failure"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "the failure is not explained: {j:#}"
    );
    // Failures are accounted for: the accounting checks hold.
    assert!(
        !r.failures
            .iter()
            .any(|f| f.starts_with("every_operation") || f.starts_with("every_failure")),
        "{:?}\n{}",
        r.failures,
        r.table()
    );
    assert_eq!(
        metric(&r, "run_operations_started"),
        metric(&r, "run_operations_completed") + metric(&r, "run_request_failures"),
        "{}",
        r.table()
    );
}

#[test]
fn accounts_balance_only_when_every_operation_ends_once_with_a_cause() {
    use runner::{Accounts, Cause, Totals};
    let t = Totals {
        started: 10,
        ops: 7,
        errors: 3,
        connect_errors: 2,
        request_errors: 1,
        ..Totals::default()
    };
    let explained = [("connect", "refused"), ("request", "timed out")]
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect();
    let a = Accounts {
        totals: t,
        first_errors: explained,
    };
    assert!(a.balanced(7, &Cause::ALL) && a.explained());
    // An operation lost (started, never ended) or ended twice.
    for started in [11, 9] {
        let lost = Accounts {
            totals: Totals { started, ..t },
            first_errors: a.first_errors.clone(),
        };
        assert!(!lost.balanced(7, &Cause::ALL), "started {started}");
    }
    // An error counted with no cause.
    let causeless = Accounts {
        totals: Totals {
            errors: 4,
            started: 11,
            ..t
        },
        first_errors: a.first_errors.clone(),
    };
    assert!(!causeless.balanced(7, &Cause::ALL));
    // A cause with no explanation.
    let mut first_errors = a.first_errors.clone();
    first_errors.remove("request");
    let unexplained = Accounts {
        totals: t,
        first_errors,
    };
    assert!(!unexplained.explained());
}

#[test]
fn a_cause_already_explained_never_takes_the_lock_again() {
    use runner::{Cause, Shared};
    assert!(Cause::ALL.iter().enumerate().all(|(i, c)| c.index() == i));
    let shared = Arc::new(Shared::new(2));
    shared.explain(Cause::Connect, &"connection refused");
    // With the lock held here, a second connect failure must still return:
    // it checks the flag, not the map.
    let held = shared.first_errors.lock().unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let worker = {
        let shared = shared.clone();
        std::thread::spawn(move || {
            shared.explain(Cause::Connect, &"reset by peer");
            done_tx.send(()).unwrap();
        })
    };
    let returned = done_rx.recv_timeout(std::time::Duration::from_secs(30));
    drop(held);
    worker.join().unwrap();
    assert!(returned.is_ok(), "explain waited for the lock of an explained cause");
    shared.explain(Cause::Request, &"timed out");
    let first = shared.first_errors.lock().unwrap();
    assert_eq!(first.get("connect").map(String::as_str), Some("connection refused"));
    assert_eq!(first.get("request").map(String::as_str), Some("timed out"));
}
