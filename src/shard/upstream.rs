//! Choosing and connecting a back end for one client connection.
//!
//! Members of the vserver's bound services and serviceGroups are tried in
//! round-robin order; a member that refuses, times out or fails its TLS
//! handshake is skipped and the next one tried (failover). A TLS back end
//! always gets a fresh rustls client connection that may resume a session
//! saved for that same server (R9). The back-end connection is registered
//! with the shard core under the pool's entity, so epoch changes and
//! `disable` reach it (R2, R4, R7).

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use glommio::net::TcpStream;
use rustls::pki_types::ServerName;
use tracing::debug;

use super::signal::ConnSignal;
use super::{Shard, ShardPool, ShardVserver};
use crate::core::{CloseKind, ConnId};
use crate::tls::stream::Leg;

/// A connected (and, for TLS, handshaken) back end.
pub(crate) struct Backend {
    pub leg: Leg<TcpStream>,
    pub id: ConnId,
    pub pool: Rc<ShardPool>,
    pub server_name: Option<ServerName<'static>>,
    pub addr: SocketAddr,
}

impl Backend {
    /// Report the end of this back-end connection to the core; forget its
    /// sessions when the core says so (R8).
    pub fn finish(&self, shard: &Shard, kind: CloseKind) {
        shard.unregister(self.id);
        let out = shard.core.borrow_mut().on_close(self.id, kind, Instant::now());
        if out.drop_session {
            if let (Some(tls), Some(name)) = (&self.pool.tls, &self.server_name) {
                tls.sessions.forget_server(name);
            }
        }
    }
}

fn candidates(shard: &Shard, vs: &ShardVserver) -> Vec<(Rc<ShardPool>, SocketAddr)> {
    let mut out = Vec::new();
    for t in &vs.spec.targets {
        if let Some(p) = shard.pool(t) {
            if p.spec.enabled {
                for m in &p.spec.members {
                    out.push((p.clone(), *m));
                }
            }
        }
    }
    out
}

/// Connect to the next healthy member, failing over on errors.
pub(crate) async fn connect(shard: &Rc<Shard>, vs: &ShardVserver, signal: &Rc<ConnSignal>) -> Result<Backend, String> {
    let members = candidates(shard, vs);
    if members.is_empty() {
        return Err("no enabled back-end member".into());
    }
    let start = vs.rr.get();
    vs.rr.set(start.wrapping_add(1));
    let mut last_err = String::new();
    for i in 0..members.len() {
        if signal.fired().is_some() {
            return Err("connection closed by the shard while connecting".into());
        }
        let (pool, addr) = &members[(start + i) % members.len()];
        match try_member(shard, pool, *addr, signal).await {
            Ok(b) => return Ok(b),
            Err(e) => {
                shard.counters.backend_failures.set(shard.counters.backend_failures.get() + 1);
                debug!(shard = shard.id, member = %addr, "back end failed: {e}");
                last_err = format!("{} member {addr}: {e}", pool.spec.entity);
            }
        }
    }
    Err(last_err)
}

async fn try_member(
    shard: &Rc<Shard>,
    pool: &Rc<ShardPool>,
    addr: SocketAddr,
    signal: &Rc<ConnSignal>,
) -> Result<Backend, String> {
    let id = shard
        .core
        .borrow_mut()
        .on_accept(&pool.spec.entity, Instant::now())
        .map_err(|_| "back end not accepting connections".to_string())?;
    shard.signals.borrow_mut().insert(id, signal.clone());
    let fail = |kind: CloseKind, msg: String| {
        shard.unregister(id);
        shard.core.borrow_mut().on_close(id, kind, Instant::now());
        msg
    };
    let stream = match TcpStream::connect_timeout(addr, pool.spec.connect_timeout).await {
        Ok(s) => s,
        Err(e) => return Err(fail(CloseKind::BackendFailed, format!("connect: {e}"))),
    };
    let _ = stream.set_nodelay(true);
    let Some(tls) = pool.tls.clone() else {
        shard.core.borrow_mut().on_handshake_start(id, Instant::now());
        if shard.core.borrow_mut().on_established(id, false, Instant::now()).is_err() {
            return Err(fail(CloseKind::Killed, "back-end epoch changed while connecting".into()));
        }
        return Ok(Backend { leg: Leg::plain(stream), id, pool: pool.clone(), server_name: None, addr });
    };
    let spec = pool.spec.tls.as_ref().expect("tls config implies tls spec");
    let name = spec.server_name(addr);
    let mut leg = match Leg::client(stream, tls.config.clone(), name.clone()) {
        Ok(l) => l,
        Err(e) => return Err(fail(CloseKind::ProtocolError, format!("TLS setup: {e}"))),
    };
    shard.core.borrow_mut().on_handshake_start(id, Instant::now());
    let hs = std::future::poll_fn(|cx| leg.poll_handshake(cx));
    let timed = glommio::timer::timeout(pool.spec.policy.handshake_timeout, async {
        futures_lite::future::or(async { hs.await.map_err(|e| e.to_string()) }, async {
            Err(format!("closed by the shard ({:?})", signal.wait().await))
        })
        .await
        .map_err(|e| glommio::GlommioError::IoError(std::io::Error::other(e)))
    })
    .await;
    if let Err(e) = timed {
        let kind = if e.to_string().contains("timed out") { CloseKind::Timeout } else { CloseKind::ProtocolError };
        let out = shard.core.borrow_mut().on_close(id, kind, Instant::now());
        shard.unregister(id);
        if out.drop_session {
            tls.sessions.forget_server(&name);
        }
        return Err(format!("TLS handshake: {e}"));
    }
    let resumed = leg.resumed().unwrap_or(false);
    if shard.core.borrow_mut().on_established(id, resumed, Instant::now()).is_err() {
        return Err(fail(CloseKind::Killed, "back-end epoch changed during the handshake".into()));
    }
    Ok(Backend { leg, id, pool: pool.clone(), server_name: Some(name), addr })
}
