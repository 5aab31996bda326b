//! The admin API: HTTP/1.1 on a private Unix socket (the default) or on
//! loopback TCP with a bearer token (see [`super::access`] for who may
//! reach it and what each request's head must say).
//!
//! - `POST /cmd`: the body is one command or a batch (one per line), in the
//!   configuration language; a batch is one transaction. `show ...` and
//!   `save ns config` are answered here too. 200 with a text report on
//!   success, 400 with the reason when refused (nothing changed, R10).
//! - `GET /stats`: JSON statistics of every shard and epoch, and the admin
//!   API's own refusals (`admin.auth_failures`, `admin.forbidden`).
//! - `GET /metrics`: the same, with latency histograms, in the OpenMetrics
//!   text format (see [`super::metrics`]).
//! - `GET /config`: the running configuration as commands.
//!
//! Connections are concurrent: one task accepts them, and each connection
//! gets its own task that reads the request head (16 KiB, 5 s) and checks
//! it against the rules before anything else: a refused head is answered
//! 403 or 401 and closed, its body never read, and counted (logged at most
//! once per 10 s). Then the body (1 MiB; 10 s for the whole request), and
//! the reply (bounded in time, 10 s), so a slow client delays nobody else.
//! At most [`MAX_CONNECTIONS`] (64) are open at once. A connection over the
//! cap makes room by closing the one that has waited longest for its head
//! to arrive, so idle connections never lock out an operator, whose client
//! sends its head at once; when every open connection is past its head, it
//! is answered 503 at once and closed.
//!
//! Handling is serialized: every request that passed the rules (commands,
//! stats, config) is queued to the control loop, which owns the running
//! configuration and handles requests one at a time in arrival order (so
//! transactions never interleave), checking SIGHUP and SIGTERM between them.
//! A request waits for it at most [`CONTROL_DEADLINE`]: then it is answered
//! 503 (still queued: withdrawn, nothing done) or 504 (being handled: it
//! may still take effect). On SIGTERM it stops accepting, drains the shards
//! and returns.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::os::fd::IntoRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::rt::net::{Listener as RingListener, TcpListener};
use crate::rt::{local_channel, LocalReceiver, LocalSender, TaskHandle};
use futures_lite::future::or;
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use serde_json::Value;
use tracing::{debug, info, warn};

use super::access::{self, AdminOptions, Endpoint, HeadRules, Refusal, SocketFile, Token};
use super::metrics::{self, ControlFigures};
use super::runtime::{self, Control, ControlError, Signals};
use crate::core::{Histogram, LATENCY_BUCKETS};

/// Largest accepted request body.
pub const MAX_BODY: usize = 1024 * 1024;
const MAX_HEAD: usize = 16 * 1024;
/// Time allowed for the request head to arrive, from the accept.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for the whole request to arrive, from the accept.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed to write a reply to a client that reads slowly.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a request waits for the control loop to answer it: longer than
/// a shard may take to answer the control loop, so a stuck shard is
/// reported as such (and stops the process) before a request gives up.
pub const CONTROL_DEADLINE: Duration = Duration::from_secs(runtime::SHARD_REPLY_TIMEOUT.as_secs() + 5);
/// Most admin connections open at once; see the module documentation.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a connection turned away (503) or refused (401, 403) is kept to
/// read its reply: the reply is sent at once, then what the client sends is
/// discarded until it closes, so that closing does not reset the connection
/// before the client reads it.
const TURN_AWAY_LINGER: Duration = Duration::from_secs(1);
/// Time allowed to write the 503 when even the connections being turned away
/// are at the cap (a fresh socket's send buffer takes it at once).
const BUSY_REPLY_TIMEOUT: Duration = Duration::from_millis(200);
/// Pause after a failed accept (e.g. out of file descriptors) before the next.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(100);
/// How long the admin API lingers after a shard failure so the reply that
/// reports it reaches its client, before the process exits non-zero.
const FAIL_STOP_LINGER: Duration = Duration::from_millis(200);
/// How often the control loop checks the signal flags when no request comes.
const SIGNAL_CHECK_INTERVAL: Duration = Duration::from_millis(50);
/// At most one log line per this long about refused requests.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Where the admin API listens, bound, with the rules its requests must follow.
pub struct AdminListener {
    socket: BoundSocket,
    rules: HeadRules,
}

enum BoundSocket {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener, SocketFile),
}

impl AdminListener {
    /// Listen where `opts` says (see [`access`]), with its token: refused
    /// when the address is not loopback without `--admin-allow-remote` and a
    /// token file, when the token file is empty or open to others, when the
    /// socket path holds something else.
    pub fn bind(opts: &AdminOptions) -> Result<Self, String> {
        let endpoint = Endpoint::parse(opts.endpoint.as_deref())?;
        let token_from_file = || -> Result<Option<Token>, String> {
            match &opts.token_file {
                Some(f) => Ok(Some(Token::new(&access::read_token_file(
                    f,
                    opts.token_file_insecure,
                )?)?)),
                None => Ok(None),
            }
        };
        match endpoint {
            Endpoint::Unix(path) => {
                if opts.allow_remote {
                    return Err("--admin-allow-remote goes with a TCP --admin address only".into());
                }
                if opts.endpoint.is_none() {
                    if let Some(dir) = path.parent() {
                        access::private_dir(dir)?;
                    }
                }
                let token = token_from_file()?;
                let (listener, file) = access::bind_unix(&path)?;
                info!(
                    "admin API on {} (0600){}",
                    path.display(),
                    if token.is_some() {
                        "; a bearer token is required"
                    } else {
                        ""
                    }
                );
                Ok(AdminListener {
                    socket: BoundSocket::Unix(listener, file),
                    rules: HeadRules::unix(token),
                })
            }
            Endpoint::Tcp(addr) => {
                let loopback = addr.ip().is_loopback();
                let allowed = loopback || (opts.allow_remote && opts.token_file.is_some());
                if !allowed {
                    return Err(format!(
                        "admin API on {addr} refused: not a loopback address. Listening elsewhere needs \
                         --admin-allow-remote and --admin-token-file both (and a TLS tunnel: the admin API \
                         speaks plain HTTP)"
                    ));
                }
                let token = token_from_file()?;
                let l =
                    std::net::TcpListener::bind(addr).map_err(|e| format!("admin API cannot listen on {addr}: {e}"))?;
                let token = match token {
                    Some(t) => t,
                    None => {
                        let dir = access::default_dir();
                        access::private_dir(&dir)?;
                        let path = dir.join(access::TOKEN_NAME);
                        let (token, created) = access::generated_token(&path)?;
                        let how = if created { "generated into" } else { "read from" };
                        info!(
                            "admin API on {addr} requires a bearer token: {how} {} (ctl reads it from there)",
                            path.display()
                        );
                        Token::new(&token)?
                    }
                };
                if !loopback {
                    warn!("admin API on non-loopback address {addr}: plain HTTP, reach it through a TLS tunnel only");
                }
                Ok(AdminListener {
                    socket: BoundSocket::Tcp(l),
                    rules: HeadRules::tcp(addr, token, opts.allow_remote),
                })
            }
        }
    }
}

enum Listener {
    Tcp(TcpListener),
    Unix(RingListener),
}

/// A request that passed the rules, for the control loop.
struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
}

/// A request head, read whole, and the start of its body.
#[derive(Default)]
struct RequestHead {
    method: String,
    path: String,
    content_length: usize,
    host: Option<Vec<u8>>,
    origin: bool,
    content_type: Option<Vec<u8>>,
    authorization: Option<Vec<u8>>,
    body_start: Vec<u8>,
}

impl RequestHead {
    fn rule_view(&self) -> access::Head<'_> {
        access::Head {
            method: &self.method,
            host: self.host.as_deref(),
            origin: self.origin,
            content_type: self.content_type.as_deref(),
            authorization: self.authorization.as_deref(),
        }
    }
}

/// A header that must not appear twice (which one counts would be a guess).
fn set_once(slot: &mut Option<Vec<u8>>, name: &str, value: &[u8]) -> Result<(), (u16, String)> {
    if slot.replace(value.to_vec()).is_some() {
        return Err((400, format!("the {name} header appears more than once")));
    }
    Ok(())
}

async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> Result<RequestHead, (u16, String)> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await.map_err(|e| (400, format!("read: {e}")))?;
        if n == 0 {
            return Err((400, "connection closed before the request was complete".into()));
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(head_len)) => {
                let mut head = RequestHead {
                    method: req.method.unwrap_or("").to_string(),
                    path: req.path.unwrap_or("").to_string(),
                    ..RequestHead::default()
                };
                let mut length = None;
                for h in req.headers.iter() {
                    let name = h.name.to_ascii_lowercase();
                    match name.as_str() {
                        "content-length" => set_once(&mut length, "Content-Length", h.value)?,
                        "host" => set_once(&mut head.host, "Host", h.value)?,
                        "content-type" => set_once(&mut head.content_type, "Content-Type", h.value)?,
                        "authorization" => set_once(&mut head.authorization, "Authorization", h.value)?,
                        "origin" => head.origin = true,
                        _ => {}
                    }
                }
                if let Some(v) = length {
                    head.content_length = std::str::from_utf8(&v)
                        .ok()
                        .and_then(|v| v.trim().parse().ok())
                        .ok_or((400, "bad Content-Length".to_string()))?;
                }
                head.body_start = buf[head_len..].to_vec();
                return Ok(head);
            }
            Ok(httparse::Status::Partial) => {
                if buf.len() > MAX_HEAD {
                    return Err((431, "request head too large".into()));
                }
            }
            Err(e) => return Err((400, format!("malformed HTTP request: {e}"))),
        }
    }
}

/// The body `head` announces, bounded in size.
async fn read_body<S: AsyncRead + Unpin>(s: &mut S, head: RequestHead) -> Result<Request, (u16, String)> {
    let len = head.content_length;
    if len > MAX_BODY {
        return Err((413, format!("request body over {MAX_BODY} bytes")));
    }
    let mut body = head.body_start;
    let mut chunk = [0u8; 4096];
    while body.len() < len {
        let n = s.read(&mut chunk).await.map_err(|e| (400, format!("read: {e}")))?;
        if n == 0 {
            return Err((400, "connection closed before the body was complete".into()));
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(len);
    Ok(Request {
        method: head.method,
        path: head.path,
        body,
    })
}

async fn respond<S: AsyncWrite + Unpin>(s: &mut S, code: u16, ctype: &str, body: &str) {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        500 => "Internal Server Error",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    };
    let challenge = if code == 401 {
        "WWW-Authenticate: Bearer\r\n"
    } else {
        ""
    };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{challenge}Connection: close\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(head.as_bytes()).await;
    let _ = s.write_all(body.as_bytes()).await;
    let _ = s.flush().await;
}

/// An HTTP reply: status code, content type and body.
type Reply = (u16, &'static str, String);

/// Requests refused on their head, counted for `/stats` and `/metrics`,
/// and logged at most once per [`REFUSAL_LOG_INTERVAL`].
#[derive(Default)]
struct Refusals {
    /// 401: no token, or a wrong one.
    auth_failures: Cell<u64>,
    /// 403: a `Host`, `Origin` or `Content-Type` no operator's client sends.
    forbidden: Cell<u64>,
    last_logged: Cell<Option<Instant>>,
    unlogged: Cell<u64>,
}

impl Refusals {
    fn record(&self, refusal: &Refusal) {
        let (counter, why) = match refusal {
            Refusal::Unauthorized => (&self.auth_failures, "missing or wrong bearer token"),
            Refusal::Forbidden(why) => (&self.forbidden, *why),
        };
        counter.set(counter.get() + 1);
        let now = Instant::now();
        if self.last_logged.get().is_some_and(|t| now - t < REFUSAL_LOG_INTERVAL) {
            self.unlogged.set(self.unlogged.get() + 1);
            return;
        }
        warn!(
            auth_failures = self.auth_failures.get(),
            forbidden = self.forbidden.get(),
            not_logged_since_last = self.unlogged.get(),
            "admin API refused a request: {why}"
        );
        self.last_logged.set(Some(now));
        self.unlogged.set(0);
    }

    fn to_json(&self) -> Value {
        serde_json::json!({
            "auth_failures": self.auth_failures.get(),
            "forbidden": self.forbidden.get(),
        })
    }
}

/// What the control loop measures itself (it is the only one to touch it),
/// and the admin API's refusals, which the connection tasks count.
struct ControlMetrics {
    /// A change's arrival here to every shard's acknowledgement.
    propagation: Histogram,
    refusals: Rc<Refusals>,
}

impl ControlMetrics {
    fn new(refusals: Rc<Refusals>) -> Self {
        ControlMetrics {
            propagation: Histogram::new(LATENCY_BUCKETS),
            refusals,
        }
    }
}

/// The `/metrics` exposition: every shard's report and our own figures.
async fn metrics_text(ctl: &mut Control, own: &ControlMetrics) -> String {
    let shards = ctl.shard_reports().await;
    let figures = ControlFigures {
        uptime_s: ctl.started.elapsed().as_secs_f64(),
        generation: ctl.snapshot.generation,
        propagation: own.propagation.snapshot(),
        admin_auth_failures: own.refusals.auth_failures.get(),
        admin_forbidden: own.refusals.forbidden.get(),
    };
    metrics::render(figures, &shards)
}

/// `/stats`: every shard's statistics and the admin API's refusals.
async fn stats(ctl: &mut Control, own: &ControlMetrics) -> Value {
    let mut v = ctl.stats().await;
    v["admin"] = own.refusals.to_json();
    v
}

/// Answer one request that passed the rules.
async fn handle(ctl: &mut Control, own: &ControlMetrics, req: Request) -> Reply {
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/stats") => (200, "application/json", format!("{:#}\n", stats(ctl, own).await)),
        ("GET", "/metrics") => (200, metrics::CONTENT_TYPE, metrics_text(ctl, own).await),
        ("GET", "/config") => (200, "text/plain", ctl.model.to_commands()),
        ("POST", "/cmd") => {
            let Ok(text) = String::from_utf8(req.body) else {
                return (400, "text/plain", "command text is not UTF-8\n".into());
            };
            run_command_text(ctl, own, &text).await
        }
        _ => (
            404,
            "text/plain",
            "unknown endpoint; use POST /cmd, GET /stats, /metrics or /config\n".into(),
        ),
    }
}

async fn run_command_text(ctl: &mut Control, own: &ControlMetrics, text: &str) -> Reply {
    use crate::config::{Command, ShowWhat};
    let received = Instant::now();
    let cmds = match crate::config::parse_text(text, "admin") {
        Ok(c) => c,
        Err(errs) => {
            let msg: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
            return (
                400,
                "text/plain",
                format!("ERROR: {}\nNothing was changed.\n", msg.join("\n")),
            );
        }
    };
    if cmds.is_empty() {
        return (400, "text/plain", "ERROR: no command given\n".into());
    }
    let queries = cmds.iter().filter(|(_, c)| c.is_query()).count();
    if queries > 0 && queries < cmds.len() {
        return (
            400,
            "text/plain",
            "ERROR: show and save cannot be part of a batch of changes\nNothing was changed.\n".into(),
        );
    }
    if queries > 0 {
        let mut out = String::new();
        for (_, c) in &cmds {
            let r = match c {
                Command::Save => {
                    stall_if_failpoint().await;
                    ctl.save().map_err(|e| (e.http_status(), e.to_string()))
                }
                Command::Show {
                    what: ShowWhat::Stats, ..
                } => Ok(stats_text(&stats(ctl, own).await)),
                Command::Show {
                    what: ShowWhat::RunningConfig,
                    ..
                } => Ok(ctl.model.to_commands()),
                Command::Show { what, name } => {
                    crate::config::show(&ctl.model, *what, name.as_deref()).map_err(|e| (400, e.to_string()))
                }
                _ => Ok(String::new()),
            };
            match r {
                Ok(t) => out.push_str(&t),
                Err((code, e)) => return (code, "text/plain", format!("ERROR: {e}\n")),
            }
        }
        return (200, "text/plain", out);
    }
    match ctl.apply_commands(&cmds).await {
        Ok(report) => {
            own.propagation.observe(received.elapsed());
            info!(
                generation = report.generation,
                propagation_us = report.propagation.as_micros() as u64,
                "change applied"
            );
            (200, "text/plain", report.to_text())
        }
        // A mistake changed nothing; a fault (a shard that did not apply) may have.
        Err(e) if e.is_user_error() => (
            e.http_status(),
            "text/plain",
            format!("ERROR: {e}\nNothing was changed.\n"),
        ),
        Err(e) => (e.http_status(), "text/plain", format!("ERROR: {e}\n")),
    }
}

/// A fault injected by the tests of [`CONTROL_DEADLINE`]
/// (tests/admin_access.rs): `save ns config` stalls the control loop.
async fn stall_if_failpoint() {
    if std::env::var("SHARDTLS_FAILPOINT").is_ok_and(|f| f == "control-stalls-on-save") {
        warn!("failpoint: the control loop stalls on save");
        crate::rt::sleep(Duration::from_secs(24 * 3600)).await;
    }
}

/// A readable summary of `show stats`.
fn stats_text(v: &Value) -> String {
    format!("{v:#}\n")
}

/// How far the control loop got with a queued request.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Progress {
    Queued,
    /// The control loop is handling it.
    Taken,
    /// Its connection stopped waiting before the control loop took it: the
    /// control loop drops it unhandled.
    Withdrawn,
}

/// A request waiting for the control loop, with where its reply goes.
struct QueuedRequest {
    request: Request,
    progress: Rc<Cell<Progress>>,
    reply_to: LocalSender<Reply>,
}

/// A place for an open admin connection under a cap, given back when dropped.
struct ConnectionSlot {
    open: Rc<Cell<usize>>,
}

impl ConnectionSlot {
    /// A place among `open` connections if fewer than `cap` are taken.
    fn take(open: &Rc<Cell<usize>>, cap: usize) -> Option<ConnectionSlot> {
        if open.get() >= cap {
            return None;
        }
        open.set(open.get() + 1);
        Some(ConnectionSlot { open: open.clone() })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.open.set(self.open.get() - 1);
    }
}

/// Served connections whose request head has not arrived yet, oldest first:
/// the ones closed to make room for a new connection when all are taken.
#[derive(Default)]
struct AwaitingHead {
    last_id: Cell<u64>,
    tasks: RefCell<VecDeque<(u64, TaskHandle)>>,
}

impl AwaitingHead {
    fn next_id(&self) -> u64 {
        self.last_id.set(self.last_id.get() + 1);
        self.last_id.get()
    }

    fn push(&self, id: u64, task: TaskHandle) {
        self.tasks.borrow_mut().push_back((id, task));
    }

    /// The connection `id` has its head (or gave up on it).
    fn leave(&self, id: u64) {
        self.tasks.borrow_mut().retain(|(i, _)| *i != id);
    }

    /// Close the connection that has waited longest for its head; false
    /// when none is waiting.
    fn close_oldest(&self) -> bool {
        let oldest = self.tasks.borrow_mut().pop_front();
        match oldest {
            Some((_, task)) => {
                // Drops its future, and so its stream and slot, right here.
                task.cancel();
                true
            }
            None => false,
        }
    }
}

/// What every connection task shares.
struct Gate {
    rules: HeadRules,
    refusals: Rc<Refusals>,
    control_queue: LocalSender<QueuedRequest>,
    awaiting_head: AwaitingHead,
}

/// Read the head (bounded in time) and check it against the rules; read
/// the body (bounded in size and time), have the control loop handle the
/// request, and write the reply (bounded in time). Holds `_slot` until done.
async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    gate: Rc<Gate>,
    _slot: ConnectionSlot,
    id: u64,
) {
    let accepted = Instant::now();
    let head = crate::rt::timeout(HEAD_TIMEOUT, read_head(&mut stream)).await;
    gate.awaiting_head.leave(id);
    let request = match head {
        Ok(Ok(head)) => match gate.rules.check(&head.rule_view()) {
            Ok(()) => {
                let left = REQUEST_TIMEOUT.saturating_sub(accepted.elapsed());
                crate::rt::timeout(left, read_body(&mut stream, head)).await
            }
            Err(refusal) => {
                gate.refusals.record(&refusal);
                let (code, why) = match refusal {
                    Refusal::Unauthorized => (401, "missing or wrong bearer token"),
                    Refusal::Forbidden(why) => (403, why),
                };
                return reply_and_close(stream, code, &format!("{why}\n")).await;
            }
        },
        Ok(Err(e)) => Ok(Err(e)),
        Err(elapsed) => Err(elapsed),
    };
    let (code, ctype, body) = match request {
        Ok(Ok(request)) => handled_by_control(&gate.control_queue, request).await,
        Ok(Err((code, msg))) => (code, "text/plain", format!("{msg}\n")),
        Err(_) => (408, "text/plain", "request not received in time\n".into()),
    };
    let write = respond(&mut stream, code, ctype, &body);
    if crate::rt::timeout(REPLY_TIMEOUT, write).await.is_err() {
        debug!("admin reply not taken in time; connection closed");
    }
}

/// Queue `request` to the control loop and wait for its reply, at most
/// [`CONTROL_DEADLINE`].
async fn handled_by_control(control_queue: &LocalSender<QueuedRequest>, request: Request) -> Reply {
    let shutting_down = || (503, "text/plain", "the admin API is shutting down\n".to_string());
    let progress = Rc::new(Cell::new(Progress::Queued));
    let (reply_to, reply) = local_channel(1);
    let queued = QueuedRequest {
        request,
        progress: progress.clone(),
        reply_to,
    };
    let answered = crate::rt::timeout(CONTROL_DEADLINE, async {
        if control_queue.send(queued).await.is_err() {
            return shutting_down();
        }
        reply.recv().await.unwrap_or_else(shutting_down)
    })
    .await;
    let waited = CONTROL_DEADLINE.as_secs();
    match answered {
        Ok(reply) => reply,
        Err(_) if progress.get() == Progress::Taken => (
            504,
            "text/plain",
            format!(
                "ERROR: the proxy did not finish this request within {waited} s; it may still take effect \
                 (see GET /config)\n"
            ),
        ),
        Err(_) => {
            progress.set(Progress::Withdrawn);
            (
                503,
                "text/plain",
                format!(
                    "ERROR: the proxy is busy with an earlier request and did not take this one within {waited} s; \
                     nothing was done\n"
                ),
            )
        }
    }
}

/// Open admin connections, by what is being done with them.
#[derive(Default)]
struct OpenConnections {
    served: Rc<Cell<usize>>,
    turned_away: Rc<Cell<usize>>,
}

/// Accept admin connections for ever, each served by its own task.
async fn accept_connections(listener: Listener, gate: Rc<Gate>) {
    let open = OpenConnections::default();
    let mut accept_failing = false;
    loop {
        let accepted = match &listener {
            Listener::Tcp(l) => match l.accept().await {
                Ok(stream) => {
                    admit(stream, &gate, &open).await;
                    Ok(())
                }
                Err(e) => Err(e),
            },
            Listener::Unix(l) => match l.accept().await {
                Ok(stream) => {
                    admit(stream, &gate, &open).await;
                    Ok(())
                }
                Err(e) => Err(e),
            },
        };
        match accepted {
            Ok(()) => accept_failing = false,
            Err(e) => {
                if accept_failing {
                    debug!("admin API cannot accept a connection: {e}");
                } else {
                    warn!("admin API cannot accept a connection: {e}");
                }
                accept_failing = true;
                crate::rt::sleep(ACCEPT_RETRY_DELAY).await;
            }
        }
    }
}

/// Spawn the task serving `stream` if fewer than `MAX_CONNECTIONS` are
/// served, or once the one waiting longest for its head is closed;
/// otherwise answer 503 and close it: in a task of its own while fewer than
/// `MAX_CONNECTIONS` are being turned away, else right here.
async fn admit<S: AsyncRead + AsyncWrite + Unpin + 'static>(mut stream: S, gate: &Rc<Gate>, open: &OpenConnections) {
    let slot = ConnectionSlot::take(&open.served, MAX_CONNECTIONS).or_else(|| {
        if gate.awaiting_head.close_oldest() {
            debug!("admin connection idle the longest closed to make room");
        }
        ConnectionSlot::take(&open.served, MAX_CONNECTIONS)
    });
    if let Some(slot) = slot {
        let id = gate.awaiting_head.next_id();
        let task = crate::rt::spawn_local(serve_connection(stream, gate.clone(), slot, id)).detach();
        gate.awaiting_head.push(id, task);
    } else if let Some(slot) = ConnectionSlot::take(&open.turned_away, MAX_CONNECTIONS) {
        crate::rt::spawn_local(turn_away(stream, slot)).detach();
    } else {
        let _ = crate::rt::timeout(BUSY_REPLY_TIMEOUT, respond_busy(&mut stream)).await;
    }
}

/// Answer 503 and close. Holds `_slot` until done.
async fn turn_away<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, _slot: ConnectionSlot) {
    let body = format!("too many admin connections (at most {MAX_CONNECTIONS})\n");
    reply_and_close(&mut stream, 503, &body).await;
}

/// Answer `code`, end the reply, and discard what the client sends until it
/// closes (at most `TURN_AWAY_LINGER` in all).
async fn reply_and_close<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, code: u16, body: &str) {
    let linger = async {
        respond(&mut stream, code, "text/plain", body).await;
        let _ = stream.close().await;
        let mut chunk = [0u8; 4096];
        let mut discarded = 0;
        while discarded <= MAX_HEAD + MAX_BODY {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => discarded += n,
            }
        }
    };
    let _ = crate::rt::timeout(TURN_AWAY_LINGER, linger).await;
}

async fn respond_busy<S: AsyncWrite + Unpin>(stream: &mut S) {
    let body = format!("too many admin connections (at most {MAX_CONNECTIONS})\n");
    respond(stream, 503, "text/plain", &body).await;
}

enum Step {
    Request(QueuedRequest),
    CheckSignals,
}

/// The next queued request, or `CheckSignals` after a short while without one.
async fn next_step(control_queue: &LocalReceiver<QueuedRequest>) -> Step {
    let request = async {
        match control_queue.recv().await {
            Some(r) => Step::Request(r),
            // Only after the accept task is gone; wait for the timer instead.
            None => futures_lite::future::pending().await,
        }
    };
    let timer = async {
        crate::rt::sleep(SIGNAL_CHECK_INTERVAL).await;
        Step::CheckSignals
    };
    or(request, timer).await
}

/// Serve the admin API and watch signals until SIGTERM has drained the shards.
pub(crate) async fn serve(mut ctl: Control, listener: AdminListener, signals: Signals) -> Result<(), ControlError> {
    let AdminListener { socket, rules } = listener;
    let (listener, socket_file) = match socket {
        BoundSocket::Tcp(l) => {
            let _ = l.set_nonblocking(true);
            // SAFETY: the fd is a bound, listening TCP socket we own.
            (
                Listener::Tcp(unsafe { TcpListener::from_raw_fd(l.into_raw_fd()) }),
                None,
            )
        }
        BoundSocket::Unix(l, file) => {
            let _ = l.set_nonblocking(true);
            // SAFETY: the fd is a bound, listening Unix socket we own.
            (
                Listener::Unix(unsafe { RingListener::from_raw_fd(l.into_raw_fd()) }),
                Some(file),
            )
        }
    };
    let remove_socket = || {
        if let Some(f) = &socket_file {
            f.remove();
        }
    };
    // Each open connection queues at most one request, and a withdrawn one
    // at most one more, so sends wait only behind withdrawn requests.
    let (queue_sender, control_queue) = local_channel(2 * MAX_CONNECTIONS);
    let refusals = Rc::new(Refusals::default());
    let gate = Rc::new(Gate {
        rules,
        refusals: refusals.clone(),
        control_queue: queue_sender,
        awaiting_head: AwaitingHead::default(),
    });
    let acceptor = crate::rt::spawn_local(accept_connections(listener, gate)).detach();
    let own = ControlMetrics::new(refusals);
    loop {
        if runtime::take(&signals.term) {
            // Stop taking connections (and close the listener) before draining.
            acceptor.cancel();
            runtime::shutdown(&mut ctl).await;
            remove_socket();
            return Ok(());
        }
        if runtime::take(&signals.hup) {
            let (received, before) = (Instant::now(), ctl.snapshot.generation);
            match ctl.reload().await {
                Ok(r) if r.generation == before => info!("SIGHUP: configuration reloaded; nothing changed"),
                Ok(r) => {
                    own.propagation.observe(received.elapsed());
                    info!(
                        generation = r.generation,
                        "SIGHUP: configuration reloaded\n{}",
                        r.to_text()
                    )
                }
                Err(e) => warn!("SIGHUP: reload refused, running configuration kept: {e}"),
            }
        }
        if let Step::Request(queued) = next_step(&control_queue).await {
            if queued.progress.get() == Progress::Withdrawn {
                continue;
            }
            queued.progress.set(Progress::Taken);
            let reply = handle(&mut ctl, &own, queued.request).await;
            // Cannot be full (one reply per request); fails only if the
            // connection's task is gone, and then nobody wants the reply.
            let _ = queued.reply_to.try_send(reply);
        }
        if let Some(why) = ctl.failed.clone() {
            // Let the reply that reports it reach its client, then stop.
            crate::rt::sleep(FAIL_STOP_LINGER).await;
            remove_socket();
            return Err(ControlError::ShardFailed(format!("fail-stop: {why}")));
        }
    }
}

/// `shardtls ctl`: send a command text to the admin API; returns (ok, body).
pub fn client_request(
    admin: &str,
    method: &str,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> Result<(bool, String), String> {
    client_request_status(admin, method, path, body, token).map(|(status, body)| (status == 200, body))
}

/// How long [`client_request`] and [`client_request_status`] wait for the
/// admin API: connecting, sending and the whole reply.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// As [`client_request`], with the HTTP status: 400 and 409 refuse a
/// mistake (nothing changed), 500 reports a fault of the proxy.
pub fn client_request_status(
    admin: &str,
    method: &str,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> Result<(u16, String), String> {
    client_request_within(admin, method, path, body, token, CLIENT_TIMEOUT)
}

/// As [`client_request_status`], giving up once `limit` has passed since
/// the call: connecting, sending and reading the whole reply count alike,
/// so a proxy that accepts and never answers costs at most `limit`.
pub fn client_request_within(
    admin: &str,
    method: &str,
    path: &str,
    body: &str,
    token: Option<&str>,
    limit: Duration,
) -> Result<(u16, String), String> {
    let deadline = Instant::now() + limit;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    // The admin API answers to its own name only (see `access`).
    let host = if admin.contains('/') { "localhost" } else { admin };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let stream = if admin.contains('/') {
        connect_unix(admin, limit).map_err(|e| format!("cannot reach admin socket {admin}: {e}"))?
    } else {
        connect_tcp(admin, limit).map_err(|e| format!("cannot reach admin API at {admin}: {e}"))?
    };
    let resp = exchange(stream, req.as_bytes(), deadline).map_err(|e| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            format!(
                "the admin API at {admin} did not answer within {:.1} s",
                limit.as_secs_f64()
            )
        }
        _ => format!("talking to the admin API at {admin}: {e}"),
    })?;
    let text = String::from_utf8_lossy(&resp);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or("malformed reply from the admin API")?;
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((status, body.to_string()))
}

fn connect_unix(path: &str, limit: Duration) -> std::io::Result<socket2::Socket> {
    let s = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
    s.connect_timeout(&socket2::SockAddr::unix(path)?, limit)?;
    Ok(s)
}

fn connect_tcp(addr: &str, limit: Duration) -> std::io::Result<socket2::Socket> {
    use std::net::ToSocketAddrs;
    let mut last = std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address");
    for a in addr.to_socket_addrs()? {
        match std::net::TcpStream::connect_timeout(&a, limit) {
            Ok(s) => return Ok(s.into()),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Sends `req` and reads the reply to its end, all before `deadline`.
fn exchange(mut s: socket2::Socket, req: &[u8], deadline: Instant) -> std::io::Result<Vec<u8>> {
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or(std::io::Error::from(std::io::ErrorKind::TimedOut))
    };
    s.set_write_timeout(Some(left()?))?;
    s.write_all(req)?;
    let mut resp = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        s.set_read_timeout(Some(left()?))?;
        match s.read(&mut buf) {
            Ok(0) => return Ok(resp),
            Ok(n) => resp.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Why `shardtls ctl` failed, and so its exit status.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The proxy refused a mistake (bad command, unknown entity, conflict,
    /// wrong token): exit 1.
    #[error("command refused (HTTP {0})")]
    Refused(u16),
    /// The proxy failed (a shard did not apply the change): exit 70.
    #[error("the proxy failed (HTTP {0})")]
    ProxyFault(u16),
    /// No admin API answered, or not in time: exit 70.
    #[error("{0}")]
    Unreachable(String),
    /// An answer that makes no sense, or a failure on this side: exit 70.
    #[error("{0}")]
    Fault(String),
}

impl CtlError {
    /// The error for an answer with HTTP status `status` (not 200).
    pub fn from_status(status: u16) -> Self {
        match status {
            400..=499 => CtlError::Refused(status),
            _ => CtlError::ProxyFault(status),
        }
    }

    /// 1 for the user's mistake, 70 for a fault.
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Refused(_) => 1,
            _ => super::runtime::EXIT_INTERNAL,
        }
    }
}

#[cfg(test)]
mod client_tests {
    use super::*;

    #[test]
    fn a_request_to_a_silent_admin_api_gives_up_at_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        // Accepts, reads nothing, answers nothing, until the test ends.
        let silent = std::thread::spawn(move || listener.accept().map(|(s, _)| s));
        let admin = path.to_str().unwrap();
        let err = client_request_within(admin, "GET", "/stats", "", None, Duration::from_millis(300)).unwrap_err();
        assert!(err.contains("did not answer within 0.3 s"), "{err}");
        drop(silent.join());
    }

    #[test]
    fn a_request_with_a_limit_reads_the_whole_reply() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut head = [0u8; 1024];
            let _ = s.read(&mut head);
            s.write_all(b"HTTP/1.1 409 Conflict\r\nContent-Length: 4\r\n\r\nbusy")
                .unwrap();
        });
        let admin = path.to_str().unwrap();
        let reply = client_request_within(admin, "GET", "/stats", "", None, Duration::from_secs(30));
        server.join().unwrap();
        assert_eq!(reply, Ok((409, "busy".to_string())));
        assert_eq!(CtlError::from_status(409).exit_code(), 1);
        assert_eq!(CtlError::from_status(500).exit_code(), 70);
        assert_eq!(CtlError::from_status(503).exit_code(), 70);
    }
}
