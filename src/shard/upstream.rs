//! Choosing and connecting a back end for one client connection.
//!
//! Members of the vserver's bound services and serviceGroups are tried in
//! round-robin order; a member that refuses, times out or fails its TLS
//! handshake is skipped and the next one tried (failover). A TLS back end
//! always gets a fresh rustls client connection that may resume a session
//! saved for that same server (R9). The back-end connection is registered
//! with the shard core under the pool's entity, so epoch changes and
//! `disable` reach it (R2, R4, R7).
//!
//! Health is passive and per shard: a member that fails
//! [`DOWN_AFTER_FAILURES`] times in a row is skipped for its pool's
//! `-healthInterval` (default 5 s), then tried again by the next connection; when every
//! member is down, new connections are refused at once instead of queueing.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::net::TcpStream;
use rustls::pki_types::ServerName;
use tracing::{debug, info, warn};

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

/// Consecutive failures after which a member is marked down.
pub(crate) const DOWN_AFTER_FAILURES: u32 = 3;

/// Passive health of one back-end member, as this shard saw it.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct MemberHealth {
    failures: u32,
    down_until: Option<Instant>,
}

impl Shard {
    fn member_up(&self, addr: SocketAddr, now: Instant) -> bool {
        self.health
            .borrow()
            .get(&addr)
            .and_then(|h| h.down_until)
            .is_none_or(|t| t <= now)
    }

    fn member_failed(&self, addr: SocketAddr, retry_after: Duration, why: &str) {
        let now = Instant::now();
        let mut health = self.health.borrow_mut();
        let h = health.entry(addr).or_default();
        h.failures += 1;
        if h.failures >= DOWN_AFTER_FAILURES && h.down_until.is_none_or(|t| t <= now) {
            h.down_until = Some(now + retry_after);
            warn!(
                shard = self.id,
                member = %addr,
                failures = h.failures,
                "back-end member marked down ({why}); retried in {} s",
                retry_after.as_secs()
            );
        }
    }

    fn member_ok(&self, addr: SocketAddr) {
        let mut health = self.health.borrow_mut();
        if let Some(h) = health.remove(&addr) {
            if h.down_until.is_some() {
                info!(shard = self.id, member = %addr, "back-end member is up again");
            }
        }
    }
}

/// Members of the vserver's enabled pools, and how many of them are down.
fn candidates(shard: &Shard, vs: &ShardVserver) -> (Vec<(Rc<ShardPool>, SocketAddr)>, usize) {
    let now = Instant::now();
    let mut out = Vec::new();
    let mut down = 0;
    for t in &vs.spec.targets {
        if let Some(p) = shard.pool(t) {
            if p.spec.enabled {
                for m in &p.spec.members {
                    if shard.member_up(*m, now) {
                        out.push((p.clone(), *m));
                    } else {
                        down += 1;
                    }
                }
            }
        }
    }
    (out, down)
}

/// Connect to the next healthy member, failing over on errors.
pub(crate) async fn connect(shard: &Rc<Shard>, vs: &ShardVserver, signal: &Rc<ConnSignal>) -> Result<Backend, String> {
    let (members, down) = candidates(shard, vs);
    if members.is_empty() {
        return Err(if down > 0 {
            format!("all {down} back-end members are down")
        } else {
            "no enabled back-end member".into()
        });
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
            Ok(b) => {
                shard.member_ok(*addr);
                return Ok(b);
            }
            Err(e) => {
                shard.member_failed(*addr, pool.spec.retry_down_after, &e);
                shard
                    .counters
                    .backend_failures
                    .set(shard.counters.backend_failures.get() + 1);
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
        if shard
            .core
            .borrow_mut()
            .on_established(id, false, Instant::now())
            .is_err()
        {
            return Err(fail(
                CloseKind::Killed,
                "back-end epoch changed while connecting".into(),
            ));
        }
        return Ok(Backend {
            leg: Leg::plain(stream),
            id,
            pool: pool.clone(),
            server_name: None,
            addr,
        });
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
        let kind = if e.to_string().contains("timed out") {
            CloseKind::Timeout
        } else {
            CloseKind::ProtocolError
        };
        let out = shard.core.borrow_mut().on_close(id, kind, Instant::now());
        shard.unregister(id);
        if out.drop_session {
            tls.sessions.forget_server(&name);
        }
        return Err(format!("TLS handshake: {e}"));
    }
    let resumed = leg.resumed().unwrap_or(false);
    if shard
        .core
        .borrow_mut()
        .on_established(id, resumed, Instant::now())
        .is_err()
    {
        return Err(fail(
            CloseKind::Killed,
            "back-end epoch changed during the handshake".into(),
        ));
    }
    Ok(Backend {
        leg,
        id,
        pool: pool.clone(),
        server_name: Some(name),
        addr,
    })
}
