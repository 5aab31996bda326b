//! The worker and statistics core shared by every scenario.
//!
//! One runtime (`crate::rt`) per worker thread, pinned with `core_affinity`;
//! each runs the scenario's future. Workers count into their own cache-padded
//! atomic counters (read by the progress line and the report) and record
//! latencies into their own hdrhistograms, one per metric, merged at the end.
//! The measured window is `[warmup, warmup + duration)`: counters are
//! snapshotted at both ends by the main thread, histograms only take samples
//! inside it.
//!
//! Accounting: every operation a scenario starts ends in exactly one place,
//! completed (`ops`, or `done` for whole connections) or failed with a cause
//! ([`Cause`]: connect, handshake, request, established) whose first error
//! message is kept. [`Accounts`] checks, over the whole run once every worker
//! has stopped, that the outcomes add up to what was started.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crossbeam::utils::CachePadded;
use hdrhistogram::Histogram;

use super::proc::CpuSample;
use super::{Plan, Result};
use crate::rt::net::TcpStream;
use crate::rt::Runtime;
use crate::test_server::memlock_hint;
use crate::test_server::stream::TlsStream;

/// Submission queue entries of each worker's ring (as a shard's).
const RING_ENTRIES: u32 = 1024;

/// The counters every scenario may use; each worker has its own.
#[derive(Default, Debug)]
pub struct Counters {
    /// Operations begun (handshakes, requests, connections): each ends in
    /// `ops` (or `done`) or in one failure cause.
    pub started: AtomicU64,
    /// Operations completed (handshakes, requests, transfers).
    pub ops: AtomicU64,
    /// Connections that ran their whole course (bulk, idle).
    pub done: AtomicU64,
    /// Requests that failed on a connection that had not yet answered one.
    pub request_errors: AtomicU64,
    /// Operations that failed for any reason.
    pub errors: AtomicU64,
    /// TCP connects that failed.
    pub connect_errors: AtomicU64,
    /// TLS handshakes that failed after the TCP connect.
    pub handshake_errors: AtomicU64,
    pub full: AtomicU64,
    pub resumed: AtomicU64,
    pub bytes_up: AtomicU64,
    pub bytes_down: AtomicU64,
    /// Open loop: sends skipped because every connection slot was busy.
    pub dropped: AtomicU64,
    /// Failures on connections that were established and working.
    pub established_errors: AtomicU64,
    /// Connections offering a session obtained before the current change.
    pub cross_change_attempts: AtomicU64,
    /// ... of which resumed.
    pub cross_change_resumed: AtomicU64,
    /// Connections currently open (idle).
    pub open: AtomicU64,
}

/// A plain copy of [`Counters`], summed over workers.
#[derive(Default, Debug, Clone, Copy)]
pub struct Totals {
    pub started: u64,
    pub ops: u64,
    pub done: u64,
    pub request_errors: u64,
    pub errors: u64,
    pub connect_errors: u64,
    pub handshake_errors: u64,
    pub full: u64,
    pub resumed: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub dropped: u64,
    pub established_errors: u64,
    pub cross_change_attempts: u64,
    pub cross_change_resumed: u64,
    pub open: u64,
}

impl Totals {
    /// `self - earlier`, counter by counter (`open` is a level, kept as is).
    pub fn since(&self, e: &Totals) -> Totals {
        Totals {
            started: self.started - e.started,
            ops: self.ops - e.ops,
            done: self.done - e.done,
            request_errors: self.request_errors - e.request_errors,
            errors: self.errors - e.errors,
            connect_errors: self.connect_errors - e.connect_errors,
            handshake_errors: self.handshake_errors - e.handshake_errors,
            full: self.full - e.full,
            resumed: self.resumed - e.resumed,
            bytes_up: self.bytes_up - e.bytes_up,
            bytes_down: self.bytes_down - e.bytes_down,
            dropped: self.dropped - e.dropped,
            established_errors: self.established_errors - e.established_errors,
            cross_change_attempts: self.cross_change_attempts - e.cross_change_attempts,
            cross_change_resumed: self.cross_change_resumed - e.cross_change_resumed,
            open: self.open,
        }
    }
}

/// Start, measurement start and end of a run.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    pub t0: Instant,
    pub measure_start: Instant,
    pub end: Instant,
}

impl Clock {
    pub fn new(warmup: Duration, duration: Duration) -> Self {
        let t0 = Instant::now();
        Clock {
            t0,
            measure_start: t0 + warmup,
            end: t0 + warmup + duration,
        }
    }

    pub fn in_window(&self, t: Instant) -> bool {
        t >= self.measure_start && t < self.end
    }

    pub fn over(&self) -> bool {
        Instant::now() >= self.end
    }
}

/// State shared between the main thread and the workers.
pub struct Shared {
    pub counters: Vec<CachePadded<Counters>>,
    /// Set by the main thread to end scenarios that do not run on the clock.
    pub release: AtomicBool,
    /// Workers done with their setup phase (idle: all connections opened).
    pub ready: AtomicU64,
    /// The first error message of each failure cause.
    pub first_errors: Mutex<BTreeMap<&'static str, String>>,
    /// Per cause (indexed by [`Cause::index`]): its message is taken, so
    /// later failures skip `first_errors` and its lock altogether.
    pub explained: [AtomicBool; Cause::ALL.len()],
}

impl Shared {
    pub fn new(workers: usize) -> Self {
        Shared {
            counters: (0..workers).map(|_| CachePadded::new(Counters::default())).collect(),
            release: AtomicBool::new(false),
            ready: AtomicU64::new(0),
            first_errors: Mutex::new(BTreeMap::new()),
            explained: Default::default(),
        }
    }

    /// Keeps `why` as the explanation of `cause` unless one is kept already.
    /// The lock is taken once per cause: under a refusing server every
    /// worker fails at once, and all but the first only count.
    pub fn explain(&self, cause: Cause, why: &dyn std::fmt::Display) {
        let taken = &self.explained[cause.index()];
        if taken.load(Ordering::Relaxed) || taken.swap(true, Ordering::Relaxed) {
            return;
        }
        if let Ok(mut first) = self.first_errors.lock() {
            first.entry(cause.name()).or_insert_with(|| why.to_string());
        }
    }

    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for c in &self.counters {
            let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
            t.started += l(&c.started);
            t.ops += l(&c.ops);
            t.done += l(&c.done);
            t.request_errors += l(&c.request_errors);
            t.errors += l(&c.errors);
            t.connect_errors += l(&c.connect_errors);
            t.handshake_errors += l(&c.handshake_errors);
            t.full += l(&c.full);
            t.resumed += l(&c.resumed);
            t.bytes_up += l(&c.bytes_up);
            t.bytes_down += l(&c.bytes_down);
            t.dropped += l(&c.dropped);
            t.established_errors += l(&c.established_errors);
            t.cross_change_attempts += l(&c.cross_change_attempts);
            t.cross_change_resumed += l(&c.cross_change_resumed);
            t.open += l(&c.open);
        }
        t
    }
}

/// Histograms by metric name, values in nanoseconds.
pub type Hists = BTreeMap<&'static str, Histogram<u64>>;

fn new_hist() -> Histogram<u64> {
    // 1 ns to 10 minutes at 3 significant figures; the bounds are constant
    // and valid, so this cannot fail.
    Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("constant histogram bounds are valid")
}

/// Adds one histogram into another, creating it as needed.
pub fn merge_into(into: &mut Hists, from: Hists) {
    for (k, h) in from {
        match into.get_mut(k) {
            Some(t) => {
                let _ = t.add(&h);
            }
            None => {
                into.insert(k, h);
            }
        }
    }
}

/// What a scenario future sees of its worker.
pub struct Worker {
    pub id: usize,
    pub plan: Arc<Plan>,
    pub shared: Arc<Shared>,
    pub clock: Clock,
    hists: RefCell<Hists>,
}

impl Worker {
    pub fn counters(&self) -> &Counters {
        &self.shared.counters[self.id]
    }

    /// Records `d` under `metric` when `at` falls in the measured window.
    pub fn record(&self, metric: &'static str, at: Instant, d: Duration) {
        if self.clock.in_window(at) {
            let ns = (d.as_nanos().min(u64::MAX as u128) as u64).max(1);
            let mut h = self.hists.borrow_mut();
            h.entry(metric).or_insert_with(new_hist).saturating_record(ns);
        }
    }

    /// This worker's share of `total` (spread so the shares add up).
    pub fn share(&self, total: usize) -> usize {
        let n = self.plan.cpus.len();
        total / n + usize::from(self.id < total % n)
    }

    pub fn released(&self) -> bool {
        self.shared.release.load(Ordering::SeqCst)
    }

    /// An operation begins.
    pub fn start_op(&self) {
        self.counters().started.fetch_add(1, Ordering::Relaxed);
    }

    /// An operation failed: counted under `cause`, its first message kept.
    pub fn fail(&self, cause: Cause, why: &dyn std::fmt::Display) {
        let c = self.counters();
        c.errors.fetch_add(1, Ordering::Relaxed);
        let counter = match cause {
            Cause::Connect => &c.connect_errors,
            Cause::Handshake => &c.handshake_errors,
            Cause::Request => &c.request_errors,
            Cause::Established => &c.established_errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.explain(cause, why);
    }

    /// Keeps `why` as the explanation of `cause` unless one is kept already.
    pub fn explain(&self, cause: Cause, why: &dyn std::fmt::Display) {
        tracing::debug!("{} failed: {why}", cause.name());
        self.shared.explain(cause, why);
    }
}

/// Where an operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// The TCP connect.
    Connect,
    /// The TLS handshake.
    Handshake,
    /// A request on a connection that had not answered one yet (a server may
    /// close a TLS 1.3 handshake it has not seen complete).
    Request,
    /// A connection that was working.
    Established,
}

impl Cause {
    pub const ALL: [Cause; 4] = [Cause::Connect, Cause::Handshake, Cause::Request, Cause::Established];

    /// Position in [`Cause::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            Cause::Connect => "connect",
            Cause::Handshake => "handshake",
            Cause::Request => "request",
            Cause::Established => "established",
        }
    }

    fn count(self, t: &Totals) -> u64 {
        match self {
            Cause::Connect => t.connect_errors,
            Cause::Handshake => t.handshake_errors,
            Cause::Request => t.request_errors,
            Cause::Established => t.established_errors,
        }
    }
}

/// The whole run's outcomes, read once every worker has stopped.
pub struct Accounts {
    pub totals: Totals,
    pub first_errors: BTreeMap<&'static str, String>,
}

impl Accounts {
    /// Every operation started completed (`completed` of them) or failed
    /// with one of `ending` causes, and `errors` is exactly their sum.
    pub fn balanced(&self, completed: u64, ending: &[Cause]) -> bool {
        let t = &self.totals;
        let failed: u64 = ending.iter().map(|c| c.count(t)).sum();
        t.started == completed + failed && t.errors == failed
    }

    /// Every cause that counted a failure has its first message.
    pub fn explained(&self) -> bool {
        Cause::ALL
            .iter()
            .all(|c| c.count(&self.totals) == 0 || self.first_errors.contains_key(c.name()))
    }

    /// Writes the accounting into the report: started, each cause with its
    /// first message, and the two checks (operations end in `completed` or
    /// in one of the `ending` causes).
    pub fn report(&self, r: &mut super::report::Report, completed: u64, ending: &[Cause]) {
        let t = &self.totals;
        r.metric("run_operations_started", t.started as f64, "");
        r.metric("run_operations_completed", completed as f64, "");
        for c in Cause::ALL {
            r.metric(&format!("run_{}_failures", c.name()), c.count(t) as f64, "");
        }
        for (cause, msg) in &self.first_errors {
            r.param(&format!("first_{cause}_failure"), msg.clone());
        }
        r.check(
            "every_operation_completed_or_failed_with_a_cause",
            self.balanced(completed, ending),
        );
        r.check("every_failure_cause_explained", self.explained());
    }
}

/// Running workers.
pub struct Running {
    pub shared: Arc<Shared>,
    pub clock: Clock,
    handles: Vec<std::thread::JoinHandle<std::result::Result<Hists, String>>>,
}

/// Starts one pinned runtime thread per CPU of the plan, each running `scenario`.
pub fn start<F, Fut>(plan: &Arc<Plan>, scenario: F) -> Result<Running>
where
    F: Fn(Rc<Worker>) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let n = plan.cpus.len();
    let shared = Arc::new(Shared::new(n));
    let clock = Clock::new(plan.args.warmup, plan.args.duration);
    let mut handles = Vec::with_capacity(n);
    for (id, &cpu) in plan.cpus.iter().enumerate() {
        let plan = plan.clone();
        let shared = shared.clone();
        let scenario = scenario.clone();
        let h = std::thread::Builder::new()
            .name(format!("bench-{id}"))
            .spawn(move || -> std::result::Result<Hists, String> {
                if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
                    eprintln!("bench: worker {id} could not be pinned to CPU {cpu}; running unpinned");
                }
                let rt = Runtime::new(RING_ENTRIES)
                    .map_err(|e| format!("worker {id}: cannot start its runtime: {e}{}", memlock_hint(&e)))?;
                let w = Rc::new(Worker {
                    id,
                    plan,
                    shared,
                    clock,
                    hists: RefCell::new(Hists::new()),
                });
                let w2 = w.clone();
                rt.block_on(async move { scenario(w2).await });
                Ok(w.hists.take())
            })
            .map_err(|e| format!("cannot start worker thread: {e}"))?;
        handles.push(h);
    }
    Ok(Running { shared, clock, handles })
}

impl Running {
    /// Prints a progress line on stderr every second until `until`, or until
    /// `stop` says so. `line` formats the change over the last second.
    pub fn progress_until(
        &self,
        until: Instant,
        mut stop: impl FnMut(&Totals) -> bool,
        line: impl Fn(&Totals, f64) -> String,
    ) {
        let mut last = self.shared.totals();
        let mut last_t = Instant::now();
        loop {
            let now = Instant::now();
            if now >= until {
                return;
            }
            let next = (last_t + Duration::from_secs(1)).min(until);
            while Instant::now() < next {
                std::thread::sleep((next - Instant::now()).min(Duration::from_millis(50)));
                if stop(&self.shared.totals()) {
                    return;
                }
            }
            let t = self.shared.totals();
            let dt = last_t.elapsed().as_secs_f64();
            let phase = if last_t < self.clock.measure_start {
                "warmup"
            } else {
                "run"
            };
            let el = self.clock.t0.elapsed().as_secs_f64();
            eprintln!("[{el:6.1}s {phase:>6}] {}", line(&t.since(&last), dt));
            last = t;
            last_t = Instant::now();
        }
    }

    /// Runs the standard timed measurement: warm-up, window, with CPU samples
    /// of the server at both ends of the window.
    pub fn measure(&self, plan: &Plan, line: impl Fn(&Totals, f64) -> String) -> Measured {
        self.progress_until(self.clock.measure_start, |_| false, &line);
        let before = self.shared.totals();
        let cpu0 = CpuSample::take(&plan.args.server_pid);
        let t0 = Instant::now();
        self.progress_until(self.clock.end, |_| false, &line);
        let after = self.shared.totals();
        let cpu1 = CpuSample::take(&plan.args.server_pid);
        let wall = t0.elapsed().as_secs_f64();
        let server_cpu = match (cpu0, cpu1) {
            (Some(a), Some(b)) => Some(b.seconds - a.seconds),
            _ => None,
        };
        Measured {
            totals: after.since(&before),
            wall,
            server_cpu,
        }
    }

    /// Tells workers to finish; their histograms and the whole run's
    /// accounts (every worker stopped: nothing in flight).
    pub fn finish(self) -> Result<(Hists, Accounts)> {
        let shared = self.shared.clone();
        let hists = self.join_workers()?;
        let first_errors = shared.first_errors.lock().map(|m| m.clone()).unwrap_or_default();
        Ok((
            hists,
            Accounts {
                totals: shared.totals(),
                first_errors,
            },
        ))
    }

    fn join_workers(self) -> Result<Hists> {
        self.shared.release.store(true, Ordering::SeqCst);
        let mut all = Hists::new();
        for h in self.handles {
            match h.join() {
                Ok(Ok(hists)) => merge_into(&mut all, hists),
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => return Err("a worker thread panicked".into()),
            }
        }
        Ok(all)
    }
}

/// Counters over the measured window, its length, and the server's CPU seconds.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    pub totals: Totals,
    pub wall: f64,
    pub server_cpu: Option<f64>,
}

impl Measured {
    /// Server CPU seconds per wall second.
    pub fn server_cores(&self) -> Option<f64> {
        self.server_cpu.filter(|_| self.wall > 0.0).map(|c| c / self.wall)
    }
}

/// Runs `fut`, failing with `TimedOut` after `d`.
pub async fn with_timeout<T>(d: Duration, what: &str, fut: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    match crate::rt::timeout(d, fut).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{what} timed out after {d:?}"),
        )),
    }
}

/// Sleeps until `t` (returns at once when it has passed).
pub async fn sleep_until(t: Instant) {
    if t > Instant::now() {
        crate::rt::Sleep::until(t).await;
    }
}

/// Why a new connection failed.
#[derive(Debug)]
pub enum ConnectError {
    Connect(io::Error),
    Handshake(io::Error),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Connect(e) => write!(f, "connect: {e}"),
            ConnectError::Handshake(e) => write!(f, "TLS handshake: {e}"),
        }
    }
}

pub type Client = TlsStream<rustls::ClientConnection>;

/// Connects and completes a TLS handshake. Returns the stream and the epoch
/// tag of the session offered for resumption, if any.
pub async fn connect(plan: &Plan) -> std::result::Result<(Client, Option<u64>), ConnectError> {
    let t = plan.args.timeout;
    let sock = with_timeout(t, "connect", TcpStream::connect(plan.target))
        .await
        .map_err(ConnectError::Connect)?;
    let _ = sock.set_nodelay(true);
    super::tlsconf::reset_offered();
    let conn = rustls::ClientConnection::new(plan.client.clone(), plan.server_name.clone())
        .map_err(|e| ConnectError::Handshake(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    let offered = super::tlsconf::offered_epoch();
    let mut s = TlsStream::new(sock, conn);
    with_timeout(t, "TLS handshake", s.handshake())
        .await
        .map_err(ConnectError::Handshake)?;
    Ok((s, offered))
}

/// Counts a failed connect under its cause.
pub fn count_connect_error(w: &Worker, e: &ConnectError) {
    let cause = match e {
        ConnectError::Connect(_) => Cause::Connect,
        ConnectError::Handshake(_) => Cause::Handshake,
    };
    w.fail(cause, e);
}

/// Checks once, before any load, that the target accepts a TLS handshake.
pub fn preflight(plan: &Arc<Plan>) -> Result<()> {
    let plan2 = plan.clone();
    let target = plan.target;
    let r = std::thread::spawn(move || -> std::result::Result<(), String> {
        let rt = Runtime::new(RING_ENTRIES).map_err(|e| format!("cannot start a runtime: {e}{}", memlock_hint(&e)))?;
        rt.block_on(async move {
            let (mut s, _) = connect(&plan2)
                .await
                .map_err(|e| format!("target {target} unreachable: {e}"))?;
            let _ = with_timeout(plan2.args.timeout, "close", s.close_gracefully()).await;
            Ok(())
        })
    })
    .join()
    .map_err(|_| "preflight thread panicked".to_string())?;
    r.map_err(Into::into)
}
