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
//!
//! It does no IO and knows nothing of connection states or epochs' timing.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam_skiplist::SkipMap;
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::client::{ClientSessionStore, Tls12ClientSessionValue, Tls13ClientSessionValue};
use rustls::pki_types::ServerName;
use rustls::server::{ProducesTickets, StoresServerSessions};
use rustls::NamedGroup;

use super::local::ShardLocal;

/// Identifier of one issued ticket (its AEAD nonce).
pub type TicketId = [u8; 12];

/// Sessions created, and resumptions refused, while processing one connection.
#[derive(Debug, Default)]
pub struct SessionNotes {
    /// Keys this connection stored in, or resumed from, the shard's
    /// session-ID cache.
    pub cache_keys: Vec<Vec<u8>>,
    /// Tickets issued to this connection, and the one it resumed with.
    pub tickets: Vec<TicketId>,
    /// The client offered a session that was not resumed (old epoch, evicted,
    /// revoked or unknown).
    pub refused_resumption: bool,
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

fn note(f: impl FnOnce(&mut SessionNotes)) {
    CURRENT.with(|c| {
        if let Ok(mut c) = c.try_borrow_mut() {
            if let Some(n) = c.as_mut() {
                f(n)
            }
        }
    });
}

/// Most sessions one shard keeps per (vserver, epoch).
const SERVER_CACHE_CAPACITY: usize = 16 * 1024;

struct CacheInner {
    map: HashMap<Vec<u8>, Vec<u8>>,
    order: VecDeque<Vec<u8>>,
}

/// A shard-local session-ID cache for one (vserver, epoch).
pub struct ShardSessionCache {
    inner: ShardLocal<CacheInner>,
}

impl ShardSessionCache {
    pub fn new() -> Arc<Self> {
        Arc::new(ShardSessionCache {
            inner: ShardLocal::new(CacheInner {
                map: HashMap::new(),
                order: VecDeque::new(),
            }),
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
}

impl fmt::Debug for ShardSessionCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ShardSessionCache")
    }
}

impl StoresServerSessions for ShardSessionCache {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
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
                c.map.insert(key.clone(), value);
            })
            .is_some();
        if stored {
            note(|n| n.cache_keys.push(key));
        }
        stored
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        let v = self.inner.with(|c| c.map.get(key).cloned()).flatten();
        match v {
            // R8: a connection that resumed and then ends badly forgets
            // the session it resumed, as one that created it would.
            Some(_) => note(|n| n.cache_keys.push(key.to_vec())),
            None => note(|n| n.refused_resumption = true),
        }
        v
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        let v = self.inner.with(|c| c.map.remove(key)).flatten();
        if v.is_none() {
            note(|n| n.refused_resumption = true);
        }
        v
    }

    fn can_cache(&self) -> bool {
        true
    }
}

/// Ticket keys of one (vserver, epoch), shared by every shard so a client
/// resumes on whichever shard it lands. A new epoch has new keys (R3).
pub struct EpochTicketer {
    key_id: [u8; 4],
    key: LessSafeKey,
    lifetime: u32,
    /// R8: tickets of connections that ended badly, with their expiry (unix s).
    revoked: SkipMap<TicketId, u64>,
    /// The same tickets ordered by expiry: expired ones leave from the
    /// front, and past [`MAX_REVOKED`] the oldest leave to the watermarks.
    revoked_by_expiry: SkipMap<(u64, TicketId), ()>,
    /// Per issuing thread: every ticket it issued with a counter below
    /// this is refused (0: none). Raised when the set is full, so a flood of
    /// resets bounds memory by refusing more tickets, never fewer (R8).
    watermarks: Box<[AtomicU64]>,
    revoked_count: AtomicU64,
}

impl fmt::Debug for EpochTicketer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EpochTicketer")
            .field("lifetime", &self.lifetime)
            .finish()
    }
}

const TICKET_HEADER: usize = 4 + 12;

/// Threads that have issued tickets, numbered from 1: the first four bytes
/// of every nonce a thread makes.
static NONCE_THREADS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);

thread_local! {
    static NONCE_STATE: std::cell::Cell<(u32, u64)> = const { std::cell::Cell::new((0, 0)) };
}

/// A nonce unique within this process (thread number, then a per-thread
/// counter), so no two tickets under one key ever share a nonce, without a
/// `getrandom` call per ticket.
fn next_nonce() -> TicketId {
    NONCE_STATE.with(|st| {
        let (mut thread, counter) = st.get();
        if thread == 0 {
            thread = NONCE_THREADS.fetch_add(1, Ordering::Relaxed);
        }
        st.set((thread, counter + 1));
        let mut n = [0u8; 12];
        n[..4].copy_from_slice(&thread.to_be_bytes());
        n[4..].copy_from_slice(&counter.to_be_bytes());
        n
    })
}
/// Most revoked tickets remembered one by one per (vserver, epoch).
const MAX_REVOKED: usize = 64 * 1024;
/// Issuing threads with a watermark of their own; the others share the last.
const WATERMARK_SLOTS: usize = 256;

fn split_nonce(id: &TicketId) -> (usize, u64) {
    let thread = u32::from_be_bytes([id[0], id[1], id[2], id[3]]) as usize;
    let counter = u64::from_be_bytes([id[4], id[5], id[6], id[7], id[8], id[9], id[10], id[11]]);
    (thread.min(WATERMARK_SLOTS - 1), counter)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl EpochTicketer {
    /// New random keys; tickets live `lifetime` seconds. The key bytes
    /// drawn here are zeroed once ring holds the key (ring does not zero
    /// its own copy when dropped; `run` keeps the process out of core dumps).
    pub fn new(lifetime: u32) -> Result<Arc<Self>, String> {
        let rng = SystemRandom::new();
        let mut key_bytes = zeroize::Zeroizing::new([0u8; 32]);
        let mut key_id = [0u8; 4];
        rng.fill(&mut key_bytes[..])
            .map_err(|_| "no randomness for ticket keys".to_string())?;
        rng.fill(&mut key_id)
            .map_err(|_| "no randomness for ticket keys".to_string())?;
        let key = UnboundKey::new(&aead::CHACHA20_POLY1305, &key_bytes[..])
            .map_err(|_| "ticket key setup failed".to_string())?;
        Ok(Arc::new(EpochTicketer {
            key_id,
            key: LessSafeKey::new(key),
            lifetime: lifetime.max(1),
            revoked: SkipMap::new(),
            revoked_by_expiry: SkipMap::new(),
            watermarks: (0..WATERMARK_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            revoked_count: AtomicU64::new(0),
        }))
    }

    /// R8: a ticket issued to a connection that ended badly never resumes.
    /// O(log n) per call, at most [`MAX_REVOKED`] tickets held: expired ones
    /// are dropped from the front; past the bound the oldest is dropped and
    /// its thread's watermark raised, refusing every ticket that thread
    /// issued up to it (a full handshake for those clients, never a resume).
    pub fn revoke(&self, id: TicketId) {
        let now = unix_now();
        let expiry = now + u64::from(self.lifetime);
        self.revoked.insert(id, expiry);
        self.revoked_by_expiry.insert((expiry, id), ());
        self.revoked_count.fetch_add(1, Ordering::Relaxed);
        // Expired tickets cannot resume anyway.
        while let Some(e) = self.revoked_by_expiry.front() {
            if e.key().0 >= now {
                break;
            }
            self.forget_revoked(e.key());
            e.remove();
        }
        // Past the bound the oldest leaves, refused from now on by its
        // thread's watermark instead.
        while self.revoked_by_expiry.len() > MAX_REVOKED {
            let Some(e) = self.revoked_by_expiry.pop_front() else {
                break;
            };
            let (thread, counter) = split_nonce(&e.key().1);
            self.watermarks[thread].fetch_max(counter + 1, Ordering::Relaxed);
            self.forget_revoked(e.key());
        }
    }

    /// Drop `(expiry, id)` from the lookup map unless `id` was revoked again later.
    fn forget_revoked(&self, key: &(u64, TicketId)) {
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
        self.lifetime
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let nonce = next_nonce();
        let mut out = Vec::with_capacity(TICKET_HEADER + plain.len() + aead::MAX_TAG_LEN);
        out.extend_from_slice(&self.key_id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&self.key_id),
                &mut out[TICKET_HEADER..],
            )
            .ok()?;
        out.extend_from_slice(tag.as_ref());
        note(|n| n.tickets.push(nonce));
        Some(out)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        let refuse = || {
            note(|n| n.refused_resumption = true);
            None
        };
        if cipher.len() < TICKET_HEADER + aead::MAX_TAG_LEN || cipher[..4] != self.key_id {
            return refuse();
        }
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&cipher[4..TICKET_HEADER]);
        let (thread, counter) = split_nonce(&nonce);
        if counter < self.watermarks[thread].load(Ordering::Relaxed) {
            return refuse();
        }
        if !self.revoked.is_empty() && self.revoked.contains_key(&nonce) {
            return refuse();
        }
        let mut buf = cipher[TICKET_HEADER..].to_vec();
        match self
            .key
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(&self.key_id), &mut buf)
        {
            Ok(plain) => {
                let n = plain.len();
                buf.truncate(n);
                // R8: revoked if the connection that resumed with it ends badly.
                note(|n| n.tickets.push(nonce));
                Some(buf)
            }
            Err(_) => refuse(),
        }
    }
}

#[derive(Default)]
struct ServerEntry {
    kx_hint: Option<NamedGroup>,
    tls12: Option<Tls12ClientSessionValue>,
    tls13: VecDeque<Tls13ClientSessionValue>,
}

/// Most TLS 1.3 tickets kept per back-end server.
const TLS13_TICKETS_PER_SERVER: usize = 4;
/// Most back-end servers remembered per (service, epoch) on one shard.
const CLIENT_STORE_SERVERS: usize = 1024;

/// A shard-local store of back-end sessions for one (service, epoch) (R4, R9).
pub struct ShardClientSessions {
    inner: ShardLocal<HashMap<ServerName<'static>, ServerEntry>>,
}

impl ShardClientSessions {
    pub fn new() -> Arc<Self> {
        Arc::new(ShardClientSessions {
            inner: ShardLocal::new(HashMap::new()),
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
        self.entry(server_name, |e| e.tls12 = Some(value));
    }

    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.inner
            .with(|m| m.get(&server_name.to_owned()).and_then(|e| e.tls12.clone()))
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
        self.entry(server_name, |e| {
            if e.tls13.len() >= TLS13_TICKETS_PER_SERVER {
                e.tls13.pop_front();
            }
            e.tls13.push_back(value);
        });
    }

    fn take_tls13_ticket(&self, server_name: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        self.inner
            .with(|m| m.get_mut(server_name).and_then(|e| e.tls13.pop_back()))
            .flatten()
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
        let t = EpochTicketer::new(300).unwrap();
        let mut first = None;
        let mut last = None;
        for i in 0..1_000_000u32 {
            let mut notes = SessionNotes::default();
            let ticket = with_notes(&mut notes, || t.encrypt(b"s")).unwrap();
            t.revoke(notes.tickets[0]);
            if i == 0 {
                first = Some(ticket);
            } else if i == 999_999 {
                last = Some(ticket);
            }
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
        let fresh = t.encrypt(b"fresh").unwrap();
        assert_eq!(t.decrypt(&fresh).as_deref(), Some(&b"fresh"[..]));
    }

    #[test]
    fn cache_records_and_forgets() {
        let c = ShardSessionCache::new();
        let mut notes = SessionNotes::default();
        with_notes(&mut notes, || assert!(c.put(b"k".to_vec(), b"v".to_vec())));
        assert_eq!(notes.cache_keys, vec![b"k".to_vec()]);
        assert_eq!(c.get(b"k"), Some(b"v".to_vec()));
        c.forget(b"k");
        assert_eq!(c.get(b"k"), None);
    }
}
