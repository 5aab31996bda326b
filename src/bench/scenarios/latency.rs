//! `latency`: small HTTP exchanges on kept-alive connections at a fixed
//! offered rate (`--rate`, all connections together).
//!
//! Each connection sends on its own fixed schedule (rate / connections per
//! second, phases spread evenly) with one request outstanding. Latency is the
//! time from the scheduled send to the end of the response, so a stall delays
//! the sends behind it and is counted against them too (coordinated omission
//! corrected). A failed connection is counted, re-opened, and its schedule
//! goes on.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bench::report::Report;
use crate::bench::runner::{self, count_connect_error, with_timeout, Cause, Worker};
use crate::bench::{http, Plan, Result};
use crate::rt;

/// Runs one kept-alive connection on a schedule of `interval` starting at
/// `first`, until the clock ends. Errors on a working connection count as
/// [`Cause::Established`]. A connection counts as working once its first
/// response arrived: in TLS 1.3 the client finishes its handshake before the
/// server has read the client's Finished, and a server may still close a
/// handshake it has not seen complete (a reconfiguration does, by design);
/// such a failure counts as [`Cause::Request`].
pub async fn paced_connection(w: Rc<Worker>, first: Instant, interval: Duration) {
    let plan = w.plan.clone();
    let c = w.counters();
    let mut next = first;
    'reconnect: while !w.clock.over() {
        let mut s = match runner::connect(&plan).await {
            Ok((s, _)) => s,
            Err(e) => {
                // A failed connect is an operation too (a successful one is
                // part of the requests that follow).
                w.start_op();
                count_connect_error(&w, &e);
                rt::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let mut pending = Vec::new();
        let mut working = false;
        loop {
            if next >= w.clock.end {
                break 'reconnect;
            }
            runner::sleep_until(next).await;
            w.start_op();
            let r = with_timeout(
                plan.args.timeout,
                "request",
                http::exchange(&mut s, &plan.request, &mut pending),
            )
            .await;
            let done = Instant::now();
            match r {
                Ok(n) => {
                    working = true;
                    c.ops.fetch_add(1, Ordering::Relaxed);
                    c.bytes_down.fetch_add(n, Ordering::Relaxed);
                    w.record("request", next, done - next);
                }
                Err(e) => {
                    let cause = if working { Cause::Established } else { Cause::Request };
                    w.fail(cause, &e);
                    next += interval;
                    continue 'reconnect;
                }
            }
            next += interval;
        }
    }
}

pub fn run(plan: Arc<Plan>) -> Result<Report> {
    let Some(rate) = plan.args.rate else {
        return Err("latency needs --rate (requests per second offered, all connections together)".into());
    };
    if !(rate > 0.0 && rate.is_finite()) {
        return Err("--rate must be positive".into());
    }
    let conns = plan.args.connections.max(1);
    let running = runner::start(&plan, move |w: Rc<Worker>| async move {
        let n = w.plan.cpus.len();
        // Connection k of all (k = id + n*j) gets phase k/conns of the interval.
        let interval = Duration::from_secs_f64(conns as f64 / rate);
        let mut tasks = Vec::new();
        for j in 0..w.share(conns) {
            let k = w.id + n * j;
            let first = w.clock.t0 + interval.mul_f64(k as f64 / conns as f64);
            tasks.push(rt::spawn_local(paced_connection(w.clone(), first, interval)));
        }
        for t in tasks {
            t.await;
        }
    })?;
    let m = running.measure(&plan, |t, dt| {
        format!("{:9.0} requests/s  errors {}", t.ops as f64 / dt, t.errors)
    });
    let (hists, acc) = running.finish()?;
    let t = m.totals;
    let mut r = Report::new(&plan);
    r.param("rate_offered", rate);
    r.param("connections", conns);
    r.window(&m);
    r.throughput(&m, "requests_per_s", t.ops as f64 / m.wall, "1/s");
    r.metric("requests", t.ops as f64, "");
    r.metric("errors", t.errors as f64, "");
    r.metric("established_errors", t.established_errors as f64, "");
    r.latency("request", hists.get("request"));
    // Every request sent got its response or failed with a cause named.
    acc.report(&mut r, acc.totals.ops, &Cause::ALL);
    r.check("requests_in_the_window", t.ops > 0);
    Ok(r)
}
