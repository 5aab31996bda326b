//! The smallest HTTP/1.1 client the scenarios need: send a request, read one
//! `Content-Length` response, keep the connection. Responses are parsed with
//! `httparse`; anything else (chunked bodies, a missing length, a head over
//! 64 KiB) is an error, never a panic.

use std::io;

use super::runner::Client;

const MAX_HEAD: usize = 64 * 1024;

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Reads one response from `s`, using and leaving bytes in `pending` (kept
/// between calls on the same connection). Returns the status and body length.
pub async fn read_response(s: &mut Client, pending: &mut Vec<u8>) -> io::Result<(u16, u64)> {
    // On the heap: an array here would make every future that awaits this
    // one 16 KiB larger, copied each time it is moved (timeouts, spawns).
    let mut buf = vec![0u8; 16 * 1024];
    let (code, head_len, body_len) = loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(pending) {
            Ok(httparse::Status::Complete(len)) => {
                let code = resp.code.unwrap_or(0);
                let mut body = None;
                for h in resp.headers.iter() {
                    if h.name.eq_ignore_ascii_case("content-length") {
                        let v = std::str::from_utf8(h.value)
                            .ok()
                            .and_then(|v| v.trim().parse::<u64>().ok());
                        body = Some(v.ok_or_else(|| bad("bad Content-Length in response"))?);
                    } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                        return Err(bad("chunked responses are not supported"));
                    }
                }
                break (code, len, body.ok_or_else(|| bad("response without Content-Length"))?);
            }
            Ok(httparse::Status::Partial) if pending.len() > MAX_HEAD => return Err(bad("response head too large")),
            Ok(httparse::Status::Partial) => {}
            Err(e) => return Err(bad(format!("malformed response: {e}"))),
        }
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before a response",
            ));
        }
        pending.extend_from_slice(&buf[..n]);
    };
    // Consume the body without keeping it.
    let mut left = body_len;
    let have = (pending.len() - head_len) as u64;
    if have >= left {
        pending.drain(..head_len + left as usize);
        return Ok((code, body_len));
    }
    left -= have;
    pending.clear();
    while left > 0 {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed in a response body",
            ));
        }
        if n as u64 > left {
            pending.extend_from_slice(&buf[left as usize..n]);
            left = 0;
        } else {
            left -= n as u64;
        }
    }
    Ok((code, body_len))
}

/// Sends `request` and reads its response; a non-2xx status is an error.
/// Returns the body length.
pub async fn exchange(s: &mut Client, request: &[u8], pending: &mut Vec<u8>) -> io::Result<u64> {
    s.write_all(request).await?;
    let (code, len) = read_response(s, pending).await?;
    if !(200..300).contains(&code) {
        return Err(bad(format!("HTTP status {code}")));
    }
    Ok(len)
}
