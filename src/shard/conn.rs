//! One client connection, from accept to close.
//!
//! accept -> first byte (binds the epoch, R2) -> TLS handshake under that
//! epoch's config -> established (or killed if its epoch retired meanwhile)
//! -> back end -> copy both ways -> close_notify and close. Every step
//! yields to the connection's [`ConnSignal`], through which the shard
//! applies R2, R7 and R12. The way the connection ended decides whether its
//! sessions survive (R8). Each leg's socket is then released: what was
//! written is still sent within its linger deadline (`-handshakeTimeout` of
//! its vserver or service), past which it is reset and counted as
//! `closed_unflushed` on its epoch. With an access log, what the
//! connection learns on the way (epoch, handshake, back end, bytes) is kept
//! in a [`Trace`] and becomes one line when the client side is accounted for.
//!
//! An `SSL_BRIDGE` vserver's connections take [`passthrough`] instead of
//! the handshake: no TLS of ours, the ClientHello peeked and relayed.

mod passthrough;

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::rt::net::TcpStream;
use futures_lite::future::or;
use futures_lite::AsyncReadExt;
use tracing::{debug, info};

use super::backends::{self, Backend};
use super::logs::{self, Cause};
use super::proxy::{Proxy, ProxyEnd};
use super::signal::ConnSignal;
use super::{Shard, ShardVserver};
use crate::access_log::{self, AccessLog, Ending, Record};
use crate::config::model::Epoch;
use crate::config::model::{EntityRef, ProxyProtocolVersion};
use crate::core::{CloseKind, CloseReason, ConnId};
use crate::rt::net::Released;
use crate::tls::stream::{Leg, PeerEnd};

/// Time allowed to deliver close_notify when we close a connection.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

fn classify(e: &io::Error) -> CloseKind {
    match e.kind() {
        io::ErrorKind::InvalidData => CloseKind::ProtocolError,
        io::ErrorKind::TimedOut => CloseKind::Timeout,
        _ => CloseKind::PeerReset,
    }
}

struct ClientConn<'a> {
    shard: &'a Rc<Shard>,
    vs: &'a ShardVserver,
    id: ConnId,
    /// The client's address: what logs, stats and a back end's PROXY header carry.
    client_addr: PeerAddr,
    signal: &'a ConnSignal,
    /// What the access log line will say; `None` without an access log.
    trace: Option<Trace>,
}

/// What the access log records of one client connection as it goes.
struct Trace {
    log: &'static AccessLog,
    accepted: Instant,
    epoch: Cell<Option<Epoch>>,
    /// First byte to handshake complete, once it completed.
    handshake: Cell<Option<Duration>>,
    backend: Cell<Option<SocketAddr>>,
    /// Plaintext bytes (client to back end, back end to client).
    bytes: Cell<(u64, u64)>,
    /// How it ended, where the client side's close kind does not tell
    /// (the back end failed, the idle timer ran out, the shard closed it).
    ending: Cell<Option<Ending>>,
}

impl Trace {
    fn new(accepted: Instant) -> Option<Trace> {
        access_log::get().map(|log| Trace {
            log,
            accepted,
            epoch: Cell::new(None),
            handshake: Cell::new(None),
            backend: Cell::new(None),
            bytes: Cell::new((0, 0)),
            ending: Cell::new(None),
        })
    }
}

/// The client's address: from `accept4` when the fast path took the
/// connection, else looked up only when a log line needs it (saves a
/// `getpeername` per connection; valid while the socket is open).
#[derive(Clone, Copy)]
pub(crate) struct PeerAddr {
    pub addr: Option<SocketAddr>,
    pub fd: std::os::fd::RawFd,
}

impl PeerAddr {
    /// The address, looked up when `accept4` did not give it.
    pub fn resolve(&self) -> Option<std::net::SocketAddr> {
        self.addr.or_else(|| socket_addr(self.fd, libc::getpeername))
    }
}

impl std::fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.resolve() {
            Some(a) => write!(f, "{a}"),
            None => f.write_str("?"),
        }
    }
}

type SockNameFn = unsafe extern "C" fn(libc::c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> libc::c_int;

/// The peer's (`getpeername`) or our own (`getsockname`) address of socket `fd`.
fn socket_addr(fd: std::os::fd::RawFd, call: SockNameFn) -> Option<std::net::SocketAddr> {
    // SAFETY: a zeroed sockaddr_storage is a valid out-buffer for getpeername/getsockname.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: the pointer and length describe `storage`.
    let rc = unsafe { call(fd, &mut storage as *mut _ as *mut libc::sockaddr, &mut len) };
    if rc != 0 {
        return None;
    }
    match storage.ss_family as i32 {
        libc::AF_INET => {
            // SAFETY: the family says this is a sockaddr_in.
            let a = unsafe { *(&storage as *const _ as *const libc::sockaddr_in) };
            let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(std::net::SocketAddr::new(ip.into(), u16::from_be(a.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this is a sockaddr_in6.
            let a = unsafe { *(&storage as *const _ as *const libc::sockaddr_in6) };
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(std::net::SocketAddr::new(ip.into(), u16::from_be(a.sin6_port)))
        }
        _ => None,
    }
}

/// The PROXY protocol header for a back end of the client connection on
/// `leg`: the client's and the vserver's addresses, and what its TLS
/// connection agreed. Built only for back ends whose net profile asks.
fn proxy_header(client_addr: &PeerAddr, leg: &Leg<TcpStream>, version: ProxyProtocolVersion) -> Vec<u8> {
    use super::proxy_header::{encode, Addrs, TlsFacts};
    let addrs = match (client_addr.resolve(), socket_addr(client_addr.fd, libc::getsockname)) {
        (Some(source), Some(dest)) => Some(Addrs { source, dest }),
        _ => None,
    };
    let (tls_version, cipher) = leg.version_and_cipher().unzip();
    let client_cert = leg.peer_certificates().is_some_and(|c| !c.is_empty());
    let facts = TlsFacts {
        sni: leg.server_name().map(str::to_string),
        alpn: leg.alpn().map(<[u8]>::to_vec),
        version: tls_version.map(str::to_string),
        cipher,
        sig_alg: None,
        key_alg: None,
        cert_conn: client_cert && leg.resumed() == Some(false),
        cert_sess: client_cert,
        client_cn: leg.peer_common_name(),
    };
    let mut out = Vec::with_capacity(128);
    encode(version.into(), addrs, leg.is_tls().then_some(&facts), &mut out);
    out
}

/// The access log line of a connection refused at accept.
pub(crate) fn log_refused(shard: &Shard, vserver: &str, peer: PeerAddr) {
    if let Some(log) = access_log::get() {
        log.push(&Record::refused(shard.id, vserver, peer.resolve()));
    }
}

impl ClientConn<'_> {
    /// Tell the core how the client side ended; forget sessions on a bad
    /// end (R8); write the access log line.
    fn finish(&self, kind: CloseKind, leg: Option<&Leg<TcpStream>>) {
        self.shard.unregister(self.id);
        if let Some(t) = &self.trace {
            self.log(t, kind, leg);
        }
        let out = self.shard.core.borrow_mut().on_close(self.id, kind, Instant::now());
        if out.drop_session {
            if let (Some(leg), Some(tls)) = (leg, &self.vs.tls) {
                if let Some(cache) = &tls.cache {
                    for k in &leg.notes.cache_keys {
                        cache.forget(k);
                    }
                }
                if let Some(t) = &tls.ticketer {
                    for id in &leg.notes.tickets {
                        t.revoke(*id);
                    }
                }
            }
        }
    }

    /// Set how the connection ended where its close kind will not tell:
    /// the shard's reason if it closed the connection, else `ending`.
    fn ended(&self, ending: Ending) {
        if let Some(t) = &self.trace {
            t.ending
                .set(Some(self.signal.fired().map_or(ending, Ending::of_reason)));
        }
    }

    fn log(&self, t: &Trace, kind: CloseKind, leg: Option<&Leg<TcpStream>>) {
        let established = t.handshake.get().is_some();
        let end = t
            .ending
            .get()
            .or(self.signal.fired().map(Ending::of_reason))
            .unwrap_or(Ending::of_kind(kind, established));
        let (tls, cipher) = leg.map_or((None, None), |l| l.negotiated_names());
        let (bytes_in, bytes_out) = t.bytes.get();
        t.log.push(&Record {
            shard: self.shard.id,
            vserver: &self.vs.spec.entity.name,
            client: self.client_addr.resolve(),
            sni: leg.and_then(|l| l.server_name()),
            alpn: leg.and_then(|l| l.alpn()),
            tls,
            cipher,
            resumed: if established {
                leg.and_then(|l| l.resumed())
            } else {
                None
            },
            handshake: t.handshake.get(),
            backend: t.backend.get(),
            bytes_in,
            bytes_out,
            duration: t.accepted.elapsed(),
            end,
            epoch: t.epoch.get(),
        });
    }
}

/// Send close_notify (or the fatal alert rustls queued for a refused
/// input) and FIN, bounded in time. True when delivered.
async fn close_gracefully(leg: &mut Leg<TcpStream>) -> bool {
    let shut = std::future::poll_fn(|cx| leg.poll_shutdown(cx));
    matches!(crate::rt::timeout(CLOSE_GRACE, shut).await, Ok(Ok(())))
}

/// Let go of a leg's socket and wait until it is closed; count it on
/// (`entity`, `epoch`) when its peer did not take what was written within
/// the linger deadline.
pub(crate) async fn release(shard: &Shard, entity: &EntityRef, epoch: Option<Epoch>, leg: Leg<TcpStream>) {
    if leg.into_io().release().await == Released::Reset {
        if let Some(epoch) = epoch {
            shard
                .core
                .borrow_mut()
                .on_closed_unflushed(entity, epoch, Instant::now());
        }
    }
}

/// The start of a client connection: where its first TLS bytes lie in the
/// buffer, and the client's address from a PROXY header, if one came.
struct Start {
    tls: std::ops::Range<usize>,
    source: Option<SocketAddr>,
}

/// Why a connection ended before its first TLS byte.
enum StartFailed {
    /// The client closed without sending anything (after its header, if any).
    Closed,
    Error(CloseKind, String),
    /// Its PROXY header was refused (counted and logged by the caller).
    ProxyRefused(CloseKind, String),
}

/// Read until the first TLS bytes are in `buf`, behind the PROXY header a
/// vserver with trusted networks expects (from those networks only). The
/// header and the first TLS byte both come within the vserver's
/// `-handshakeTimeout` of the accept: the header is part of the
/// connection's first bytes, and the epoch is bound after it (R2).
async fn read_start(c: &ClientConn<'_>, stream: &mut TcpStream, buf: &mut [u8]) -> Result<Start, StartFailed> {
    use super::proxy_header::{parse, Parsed};
    let trusted = c.vs.spec.proxy_trusted.as_deref();
    if let Some(nets) = trusted {
        let source = c.client_addr.resolve();
        if !source.is_some_and(|a| nets.iter().any(|n| n.contains(a.ip()))) {
            return Err(StartFailed::ProxyRefused(
                CloseKind::ProtocolError,
                "source is not in -proxyProtocolTrustedNetworks".into(),
            ));
        }
    }
    // The header once parsed: its length and the client's address in it.
    let mut header: Option<(usize, Option<SocketAddr>)> = None;
    let mut have = 0;
    let read = async {
        loop {
            let n = stream
                .read(&mut buf[have..])
                .await
                .map_err(|e| (classify(&e), e.to_string()))?;
            if n == 0 {
                return Ok(None);
            }
            have += n;
            if trusted.is_none() {
                return Ok(Some(0..have));
            }
            let start = match header {
                Some((len, _)) => len,
                None => match parse(&buf[..have]) {
                    Parsed::Incomplete if have < buf.len() => continue,
                    Parsed::Incomplete => return Err((CloseKind::ProtocolError, "oversized PROXY header".into())),
                    Parsed::Invalid(why) => return Err((CloseKind::ProtocolError, why.into())),
                    Parsed::Done { header: h, len } => {
                        header = Some((len, h.addrs.map(|a| a.source)));
                        len
                    }
                },
            };
            if start < have {
                return Ok(Some(start..have));
            }
        }
    };
    let hs_timeout = c.vs.spec.policy.handshake_timeout;
    let outcome = Box::pin(or(
        async {
            match crate::rt::timeout(hs_timeout, read).await {
                Ok(r) => r.map_err(Ok),
                Err(_) => Err(Err(None)),
            }
        },
        async { Err(Err(Some(c.signal.wait().await))) },
    ))
    .await;
    let awaiting_header = trusted.is_some() && header.is_none();
    match outcome {
        Ok(Some(tls)) => Ok(Start {
            tls,
            source: header.and_then(|(_, source)| source),
        }),
        Ok(None) if awaiting_header && have > 0 => Err(StartFailed::ProxyRefused(
            CloseKind::ProtocolError,
            "connection closed inside the PROXY header".into(),
        )),
        Ok(None) => Err(StartFailed::Closed),
        Err(Ok((kind, why))) if awaiting_header && kind == CloseKind::ProtocolError => {
            Err(StartFailed::ProxyRefused(kind, why))
        }
        Err(Ok((kind, why))) => Err(StartFailed::Error(kind, why)),
        Err(Err(None | Some(CloseReason::HandshakeTimeout))) if awaiting_header => Err(StartFailed::ProxyRefused(
            CloseKind::Timeout,
            "PROXY header not complete within the handshake timeout".into(),
        )),
        Err(Err(None)) => Err(StartFailed::Error(
            CloseKind::Timeout,
            "no ClientHello before the handshake timeout".into(),
        )),
        Err(Err(Some(reason))) => Err(StartFailed::Error(
            CloseKind::Killed,
            format!("closed before the handshake ({reason:?})"),
        )),
    }
}

pub(crate) async fn serve_client(
    shard: &Rc<Shard>,
    vs: Rc<ShardVserver>,
    mut stream: TcpStream,
    addr: Option<SocketAddr>,
) {
    let accepted = Instant::now();
    let mut peer = PeerAddr {
        addr,
        fd: std::os::fd::AsRawFd::as_raw_fd(&stream),
    };
    let trace = Trace::new(accepted);
    // The access log needs the address after the socket may be reset:
    // look it up now. This is where the connection learns its client's address.
    if trace.is_some() {
        peer.addr = peer.resolve();
    }
    let id = match shard.core.borrow_mut().on_accept(&vs.spec.entity, accepted) {
        Ok(id) => id,
        Err(_) => {
            shard.counters.refused.set(shard.counters.refused.get() + 1);
            debug!(shard = shard.id, vserver = %vs.spec.entity.name, %peer, "refused: vserver full or disabled");
            log_refused(shard, &vs.spec.entity.name, peer);
            return;
        }
    };
    // TCP_NODELAY is inherited from the listening socket.
    stream.set_linger(vs.spec.policy.handshake_timeout);
    let signal = shard.register(id);
    let mut c = ClientConn {
        shard,
        vs: &vs,
        id,
        client_addr: peer,
        signal: &signal,
        trace,
    };
    if vs.spec.passthrough {
        return Box::pin(passthrough::serve(&c, stream, &signal)).await;
    }

    // Wait for the first byte: only then is the connection bound to an epoch (R2).
    // Heap, not the future's own state: it is dropped once fed to rustls,
    // so an established connection does not keep it.
    let mut first = vec![0u8; 1536];
    // Short-lived steps are boxed so the connection's future stays as small
    // as its long-lived proxying state (memory per idle connection).
    let tls_bytes = match Box::pin(read_start(&c, &mut stream, &mut first)).await {
        Ok(Start { tls, source }) => {
            if let Some(source) = source {
                c.client_addr.addr = Some(source);
            }
            tls
        }
        Err(StartFailed::Closed) => {
            c.finish(CloseKind::Clean, None);
            return;
        }
        Err(StartFailed::Error(kind, why)) => {
            debug!(shard = shard.id, peer = %c.client_addr, "{why}");
            c.finish(kind, None);
            return;
        }
        Err(StartFailed::ProxyRefused(kind, why)) => {
            shard
                .core
                .borrow_mut()
                .on_proxy_header_refused(&vs.spec.entity, Instant::now());
            if logs::allow(Cause::ProxyHeaderRefused, Instant::now()) {
                info!(shard = shard.id, peer = %c.client_addr, vserver = %vs.spec.entity.name, "PROXY header refused: {why}");
            }
            c.ended(Ending::Refused);
            c.finish(kind, None);
            return;
        }
    };

    let handshake_started = Instant::now();
    let epoch = shard.core.borrow_mut().on_handshake_start(id, handshake_started);
    if let Some(t) = &c.trace {
        t.epoch.set(Some(epoch));
    }
    // The shard's config always belongs to the core's current epoch; a
    // mismatch means the vserver changed under us: start over is not
    // possible, so refuse this connection.
    let Some(tls) = vs.tls.clone().filter(|t| t.epoch == epoch).or_else(|| {
        shard
            .vserver(&vs.spec.entity.name)
            .and_then(|v| v.tls.clone())
            .filter(|t| t.epoch == epoch)
    }) else {
        info!(shard = shard.id, peer = %c.client_addr, vserver = %vs.spec.entity.name, "no TLS config for epoch {epoch}");
        c.finish(CloseKind::Killed, None);
        return;
    };
    let mut leg = match Leg::server(stream, tls.config.clone()) {
        Ok(l) => l,
        Err(e) => {
            info!(shard = shard.id, peer = %c.client_addr, "TLS setup failed: {e}");
            c.finish(CloseKind::ProtocolError, None);
            return;
        }
    };
    if let Err(e) = leg.feed(&first[tls_bytes]) {
        // Logged while the peer's address can still be looked up.
        if logs::allow(Cause::HandshakeFailed, Instant::now()) {
            info!(shard = shard.id, peer = %c.client_addr, vserver = %vs.spec.entity.name, "handshake failed: {e}");
        }
        // Accounted for at once (the close kind does not depend on the
        // close); then the alert and FIN: the peer never waits on a silent socket.
        c.finish(classify(&e), Some(&leg));
        Box::pin(close_gracefully(&mut leg)).await;
        Box::pin(release(shard, &vs.spec.entity, Some(epoch), leg)).await;
        return;
    }
    // The ClientHello's first bytes are in rustls now.
    drop(first);

    // Handshake, interruptible by the shard (R2 kill, handshake timeout, R7).
    let hs = Box::pin(or(
        async { std::future::poll_fn(|cx| leg.poll_handshake(cx)).await.map_err(Ok) },
        async { Err(Err(signal.wait().await)) },
    ))
    .await;
    match hs {
        Ok(()) => {}
        Err(Ok(e)) => {
            if logs::allow(Cause::HandshakeFailed, Instant::now()) {
                info!(shard = shard.id, peer = %c.client_addr, vserver = %vs.spec.entity.name, "handshake failed: {e}");
            }
            c.finish(classify(&e), Some(&leg));
            Box::pin(close_gracefully(&mut leg)).await;
            Box::pin(release(shard, &vs.spec.entity, Some(epoch), leg)).await;
            return;
        }
        Err(Err(reason)) => {
            let kind = if reason == CloseReason::HandshakeTimeout {
                CloseKind::Timeout
            } else {
                CloseKind::Killed
            };
            debug!(shard = shard.id, peer = %c.client_addr, "handshake ended by the shard: {reason:?}");
            // Accounted for at once, so the epoch drains without waiting on
            // the peer; then close_notify (plain or under the handshake keys) and FIN.
            c.finish(kind, Some(&leg));
            Box::pin(close_gracefully(&mut leg)).await;
            Box::pin(release(shard, &vs.spec.entity, Some(epoch), leg)).await;
            return;
        }
    }
    if leg.notes.refused_resumption {
        shard
            .core
            .borrow_mut()
            .on_refused_resumption(&vs.spec.entity, Instant::now());
    }
    let resumed = leg.resumed().unwrap_or(false);
    if shard
        .core
        .borrow_mut()
        .on_established(id, resumed, Instant::now())
        .is_err()
    {
        // Its epoch retired between the first byte and now: R2.
        c.finish(CloseKind::Killed, Some(&leg));
        Box::pin(close_gracefully(&mut leg)).await;
        Box::pin(release(shard, &vs.spec.entity, Some(epoch), leg)).await;
        return;
    }

    let handshake_time = handshake_started.elapsed();
    vs.metrics.handshake.observe(handshake_time);
    if let Some(t) = &c.trace {
        t.handshake.set(Some(handshake_time));
    }
    debug!(shard = shard.id, peer = %c.client_addr, epoch, resumed, "handshake complete");
    let header = |version| proxy_header(&c.client_addr, &leg, version);
    let mut backend = match Box::pin(backends::connect(shard, &vs, &signal, &header)).await {
        Ok(b) => b,
        Err(e) => {
            if logs::allow(Cause::NoBackend, Instant::now()) {
                info!(shard = shard.id, peer = %c.client_addr, vserver = %vs.spec.entity.name, "no back end: {e}");
            }
            c.ended(Ending::NoBackend);
            let kind = if Box::pin(close_gracefully(&mut leg)).await {
                CloseKind::Clean
            } else {
                CloseKind::PeerReset
            };
            c.finish(kind, Some(&leg));
            Box::pin(release(shard, &vs.spec.entity, Some(epoch), leg)).await;
            return;
        }
    };

    debug!(shard = shard.id, peer = %c.client_addr, backend = %backend.addr, "proxying");
    if let Some(t) = &c.trace {
        t.backend.set(Some(backend.addr));
    }
    let (end, up, down) = Proxy::new(&mut leg, &mut backend.leg, &signal, vs.spec.idle_timeout).await;
    shard.counters.bytes_up.set(shard.counters.bytes_up.get() + up);
    shard.counters.bytes_down.set(shard.counters.bytes_down.get() + down);
    if let Some(t) = &c.trace {
        t.bytes.set((up, down));
    }
    debug!(shard = shard.id, peer = %c.client_addr, up, down, "proxy ended: {end:?}");
    Box::pin(finish_proxied(&c, epoch, leg, backend, end, &signal)).await;
}

async fn finish_proxied(
    c: &ClientConn<'_>,
    epoch: Epoch,
    mut leg: Leg<TcpStream>,
    mut backend: Backend,
    end: ProxyEnd,
    _signal: &ConnSignal,
) {
    let (front_kind, back_kind) = match end {
        ProxyEnd::Done => (
            if leg.sent_close_notify() || !leg.is_tls() {
                CloseKind::Clean
            } else {
                CloseKind::PeerReset
            },
            CloseKind::Clean,
        ),
        ProxyEnd::Killed(reason) => {
            c.ended(Ending::of_reason(reason));
            // R7 / R12: close_notify to both, then close.
            let back_ok = close_gracefully(&mut backend.leg).await;
            let front_ok = close_gracefully(&mut leg).await;
            debug!(shard = c.shard.id, peer = %c.client_addr, "closed by the shard: {reason:?}");
            (
                if front_ok {
                    CloseKind::Clean
                } else {
                    CloseKind::PeerReset
                },
                if back_ok {
                    CloseKind::Clean
                } else {
                    CloseKind::PeerReset
                },
            )
        }
        ProxyEnd::IdleTimeout => {
            c.ended(Ending::IdleTimeout);
            close_gracefully(&mut backend.leg).await;
            close_gracefully(&mut leg).await;
            if logs::allow(Cause::IdleTimeout, Instant::now()) {
                info!(shard = c.shard.id, peer = %c.client_addr, "idle timeout");
            }
            (CloseKind::Timeout, CloseKind::Timeout)
        }
        ProxyEnd::ClientError(e) => {
            if leg.peer_end() == PeerEnd::Open && logs::allow(Cause::ClientFailed, Instant::now()) {
                info!(shard = c.shard.id, peer = %c.client_addr, vserver = %c.vs.spec.entity.name, "client connection failed: {e}");
            } else {
                debug!(shard = c.shard.id, peer = %c.client_addr, "client closed before our close_notify: {e}");
            }
            // The alert queued for a refused record, then FIN (fails fast on a reset socket).
            close_gracefully(&mut leg).await;
            let back_ok = close_gracefully(&mut backend.leg).await;
            (
                classify(&e),
                if back_ok {
                    CloseKind::Clean
                } else {
                    CloseKind::PeerReset
                },
            )
        }
        ProxyEnd::BackendError(e) => {
            c.ended(Ending::BackendReset);
            if logs::allow(Cause::BackendFailed, Instant::now()) {
                info!(shard = c.shard.id, peer = %c.client_addr, backend = %backend.addr, "back-end connection failed: {e}");
            }
            let front_ok = close_gracefully(&mut leg).await;
            close_gracefully(&mut backend.leg).await;
            (
                if front_ok {
                    CloseKind::Clean
                } else {
                    CloseKind::PeerReset
                },
                classify(&e),
            )
        }
    };
    let back_epoch = backend.finish(c.shard, back_kind);
    c.finish(front_kind, Some(&leg));
    let Backend {
        leg: back_leg, service, ..
    } = backend;
    futures_lite::future::zip(
        release(c.shard, &c.vs.spec.entity, Some(epoch), leg),
        release(c.shard, &service.spec.entity, back_epoch, back_leg),
    )
    .await;
}
