//! The shell of one shard (one [`crate::rt`] runtime thread pinned to one core).
//!
//! A shard owns its listeners (one `SO_REUSEPORT` socket per vserver), its
//! connections, its rustls configs per (entity, epoch) with their shard-local
//! caches, and one IO-free [`ShardCore`] that decides what happens to which
//! connection. It receives snapshots from the control plane, applies them
//! (R1-R4, R7), and acknowledges. Nothing on the per-connection path is
//! shared with other shards or locked: all state is `Rc`/`RefCell` local to
//! the executor's thread.
//!
//! It does not parse configuration or decide epochs; the control plane does.

mod backends;
mod conn;
mod logs;
mod proxy;
pub mod proxy_header;
mod signal;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::rt::net::TcpListener;
use crate::rt::{spawn_local, Receiver, Sender, Task};
use tracing::{info, warn};

use crate::core::{CloseReason, ConnId, Histogram, HistogramSnapshot, ShardCore, ShardStats};
use crate::snapshot::{ServiceSpec, Snapshot, VserverSpec};
use crate::tls::{ShardClientConfig, ShardServerConfig};
pub use signal::ConnSignal;

/// Control plane to shard.
pub enum ShardMsg {
    /// Apply a new snapshot (R6: reply only once applied).
    Apply(Arc<Snapshot>),
    /// Report statistics and latency histograms.
    Stats,
    /// Stop accepting, let connections finish within the deadline, then stop.
    Drain(Duration),
}

/// Shard to control plane.
#[derive(Debug)]
pub enum ShardReply {
    Applied {
        shard: usize,
        generation: u64,
        killed: usize,
        draining: usize,
        took: Duration,
        errors: Vec<String>,
    },
    Stats(Box<ShardReport>),
    Drained {
        shard: usize,
        remaining: usize,
    },
}

/// A vserver as this shard serves it.
pub(crate) struct ShardVserver {
    pub spec: Arc<VserverSpec>,
    pub tls: Option<ShardServerConfig>,
    /// Round-robin position over the vserver's back-end members.
    pub rr: Cell<usize>,
    /// Kept while the vserver stays in the configuration.
    pub metrics: Rc<VserverMetrics>,
}

/// A service or serviceGroup as this shard uses it.
pub(crate) struct ShardService {
    pub spec: Arc<ServiceSpec>,
    pub tls: Option<ShardClientConfig>,
    /// Kept while the service stays in the configuration.
    pub metrics: Rc<PoolMetrics>,
}

/// Latency histograms of one vserver on this shard.
pub(crate) struct VserverMetrics {
    /// First byte from the client to the handshake complete (and bound to
    /// a live epoch), for handshakes that completed.
    pub handshake: Histogram,
    /// Accept to close, for every accepted client connection.
    pub lifetime: Histogram,
}

impl Default for VserverMetrics {
    fn default() -> Self {
        VserverMetrics {
            handshake: Histogram::new(crate::core::LATENCY_BUCKETS),
            lifetime: Histogram::new(crate::core::LIFETIME_BUCKETS),
        }
    }
}

/// Latency histograms of one service or serviceGroup on this shard.
pub(crate) struct PoolMetrics {
    /// TCP connect plus TLS handshake to a member, for connections that
    /// were established.
    pub connect: Histogram,
}

impl Default for PoolMetrics {
    fn default() -> Self {
        PoolMetrics {
            connect: Histogram::new(crate::core::LATENCY_BUCKETS),
        }
    }
}

/// One shard's statistics: its shell counters, its core's report and its
/// latency histograms. The control plane turns these into `/stats` JSON
/// ([`ShardReport::to_json`]) and `/metrics`.
#[derive(Debug)]
pub struct ShardReport {
    pub shard: usize,
    pub live_client_connections: usize,
    pub accepted: u64,
    pub refused: u64,
    pub backend_failures: u64,
    pub health_probes: u64,
    pub members_down: Vec<std::net::SocketAddr>,
    pub bytes_client_to_backend: u64,
    pub bytes_backend_to_client: u64,
    /// Socket and listener descriptors the shard's runtime owns.
    pub open_fds: u64,
    /// Sockets of any kind (client, back end) the shard reset at their
    /// linger deadline with bytes unsent.
    pub unflushed_resets: u64,
    /// Receive buffers of sockets' own, held while the pool was dry.
    pub recv_private_buffers: u64,
    pub core: ShardStats,
    /// Per vserver, sorted by name.
    pub vservers: Vec<VserverLatency>,
    /// Per service or serviceGroup, sorted by name.
    pub services: Vec<ServiceLatency>,
}

/// A vserver's latency histograms on one shard.
#[derive(Debug)]
pub struct VserverLatency {
    pub name: String,
    pub handshake: HistogramSnapshot,
    pub lifetime: HistogramSnapshot,
}

/// A service's or serviceGroup's latency histograms on one shard.
#[derive(Debug)]
pub struct ServiceLatency {
    pub name: String,
    pub connect: HistogramSnapshot,
}

impl ShardReport {
    /// This shard's part of `/stats`.
    pub fn to_json(&self) -> serde_json::Value {
        let core = serde_json::to_value(&self.core).unwrap_or(serde_json::Value::Null);
        serde_json::json!({
            "shard": self.shard,
            "live_client_connections": self.live_client_connections,
            "accepted": self.accepted,
            "refused": self.refused,
            "backend_failures": self.backend_failures,
            "health_probes": self.health_probes,
            "members_down": self.members_down.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "bytes_client_to_backend": self.bytes_client_to_backend,
            "bytes_backend_to_client": self.bytes_backend_to_client,
            "open_fds": self.open_fds,
            "unflushed_resets": self.unflushed_resets,
            "recv_private_buffers": self.recv_private_buffers,
            "core": core,
        })
    }
}

/// Counters the core does not keep.
#[derive(Default)]
pub(crate) struct ShellCounters {
    pub accepted: Cell<u64>,
    pub refused: Cell<u64>,
    pub backend_failures: Cell<u64>,
    /// Health probes sent to members marked down.
    pub health_probes: Cell<u64>,
    pub bytes_up: Cell<u64>,
    pub bytes_down: Cell<u64>,
}

/// A vserver's listener on this shard: its address and accept task.
type Listening = (std::net::SocketAddr, Task<()>);

/// One shard's state, shared by its tasks (never across threads).
pub struct Shard {
    pub id: usize,
    pub(crate) core: RefCell<ShardCore>,
    signals: RefCell<HashMap<ConnId, Rc<ConnSignal>>>,
    vservers: RefCell<HashMap<Arc<str>, Rc<ShardVserver>>>,
    listeners: RefCell<HashMap<Arc<str>, Listening>>,
    services: RefCell<HashMap<Arc<str>, Rc<ShardService>>>,
    pub(crate) counters: ShellCounters,
    /// Health of back-end members, by address (see `backends`).
    health: RefCell<HashMap<std::net::SocketAddr, backends::MemberHealth>>,
    /// Client connections open on this shard.
    live: Cell<usize>,
    /// Most client connections this shard keeps open (from `RLIMIT_NOFILE`,
    /// see [`client_connection_limit`]); more are closed at accept.
    max_live: usize,
    limit_warned: Cell<Option<Instant>>,
    draining: Cell<bool>,
}

impl Shard {
    pub fn new(id: usize, max_live: usize) -> Rc<Self> {
        Rc::new(Shard {
            id,
            core: RefCell::new(ShardCore::new(id)),
            signals: RefCell::new(HashMap::new()),
            vservers: RefCell::new(HashMap::new()),
            listeners: RefCell::new(HashMap::new()),
            services: RefCell::new(HashMap::new()),
            counters: ShellCounters::default(),
            health: RefCell::new(HashMap::new()),
            live: Cell::new(0),
            max_live,
            limit_warned: Cell::new(None),
            draining: Cell::new(false),
        })
    }

    pub(crate) fn register(&self, id: ConnId) -> Rc<ConnSignal> {
        let s = Rc::new(ConnSignal::default());
        self.signals.borrow_mut().insert(id, s.clone());
        s
    }

    pub(crate) fn unregister(&self, id: ConnId) {
        self.signals.borrow_mut().remove(&id);
    }

    fn fire(&self, ids: impl IntoIterator<Item = ConnId>, reason: CloseReason) -> usize {
        let signals = self.signals.borrow();
        let mut n = 0;
        for id in ids {
            if let Some(s) = signals.get(&id) {
                s.fire(reason);
                n += 1;
            }
        }
        n
    }

    pub(crate) fn vserver(&self, name: &str) -> Option<Rc<ShardVserver>> {
        self.vservers.borrow().get(name).cloned()
    }

    /// SIGTERM has started: no new connections, no new probes.
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.get()
    }

    pub(crate) fn service(&self, name: &str) -> Option<Rc<ShardService>> {
        self.services.borrow().get(name).cloned()
    }

    /// Bring the core's view of one entity in line with its spec: open the
    /// new epoch (R1, R2, R12) and apply enable/disable (R7). Returns
    /// (handshakes killed, established connections now draining).
    fn sync_entity(
        &self,
        entity: &crate::config::EntityRef,
        epoch: crate::config::Epoch,
        policy: &crate::core::EpochPolicy,
        enabled: bool,
        now: Instant,
    ) -> (usize, usize) {
        let ch = self.core.borrow_mut().set_epoch(entity, epoch, policy.clone(), now);
        let killed = self.fire(ch.killed, CloseReason::EpochChanged);
        if enabled {
            self.core.borrow_mut().enable(entity);
        } else {
            let ids = self.core.borrow_mut().disable(entity, now);
            self.fire(ids, CloseReason::Disabled);
        }
        (killed, ch.draining)
    }

    /// Close every connection of entities that left the configuration.
    fn close_removed(&self, gone: Vec<crate::config::EntityRef>) {
        for e in gone {
            let ids = self.core.borrow_mut().remove_entity(&e);
            self.fire(ids, CloseReason::Disabled);
        }
    }

    /// Apply a snapshot: new epochs, disables, removals, listeners.
    pub fn apply(self: &Rc<Self>, snap: &Snapshot) -> ShardReply {
        let started = Instant::now();
        let now = started;
        let mut killed = 0;
        let mut draining = 0;
        let mut errors = Vec::new();

        // Back ends first, so a vserver never picks a service this shard lacks.
        let mut services = HashMap::new();
        for (name, spec) in &snap.services {
            let old = self.service(name);
            let tls = keep_or_build(
                &spec.tls,
                old.as_ref().and_then(|o| o.tls.as_ref()),
                |c| c.epoch,
                |t| t.epoch,
                |t| t.shard_config(),
            );
            let (k, d) = self.sync_entity(&spec.entity, spec.epoch, &spec.policy, spec.enabled, now);
            killed += k;
            draining += d;
            let metrics = old.as_ref().map(|o| o.metrics.clone()).unwrap_or_default();
            services.insert(
                name.clone(),
                Rc::new(ShardService {
                    spec: spec.clone(),
                    tls,
                    metrics,
                }),
            );
        }
        let gone: Vec<_> = self
            .services
            .borrow()
            .iter()
            .filter(|(n, _)| !snap.services.contains_key(*n))
            .map(|(_, p)| p.spec.entity.clone())
            .collect();
        self.close_removed(gone);
        *self.services.borrow_mut() = services;

        let mut vservers = HashMap::new();
        for (name, spec) in &snap.vservers {
            let old = self.vserver(name);
            let tls = keep_or_build(
                &spec.tls,
                old.as_ref().and_then(|o| o.tls.as_ref()),
                |c| c.epoch,
                |t| t.epoch,
                |t| t.shard_config(),
            );
            let (k, d) = self.sync_entity(&spec.entity, spec.epoch, &spec.policy, spec.enabled, now);
            killed += k;
            draining += d;
            let rr = old.as_ref().map(|o| o.rr.get()).unwrap_or(self.id);
            let metrics = old.as_ref().map(|o| o.metrics.clone()).unwrap_or_default();
            vservers.insert(
                name.clone(),
                Rc::new(ShardVserver {
                    spec: spec.clone(),
                    tls,
                    rr: Cell::new(rr),
                    metrics,
                }),
            );
        }
        let gone: Vec<_> = self
            .vservers
            .borrow()
            .iter()
            .filter(|(n, _)| !snap.vservers.contains_key(*n))
            .map(|(_, v)| v.spec.entity.clone())
            .collect();
        self.close_removed(gone);
        *self.vservers.borrow_mut() = vservers;
        self.sync_listeners(&mut errors);

        ShardReply::Applied {
            shard: self.id,
            generation: snap.generation,
            killed,
            draining,
            took: started.elapsed(),
            errors,
        }
    }

    /// Open listeners for serving vservers, close the others.
    fn sync_listeners(self: &Rc<Self>, errors: &mut Vec<String>) {
        let wanted: Vec<(Arc<str>, std::net::SocketAddr)> = if self.draining.get() {
            Vec::new()
        } else {
            self.vservers
                .borrow()
                .iter()
                .filter(|(_, v)| v.spec.enabled && (v.tls.is_some() || v.spec.passthrough))
                .map(|(n, v)| (n.clone(), v.spec.addr))
                .collect()
        };
        let mut listeners = self.listeners.borrow_mut();
        listeners.retain(|name, (addr, _)| wanted.iter().any(|(n, a)| n == name && a == addr));
        for (name, addr) in wanted {
            if listeners.contains_key(&name) {
                continue;
            }
            match bind_listener(addr) {
                Ok(l) => {
                    let task = spawn_local(accept_loop(self.clone(), name.clone(), l));
                    listeners.insert(name, (addr, task));
                }
                Err(e) => {
                    let msg = format!("shard {}: vserver {name} cannot listen on {addr}: {e}", self.id);
                    warn!("{msg}");
                    errors.push(msg);
                }
            }
        }
    }

    /// Fire due timers (handshake timeouts, drain deadlines); summarise the
    /// log lines held back in the last second.
    fn tick(&self) {
        let now = Instant::now();
        logs::flush(self.id, now);
        let due = self.core.borrow_mut().poll_timeouts(now);
        let signals = self.signals.borrow();
        for (id, reason) in due {
            if let Some(s) = signals.get(&id) {
                s.fire(reason);
            }
        }
    }

    pub fn report(&self) -> ShardReport {
        let c = &self.counters;
        let mut vservers: Vec<VserverLatency> = self
            .vservers
            .borrow()
            .iter()
            .map(|(name, v)| VserverLatency {
                name: name.to_string(),
                handshake: v.metrics.handshake.snapshot(),
                lifetime: v.metrics.lifetime.snapshot(),
            })
            .collect();
        vservers.sort_by(|a, b| a.name.cmp(&b.name));
        let mut services: Vec<ServiceLatency> = self
            .services
            .borrow()
            .iter()
            .map(|(name, p)| ServiceLatency {
                name: name.to_string(),
                connect: p.metrics.connect.snapshot(),
            })
            .collect();
        services.sort_by(|a, b| a.name.cmp(&b.name));
        let rt = crate::rt::loop_stats().unwrap_or_default();
        ShardReport {
            shard: self.id,
            live_client_connections: self.live.get(),
            accepted: c.accepted.get(),
            refused: c.refused.get(),
            backend_failures: c.backend_failures.get(),
            health_probes: c.health_probes.get(),
            members_down: self.members_down(),
            bytes_client_to_backend: c.bytes_up.get(),
            bytes_backend_to_client: c.bytes_down.get(),
            open_fds: rt.open_fds,
            unflushed_resets: rt.closed_unflushed,
            recv_private_buffers: rt.recv_private_buffers,
            core: self.core.borrow().stats(),
            vservers,
            services,
        }
    }

    /// SIGTERM: stop accepting; connections finish or are closed at the deadline.
    async fn drain(self: &Rc<Self>, deadline: Duration) -> usize {
        self.draining.set(true);
        self.listeners.borrow_mut().clear();
        let until = Instant::now() + deadline;
        while self.live.get() > 0 && Instant::now() < until {
            crate::rt::sleep(Duration::from_millis(20)).await;
        }
        let remaining = self.live.get();
        if remaining > 0 {
            let ids: Vec<ConnId> = self.signals.borrow().keys().copied().collect();
            self.fire(ids, CloseReason::DrainTimeout);
            let grace = Instant::now() + Duration::from_secs(1);
            while self.live.get() > 0 && Instant::now() < grace {
                crate::rt::sleep(Duration::from_millis(10)).await;
            }
        }
        remaining
    }
}

/// The shard's rustls config for an entity: kept while its epoch is the
/// spec's (warm caches, R5), built afresh with empty caches otherwise (R3, R4).
fn keep_or_build<S, C: Clone>(
    spec: &Option<Arc<S>>,
    current: Option<&C>,
    epoch_of_config: impl Fn(&C) -> crate::config::Epoch,
    epoch_of_spec: impl Fn(&S) -> crate::config::Epoch,
    build: impl Fn(&S) -> C,
) -> Option<C> {
    let spec = spec.as_ref()?;
    match current {
        Some(c) if epoch_of_config(c) == epoch_of_spec(spec) => Some(c.clone()),
        _ => Some(build(spec)),
    }
}

/// Backlog of each vserver listener (capped by net.core.somaxconn).
pub const LISTEN_BACKLOG: i32 = 4096;

/// A `SO_REUSEPORT` listener for one shard, with `TCP_NODELAY` set so every
/// accepted socket inherits it.
fn bind_listener(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    use std::os::fd::{FromRawFd, IntoRawFd};
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_port(true)?;
    sock.set_reuse_address(true)?;
    sock.set_nodelay(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(LISTEN_BACKLOG)?;
    // SAFETY: a bound, listening TCP socket whose ownership moves here.
    Ok(unsafe { TcpListener::from_raw_fd(sock.into_raw_fd()) })
}

/// Client connections one shard may hold when each takes two descriptors
/// (client and back end): the soft `RLIMIT_NOFILE`, less a reserve for
/// listeners, the admin API and files, shared by `shards`; at least 16.
pub fn client_connection_limit(shards: usize) -> usize {
    // SAFETY: getrlimit fills the struct it is given.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur
    } else {
        1024
    };
    let soft = usize::try_from(soft).unwrap_or(usize::MAX / 4).min(usize::MAX / 4);
    (soft.saturating_sub(FD_RESERVE) / 2 / shards.max(1)).max(16)
}

/// Descriptors kept aside from client connections (listeners, admin, files).
const FD_RESERVE: usize = 128;

impl Shard {
    /// One warning per second at most while the shard is at its limit.
    fn note_at_limit(&self, vserver: &str) {
        let now = Instant::now();
        let last = self.limit_warned.get();
        if last.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
            self.limit_warned.set(Some(now));
            warn!(
                shard = self.id,
                vserver,
                "{} client connections open, the most this shard keeps (ulimit -n); new ones are closed",
                self.max_live
            );
        }
    }
}

/// Pause after a failed accept (out of descriptors, ...) before the next.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(50);

/// Accept for ever: a multishot accept hands over bursts of connections
/// without a system call each; every connection gets a task of its own.
async fn accept_loop(shard: Rc<Shard>, name: Arc<str>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                shard.counters.accepted.set(shard.counters.accepted.get() + 1);
                if shard.live.get() >= shard.max_live {
                    // Out of descriptors soon: refuse this one (closed at
                    // once) rather than fail accepts and back ends later.
                    shard.counters.refused.set(shard.counters.refused.get() + 1);
                    shard.note_at_limit(&name);
                    let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
                    conn::log_refused(&shard, &name, conn::PeerAddr { addr: None, fd });
                    continue;
                }
                let Some(vs) = shard.vserver(&name) else { continue };
                let s = shard.clone();
                let fut = async move {
                    s.live.set(s.live.get() + 1);
                    let (opened, metrics) = (Instant::now(), vs.metrics.clone());
                    conn::serve_client(&s, vs, stream, None).await;
                    metrics.lifetime.observe(opened.elapsed());
                    s.live.set(s.live.get() - 1);
                };
                spawn_local(fut).detach();
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!(shard = shard.id, vserver = %name, "accept failed: {e}");
                crate::rt::sleep(ACCEPT_RETRY_DELAY).await;
            }
        }
    }
}

/// How often due timers (handshake timeouts, drain deadlines) are checked.
const TICK: Duration = Duration::from_millis(20);

/// Run one shard until the control plane drains it. Control messages arrive
/// through the runtime's cross-thread channel, whose eventfd read is always
/// posted on the ring: a busy shard sees a new epoch on its next loop turn.
pub async fn run_shard(id: usize, max_live: usize, rx: Receiver<ShardMsg>, tx: Sender<ShardReply>) {
    let shard = Shard::new(id, max_live);
    let ticker = {
        let s = shard.clone();
        spawn_local(async move {
            loop {
                crate::rt::sleep(TICK).await;
                s.tick();
            }
        })
    };
    // A fault injected by the tests of fail-stop (tests/admin.rs).
    let panic_on_change = std::env::var("SHARDTLS_FAILPOINT").is_ok_and(|f| f == format!("shard-{id}-panic-on-change"));
    while let Some(msg) = rx.recv().await {
        match msg {
            ShardMsg::Apply(snap) => {
                if panic_on_change && snap.generation > 1 {
                    // Logged through the log writer thread: fail-stop must flush it.
                    tracing::error!("failpoint: shard {id} is about to panic");
                    panic!("failpoint: shard {id} panics on a change");
                }
                let reply = shard.apply(&snap);
                if tx.send(reply).is_err() {
                    break;
                }
            }
            ShardMsg::Stats => {
                if tx.send(ShardReply::Stats(Box::new(shard.report()))).is_err() {
                    break;
                }
            }
            ShardMsg::Drain(deadline) => {
                let remaining = shard.drain(deadline).await;
                info!(shard = id, remaining, "drained");
                let _ = tx.send(ShardReply::Drained { shard: id, remaining });
                break;
            }
        }
    }
    drop(ticker);
}
