//! The admin API: HTTP/1.1 on loopback (or a 0600 Unix socket).
//!
//! - `POST /cmd`: the body is one command or a batch (one per line), in the
//!   configuration language; a batch is one transaction. `show ...` and
//!   `save ns config` are answered here too. 200 with a text report on
//!   success, 400 with the reason when refused (nothing changed, R10).
//! - `GET /stats`: JSON statistics of every shard and epoch.
//! - `GET /metrics`: the same, with latency histograms, in the OpenMetrics
//!   text format (see [`super::metrics`]).
//! - `GET /config`: the running configuration as commands.
//!
//! Connections are concurrent: one task accepts them, and each connection
//! gets its own task that reads the request, bounded in size (16 KiB head,
//! 1 MiB body) and time (10 s), and writes the reply, bounded in time (10 s),
//! so a slow client delays nobody else. At most [`MAX_CONNECTIONS`] (64) are
//! open at once; a connection above that is answered 503 at once and closed.
//!
//! Handling is serialized: every complete request (commands, stats, config,
//! and the token check) is queued to the control loop, which owns the running
//! configuration and handles requests one at a time in arrival order (so
//! transactions never interleave), checking SIGHUP and SIGTERM between them.
//! On SIGTERM it stops accepting, drains the shards and returns.
//!
//! With a token, every request must carry `Authorization: Bearer TOKEN`.

use std::cell::Cell;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::os::fd::IntoRawFd;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::rt::net::{Listener as RingListener, TcpListener};
use crate::rt::{local_channel, LocalReceiver, LocalSender};
use futures_lite::future::or;
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use serde_json::Value;
use tracing::{debug, info, warn};

use super::metrics::{self, ControlFigures};
use super::runtime::{self, Control, ControlError, Signals};
use crate::core::{Histogram, LATENCY_BUCKETS};

/// Largest accepted request body.
pub const MAX_BODY: usize = 1024 * 1024;
const MAX_HEAD: usize = 16 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed to write a reply to a client that reads slowly.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Most admin connections open at once; more are answered 503 and closed.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a connection over the cap is kept to read its 503: the reply is
/// sent at once, then what the client sends is discarded until it closes, so
/// that closing does not reset the connection before the client reads it.
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

/// Where the admin API listens.
pub enum AdminListener {
    Tcp(std::net::TcpListener),
    Unix(PathBuf),
}

impl AdminListener {
    /// `host:port`, or a filesystem path for a Unix socket (created 0600).
    pub fn bind(spec: &str) -> Result<Self, String> {
        if spec.contains('/') {
            return Ok(AdminListener::Unix(PathBuf::from(spec)));
        }
        let addr: std::net::SocketAddr = spec
            .parse()
            .map_err(|_| format!("admin address {spec:?} is not host:port or a socket path"))?;
        if !addr.ip().is_loopback() {
            warn!("admin API on non-loopback address {addr}: protect it with --admin-token-file");
        }
        let l = std::net::TcpListener::bind(addr).map_err(|e| format!("admin API cannot listen on {addr}: {e}"))?;
        Ok(AdminListener::Tcp(l))
    }
}

enum Listener {
    Tcp(TcpListener),
    Unix(RingListener, PathBuf),
}

struct Request {
    method: String,
    path: String,
    auth: Option<String>,
    body: Vec<u8>,
}

async fn read_request<S: AsyncRead + Unpin>(s: &mut S) -> Result<Request, (u16, String)> {
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
                let method = req.method.unwrap_or("").to_string();
                let path = req.path.unwrap_or("").to_string();
                let mut len = 0usize;
                let mut auth = None;
                for h in req.headers.iter() {
                    if h.name.eq_ignore_ascii_case("content-length") {
                        len = std::str::from_utf8(h.value)
                            .ok()
                            .and_then(|v| v.trim().parse().ok())
                            .ok_or((400, "bad Content-Length".to_string()))?;
                    } else if h.name.eq_ignore_ascii_case("authorization") {
                        auth = std::str::from_utf8(h.value).ok().map(|s| s.to_string());
                    }
                }
                if len > MAX_BODY {
                    return Err((413, format!("request body over {MAX_BODY} bytes")));
                }
                let mut body = buf[head_len..].to_vec();
                while body.len() < len {
                    let n = s.read(&mut chunk).await.map_err(|e| (400, format!("read: {e}")))?;
                    if n == 0 {
                        return Err((400, "connection closed before the body was complete".into()));
                    }
                    body.extend_from_slice(&chunk[..n]);
                }
                body.truncate(len);
                return Ok(Request {
                    method,
                    path,
                    auth,
                    body,
                });
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

async fn respond<S: AsyncWrite + Unpin>(s: &mut S, code: u16, ctype: &str, body: &str) {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        409 => "Conflict",
        500 => "Internal Server Error",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(head.as_bytes()).await;
    let _ = s.write_all(body.as_bytes()).await;
    let _ = s.flush().await;
}

/// An HTTP reply: status code, content type and body.
type Reply = (u16, &'static str, String);

/// What the control loop measures itself (it is the only one to touch it).
struct ControlMetrics {
    /// A change's arrival here to every shard's acknowledgement.
    propagation: Histogram,
}

impl ControlMetrics {
    fn new() -> Self {
        ControlMetrics {
            propagation: Histogram::new(LATENCY_BUCKETS),
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
    };
    metrics::render(figures, &shards)
}

/// Answer one request.
async fn handle(ctl: &mut Control, own: &ControlMetrics, req: Request) -> Reply {
    if let Some(token) = &ctl.admin_token {
        let ok = req
            .auth
            .as_deref()
            .and_then(|a| a.strip_prefix("Bearer "))
            .is_some_and(|t| t.trim() == token);
        if !ok {
            return (401, "text/plain", "missing or wrong bearer token\n".into());
        }
    }
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/stats") => (200, "application/json", format!("{:#}\n", ctl.stats().await)),
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
                Command::Save => ctl.save().map_err(|e| (e.http_status(), e.to_string())),
                Command::Show {
                    what: ShowWhat::Stats, ..
                } => Ok(stats_text(&ctl.stats().await)),
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

/// A readable summary of `show stats`.
fn stats_text(v: &Value) -> String {
    format!("{v:#}\n")
}

/// A complete request waiting for the control loop, with where its reply goes.
struct QueuedRequest {
    request: Request,
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

/// Read the request (bounded in size and time), have the control loop handle
/// it, and write the reply (bounded in time). Holds `_slot` until done.
async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    control_queue: Rc<LocalSender<QueuedRequest>>,
    _slot: ConnectionSlot,
) {
    let read = crate::rt::timeout(REQUEST_TIMEOUT, read_request(&mut stream)).await;
    let (code, ctype, body) = match read {
        Ok(Ok(request)) => handled_by_control(&control_queue, request).await,
        Ok(Err((code, msg))) => (code, "text/plain", format!("{msg}\n")),
        Err(_) => (408, "text/plain", "request not received in time\n".into()),
    };
    let write = respond(&mut stream, code, ctype, &body);
    if crate::rt::timeout(REPLY_TIMEOUT, write).await.is_err() {
        debug!("admin reply not taken in time; connection closed");
    }
}

/// Queue `request` to the control loop and wait for its reply.
async fn handled_by_control(control_queue: &LocalSender<QueuedRequest>, request: Request) -> Reply {
    let shutting_down = || (503, "text/plain", "the admin API is shutting down\n".to_string());
    let (reply_to, reply) = local_channel(1);
    // Never waits: the queue has room for one request per open connection.
    if control_queue.send(QueuedRequest { request, reply_to }).await.is_err() {
        return shutting_down();
    }
    reply.recv().await.unwrap_or_else(shutting_down)
}

/// Open admin connections, by what is being done with them.
#[derive(Default)]
struct OpenConnections {
    served: Rc<Cell<usize>>,
    turned_away: Rc<Cell<usize>>,
}

/// Accept admin connections for ever, each served by its own task.
async fn accept_connections(listener: Listener, control_queue: LocalSender<QueuedRequest>) {
    let control_queue = Rc::new(control_queue);
    let open = OpenConnections::default();
    let mut accept_failing = false;
    loop {
        let accepted = match &listener {
            Listener::Tcp(l) => match l.accept().await {
                Ok(stream) => {
                    admit(stream, &control_queue, &open).await;
                    Ok(())
                }
                Err(e) => Err(e),
            },
            Listener::Unix(l, _) => match l.accept().await {
                Ok(stream) => {
                    admit(stream, &control_queue, &open).await;
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
/// served; otherwise answer 503 and close it: in a task of its own while
/// fewer than `MAX_CONNECTIONS` are being turned away, else right here.
async fn admit<S: AsyncRead + AsyncWrite + Unpin + 'static>(
    mut stream: S,
    control_queue: &Rc<LocalSender<QueuedRequest>>,
    open: &OpenConnections,
) {
    if let Some(slot) = ConnectionSlot::take(&open.served, MAX_CONNECTIONS) {
        crate::rt::spawn_local(serve_connection(stream, control_queue.clone(), slot)).detach();
    } else if let Some(slot) = ConnectionSlot::take(&open.turned_away, MAX_CONNECTIONS) {
        crate::rt::spawn_local(turn_away(stream, slot)).detach();
    } else {
        let _ = crate::rt::timeout(BUSY_REPLY_TIMEOUT, respond_busy(&mut stream)).await;
    }
}

/// Answer 503, end the reply, and discard what the client sends until it
/// closes (at most `TURN_AWAY_LINGER`). Holds `_slot` until done.
async fn turn_away<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, _slot: ConnectionSlot) {
    let linger = async {
        respond_busy(&mut stream).await;
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
    let listener = match listener {
        AdminListener::Tcp(l) => {
            let _ = l.set_nonblocking(true);
            // SAFETY: the fd is a bound, listening TCP socket we own.
            Listener::Tcp(unsafe { TcpListener::from_raw_fd(l.into_raw_fd()) })
        }
        AdminListener::Unix(path) => {
            if path.exists() {
                let _ = std::fs::remove_file(&path);
            }
            let l = RingListener::bind_unix(&path).map_err(|e| {
                ControlError::AdminListen(format!("admin API cannot listen on {}: {e}", path.display()))
            })?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| ControlError::Startup(format!("cannot restrict {}: {e}", path.display())))?;
            Listener::Unix(l, path)
        }
    };
    let socket_path = match &listener {
        Listener::Unix(_, path) => Some(path.clone()),
        Listener::Tcp(_) => None,
    };
    // Each open connection queues at most one request, so sends never wait.
    let (queue_sender, control_queue) = local_channel(MAX_CONNECTIONS);
    let acceptor = crate::rt::spawn_local(accept_connections(listener, queue_sender)).detach();
    let own = ControlMetrics::new();
    loop {
        if runtime::take(&signals.term) {
            // Stop taking connections (and close the listener) before draining.
            acceptor.cancel();
            runtime::shutdown(&mut ctl).await;
            if let Some(p) = &socket_path {
                let _ = std::fs::remove_file(p);
            }
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
            let reply = handle(&mut ctl, &own, queued.request).await;
            // Cannot be full (one reply per request); fails only if the
            // connection's task is gone, and then nobody wants the reply.
            let _ = queued.reply_to.try_send(reply);
        }
        if let Some(why) = ctl.failed.clone() {
            // Let the reply that reports it reach its client, then stop.
            crate::rt::sleep(FAIL_STOP_LINGER).await;
            if let Some(p) = &socket_path {
                let _ = std::fs::remove_file(p);
            }
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
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: shardtls\r\n{auth}Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
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
