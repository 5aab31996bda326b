//! `bulk`: long transfers on `--connections` connections.
//!
//! - `up`: writes `--chunk-size` blocks until the end (target: a sink back end);
//! - `down`: repeats `GET` and reads the body (target: an HTTP back end with a
//!   large `--response-size`);
//! - `both`: writes a block and reads it back (target: an echo back end).
//!
//! Reports GB/s each way and, with `--server-pid`, per server core and as
//! server CPU nanoseconds per byte.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::bench::report::Report;
use crate::bench::runner::{self, count_connect_error, with_timeout, Cause, Client, Worker};
use crate::bench::{http, Direction, Plan, Result};
use crate::rt;

async fn transfer(w: &Worker, s: &mut Client) -> std::io::Result<()> {
    let plan = &w.plan;
    let c = w.counters();
    let t = plan.args.timeout;
    let chunk = vec![b'b'; plan.args.chunk_size.max(1)];
    let mut rbuf = vec![0u8; 64 * 1024];
    let mut pending = Vec::new();
    while !w.clock.over() {
        match plan.args.direction {
            Direction::Up => {
                with_timeout(t, "write", s.write_all(&chunk)).await?;
                c.bytes_up.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
            Direction::Down => {
                let n = with_timeout(t, "request", http::exchange(s, &plan.request, &mut pending)).await?;
                c.bytes_down.fetch_add(n, Ordering::Relaxed);
            }
            Direction::Both => {
                with_timeout(t, "write", s.write_all(&chunk)).await?;
                c.bytes_up.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                let mut left = chunk.len();
                while left > 0 {
                    let k = left.min(rbuf.len());
                    let n = with_timeout(t, "read", s.read(&mut rbuf[..k])).await?;
                    if n == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                    left -= n;
                    c.bytes_down.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
        }
        c.ops.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

async fn connection(w: Rc<Worker>) {
    while !w.clock.over() {
        w.start_op();
        let mut s = match runner::connect(&w.plan).await {
            Ok((s, _)) => s,
            Err(e) => {
                count_connect_error(&w, &e);
                rt::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        match transfer(&w, &mut s).await {
            Ok(()) => {
                let _ = with_timeout(w.plan.args.timeout, "close", s.close_gracefully()).await;
                w.counters().done.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => w.fail(Cause::Established, &e),
        }
    }
}

pub fn run(plan: Arc<Plan>) -> Result<Report> {
    let conns = plan.args.connections.max(1);
    let running = runner::start(&plan, move |w: Rc<Worker>| async move {
        let tasks: Vec<_> = (0..w.share(conns))
            .map(|_| rt::spawn_local(connection(w.clone())))
            .collect();
        for t in tasks {
            t.await;
        }
    })?;
    let m = running.measure(&plan, |t, dt| {
        format!(
            "up {:7.3} GB/s  down {:7.3} GB/s  errors {}",
            t.bytes_up as f64 / dt / 1e9,
            t.bytes_down as f64 / dt / 1e9,
            t.errors
        )
    });
    let (_, acc) = running.finish()?;
    let t = m.totals;
    let total = (t.bytes_up + t.bytes_down) as f64;
    let mut r = Report::new(&plan);
    r.param("direction", format!("{:?}", plan.args.direction).to_lowercase());
    r.param("connections", conns);
    r.param("chunk_size", plan.args.chunk_size);
    r.window(&m);
    r.throughput(&m, "gbytes_per_s", total / m.wall / 1e9, "GB/s");
    r.metric("up_gbytes_per_s", t.bytes_up as f64 / m.wall / 1e9, "GB/s");
    r.metric("down_gbytes_per_s", t.bytes_down as f64 / m.wall / 1e9, "GB/s");
    if let (Some(cpu), true) = (m.server_cpu, total > 0.0) {
        r.metric("server_cpu_ns_per_byte", cpu * 1e9 / total, "ns/B");
    }
    r.metric("errors", t.errors as f64, "");
    // Every connection ran until the clock ended or failed with a cause named.
    acc.report(&mut r, acc.totals.done, &Cause::ALL);
    r.check("moved_bytes_in_the_window", total > 0.0);
    Ok(r)
}
