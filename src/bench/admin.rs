//! A blocking client of the admin API: `POST /cmd` with the commands as the
//! body (one per line), over TCP (`host:port`) or a Unix socket (a path),
//! with a bearer token when given. 200 with a text body is success; any
//! other status is a failure carrying the body as its reason.

use std::io::{self, Read, Write};
use std::time::Duration;

/// Outcome of one admin call.
#[derive(Debug)]
pub struct AdminReply {
    pub status: u16,
    pub body: String,
}

/// Where the admin API is, and the token it wants.
#[derive(Clone, Debug)]
pub struct Admin {
    pub addr: String,
    pub token: Option<String>,
}

impl Admin {
    /// `--admin` and `--admin-token-file`, with the defaults `shardtls ctl` has.
    pub fn from_args(addr: Option<&str>, token_file: Option<&std::path::Path>) -> Result<Admin, String> {
        let (addr, token) = crate::control::access::client_target(addr, token_file)?;
        Ok(Admin { addr, token })
    }
}

/// Posts `commands` to the admin API.
pub fn post(admin: &Admin, commands: &str, timeout: Duration) -> io::Result<AdminReply> {
    let addr = admin.addr.as_str();
    let unix = addr.contains('/');
    // The admin API answers to its own name only.
    let host = if unix { "localhost" } else { addr };
    let auth = admin
        .token
        .as_deref()
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "POST /cmd HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{commands}",
        commands.len()
    );
    if unix {
        let mut s = std::os::unix::net::UnixStream::connect(addr)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        exchange(&mut s, req.as_bytes())
    } else {
        use std::net::ToSocketAddrs;
        let sa = addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("admin address {addr}: no address")))?;
        let mut s = std::net::TcpStream::connect_timeout(&sa, timeout)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        exchange(&mut s, req.as_bytes())
    }
}

fn exchange<S: Read + Write>(s: &mut S, req: &[u8]) -> io::Result<AdminReply> {
    s.write_all(req)?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let status = resp.code.unwrap_or(0);
                let cl = resp
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok());
                // Read the body: by length, or to the end of the connection.
                loop {
                    if cl.is_some_and(|cl| buf.len() >= len + cl) {
                        break;
                    }
                    let n = s.read(&mut chunk)?;
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let end = cl.map_or(buf.len(), |cl| (len + cl).min(buf.len()));
                let body = String::from_utf8_lossy(&buf[len..end]).into_owned();
                return Ok(AdminReply { status, body });
            }
            Ok(httparse::Status::Partial) => {}
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, format!("admin reply: {e}"))),
        }
        if buf.len() > 1 << 20 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "admin reply head too large"));
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "admin API closed before replying",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
