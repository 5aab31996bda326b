//! The admin API: HTTP/1.1 on loopback (or a 0600 Unix socket).
//!
//! - `POST /cmd`: the body is one command or a batch (one per line), in the
//!   configuration language; a batch is one transaction. `show ...` and
//!   `save ns config` are answered here too. 200 with a text report on
//!   success, 400 with the reason when refused (nothing changed, R10).
//! - `GET /stats`: JSON statistics of every shard and epoch.
//! - `GET /metrics`: the same in Prometheus' text format.
//! - `GET /config`: the running configuration as commands.
//!
//! Requests are handled one at a time (so transactions never interleave),
//! bounded in size (1 MiB body) and time (10 s per request). With a token,
//! every request must carry `Authorization: Bearer TOKEN`.

use std::io::{Read, Write};
use std::os::fd::IntoRawFd;
use std::os::fd::FromRawFd;
use std::path::PathBuf;
use std::time::Duration;

use futures_lite::future::or;
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::net::{TcpListener, UnixListener};
use serde_json::Value;
use tracing::{info, warn};

use super::runtime::{self, Control, Signals};

/// Largest accepted request body.
pub const MAX_BODY: usize = 1024 * 1024;
const MAX_HEAD: usize = 16 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

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
        let addr: std::net::SocketAddr =
            spec.parse().map_err(|_| format!("admin address {spec:?} is not host:port or a socket path"))?;
        if !addr.ip().is_loopback() {
            warn!("admin API on non-loopback address {addr}: protect it with --admin-token-file");
        }
        let l = std::net::TcpListener::bind(addr).map_err(|e| format!("admin API cannot listen on {addr}: {e}"))?;
        Ok(AdminListener::Tcp(l))
    }
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
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
                return Ok(Request { method, path, auth, body });
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
        408 => "Request Timeout",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
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

/// Answer one request.
async fn handle(ctl: &mut Control, req: Request) -> (u16, &'static str, String) {
    if let Some(token) = &ctl.admin_token {
        let ok = req.auth.as_deref().and_then(|a| a.strip_prefix("Bearer ")).is_some_and(|t| t.trim() == token);
        if !ok {
            return (401, "text/plain", "missing or wrong bearer token\n".into());
        }
    }
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/stats") => (200, "application/json", format!("{:#}\n", ctl.stats().await)),
        ("GET", "/metrics") => (200, "text/plain; version=0.0.4", prometheus(&ctl.stats().await)),
        ("GET", "/config") => (200, "text/plain", ctl.model.to_commands()),
        ("POST", "/cmd") => {
            let Ok(text) = String::from_utf8(req.body) else {
                return (400, "text/plain", "command text is not UTF-8\n".into());
            };
            run_command_text(ctl, &text).await
        }
        _ => (404, "text/plain", "unknown endpoint; use POST /cmd, GET /stats, /metrics or /config\n".into()),
    }
}

async fn run_command_text(ctl: &mut Control, text: &str) -> (u16, &'static str, String) {
    use crate::config::{Command, ShowWhat};
    let cmds = match crate::config::parse_text(text, "admin") {
        Ok(c) => c,
        Err(errs) => {
            let msg: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
            return (400, "text/plain", format!("ERROR: {}\nNothing was changed.\n", msg.join("\n")));
        }
    };
    if cmds.is_empty() {
        return (400, "text/plain", "ERROR: no command given\n".into());
    }
    let queries = cmds.iter().filter(|(_, c)| c.is_query()).count();
    if queries > 0 && queries < cmds.len() {
        return (400, "text/plain", "ERROR: show and save cannot be part of a batch of changes\nNothing was changed.\n".into());
    }
    if queries > 0 {
        let mut out = String::new();
        for (_, c) in &cmds {
            let r = match c {
                Command::Save => ctl.save(),
                Command::Show { what: ShowWhat::Stats, .. } => Ok(stats_text(&ctl.stats().await)),
                Command::Show { what: ShowWhat::RunningConfig, .. } => Ok(ctl.model.to_commands()),
                Command::Show { what, name } => crate::config::show(&ctl.model, what.clone(), name.as_deref()),
                _ => Ok(String::new()),
            };
            match r {
                Ok(t) => out.push_str(&t),
                Err(e) => return (400, "text/plain", format!("ERROR: {e}\n")),
            }
        }
        return (200, "text/plain", out);
    }
    match ctl.apply_commands(&cmds).await {
        Ok(report) => {
            info!(generation = report.generation, propagation_us = report.propagation.as_micros() as u64, "change applied");
            (200, "text/plain", report.to_text())
        }
        Err(e) => (400, "text/plain", format!("ERROR: {e}\nNothing was changed.\n")),
    }
}

/// A readable summary of `show stats`.
fn stats_text(v: &Value) -> String {
    format!("{v:#}\n")
}

fn label_value(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.replace('\\', "\\\\").replace('"', "\\\"")),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Render statistics JSON as Prometheus text: numbers become samples, and
/// string or id fields of the enclosing objects become labels.
pub fn prometheus(stats: &Value) -> String {
    const LABEL_KEYS: [&str; 6] = ["shard", "entity", "kind", "name", "side", "epoch"];
    fn walk(v: &Value, prefix: &str, labels: &[(String, String)], out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                let mut labels = labels.to_vec();
                for k in LABEL_KEYS {
                    if let Some(lv) = map.get(k).and_then(label_value) {
                        labels.retain(|(x, _)| x != k);
                        labels.push((k.to_string(), lv));
                    }
                }
                for (k, child) in map {
                    if LABEL_KEYS.contains(&k.as_str()) {
                        continue;
                    }
                    let name = if prefix.is_empty() { k.clone() } else { format!("{prefix}_{k}") };
                    walk(child, &name, &labels, out);
                }
            }
            Value::Array(items) => {
                for item in items {
                    walk(item, prefix, labels, out);
                }
            }
            Value::Number(n) => {
                let name: String = prefix
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' })
                    .collect();
                let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
                out.push(format!("shardtls_{name}{{{}}} {n}", l.join(",")));
            }
            Value::Bool(b) => {
                let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
                out.push(format!("shardtls_{prefix}{{{}}} {}", l.join(","), u8::from(*b)));
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(stats, "", &[], &mut out);
    let mut s = out.join("\n");
    s.push('\n');
    s
}

async fn serve_one<S: AsyncRead + AsyncWrite + Unpin>(ctl: &mut Control, mut s: S) {
    let req = match glommio::timer::timeout(REQUEST_TIMEOUT, async { Ok(read_request(&mut s).await) }).await {
        Ok(Ok(r)) => r,
        Ok(Err((code, msg))) => return respond(&mut s, code, "text/plain", &format!("{msg}\n")).await,
        Err(_) => return respond(&mut s, 408, "text/plain", "request not received in time\n").await,
    };
    let (code, ctype, body) = handle(ctl, req).await;
    respond(&mut s, code, ctype, &body).await;
}

enum Event {
    Tcp(glommio::net::TcpStream),
    Unix(glommio::net::UnixStream),
    Tick,
}

/// Serve the admin API and watch signals until SIGTERM has drained the shards.
pub(crate) async fn serve(mut ctl: Control, listener: AdminListener, signals: Signals) -> Result<(), String> {
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
            let l = UnixListener::bind(&path)
                .map_err(|e| format!("admin API cannot listen on {}: {e}", path.display()))?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| format!("cannot restrict {}: {e}", path.display()))?;
            Listener::Unix(l, path)
        }
    };
    loop {
        if runtime::take(&signals.term) {
            runtime::shutdown(&mut ctl).await;
            if let Listener::Unix(_, p) = &listener {
                let _ = std::fs::remove_file(p);
            }
            return Ok(());
        }
        if runtime::take(&signals.hup) {
            match ctl.reload().await {
                Ok(r) => info!(generation = r.generation, "SIGHUP: configuration reloaded\n{}", r.to_text()),
                Err(e) => warn!("SIGHUP: reload refused, running configuration kept: {e}"),
            }
        }
        let tick = async {
            glommio::timer::sleep(Duration::from_millis(50)).await;
            Event::Tick
        };
        let ev = match &listener {
            Listener::Tcp(l) => or(async { l.accept().await.map(Event::Tcp).unwrap_or(Event::Tick) }, tick).await,
            Listener::Unix(l, _) => or(async { l.accept().await.map(Event::Unix).unwrap_or(Event::Tick) }, tick).await,
        };
        match ev {
            Event::Tcp(s) => serve_one(&mut ctl, s).await,
            Event::Unix(s) => serve_one(&mut ctl, s).await,
            Event::Tick => {}
        }
    }
}

/// `shardtls ctl`: send a command text to the admin API; returns (ok, body).
pub fn client_request(admin: &str, method: &str, path: &str, body: &str, token: Option<&str>) -> Result<(bool, String), String> {
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: shardtls\r\n{auth}Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut resp = Vec::new();
    if admin.contains('/') {
        let mut s = std::os::unix::net::UnixStream::connect(admin).map_err(|e| format!("cannot reach admin socket {admin}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(60))).ok();
        s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        s.read_to_end(&mut resp).map_err(|e| e.to_string())?;
    } else {
        let mut s = std::net::TcpStream::connect(admin).map_err(|e| format!("cannot reach admin API at {admin}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(60))).ok();
        s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        s.read_to_end(&mut resp).map_err(|e| e.to_string())?;
    }
    let text = String::from_utf8_lossy(&resp);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("malformed reply from the admin API")?;
    let ok = head.split_whitespace().nth(1) == Some("200");
    Ok((ok, body.to_string()))
}
