//! `SSL_BRIDGE` passthrough of one client connection: no TLS of ours.
//!
//! first byte (binds the epoch) -> peek at the ClientHello
//! ([`crate::tls::client_hello`], bounded in bytes and by the vserver's
//! `-handshakeTimeout`) -> established -> back end (an `SSL_BRIDGE` service:
//! plain TCP) -> the peeked bytes, then every byte both ways, untouched.
//! Bytes that are not a ClientHello (garbage, SSLv2, malformed, too long)
//! close the connection with a log line. The client and the back end
//! finish TLS between themselves, so there is no session of ours to keep or
//! forget (R3, R8 do not apply); a change still opens an epoch, and R7
//! (`disable`) and R12 (`-drainTimeout`) close what is relayed.

use std::rc::Rc;
use std::time::Instant;

use futures_lite::future::or;
use futures_lite::AsyncReadExt;
use tracing::{debug, info};

use super::{classify, finish_proxied, release, ClientConn};
use crate::core::CloseKind;
use crate::rt::net::TcpStream;
use crate::shard::backends;
use crate::shard::logs::{self, Cause};
use crate::shard::proxy::{Proxy, ProxyEnd};
use crate::shard::signal::ConnSignal;
use crate::tls::client_hello::{self, Peek, MAX_PEEK_LEN};
use crate::tls::stream::Leg;

/// Bytes read per read while peeking.
const PEEK_READ: usize = 2048;

pub(super) async fn serve(c: &ClientConn<'_>, mut stream: TcpStream, signal: &Rc<ConnSignal>) {
    let (shard, vs) = (c.shard, c.vs);
    let hs_timeout = vs.spec.policy.handshake_timeout;
    let mut seen = Vec::with_capacity(PEEK_READ);
    let mut chunk = vec![0u8; PEEK_READ];
    let mut epoch = None;
    // Read until the ClientHello is whole, interruptible by the shard (R7,
    // the core's handshake timeout) and bounded by -handshakeTimeout.
    let peeked = Box::pin(or(
        async {
            let started = Instant::now();
            loop {
                let left = hs_timeout.saturating_sub(started.elapsed());
                let want = chunk.len().min(MAX_PEEK_LEN - seen.len());
                let n = match crate::rt::timeout(left, stream.read(&mut chunk[..want])).await {
                    Ok(Ok(0)) => return Err((CloseKind::Clean, "closed before a whole ClientHello".to_string())),
                    Ok(Ok(n)) => n,
                    Ok(Err(e)) => return Err((classify(&e), e.to_string())),
                    Err(_) => {
                        return Err((
                            CloseKind::Timeout,
                            "no whole ClientHello before the handshake timeout".into(),
                        ))
                    }
                };
                if epoch.is_none() {
                    // The first byte binds the connection to an epoch (R2).
                    epoch = Some(shard.core.borrow_mut().on_handshake_start(c.id, Instant::now()));
                }
                seen.extend_from_slice(&chunk[..n]);
                match client_hello::peek(&seen) {
                    Peek::Incomplete => continue,
                    Peek::NotTls(why) => return Err((CloseKind::ProtocolError, why.to_string())),
                    Peek::Hello(hello) => return Ok(hello),
                }
            }
        },
        async {
            Err((
                CloseKind::Killed,
                format!("closed before the ClientHello ({:?})", signal.wait().await),
            ))
        },
    ))
    .await;
    drop(chunk);
    let hello = match peeked {
        Ok(h) => h,
        Err((kind, why)) => {
            if kind == CloseKind::ProtocolError && logs::allow(Cause::HandshakeFailed, Instant::now()) {
                info!(shard = shard.id, peer = %c.client_addr, vserver = %vs.spec.entity.name, "passthrough refused: {why}");
            } else {
                debug!(shard = shard.id, peer = %c.client_addr, "{why}");
            }
            c.finish(kind, None);
            Box::pin(release(shard, &vs.spec.entity, epoch, Leg::plain(stream))).await;
            return;
        }
    };
    let epoch = epoch.unwrap_or_default();
    let mut leg = Leg::plain(stream);
    if shard
        .core
        .borrow_mut()
        .on_established(c.id, false, Instant::now())
        .is_err()
    {
        // Its epoch retired while the hello arrived: R2.
        c.finish(CloseKind::Killed, None);
        Box::pin(release(shard, &vs.spec.entity, Some(epoch), leg)).await;
        return;
    }
    debug!(shard = shard.id, peer = %c.client_addr, sni = ?hello.sni, "ClientHello peeked");
    // A PROXY header to a passthrough back end carries the addresses only:
    // the TLS is the client's and the back end's, not ours.
    let header = |version: crate::config::model::ProxyProtocolVersion| {
        let addrs = match (
            c.client_addr.resolve(),
            super::socket_addr(c.client_addr.fd, libc::getsockname),
        ) {
            (Some(source), Some(dest)) => Some(crate::shard::proxy_header::Addrs { source, dest }),
            _ => None,
        };
        let mut out = Vec::with_capacity(64);
        crate::shard::proxy_header::encode(version.into(), addrs, None, &mut out);
        out
    };
    let mut backend = match Box::pin(backends::connect(shard, vs, signal, &header)).await {
        Ok(b) => b,
        Err(e) => {
            if logs::allow(Cause::NoBackend, Instant::now()) {
                info!(shard = shard.id, peer = %c.client_addr, vserver = %vs.spec.entity.name, "no back end: {e}");
            }
            c.finish(CloseKind::Clean, None);
            Box::pin(release(shard, &vs.spec.entity, Some(epoch), leg)).await;
            return;
        }
    };
    // The peeked bytes first, as they came; then the relay.
    let mut sent = 0;
    let mut end = None;
    while sent < seen.len() {
        match std::future::poll_fn(|cx| backend.leg.poll_write_plain(cx, &seen[sent..])).await {
            Ok(n) => sent += n,
            Err(e) => {
                end = Some(ProxyEnd::BackendError(e));
                break;
            }
        }
    }
    drop(seen);
    let end = match end {
        Some(end) => end,
        None => {
            debug!(shard = shard.id, peer = %c.client_addr, backend = %backend.addr, "relaying");
            let (end, up, down) = Proxy::new(&mut leg, &mut backend.leg, signal, vs.spec.idle_timeout).await;
            shard
                .counters
                .bytes_up
                .set(shard.counters.bytes_up.get() + up + sent as u64);
            shard.counters.bytes_down.set(shard.counters.bytes_down.get() + down);
            end
        }
    };
    Box::pin(finish_proxied(c, epoch, leg, backend, end, signal)).await;
}
