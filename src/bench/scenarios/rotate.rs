//! `rotate`: configuration changes under load.
//!
//! Workers run closed-loop handshakes with session resumption
//! (`--concurrency` in flight) and `--connections` kept-alive connections
//! doing paced HTTP exchanges (`--rate` in total, default 100/s each). The
//! main thread posts a change to the admin API every `--interval`: the
//! `--change` commands in turn, or by default
//! `set ssl vserver V -sessTimeout N` toggling N, for `--vserver V`.
//!
//! Every session the client stores is tagged with the number of changes
//! issued (sent, even if not yet answered) when it arrived; a connection
//! that offers a session obtained before a change that was applied before
//! the connection started is a resumption attempted across a change, and it
//! must not resume. With `--vserver V`, only changes whose admin reply says
//! they opened a new epoch of vserver V count (a back-end change or one to
//! another vserver leaves V's sessions valid, R5); without it, every change
//! counts.
//!
//! Invariants (the run fails when one breaks): no error on an established
//! connection, no resumption across a change, every change accepted.
//! The admin round trip of each change is reported as the propagation time
//! (the admin API replies once every shard has the change).

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::bench::admin;
use crate::bench::report::Report;
use crate::bench::runner::{self, Worker};
use crate::bench::scenarios::handshake::one;
use crate::bench::scenarios::latency::paced_connection;
use crate::bench::tlsconf::{CHANGES_ISSUED, CHANGE_EPOCH};
use crate::bench::{Plan, Result};
use crate::rt;

/// The commands to cycle through.
fn changes(plan: &Plan) -> Result<Vec<String>> {
    if !plan.args.change.is_empty() {
        return Ok(plan.args.change.clone());
    }
    let Some(v) = &plan.args.vserver else {
        return Err("rotate needs --change COMMAND (repeatable) or --vserver NAME for the default change".into());
    };
    Ok(vec![
        format!("set ssl vserver {v} -sessTimeout 300"),
        format!("set ssl vserver {v} -sessTimeout 301"),
    ])
}

/// Whether an accepted change's reply (`epoch opened: vserver V -> N` lines)
/// names a new epoch of `vserver`; with no vserver given, every change does.
fn opens_epoch_of(reply: &str, vserver: Option<&str>) -> bool {
    let Some(v) = vserver else { return true };
    reply.lines().any(|l| {
        l.trim()
            .strip_prefix("epoch opened: vserver ")
            .and_then(|rest| rest.split_once(" -> "))
            .is_some_and(|(name, _)| name == v)
    })
}

async fn handshakes(w: Rc<Worker>) {
    while !w.clock.over() {
        let epoch_at_start = CHANGE_EPOCH.load(Ordering::SeqCst);
        match one(&w, Instant::now()).await {
            Some(o) => {
                if o.offered.is_some_and(|e| e < epoch_at_start) {
                    let c = w.counters();
                    c.cross_change_attempts.fetch_add(1, Ordering::Relaxed);
                    if o.resumed {
                        c.cross_change_resumed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            None => rt::sleep(Duration::from_millis(1)).await,
        }
    }
}

pub fn run(plan: Arc<Plan>) -> Result<Report> {
    let cmds = changes(&plan)?;
    let api = admin::Admin::from_args(plan.args.admin.as_deref(), plan.args.admin_token_file.as_deref())?;
    // Fail fast on an unreachable admin API.
    admin::post(&api, "show stats\n", plan.args.timeout)
        .map_err(|e| format!("admin API {} unreachable: {e}", api.addr))?;
    let conns = plan.args.connections;
    let rate = plan.args.rate.unwrap_or(100.0 * conns as f64);
    CHANGE_EPOCH.store(0, Ordering::SeqCst);
    CHANGES_ISSUED.store(0, Ordering::SeqCst);
    let running = runner::start(&plan, move |w: Rc<Worker>| async move {
        let mut tasks = Vec::new();
        for _ in 0..w.share(w.plan.args.concurrency) {
            tasks.push(rt::spawn_local(handshakes(w.clone())));
        }
        if conns > 0 && rate > 0.0 {
            let n = w.plan.cpus.len();
            let interval = Duration::from_secs_f64(conns as f64 / rate);
            for j in 0..w.share(conns) {
                let k = w.id + n * j;
                let first = w.clock.t0 + interval.mul_f64(k as f64 / conns as f64);
                tasks.push(rt::spawn_local(paced_connection(w.clone(), first, interval)));
            }
        }
        for t in tasks {
            t.await;
        }
    })?;
    let line = |t: &runner::Totals, dt: f64| {
        format!(
            "{:8.0} handshakes+requests/s  resumed {}  changes {}  errors {} (established {})",
            t.ops as f64 / dt,
            t.resumed,
            CHANGE_EPOCH.load(Ordering::SeqCst),
            t.errors,
            t.established_errors
        )
    };
    running.progress_until(running.clock.measure_start, |_| false, line);

    let before = running.shared.totals();
    let cpu0 = crate::bench::proc::CpuSample::take(&plan.args.server_pid);
    let t0 = Instant::now();
    let mut rtt = Histogram::<u64>::new_with_bounds(1, 600_000_000_000, 3)?;
    let (mut applied, mut refused) = (0u64, 0u64);
    let mut first_refusal: Option<String> = None;
    let mut next_change = t0;
    let mut next_line = t0 + Duration::from_secs(1);
    let mut last = before;
    let mut i = 0usize;
    let mut front_changes = 0u64;
    while Instant::now() < running.clock.end && plan.args.max_changes.is_none_or(|m| applied < m) {
        let now = Instant::now();
        if now >= next_line {
            let t = running.shared.totals();
            eprintln!(
                "[{:6.1}s    run] {}",
                running.clock.t0.elapsed().as_secs_f64(),
                line(&t.since(&last), 1.0)
            );
            last = t;
            next_line += Duration::from_secs(1);
        }
        if now < next_change {
            std::thread::sleep(
                (next_change - now)
                    .min(next_line.saturating_duration_since(now))
                    .max(Duration::from_micros(50)),
            );
            continue;
        }
        let cmd = &cmds[i % cmds.len()];
        i += 1;
        let issued = CHANGES_ISSUED.fetch_add(1, Ordering::SeqCst) + 1;
        let sent = Instant::now();
        match admin::post(&api, &format!("{cmd}\n"), plan.args.timeout) {
            Ok(reply) if reply.status == 200 => {
                if opens_epoch_of(&reply.body, plan.args.vserver.as_deref()) {
                    CHANGE_EPOCH.store(issued, Ordering::SeqCst);
                    front_changes += 1;
                }
                let _ = rtt.record((sent.elapsed().as_nanos() as u64).max(1));
                applied += 1;
            }
            Ok(reply) => {
                refused += 1;
                first_refusal.get_or_insert_with(|| format!("'{cmd}': HTTP {} {}", reply.status, reply.body.trim()));
            }
            Err(e) => {
                refused += 1;
                first_refusal.get_or_insert_with(|| format!("'{cmd}': {e}"));
            }
        }
        next_change += plan.args.interval;
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu1 = crate::bench::proc::CpuSample::take(&plan.args.server_pid);
    let totals = running.shared.totals().since(&before);
    let (hists, acc) = running.finish()?;
    if let Some(msg) = &first_refusal {
        eprintln!("bench: a change was refused: {msg}");
    }

    let m = runner::Measured {
        totals,
        wall,
        server_cpu: cpu0.zip(cpu1).map(|(a, b)| b.seconds - a.seconds),
    };
    let t = m.totals;
    let mut r = Report::new(&plan);
    r.param("admin", api.addr.clone());
    r.param("interval_s", plan.args.interval.as_secs_f64());
    r.param("changes", cmds);
    r.param("concurrency", plan.args.concurrency);
    r.param("connections", conns);
    r.window(&m);
    r.metric("changes_applied", applied as f64, "");
    r.metric("changes_refused", refused as f64, "");
    r.metric("changes_opening_a_vserver_epoch", front_changes as f64, "");
    r.throughput(&m, "operations_per_s", t.ops as f64 / m.wall, "1/s");
    r.metric("handshakes_full", t.full as f64, "");
    r.metric("handshakes_resumed", t.resumed as f64, "");
    r.metric("handshakes_failed", (t.handshake_errors + t.connect_errors) as f64, "");
    r.metric("established_errors", t.established_errors as f64, "");
    r.metric(
        "resumptions_attempted_across_change",
        t.cross_change_attempts as f64,
        "",
    );
    r.metric("resumptions_across_change_succeeded", t.cross_change_resumed as f64, "");
    r.latency("propagation", Some(&rtt));
    r.latency("handshake", hists.get("handshake"));
    r.latency("request", hists.get("request"));
    r.check("changes_applied_without_refusal", refused == 0 && applied > 0);
    r.check("no_errors_on_established_connections", t.established_errors == 0);
    r.check("no_resumption_across_a_change", t.cross_change_resumed == 0);
    // Every handshake and request started completed or failed with a cause named.
    acc.report(&mut r, acc.totals.ops, &runner::Cause::ALL);
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::opens_epoch_of;

    #[test]
    fn only_replies_naming_the_vserver_epoch_count() {
        let reply = "Done. generation 7\n  epoch opened: service tls_svc -> 3\n  epoch opened: vserver stable2 -> 4\n";
        assert!(!opens_epoch_of(reply, Some("stable")));
        assert!(opens_epoch_of(reply, Some("stable2")));
        assert!(opens_epoch_of(reply, None));
        assert!(opens_epoch_of(
            "Done.\n  epoch opened: vserver stable -> 9\n",
            Some("stable")
        ));
    }
}
