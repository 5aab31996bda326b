//! `handshake` and `resume`: a new TLS connection per operation.
//!
//! Each operation connects, completes the handshake, optionally does one HTTP
//! exchange (`--request`), then closes gracefully (close_notify, and waits for
//! the server's close so the server has finished its side, tickets included).
//! Closed loop: `--concurrency` operations in flight, back to back. Open loop
//! (`--rate`): operations start on a fixed schedule, at most `--concurrency`
//! in flight (the rest are counted as dropped), and latency is measured from
//! the scheduled start.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bench::report::Report;
use crate::bench::runner::{self, count_connect_error, with_timeout, Cause, Worker};
use crate::bench::{http, Plan, Result, Scenario};
use crate::rt;

/// What one operation did.
pub struct Outcome {
    pub resumed: bool,
    /// Epoch tag of the session offered, if any.
    pub offered: Option<u64>,
}

/// One connection: connect, handshake, optional request, graceful close.
/// Counts everything in the worker's counters; `intended` is when it should
/// have started (latency origin).
pub async fn one(w: &Worker, intended: Instant) -> Option<Outcome> {
    let plan = &w.plan;
    let c = w.counters();
    w.start_op();
    let (mut s, offered) = match runner::connect(plan).await {
        Ok(x) => x,
        Err(e) => {
            count_connect_error(w, &e);
            return None;
        }
    };
    let hs_done = Instant::now();
    w.record("handshake", intended, hs_done - intended);
    let resumed = s.conn().handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    if plan.args.request {
        let mut pending = Vec::new();
        if let Err(e) = with_timeout(
            plan.args.timeout,
            "request",
            http::exchange(&mut s, &plan.request, &mut pending),
        )
        .await
        {
            w.fail(Cause::Request, &e);
            return None;
        }
        w.record("request", intended, Instant::now() - intended);
    }
    // A close that goes wrong does not fail the operation: the handshake
    // (and request) completed.
    let _ = with_timeout(plan.args.timeout, "close", s.close_gracefully()).await;
    if resumed {
        c.resumed.fetch_add(1, Ordering::Relaxed);
    } else {
        c.full.fetch_add(1, Ordering::Relaxed);
    }
    c.ops.fetch_add(1, Ordering::Relaxed);
    Some(Outcome { resumed, offered })
}

async fn closed_loop(w: Rc<Worker>, slots: usize) {
    let mut tasks = Vec::new();
    for _ in 0..slots {
        let w = w.clone();
        tasks.push(rt::spawn_local(async move {
            while !w.clock.over() {
                if one(&w, Instant::now()).await.is_none() {
                    // Do not spin on a refusing server.
                    rt::sleep(Duration::from_millis(1)).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await;
    }
}

async fn open_loop(w: Rc<Worker>, rate: f64, slots: usize) {
    let interval = Duration::from_secs_f64(1.0 / rate);
    let inflight = Rc::new(Cell::new(0usize));
    // Stagger workers so their schedules interleave.
    let mut next = w.clock.t0 + interval.mul_f64(w.id as f64 / w.plan.cpus.len() as f64);
    while next < w.clock.end {
        runner::sleep_until(next).await;
        if inflight.get() >= slots {
            w.counters().dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            inflight.set(inflight.get() + 1);
            let (w2, inf, at) = (w.clone(), inflight.clone(), next);
            rt::spawn_local(async move {
                let _ = one(&w2, at).await;
                inf.set(inf.get() - 1);
            })
            .detach();
        }
        next += interval;
    }
    while inflight.get() > 0 {
        rt::sleep(Duration::from_millis(5)).await;
    }
}

pub fn run(plan: Arc<Plan>) -> Result<Report> {
    let rate = plan.args.rate;
    if let Some(r) = rate {
        if !(r > 0.0 && r.is_finite()) {
            return Err("--rate must be positive".into());
        }
    }
    let running = runner::start(&plan, move |w: Rc<Worker>| async move {
        let slots = w.share(w.plan.args.concurrency).max(1);
        match rate {
            Some(r) => open_loop(w.clone(), r / w.plan.cpus.len() as f64, slots).await,
            None => closed_loop(w, slots).await,
        }
    })?;
    let m = running.measure(&plan, |t, dt| {
        let hit = if t.ops > 0 {
            100.0 * t.resumed as f64 / t.ops as f64
        } else {
            0.0
        };
        format!(
            "{:9.0} handshakes/s  resumed {hit:5.1}%  errors {}  dropped {}",
            t.ops as f64 / dt,
            t.errors,
            t.dropped
        )
    });
    let (hists, acc) = running.finish()?;
    let t = m.totals;
    let mut r = Report::new(&plan);
    r.param("concurrency", plan.args.concurrency);
    r.param("rate", plan.args.rate);
    r.param("request", plan.args.request);
    r.window(&m);
    r.throughput(&m, "handshakes_per_s", t.ops as f64 / m.wall, "1/s");
    r.metric("handshakes", t.ops as f64, "");
    r.metric("full", t.full as f64, "");
    r.metric("resumed", t.resumed as f64, "");
    if plan.scenario == Scenario::Resume {
        let hit = if t.ops > 0 {
            t.resumed as f64 / t.ops as f64 * 100.0
        } else {
            0.0
        };
        r.metric("resumption_hit_rate", hit, "%");
    }
    r.metric("errors", t.errors as f64, "");
    r.metric("connect_errors", t.connect_errors as f64, "");
    r.metric("handshake_errors", t.handshake_errors as f64, "");
    if rate.is_some() {
        r.metric("dropped", t.dropped as f64, "");
    }
    r.latency("handshake", hists.get("handshake"));
    r.latency("request", hists.get("request"));
    // What the scenario claims: every handshake it started completed (full
    // or resumed) or failed with a cause it names, over the whole run.
    acc.report(&mut r, acc.totals.ops, &Cause::ALL);
    let all = &acc.totals;
    r.check(
        "every_completed_handshake_full_or_resumed",
        all.full + all.resumed == all.ops,
    );
    r.check("handshakes_in_the_window", t.ops > 0);
    Ok(r)
}
