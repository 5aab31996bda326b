//! `idle`: opens `--connections` TLS connections (with `--request`, each does
//! one HTTP exchange first), keeps them idle, and reports the server's
//! resident memory per connection: VmRSS of `--server-pid` after the
//! connections are open and settled (`--warmup`), minus before, divided by
//! the connections open. The connections are then held for `--duration` and
//! the report says how many the server closed meanwhile.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bench::proc::rss_bytes;
use crate::bench::report::Report;
use crate::bench::runner::{self, count_connect_error, with_timeout, Cause, Client, Worker};
use crate::bench::{http, Plan, Result};
use crate::rt;

/// Connections each worker opens at once.
const OPENERS: usize = 32;

async fn open_one(w: &Worker) -> Option<Client> {
    w.start_op();
    let (mut s, _) = match runner::connect(&w.plan).await {
        Ok(x) => x,
        Err(e) => {
            count_connect_error(w, &e);
            return None;
        }
    };
    if w.plan.args.request {
        let mut pending = Vec::new();
        let r = with_timeout(
            w.plan.args.timeout,
            "request",
            http::exchange(&mut s, &w.plan.request, &mut pending),
        )
        .await;
        if let Err(e) = r {
            w.fail(Cause::Request, &e);
            return None;
        }
    }
    s.release_buffers();
    w.counters().ops.fetch_add(1, Ordering::Relaxed);
    w.counters().open.fetch_add(1, Ordering::Relaxed);
    Some(s)
}

/// Holds a connection until released; notices when the server closes it.
async fn hold(w: Rc<Worker>, mut s: Client) {
    let mut buf = [0u8; 256];
    let closed = futures_lite::future::or(
        async {
            let _ = s.read(&mut buf).await;
            true
        },
        async {
            while !w.released() {
                rt::sleep(Duration::from_millis(50)).await;
            }
            false
        },
    )
    .await;
    w.counters().open.fetch_sub(1, Ordering::Relaxed);
    if closed {
        w.counters().established_errors.fetch_add(1, Ordering::Relaxed);
        w.explain(Cause::Established, &"the server closed an idle connection");
    }
}

pub fn run(plan: Arc<Plan>) -> Result<Report> {
    let pids = plan.args.server_pid.clone();
    let n = plan.args.connections.max(1);
    let rss0 = rss_bytes(&pids);
    let t_open = Instant::now();
    let running = runner::start(&plan, move |w: Rc<Worker>| async move {
        let mine = w.share(n);
        let per = mine.div_ceil(OPENERS).max(1);
        let mut openers = Vec::new();
        let mut left = mine;
        while left > 0 {
            let k = per.min(left);
            left -= k;
            let w = w.clone();
            openers.push(rt::spawn_local(async move {
                let mut held = Vec::new();
                for _ in 0..k {
                    if let Some(s) = open_one(&w).await {
                        held.push(rt::spawn_local(hold(w.clone(), s)));
                    }
                }
                held
            }));
        }
        let mut held = Vec::new();
        for o in openers {
            held.extend(o.await);
        }
        w.shared.ready.fetch_add(1, Ordering::SeqCst);
        for h in held {
            h.await;
        }
    })?;
    let workers = plan.cpus.len() as u64;
    let open_deadline = Instant::now() + plan.args.timeout + Duration::from_secs((n / 500) as u64 + 5);
    running.progress_until(
        open_deadline,
        |_| running.shared.ready.load(Ordering::SeqCst) >= workers,
        |t, _| format!("{} open, {} errors", t.open, t.errors),
    );
    let open_time = t_open.elapsed().as_secs_f64();
    std::thread::sleep(plan.args.warmup);
    let opened = running.shared.totals();
    let rss1 = rss_bytes(&pids);
    let hold_until = Instant::now() + plan.args.duration;
    running.progress_until(
        hold_until,
        |_| false,
        |t, _| format!("{} open, {} errors", t.open, t.errors),
    );
    let end = running.shared.totals();
    let (_, acc) = running.finish()?;

    let mut r = Report::new(&plan);
    r.param("connections", n);
    r.param("request", plan.args.request);
    r.metric("connections_open", opened.open as f64, "");
    r.metric("open_errors", opened.errors as f64, "");
    r.metric("open_time", open_time, "s");
    r.metric("closed_by_server_while_idle", end.established_errors as f64, "");
    if let (Some(a), Some(b)) = (rss0, rss1) {
        r.metric("server_rss_before", a as f64 / 1024.0, "KiB");
        r.metric("server_rss_after", b as f64 / 1024.0, "KiB");
        if opened.open > 0 {
            r.metric(
                "server_bytes_per_connection",
                (b as f64 - a as f64) / opened.open as f64,
                "B",
            );
        }
    } else {
        eprintln!("bench: no --server-pid (or /proc unreadable): memory per connection not measured");
    }
    r.check("opened_all_connections", opened.open == n as u64);
    // Every connection asked for opened or failed with a cause named; a
    // server's close while idle is counted apart (closed_by_server_while_idle).
    acc.report(
        &mut r,
        acc.totals.ops,
        &[Cause::Connect, Cause::Handshake, Cause::Request],
    );
    r.check("asked_for_every_connection", acc.totals.started == n as u64);
    Ok(r)
}
