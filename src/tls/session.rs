//! Session resumption state: shard-local session-ID caches, per-epoch ticket
//! keys shared by every shard, and shard-local back-end session stores.
//!
//! The rules this module carries:
//! - R3: caches and ticket keys belong to one (entity, epoch). A new epoch
//!   gets a new, empty cache and new keys, so nothing from before resumes; a
//!   client offering an old session gets a full handshake, not an error.
//! - R8: while rustls processes a connection's packets, every session it
//!   stores or ticket it issues is noted for that connection
//!   ([`SessionNotes`]). If the connection ends badly the shard forgets those
//!   sessions: cache entries locally, tickets through a revocation set that
//!   every shard consults.
//! - `-sessTimeout`: every ticket carries its issue time inside the sealed
//!   part, and every cache entry its own; a session older than the lifetime
//!   (at most [`MAX_SESSION_LIFETIME`]) is refused on every resumption, and
//!   back-end sessions are not offered past it. A session made while resuming
//!   another inherits that one's issue time, so a session's lifetime counts
//!   from its full handshake however often it is resumed.
//! - Ticket keys rotate within the epoch ([`EpochTicketer`]); a rotation is
//!   not a change: it touches no connection and no cache.
//!
//! Time here is a [`SessionClock`]: monotonic, so a wall clock step neither
//! revives nor ends a session, and manual in tests. The module does no IO and
//! knows nothing of connection states or epochs' timing.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_skiplist::SkipMap;
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};
use rustls::client::{ClientSessionStore, Tls12ClientSessionValue, Tls13ClientSessionValue};
use rustls::pki_types::ServerName;
use rustls::server::{ProducesTickets, StoresServerSessions};
use rustls::NamedGroup;
use zeroize::Zeroizing;

use super::local::ShardLocal;

/// The longest a session may live, whatever `-sessTimeout` says: RFC 8446's
/// cap on ticket lifetimes (7 days), in seconds.
pub const MAX_SESSION_LIFETIME: u32 = 604_800;

/// How often ticket keys rotate, at most: as rustls' own ticketer.
pub const TICKET_KEY_PERIOD: Duration = Duration::from_secs(6 * 3600);

/// Milliseconds on a monotonic clock: the time sessions age by and ticket
/// keys rotate by. [`SessionClock::system`] in the proxy; tests use
/// [`SessionClock::manual`] and move it with [`SessionClock::advance`].
#[derive(Clone, Debug, Default)]
pub struct SessionClock(Option<Arc<AtomicU64>>);

impl SessionClock {
    /// Time since the first use of any system clock in this process.
    pub fn system() -> Self {
        SessionClock(None)
    }

    /// A clock that stands still until advanced.
    pub fn manual() -> Self {
        SessionClock(Some(Arc::new(AtomicU64::new(0))))
    }

    /// Move a manual clock on; a system clock moves by itself.
    pub fn advance(&self, by: Duration) {
        if let Some(t) = &self.0 {
            t.fetch_add(by.as_millis() as u64, Ordering::Relaxed);
        }
    }

    pub fn now_ms(&self) -> u64 {
        match &self.0 {
            Some(t) => t.load(Ordering::Relaxed),
            None => {
                static BASE: OnceLock<Instant> = OnceLock::new();
                BASE.get_or_init(Instant::now).elapsed().as_millis() as u64
            }
        }
    }
}

/// `-sessTimeout` seconds as milliseconds, within 1 s..=[`MAX_SESSION_LIFETIME`].
fn lifetime_ms(secs: u32) -> u64 {
    u64::from(secs.clamp(1, MAX_SESSION_LIFETIME)) * 1000
}

/// Whether a session issued at `issued` is still good at `now`. One issued
/// "later" than now cannot come from this clock and is not.
fn within_lifetime(issued: u64, now: u64, lifetime_ms: u64) -> bool {
    now.checked_sub(issued).is_some_and(|age| age < lifetime_ms)
}

/// One issued ticket, as the revocation set knows it: its random AEAD nonce
/// and its issue time (sealed inside the ticket).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TicketId {
    pub nonce: [u8; 12],
    pub issued_ms: u64,
}

/// Sessions created, and resumptions refused, while processing one connection.
#[derive(Debug, Default)]
pub struct SessionNotes {
    /// Keys this connection stored in, or resumed from, the shard's
    /// session-ID cache.
    pub cache_keys: Vec<Vec<u8>>,
    /// Tickets issued to this connection, and the one it resumed with.
    pub tickets: Vec<TicketId>,
    /// The client offered a session that was not resumed (old epoch, evicted,
    /// revoked, expired or unknown).
    pub refused_resumption: bool,
    /// Issue time of the session this connection resumed: sessions it
    /// creates inherit it, so no chain of resumptions outlives the lifetime.
    pub resumed_issued_ms: Option<u64>,
    /// `-strictSNI`: no bound certificate covers the client's SNI (or it
    /// sent none), so the handshake is refused with `unrecognized_name`.
    /// The name as the client sent it; empty for none.
    pub sni_refused: Option<String>,
}

thread_local! {
    static CURRENT: RefCell<Option<SessionNotes>> = const { RefCell::new(None) };
}

/// Run `f` (a call into rustls) with `notes` as the current connection's notes.
pub(crate) fn with_notes<R>(notes: &mut SessionNotes, f: impl FnOnce() -> R) -> R {
    CURRENT.with(|c| *c.borrow_mut() = Some(std::mem::take(notes)));
    let r = f();
    if let Some(n) = CURRENT.with(|c| c.borrow_mut().take()) {
        *notes = n;
    }
    r
}

/// Note on the current connection that its SNI `sni` was refused
/// (`-strictSNI`; `None`: it sent none).
pub(crate) fn note_sni_refused(sni: Option<&str>) {
    note(|n| n.sni_refused = Some(sni.unwrap_or_default().to_string()));
}

fn note<R>(f: impl FnOnce(&mut SessionNotes) -> R) -> Option<R> {
    CURRENT.with(|c| {
        let mut c = c.try_borrow_mut().ok()?;
        c.as_mut().map(f)
    })
}

/// The issue time for a session created now: inherited from the session
/// the current connection resumed, else `now`.
fn issue_time(now: u64) -> u64 {
    note(|n| n.resumed_issued_ms).flatten().unwrap_or(now)
}

/// Note that the current connection resumed a session issued at `issued`.
fn note_resumed(issued: u64) {
    note(|n| {
        n.resumed_issued_ms = Some(n.resumed_issued_ms.map_or(issued, |t| t.min(issued)));
    });
}

/// Most sessions one shard keeps per (vserver, epoch).
const SERVER_CACHE_CAPACITY: usize = 16 * 1024;

struct CacheInner {
    /// Session key to (issue time, rustls' session value).
    map: HashMap<Vec<u8>, (u64, Vec<u8>)>,
    order: VecDeque<Vec<u8>>,
}

/// A shard-local session-ID cache for one (vserver, epoch).
pub struct ShardSessionCache {
    inner: ShardLocal<CacheInner>,
    lifetime_ms: u64,
    clock: SessionClock,
}

impl ShardSessionCache {
    /// Sessions live `lifetime` seconds (`-sessTimeout`).
    pub fn new(lifetime: u32) -> Arc<Self> {
        Self::with_clock(lifetime, SessionClock::system())
    }

    pub fn with_clock(lifetime: u32, clock: SessionClock) -> Arc<Self> {
        Arc::new(ShardSessionCache {
            inner: ShardLocal::new(CacheInner {
                map: HashMap::new(),
                order: VecDeque::new(),
            }),
            lifetime_ms: lifetime_ms(lifetime),
            clock,
        })
    }

    /// R8: forget a session stored by a connection that ended badly.
    pub fn forget(&self, key: &[u8]) {
        self.inner.with(|c| c.map.remove(key));
    }

    pub fn len(&self) -> usize {
        self.inner.with(|c| c.map.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The session under `key` if still within its lifetime (an expired
    /// one is dropped), removed from the cache when `take`.
    fn lookup(&self, key: &[u8], take: bool) -> Option<Vec<u8>> {
        let now = self.clock.now_ms();
        let found = self
            .inner
            .with(|c| {
                let &(issued, _) = c.map.get(key)?;
                if take || !within_lifetime(issued, now, self.lifetime_ms) {
                    let (_, v) = c.map.remove(key)?;
                    return within_lifetime(issued, now, self.lifetime_ms).then_some((issued, v));
                }
                c.map.get(key).map(|(_, v)| (issued, v.clone()))
            })
            .flatten();
        match found {
            Some((issued, v)) => {
                note_resumed(issued);
                Some(v)
            }
            None => {
                note(|n| n.refused_resumption = true);
                None
            }
        }
    }
}

impl fmt::Debug for ShardSessionCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ShardSessionCache")
    }
}

impl StoresServerSessions for ShardSessionCache {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        let issued = issue_time(self.clock.now_ms());
        let stored = self
            .inner
            .with(|c| {
                while c.map.len() >= SERVER_CACHE_CAPACITY {
                    match c.order.pop_front() {
                        Some(old) => {
                            c.map.remove(&old);
                        }
                        None => break,
                    }
                }
                if c.order.len() > 2 * SERVER_CACHE_CAPACITY {
                    // Drop order entries of sessions already taken or forgotten.
                    let map = &c.map;
                    c.order.retain(|k| map.contains_key(k));
                }
                c.order.push_back(key.clone());
                c.map.insert(key.clone(), (issued, value));
            })
            .is_some();
        if stored {
            note(|n| n.cache_keys.push(key));
        }
        stored
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        let v = self.lookup(key, false);
        if v.is_some() {
            // R8: a connection that resumed and then ends badly forgets
            // the session it resumed, as one that created it would.
            note(|n| n.cache_keys.push(key.to_vec()));
        }
        v
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.lookup(key, true)
    }

    fn can_cache(&self) -> bool {
        true
    }
}

/// Ticket keys of one (vserver, epoch), shared by every shard so a client
/// resumes on whichever shard it lands. A new epoch has new keys (R3).
///
/// Keys rotate every key period: the lifetime, or [`TICKET_KEY_PERIOD`] if
/// shorter. The key of period `n` is derived (HKDF-SHA256) from the epoch's
/// random secret and `n`, with its 4-byte key id, so every shard computes the
/// same keys from the clock alone: nothing is written when a key rotates and
/// the handshake path takes no lock. A ticket is sealed under the current
/// period's key and opens under it or the previous one, never an older one:
/// with the lifetime as the period every ticket lives out its lifetime; with
/// a lifetime over [`TICKET_KEY_PERIOD`] a ticket lives 6 to 12 hours.
///
/// A ticket is: key id (4) | random nonce (12) | sealed (issue time (8) |
/// rustls' state) | tag (16), ChaCha20-Poly1305 with the key id as AAD. The
/// nonce is random: it says nothing of when or where the ticket was made,
/// and names the ticket in the revocation set.
pub struct EpochTicketer {
    /// The epoch's secret: every period's key is derived from it.
    secret: hkdf::Prk,
    lifetime_ms: u64,
    period_ms: u64,
    /// When period 0 began.
    start_ms: u64,
    clock: SessionClock,
    rng: SystemRandom,
    /// R8: nonces of tickets of connections that ended badly, with the time
    /// after which the ticket is refused by age anyway.
    revoked: SkipMap<[u8; 12], u64>,
    /// The same tickets ordered by that time: they leave from the front
    /// once it passes, and past [`MAX_REVOKED`] the oldest leave to the
    /// watermark.
    revoked_by_expiry: SkipMap<(u64, [u8; 12]), ()>,
    /// Every ticket issued before this time is refused (0: none). Raised
    /// when the set is full, so a flood of resets bounds memory by refusing
    /// more tickets, never fewer (R8).
    refused_before_ms: AtomicU64,
    revoked_count: AtomicU64,
}

impl fmt::Debug for EpochTicketer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EpochTicketer")
            .field("lifetime_ms", &self.lifetime_ms)
            .field("period_ms", &self.period_ms)
            .finish()
    }
}

/// Key id and nonce, in the clear before the sealed part.
const TICKET_HEADER: usize = 4 + 12;
/// The issue time, first in the sealed part.
const ISSUED_LEN: usize = 8;

/// Most revoked tickets remembered one by one per (vserver, epoch).
const MAX_REVOKED: usize = 64 * 1024;

/// One key period's key and key id.
struct PeriodKey {
    id: [u8; 4],
    key: LessSafeKey,
}

/// Output length for [`hkdf::Prk::expand`]: a ChaCha20-Poly1305 key and a key id.
struct KeyAndId;

impl hkdf::KeyType for KeyAndId {
    fn len(&self) -> usize {
        32 + 4
    }
}

const KEY_LABEL: &[u8] = b"shardtls ticket key";

impl EpochTicketer {
    /// New random keys; tickets live `lifetime` seconds (`-sessTimeout`).
    pub fn new(lifetime: u32) -> Result<Arc<Self>, String> {
        Self::with_clock(lifetime, TICKET_KEY_PERIOD, SessionClock::system())
    }

    /// As [`EpochTicketer::new`], keys rotating every `key_period` at most, on `clock`.
    pub fn with_clock(lifetime: u32, key_period: Duration, clock: SessionClock) -> Result<Arc<Self>, String> {
        let rng = SystemRandom::new();
        let mut secret = Zeroizing::new([0u8; 32]);
        rng.fill(&mut secret[..])
            .map_err(|_| "no randomness for ticket keys".to_string())?;
        let lifetime_ms = lifetime_ms(lifetime);
        Ok(Arc::new(EpochTicketer {
            secret: hkdf::Prk::new_less_safe(hkdf::HKDF_SHA256, &secret[..]),
            lifetime_ms,
            period_ms: (key_period.as_millis() as u64).clamp(1, lifetime_ms),
            start_ms: clock.now_ms(),
            clock,
            rng,
            revoked: SkipMap::new(),
            revoked_by_expiry: SkipMap::new(),
            refused_before_ms: AtomicU64::new(0),
            revoked_count: AtomicU64::new(0),
        }))
    }

    fn period_at(&self, now: u64) -> u64 {
        now.saturating_sub(self.start_ms) / self.period_ms
    }

    /// The key of period `n`; the derived bytes are wiped once ring has them.
    fn period_key(&self, n: u64) -> Option<PeriodKey> {
        let n = n.to_be_bytes();
        let info = [KEY_LABEL, &n[..]];
        let okm = self.secret.expand(&info, KeyAndId).ok()?;
        let mut bytes = Zeroizing::new([0u8; 36]);
        okm.fill(&mut bytes[..]).ok()?;
        let key = UnboundKey::new(&aead::CHACHA20_POLY1305, &bytes[..32]).ok()?;
        let mut id = [0u8; 4];
        id.copy_from_slice(&bytes[32..]);
        Some(PeriodKey {
            id,
            key: LessSafeKey::new(key),
        })
    }

    /// The key a ticket with key id `id` was sealed under, if it is the
    /// current period's or the previous one's.
    fn key_for(&self, id: &[u8], now: u64) -> Option<PeriodKey> {
        let n = self.period_at(now);
        let current = self.period_key(n)?;
        if current.id[..] == *id {
            return Some(current);
        }
        let previous = self.period_key(n.checked_sub(1)?)?;
        (previous.id[..] == *id).then_some(previous)
    }

    /// R8: a ticket issued to a connection that ended badly never resumes.
    /// Held until its lifetime is over (from then on its age refuses it);
    /// O(log n) per call, at most [`MAX_REVOKED`] tickets held: past the
    /// bound the oldest is dropped and the watermark raised past its issue
    /// time, refusing every ticket issued up to it (a full handshake for
    /// those clients, never a resume).
    pub fn revoke(&self, id: TicketId) {
        let now = self.clock.now_ms();
        self.revoked_count.fetch_add(1, Ordering::Relaxed);
        let expiry = id.issued_ms.saturating_add(self.lifetime_ms);
        if expiry > now {
            self.revoked.insert(id.nonce, expiry);
            self.revoked_by_expiry.insert((expiry, id.nonce), ());
        }
        // Tickets past their lifetime are refused by age.
        while let Some(e) = self.revoked_by_expiry.front() {
            if e.key().0 > now {
                break;
            }
            self.forget_revoked(e.key());
            e.remove();
        }
        // Past the bound the oldest leaves, refused from now on by the
        // watermark instead.
        while self.revoked_by_expiry.len() > MAX_REVOKED {
            let Some(e) = self.revoked_by_expiry.pop_front() else {
                break;
            };
            let issued = e.key().0 - self.lifetime_ms;
            self.refused_before_ms.fetch_max(issued + 1, Ordering::Relaxed);
            self.forget_revoked(e.key());
        }
    }

    /// Drop `(expiry, nonce)` from the lookup map unless it was revoked again later.
    fn forget_revoked(&self, key: &(u64, [u8; 12])) {
        if let Some(e) = self.revoked.get(&key.1) {
            if *e.value() == key.0 {
                e.remove();
            }
        }
    }

    /// Revoked tickets held one by one (for tests and statistics).
    pub fn revoked_held(&self) -> usize {
        self.revoked.len()
    }

    pub fn revoked_total(&self) -> u64 {
        self.revoked_count.load(Ordering::Relaxed)
    }
}

impl ProducesTickets for EpochTicketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        (self.lifetime_ms / 1000) as u32
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let now = self.clock.now_ms();
        let issued = issue_time(now);
        let k = self.period_key(self.period_at(now))?;
        let mut nonce = [0u8; 12];
        self.rng.fill(&mut nonce).ok()?;
        let mut out = Vec::with_capacity(TICKET_HEADER + ISSUED_LEN + plain.len() + aead::MAX_TAG_LEN);
        out.extend_from_slice(&k.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&issued.to_be_bytes());
        out.extend_from_slice(plain);
        let tag = k
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&k.id),
                &mut out[TICKET_HEADER..],
            )
            .ok()?;
        out.extend_from_slice(tag.as_ref());
        note(|n| {
            n.tickets.push(TicketId {
                nonce,
                issued_ms: issued,
            })
        });
        Some(out)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        let refuse = || {
            note(|n| n.refused_resumption = true);
            None
        };
        if cipher.len() < TICKET_HEADER + ISSUED_LEN + aead::MAX_TAG_LEN {
            return refuse();
        }
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&cipher[4..TICKET_HEADER]);
        if !self.revoked.is_empty() && self.revoked.contains_key(&nonce) {
            return refuse();
        }
        let now = self.clock.now_ms();
        let Some(k) = self.key_for(&cipher[..4], now) else {
            return refuse();
        };
        let mut buf = cipher[TICKET_HEADER..].to_vec();
        let Ok(plain) = k
            .key
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(&k.id), &mut buf)
        else {
            return refuse();
        };
        let mut issued = [0u8; ISSUED_LEN];
        issued.copy_from_slice(&plain[..ISSUED_LEN]);
        let issued = u64::from_be_bytes(issued);
        let n = plain.len();
        if !within_lifetime(issued, now, self.lifetime_ms) || issued < self.refused_before_ms.load(Ordering::Relaxed) {
            return refuse();
        }
        buf.truncate(n);
        buf.drain(..ISSUED_LEN);
        // R8: revoked if the connection that resumed with it ends badly.
        note(|n| {
            n.tickets.push(TicketId {
                nonce,
                issued_ms: issued,
            })
        });
        note_resumed(issued);
        Some(buf)
    }
}

/// Back-end sessions saved for one server, each with the time it was saved.
#[derive(Default)]
struct ServerEntry {
    kx_hint: Option<NamedGroup>,
    tls12: Option<(u64, Tls12ClientSessionValue)>,
    tls13: VecDeque<(u64, Tls13ClientSessionValue)>,
}

/// Most TLS 1.3 tickets kept per back-end server.
const TLS13_TICKETS_PER_SERVER: usize = 4;
/// Most back-end servers remembered per (service, epoch) on one shard.
const CLIENT_STORE_SERVERS: usize = 1024;

/// A shard-local store of back-end sessions for one (service, epoch) (R4, R9).
///
/// A session is offered for the service's lifetime (`-sessTimeout`) after
/// it was saved, never later, whatever lifetime the back end announced
/// (rustls itself also drops tickets past the back end's lifetime hint).
pub struct ShardClientSessions {
    inner: ShardLocal<HashMap<ServerName<'static>, ServerEntry>>,
    lifetime_ms: u64,
    clock: SessionClock,
}

impl ShardClientSessions {
    /// Sessions are offered for `lifetime` seconds (`-sessTimeout`).
    pub fn new(lifetime: u32) -> Arc<Self> {
        Self::with_clock(lifetime, SessionClock::system())
    }

    pub fn with_clock(lifetime: u32, clock: SessionClock) -> Arc<Self> {
        Arc::new(ShardClientSessions {
            inner: ShardLocal::new(HashMap::new()),
            lifetime_ms: lifetime_ms(lifetime),
            clock,
        })
    }

    /// R8: forget every session saved for `server`.
    pub fn forget_server(&self, server: &ServerName<'static>) {
        self.inner.with(|m| m.remove(server));
    }

    fn entry<R>(&self, name: ServerName<'static>, f: impl FnOnce(&mut ServerEntry) -> R) -> Option<R> {
        self.inner.with(|m| {
            if m.len() >= CLIENT_STORE_SERVERS && !m.contains_key(&name) {
                m.clear();
            }
            f(m.entry(name).or_default())
        })
    }

    /// The saved sessions of `server`, expired ones dropped first.
    fn live<R>(&self, server: &ServerName<'_>, f: impl FnOnce(&mut ServerEntry) -> R) -> Option<R> {
        let now = self.clock.now_ms();
        let lifetime = self.lifetime_ms;
        self.inner
            .with(|m| {
                let e = m.get_mut(&server.to_owned())?;
                if e.tls12
                    .as_ref()
                    .is_some_and(|(t, _)| !within_lifetime(*t, now, lifetime))
                {
                    e.tls12 = None;
                }
                e.tls13.retain(|(t, _)| within_lifetime(*t, now, lifetime));
                Some(f(e))
            })
            .flatten()
    }
}

impl fmt::Debug for ShardClientSessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ShardClientSessions")
    }
}

impl ClientSessionStore for ShardClientSessions {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.entry(server_name, |e| e.kx_hint = Some(group));
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.inner
            .with(|m| m.get(&server_name.to_owned()).and_then(|e| e.kx_hint))
            .flatten()
    }

    fn set_tls12_session(&self, server_name: ServerName<'static>, value: Tls12ClientSessionValue) {
        let now = self.clock.now_ms();
        self.entry(server_name, |e| e.tls12 = Some((now, value)));
    }

    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.live(server_name, |e| e.tls12.as_ref().map(|(_, v)| v.clone()))
            .flatten()
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.inner.with(|m| {
            if let Some(e) = m.get_mut(server_name) {
                e.tls12 = None;
            }
        });
    }

    fn insert_tls13_ticket(&self, server_name: ServerName<'static>, value: Tls13ClientSessionValue) {
        let now = self.clock.now_ms();
        self.entry(server_name, |e| {
            if e.tls13.len() >= TLS13_TICKETS_PER_SERVER {
                e.tls13.pop_front();
            }
            e.tls13.push_back((now, value));
        });
    }

    fn take_tls13_ticket(&self, server_name: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        self.live(server_name, |e| e.tls13.pop_back().map(|(_, v)| v)).flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticket_round_trip_and_revocation() {
        let t = EpochTicketer::new(300).unwrap();
        let mut notes = SessionNotes::default();
        let ticket = with_notes(&mut notes, || t.encrypt(b"session state")).unwrap();
        assert_eq!(notes.tickets.len(), 1);
        assert_eq!(t.decrypt(&ticket).as_deref(), Some(&b"session state"[..]));
        t.revoke(notes.tickets[0]);
        let mut notes2 = SessionNotes::default();
        assert!(with_notes(&mut notes2, || t.decrypt(&ticket)).is_none());
        assert!(notes2.refused_resumption);
    }

    #[test]
    fn ticket_from_another_epoch_is_refused() {
        let old = EpochTicketer::new(300).unwrap();
        let new = EpochTicketer::new(300).unwrap();
        let ticket = old.encrypt(b"x").unwrap();
        let mut notes = SessionNotes::default();
        assert!(with_notes(&mut notes, || new.decrypt(&ticket)).is_none());
        assert!(notes.refused_resumption);
        // Tampered tickets are refused, never a panic.
        let mut bad = ticket.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(old.decrypt(&bad).is_none());
        assert!(old.decrypt(&[]).is_none());
    }

    #[test]
    fn a_million_revocations_hold_bounded_memory_and_refuse_every_revoked_ticket() {
        let clock = SessionClock::manual();
        let t = EpochTicketer::with_clock(300, TICKET_KEY_PERIOD, clock.clone()).unwrap();
        let mut first = None;
        let mut last = None;
        for i in 0..1_000_000u32 {
            if i % 16 == 0 {
                clock.advance(Duration::from_millis(1));
            }
            // Real tickets at both ends; ids alone in between, as the
            // revocation set sees them.
            let id = if i == 0 || i == 999_999 {
                let (ticket, id) = issue(&t, b"s");
                *(if i == 0 { &mut first } else { &mut last }) = Some(ticket);
                id
            } else {
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&u64::from(i).to_be_bytes());
                TicketId {
                    nonce,
                    issued_ms: clock.now_ms(),
                }
            };
            t.revoke(id);
            assert!(
                t.revoked_held() <= MAX_REVOKED + 1,
                "revocation set grew past its bound"
            );
        }
        assert_eq!(t.revoked_total(), 1_000_000);
        // The oldest left the set to the watermark, the newest is in it:
        // neither resumes.
        assert!(t.decrypt(&first.unwrap()).is_none());
        assert!(t.decrypt(&last.unwrap()).is_none());
        // A ticket issued after the flood, not revoked, still resumes.
        clock.advance(Duration::from_millis(1));
        let fresh = t.encrypt(b"fresh").unwrap();
        assert_eq!(t.decrypt(&fresh).as_deref(), Some(&b"fresh"[..]));
    }

    /// A ticket made at `clock`'s now, with the id the revocation set knows.
    fn issue(t: &EpochTicketer, state: &[u8]) -> (Vec<u8>, TicketId) {
        let mut notes = SessionNotes::default();
        let ticket = with_notes(&mut notes, || t.encrypt(state)).unwrap();
        (ticket, notes.tickets[0])
    }

    /// Whether `ticket` resumes now, and whether a refusal was noted.
    fn resumes(t: &EpochTicketer, ticket: &[u8]) -> bool {
        let mut notes = SessionNotes::default();
        let ok = with_notes(&mut notes, || t.decrypt(ticket)).is_some();
        assert_eq!(ok, !notes.refused_resumption, "a refusal is noted, a resumption is not");
        ok
    }

    #[test]
    fn a_ticket_is_refused_once_its_lifetime_is_over() {
        let clock = SessionClock::manual();
        let t = EpochTicketer::with_clock(2, TICKET_KEY_PERIOD, clock.clone()).unwrap();
        assert_eq!(t.lifetime(), 2);
        let (ticket, _) = issue(&t, b"state");
        clock.advance(Duration::from_millis(1999));
        assert!(resumes(&t, &ticket), "a ticket within its lifetime resumes");
        clock.advance(Duration::from_millis(1));
        assert!(!resumes(&t, &ticket), "a ticket past -sessTimeout resumed");
    }

    #[test]
    fn no_lifetime_exceeds_seven_days() {
        let t = EpochTicketer::new(u32::MAX).unwrap();
        assert_eq!(t.lifetime(), MAX_SESSION_LIFETIME);
    }

    #[test]
    fn a_cached_session_is_refused_once_its_lifetime_is_over() {
        let clock = SessionClock::manual();
        let c = ShardSessionCache::with_clock(2, clock.clone());
        assert!(c.put(b"get".to_vec(), b"v1".to_vec()));
        assert!(c.put(b"take".to_vec(), b"v2".to_vec()));
        clock.advance(Duration::from_millis(1999));
        assert_eq!(c.get(b"get"), Some(b"v1".to_vec()), "within its lifetime");
        clock.advance(Duration::from_millis(1));
        let mut notes = SessionNotes::default();
        with_notes(&mut notes, || {
            assert_eq!(c.get(b"get"), None, "a session ID past -sessTimeout resumed");
            assert_eq!(c.take(b"take"), None, "a stateful ticket past -sessTimeout resumed");
        });
        assert!(notes.refused_resumption);
        assert!(c.is_empty(), "expired sessions are dropped");
    }

    #[test]
    fn sessions_made_while_resuming_keep_the_first_issue_time() {
        let clock = SessionClock::manual();
        let t = EpochTicketer::with_clock(10, TICKET_KEY_PERIOD, clock.clone()).unwrap();
        let c = ShardSessionCache::with_clock(10, clock.clone());
        let (ticket, _) = issue(&t, b"state");
        assert!(c.put(b"first".to_vec(), b"v".to_vec()));
        clock.advance(Duration::from_secs(6));
        // A connection resuming each, and being given new sessions.
        let mut notes = SessionNotes::default();
        let renewed = with_notes(&mut notes, || {
            assert!(t.decrypt(&ticket).is_some());
            t.encrypt(b"renewed").unwrap()
        });
        let mut notes = SessionNotes::default();
        with_notes(&mut notes, || {
            assert!(c.take(b"first").is_some());
            assert!(c.put(b"renewed".to_vec(), b"v".to_vec()));
        });
        clock.advance(Duration::from_secs(4));
        assert!(
            !resumes(&t, &renewed),
            "a renewed ticket outlived the session's lifetime"
        );
        assert_eq!(c.get(b"renewed"), None, "a renewed session outlived its lifetime");
        // Control: a session made afresh at that time is good.
        clock.advance(Duration::from_secs(1));
        let (fresh, _) = issue(&t, b"fresh");
        assert!(resumes(&t, &fresh));
    }

    #[test]
    fn a_revoked_ticket_stays_refused_after_its_revocation_is_purged() {
        let clock = SessionClock::manual();
        let t = EpochTicketer::with_clock(10, TICKET_KEY_PERIOD, clock.clone()).unwrap();
        let (ticket, id) = issue(&t, b"state");
        clock.advance(Duration::from_secs(5));
        t.revoke(id);
        assert!(!resumes(&t, &ticket));
        // Past the ticket's lifetime, a later revocation purges the entry.
        clock.advance(Duration::from_secs(6));
        let (_, other) = issue(&t, b"other");
        t.revoke(other);
        assert_eq!(t.revoked_held(), 1, "the expired revocation was purged");
        assert!(!resumes(&t, &ticket), "a revoked ticket came back");
        // While a ticket can still resume, its revocation is held.
        clock.advance(Duration::from_secs(9));
        let (_, third) = issue(&t, b"third");
        t.revoke(third);
        assert_eq!(t.revoked_held(), 2, "a live ticket's revocation was purged");
    }

    #[test]
    fn ticket_keys_rotate_and_keep_the_previous_key_for_decryption_only() {
        let clock = SessionClock::manual();
        let t = EpochTicketer::with_clock(100, Duration::from_secs(10), clock.clone()).unwrap();
        let c = ShardSessionCache::with_clock(100, clock.clone());
        assert!(c.put(b"id".to_vec(), b"v".to_vec()));
        let (old, _) = issue(&t, b"old");
        let (revoked, id) = issue(&t, b"revoked");
        t.revoke(id);
        clock.advance(Duration::from_secs(15));
        let (new, _) = issue(&t, b"new");
        assert_ne!(old[..4], new[..4], "a new period seals under a new key");
        assert!(resumes(&t, &old), "a ticket under the previous key resumes");
        // A rotation is not a change: revocations and the cache stay.
        assert!(!resumes(&t, &revoked), "a revoked ticket resumed after a rotation");
        assert_eq!(c.get(b"id"), Some(b"v".to_vec()), "a rotation flushed the cache");
        clock.advance(Duration::from_secs(10));
        assert!(!resumes(&t, &old), "a ticket under the key of two periods ago resumed");
        assert!(resumes(&t, &new));
        // The period is never longer than the lifetime.
        let short = EpochTicketer::with_clock(5, Duration::from_secs(3600), clock.clone()).unwrap();
        let (a, _) = issue(&short, b"a");
        clock.advance(Duration::from_secs(5));
        let (b, _) = issue(&short, b"b");
        assert_ne!(a[..4], b[..4]);
    }

    #[test]
    fn ticket_nonces_carry_no_counter() {
        let t = EpochTicketer::new(300).unwrap();
        let nonces: Vec<[u8; 12]> = (0..4)
            .map(|_| t.encrypt(b"s").unwrap()[4..16].try_into().unwrap())
            .collect();
        for w in nonces.windows(2) {
            let prefix = |n: &[u8; 12]| u32::from_be_bytes([n[0], n[1], n[2], n[3]]);
            let rest = |n: &[u8; 12]| u64::from_be_bytes(n[4..].try_into().unwrap());
            assert!(
                prefix(&w[0]) != prefix(&w[1]) || rest(&w[1]).wrapping_sub(rest(&w[0])) > 1 << 32,
                "consecutive tickets' nonces share a prefix and count up: {:02x?}",
                nonces
            );
        }
    }

    #[test]
    fn cache_records_and_forgets() {
        let c = ShardSessionCache::new(300);
        let mut notes = SessionNotes::default();
        with_notes(&mut notes, || assert!(c.put(b"k".to_vec(), b"v".to_vec())));
        assert_eq!(notes.cache_keys, vec![b"k".to_vec()]);
        assert_eq!(c.get(b"k"), Some(b"v".to_vec()));
        c.forget(b"k");
        assert_eq!(c.get(b"k"), None);
    }
}
