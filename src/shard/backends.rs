//! Choosing and connecting a back end for one client connection.
//!
//! Members of the vserver's bound services and serviceGroups are tried in
//! round-robin order; a member that refuses, times out or fails its TLS
//! handshake is skipped and the next one tried (failover). A TLS back end
//! always gets a fresh rustls client connection that may resume a session
//! saved for that same server (R9). The back-end connection is registered
//! with the shard core under the service's entity, so epoch changes and
//! `disable` reach it (R2, R4, R7).
//!
//! Health is kept per shard. A member whose connect or TLS handshake fails
//! `-healthRetries` times in a row (default 3) is marked down: live traffic
//! skips it, and a probe task of this shard tries it every `-healthInterval`
//! seconds (default 5) — a TCP connect for a TCP service, a full TLS handshake
//! (certificate verified) for an SSL_TCP service — and marks it up on the first
//! success. When every member is down, new connections are refused at once
//! instead of queueing. A probe stops when its member leaves the
//! configuration or the shard drains.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use crate::rt::net::TcpStream;
use rustls::pki_types::ServerName;
use tracing::{debug, info, warn};

use super::signal::ConnSignal;
use super::{Shard, ShardService, ShardVserver};
use crate::config::model::{Epoch, ProxyProtocolVersion};
use crate::core::{CloseKind, ConnId};
use crate::tls::stream::Leg;

/// A connected (and, for TLS, handshaken) back end.
pub(crate) struct Backend {
    pub leg: Leg<TcpStream>,
    pub id: ConnId,
    pub service: Rc<ShardService>,
    pub server_name: Option<ServerName<'static>>,
    pub addr: SocketAddr,
}

impl Backend {
    /// Report the end of this back-end connection to the core; forget its
    /// sessions when the core says so (R8). Returns the epoch it was bound to.
    pub fn finish(&self, shard: &Shard, kind: CloseKind) -> Option<Epoch> {
        shard.unregister(self.id);
        let out = shard.core.borrow_mut().on_close(self.id, kind, Instant::now());
        if out.drop_session {
            if let (Some(tls), Some(name)) = (&self.service.tls, &self.server_name) {
                tls.sessions.forget_server(name);
            }
        }
        out.epoch
    }
}

/// Health of one back-end member, as this shard saw it.
#[derive(Debug, Default, Clone)]
pub(crate) struct MemberHealth {
    /// Failures in a row since the last success.
    failures: u32,
    /// Marked down: skipped by traffic while a probe task tries it.
    down: bool,
}

impl Shard {
    fn member_up(&self, addr: SocketAddr) -> bool {
        self.health.borrow().get(&addr).is_none_or(|h| !h.down)
    }

    /// Members this shard has marked down, for statistics.
    pub(crate) fn members_down(&self) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = self
            .health
            .borrow()
            .iter()
            .filter(|(_, h)| h.down)
            .map(|(a, _)| *a)
            .collect();
        v.sort();
        v
    }

    /// Count a failure of `addr` in `service`; the one that reaches the service's
    /// `-healthRetries` marks the member down and starts its probe.
    fn member_failed(self: &Rc<Self>, service: &ShardService, addr: SocketAddr, why: &str) {
        let policy = service.spec.health;
        {
            let mut health = self.health.borrow_mut();
            let h = health.entry(addr).or_default();
            h.failures += 1;
            if h.down || h.failures < policy.down_after {
                return;
            }
            h.down = true;
            warn!(
                shard = self.id,
                member = %addr,
                failures = h.failures,
                "back-end member marked down ({why}); probed every {} s",
                policy.probe_interval.as_secs()
            );
        }
        crate::rt::spawn_local(probe_until_up(self.clone(), service.spec.entity.name.clone(), addr)).detach();
    }

    fn member_ok(&self, addr: SocketAddr, how: &str) {
        let mut health = self.health.borrow_mut();
        if let Some(h) = health.remove(&addr) {
            if h.down {
                info!(shard = self.id, member = %addr, "back-end member is up again ({how})");
            }
        }
    }

    /// The service a probe of `addr` should use: `preferred` while it still
    /// has the member, else any service that has it.
    fn service_with_member(&self, preferred: &str, addr: SocketAddr) -> Option<Rc<ShardService>> {
        let services = self.services.borrow();
        if let Some(p) = services.get(preferred).filter(|p| p.spec.members.contains(&addr)) {
            return Some(p.clone());
        }
        services.values().find(|p| p.spec.members.contains(&addr)).cloned()
    }
}

/// Probe a down member every `-healthInterval` until it answers, it leaves
/// the configuration, or the shard drains.
async fn probe_until_up(shard: Rc<Shard>, service_name: Arc<str>, addr: SocketAddr) {
    loop {
        let Some(service) = shard.service_with_member(&service_name, addr) else {
            shard.health.borrow_mut().remove(&addr);
            debug!(shard = shard.id, member = %addr, "member left the configuration; probe stopped");
            return;
        };
        let interval = service.spec.health.probe_interval;
        drop(service);
        crate::rt::sleep(interval).await;
        if shard.is_draining() || shard.member_up(addr) {
            return;
        }
        let Some(service) = shard.service_with_member(&service_name, addr) else {
            continue;
        };
        shard.counters.health_probes.set(shard.counters.health_probes.get() + 1);
        match probe(&service, addr).await {
            Ok(()) => {
                shard.member_ok(addr, "health probe passed");
                return;
            }
            Err(e) => debug!(shard = shard.id, member = %addr, "health probe failed: {e}"),
        }
    }
}

/// One probe: a TCP connect, plus a verified TLS handshake and close_notify
/// for an SSL_TCP service. A service that sends PROXY headers gets a LOCAL
/// one (v2; `PROXY UNKNOWN` in v1): a connection of ours, not a client's.
async fn probe(service: &ShardService, addr: SocketAddr) -> Result<(), String> {
    let stream = TcpStream::connect_timeout(addr, service.spec.connect_timeout)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let local = service.spec.proxy_header.map(|v| {
        let mut out = Vec::with_capacity(16);
        super::proxy_header::encode(v.into(), None, None, &mut out);
        out
    });
    let (Some(tls), Some(spec)) = (&service.tls, service.spec.tls.as_ref()) else {
        if let Some(h) = local {
            let mut leg = Leg::plain(stream);
            leg.set_preamble(h);
            let shut = std::future::poll_fn(|cx| leg.poll_shutdown(cx));
            return match crate::rt::timeout(service.spec.policy.handshake_timeout, shut).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(format!("PROXY header: {e}")),
                Err(e) => Err(format!("PROXY header: {e}")),
            };
        }
        return Ok(());
    };
    let mut leg = Leg::client(stream, tls.config.clone(), spec.server_name(addr)).map_err(|e| e.to_string())?;
    if let Some(h) = local {
        leg.set_preamble(h);
    }
    let handshake = async {
        std::future::poll_fn(|cx| leg.poll_handshake(cx)).await?;
        std::future::poll_fn(|cx| leg.poll_shutdown(cx)).await
    };
    match crate::rt::timeout(service.spec.policy.handshake_timeout, handshake).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("TLS handshake: {e}")),
        Err(e) => Err(format!("TLS handshake: {e}")),
    }
}

/// Members of the vserver's enabled services, and how many of them are down.
fn candidates(shard: &Shard, vs: &ShardVserver) -> (Vec<(Rc<ShardService>, SocketAddr)>, usize) {
    let mut out = Vec::new();
    let mut down = 0;
    for t in &vs.spec.targets {
        if let Some(p) = shard.service(t) {
            if p.spec.enabled {
                for m in &p.spec.members {
                    if shard.member_up(*m) {
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
/// `proxy_header` builds the PROXY protocol header for a member whose
/// service sends one (called at most once per attempt).
pub(crate) async fn connect(
    shard: &Rc<Shard>,
    vs: &ShardVserver,
    signal: &Rc<ConnSignal>,
    proxy_header: &dyn Fn(ProxyProtocolVersion) -> Vec<u8>,
) -> Result<Backend, String> {
    let (members, down) = candidates(shard, vs);
    if members.is_empty() {
        return Err(if down > 0 {
            format!(
                "all {down} back-end members of {} are down",
                vs.spec
                    .targets
                    .iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
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
        let (service, addr) = &members[(start + i) % members.len()];
        let attempt_started = Instant::now();
        let mut attempt = try_member(shard, service, *addr, signal, proxy_header).await;
        if let Err(MemberError::EpochChanged(_)) = &attempt {
            // The service changed during this connect (R2 on the back-end
            // side): not the member's fault. Once more, under the new epoch.
            if let Some(fresh) = shard.service(&service.spec.entity.name) {
                debug!(shard = shard.id, member = %addr, "back-end epoch changed while connecting; retrying once");
                attempt = try_member(shard, &fresh, *addr, signal, proxy_header).await;
            }
        }
        match attempt {
            Err(MemberError::EpochChanged(e)) | Err(MemberError::Closed(e)) => {
                return Err(format!("{} member {addr}: {e}", service.spec.entity));
            }
            Ok(b) => {
                b.service.metrics.connect.observe(attempt_started.elapsed());
                shard.member_ok(*addr, "connected");
                return Ok(b);
            }
            Err(MemberError::Failed(e)) => {
                shard.member_failed(service, *addr, &e);
                shard
                    .counters
                    .backend_failures
                    .set(shard.counters.backend_failures.get() + 1);
                debug!(shard = shard.id, member = %addr, "back end failed: {e}");
                last_err = format!("{} member {addr}: {e}", service.spec.entity);
            }
        }
    }
    Err(last_err)
}

/// Why one member could not be used.
enum MemberError {
    /// The member failed (refused, timed out, bad TLS): counts toward down.
    Failed(String),
    /// The service's epoch changed while connecting: retried, never counted.
    EpochChanged(String),
    /// The client connection was closed by the shard meanwhile.
    Closed(String),
}

impl MemberError {
    /// How an attempt that ended with `kind` counts: a kill is the client's
    /// (its signal fired) or the service's epoch change; anything else is the
    /// member's failure.
    fn of(kind: CloseKind, client: &ConnSignal, msg: String) -> Self {
        match kind {
            CloseKind::Killed if client.fired().is_some() => MemberError::Closed(msg),
            CloseKind::Killed => MemberError::EpochChanged(msg),
            _ => MemberError::Failed(msg),
        }
    }
}

async fn try_member(
    shard: &Rc<Shard>,
    service: &Rc<ShardService>,
    addr: SocketAddr,
    signal: &Rc<ConnSignal>,
    proxy_header: &dyn Fn(ProxyProtocolVersion) -> Vec<u8>,
) -> Result<Backend, MemberError> {
    let id = shard
        .core
        .borrow_mut()
        .on_accept(&service.spec.entity, Instant::now())
        .map_err(|_| MemberError::Failed("back end not accepting connections".to_string()))?;
    // Until it is established the back-end connection has a signal of its
    // own: a back-end epoch change kills this attempt, not the client
    // connection (which the retry then serves). Once established it shares
    // the client's, so a disable or drain closes both.
    let attempt_signal = Rc::new(ConnSignal::default());
    shard.signals.borrow_mut().insert(id, attempt_signal.clone());
    let fail = |kind: CloseKind, msg: String| {
        shard.unregister(id);
        shard.core.borrow_mut().on_close(id, kind, Instant::now());
        MemberError::of(kind, signal, msg)
    };
    let stream = match TcpStream::connect_timeout(addr, service.spec.connect_timeout).await {
        Ok(s) => s,
        Err(e) => return Err(fail(CloseKind::BackendFailed, format!("connect: {e}"))),
    };
    if attempt_signal.fired().is_some() {
        return Err(fail(
            CloseKind::Killed,
            "back-end epoch changed while connecting".into(),
        ));
    }
    // No byte sent yet: the connection handshakes under the service's epoch
    // as it is now (R2), which may be newer than when the connect began.
    let current = shard
        .service(&service.spec.entity.name)
        .unwrap_or_else(|| service.clone());
    let service = &current;
    let _ = stream.set_nodelay(true);
    stream.set_linger(service.spec.policy.handshake_timeout);
    // The header goes out with the first bytes written: the ClientHello,
    // or the client's first bytes on a plain back end.
    let header = service.spec.proxy_header.map(proxy_header);
    let Some(tls) = service.tls.clone() else {
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
        shard.signals.borrow_mut().insert(id, signal.clone());
        let mut leg = Leg::plain(stream);
        if let Some(h) = header {
            leg.set_preamble(h);
        }
        return Ok(Backend {
            leg,
            id,
            service: service.clone(),
            server_name: None,
            addr,
        });
    };
    let spec = service.spec.tls.as_ref().expect("tls config implies tls spec");
    let name = spec.server_name(addr);
    let mut leg = match Leg::client(stream, tls.config.clone(), name.clone()) {
        Ok(l) => l,
        Err(e) => return Err(fail(CloseKind::ProtocolError, format!("TLS setup: {e}"))),
    };
    if let Some(h) = header {
        leg.set_preamble(h);
    }
    shard.core.borrow_mut().on_handshake_start(id, Instant::now());
    let hs = std::future::poll_fn(|cx| leg.poll_handshake(cx));
    let handshake = futures_lite::future::or(
        async { hs.await.map_err(|e| (CloseKind::ProtocolError, e.to_string())) },
        futures_lite::future::or(
            async {
                Err((
                    CloseKind::Killed,
                    format!("closed by the shard ({:?})", signal.wait().await),
                ))
            },
            async {
                Err((
                    CloseKind::Killed,
                    format!(
                        "back-end attempt ended by the shard ({:?})",
                        attempt_signal.wait().await
                    ),
                ))
            },
        ),
    );
    let timed = match crate::rt::timeout(service.spec.policy.handshake_timeout, handshake).await {
        Ok(r) => r,
        Err(e) => Err((CloseKind::Timeout, e.to_string())),
    };
    if let Err((kind, e)) = timed {
        let out = shard.core.borrow_mut().on_close(id, kind, Instant::now());
        shard.unregister(id);
        if out.drop_session {
            tls.sessions.forget_server(&name);
        }
        let msg = format!("TLS handshake: {e}");
        return Err(MemberError::of(kind, signal, msg));
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
    shard.signals.borrow_mut().insert(id, signal.clone());
    Ok(Backend {
        leg,
        id,
        service: service.clone(),
        server_name: Some(name),
        addr,
    })
}
