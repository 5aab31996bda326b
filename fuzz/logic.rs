//! What the fuzz targets check, shared with `tests/fuzz_corpus.rs` (which
//! replays every corpus file through the same functions without libFuzzer).
//!
//! - [`config_line`]: arbitrary text through the command-language parser,
//!   then every parsed command through `Model::apply` on a seeded model.
//!   Checks: no panic; a parsed command prints as text that parses back to
//!   the same command; a command that fails leaves the model unchanged
//!   (R10); the configuration `save` would write loads back to the same text.
//! - [`config_grammar`]: the same checks on lines written from the command
//!   table (`config::grammar::sample_line`), the bytes choosing the command,
//!   its arguments, its flags and their values: deep into every command
//!   rather than stuck at the first keyword.
//! - [`core_events`]: bytes read as a sequence of `ShardCore` events with a
//!   fake clock. Checks: no panic; the core's open connections are exactly
//!   those opened and not yet closed (or removed with their entity); every
//!   id the core asks the shell to close is open and belongs to the entity
//!   concerned, at most once per call; the stats agree with the core.
//! - [`client_hello`]: bytes through the ClientHello peek
//!   (`tls::client_hello::peek`), whole and cut at every length. Checks: no
//!   panic; a verdict (hello or refusal) never changes when more bytes
//!   arrive, so the answer at a cut is either "incomplete" or the final one.
//! - [`proxy_header`]: bytes as the first bytes of a connection through the
//!   PROXY header parser. Checks: no panic; a header it accepts lies within
//!   the input and its bounds, and encodes back to a header that parses to
//!   the same addresses; every prefix of an accepted header is incomplete,
//!   never invalid.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use shardtls::config::{load_text, parse_line, EntityKind, EntityRef, FileBytes, FileKind, FileSource, Model};
use shardtls::core::{CloseKind, ConnId, ConnState, EpochPolicy, ShardCore};

// ----- config_line -----------------------------------------------------------

struct Pems {
    ca: String,
    cert: String,
    key: String,
    other_key: String,
}

fn pems() -> &'static Pems {
    static P: OnceLock<Pems> = OnceLock::new();
    P.get_or_init(|| {
        let ca = shardtls::pki::Ca::new("fuzz CA").expect("CA");
        let site = ca.issue(&["www.test", "*.example.test"], 7).expect("leaf");
        let other = ca.issue(&["other.test"], 8).expect("leaf");
        Pems {
            ca: ca.cert_pem(),
            cert: site.cert_pem,
            key: site.key_pem.to_string(),
            other_key: other.key_pem.to_string(),
        }
    })
}

/// Fixed bytes for any path: a key for `*.key` (another one when the name
/// says "other"), the CA for names with "ca", junk for "garbage", nothing
/// for "missing", the site certificate otherwise.
pub struct FixedFiles;

impl FileSource for FixedFiles {
    fn read(&self, path: &Path, _: FileKind) -> Result<FileBytes, String> {
        let name = path.to_string_lossy().to_ascii_lowercase();
        let p = pems();
        if name.contains("missing") {
            return Err(format!("cannot read {}: not found", path.display()));
        }
        if name.contains("garbage") {
            return Ok(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
                .to_vec()
                .into());
        }
        if name.ends_with(".key") {
            return Ok(if name.contains("other") { &p.other_key } else { &p.key }
                .as_bytes()
                .to_vec()
                .into());
        }
        if name.contains("ca") {
            return Ok(p.ca.as_bytes().to_vec().into());
        }
        Ok(p.cert.as_bytes().to_vec().into())
    }
}

/// The model every input starts from: one of each entity, bound together.
pub const SEED_CONFIG: &str = "\
add ssl certKey site -cert site.pem -key site.key
add ssl certKey ca -cert ca.pem
link ssl certKey site ca
add ssl cipher g
bind ssl cipher g -cipherName TLS1.3-AES128-GCM-SHA256
bind ssl cipher g -cipherName TLS1.2-ECDHE-ECDSA-AES128-GCM-SHA256
add ssl profile p -sessTimeout 60 -drainTimeout 30
add service s 127.0.0.1 8080 TCP
add service t 127.0.0.1 8443 SSL_TCP
set ssl service t -serverAuth ENABLED -commonName api.test
bind ssl service t -certkeyName ca -CA
add serviceGroup sg TCP
bind serviceGroup sg 127.0.0.1 8081
bind serviceGroup sg 127.0.0.1 8082
add lb vserver v SSL_TCP 127.0.0.1 443 -maxClients 100 -cltTimeout 60
set ssl vserver v -sslProfile p
bind ssl vserver v -certkeyName site
bind ssl vserver v -cipherName g
bind ssl vserver v -eccCurveName X25519
bind lb vserver v s
bind lb vserver v sg
";

fn seed_model() -> Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| load_text(SEED_CONFIG, "seed", &FixedFiles).expect("the seed config loads"))
        .clone()
}

fn observable(m: &Model) -> String {
    format!("{}{:?}", m.to_commands(), m.epochs)
}

/// Parse and apply up to 64 lines of `data` (when it is UTF-8).
pub fn config_line(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut model = seed_model();
    let mut empty = Model::default();
    for line in text.lines().take(64) {
        let cmd = match parse_line(line) {
            Ok(Some(cmd)) => cmd,
            Ok(None) | Err(_) => continue,
        };
        let printed = cmd.to_string();
        match parse_line(&printed) {
            Ok(Some(again)) => assert_eq!(again, cmd, "'{line}' prints as '{printed}', which parses differently"),
            other => panic!("'{line}' prints as '{printed}', which does not parse: {other:?}"),
        }
        for m in [&mut model, &mut empty] {
            let before = observable(m);
            if m.apply(&cmd, &FixedFiles).is_err() {
                assert_eq!(observable(m), before, "'{line}' failed but changed the model");
            }
        }
    }
    for m in [&model, &empty] {
        let saved = m.to_commands();
        match load_text(&saved, "saved", &FixedFiles) {
            Ok(again) => assert_eq!(
                again.to_commands(),
                saved,
                "the saved config does not load back the same"
            ),
            Err(e) => panic!("the saved config does not load: {e:?}\n{saved}"),
        }
    }
}

/// Up to 16 lines written from the command table, `data` giving the choices.
pub fn config_grammar(data: &[u8]) {
    let mut at = 0;
    let mut pick = |n: usize| {
        let b = data.get(at).copied().unwrap_or(0);
        at += 1;
        usize::from(b) % n.max(1)
    };
    let mut text = String::new();
    for _ in 0..16 {
        text.push_str(&shardtls::config::grammar::sample_line(&mut pick));
        text.push('\n');
    }
    let lines = (data.len() / 8).clamp(1, 16);
    let text: Vec<&str> = text.lines().take(lines).collect();
    config_line(text.join("\n").as_bytes());
}

// ----- core_events -------------------------------------------------------------

const ENTITIES: [(EntityKind, &str); 4] = [
    (EntityKind::Vserver, "a"),
    (EntityKind::Vserver, "b"),
    (EntityKind::Service, "s"),
    (EntityKind::ServiceGroup, "g"),
];

fn policy(b: u8) -> EpochPolicy {
    EpochPolicy {
        drain_timeout: (b & 1 == 1).then(|| Duration::from_millis(50 * u64::from(b >> 4))),
        handshake_timeout: Duration::from_millis(100 + 100 * u64::from((b >> 1) & 7)),
        strict_session_cleanup: b & 0x10 != 0,
        max_conns: (b & 0x20 != 0).then(|| u32::from(b >> 6) + 1),
    }
}

/// Interpret `data` as events on one shard core and check its invariants.
pub fn core_events(data: &[u8]) {
    let t0 = Instant::now();
    let mut now = t0;
    let mut core = ShardCore::with_origin(0, t0);
    let ents: Vec<EntityRef> = ENTITIES.iter().map(|(k, n)| EntityRef::new(*k, n)).collect();
    let mut known: BTreeMap<usize, u64> = BTreeMap::new(); // entity index -> our idea of its current epoch
                                                           // Open connections: id -> entity index.
    let mut open: BTreeMap<ConnId, usize> = BTreeMap::new();
    let mut closed: BTreeSet<ConnId> = BTreeSet::new();
    let mut bytes = data.iter().copied();
    let mut next = move || bytes.next();

    let pick = |open: &BTreeMap<ConnId, usize>, b: u8| -> Option<ConnId> {
        if open.is_empty() {
            None
        } else {
            open.keys().nth(usize::from(b) % open.len()).copied()
        }
    };
    let check_ids = |what: &str, ids: &[ConnId], open: &BTreeMap<ConnId, usize>, entity: Option<usize>| {
        let uniq: BTreeSet<_> = ids.iter().collect();
        assert_eq!(uniq.len(), ids.len(), "{what}: an id twice in {ids:?}");
        for id in ids {
            let e = open.get(id).unwrap_or_else(|| panic!("{what}: id {id} is not open"));
            if let Some(want) = entity {
                assert_eq!(*e, want, "{what}: id {id} belongs to another entity");
            }
        }
    };

    while let Some(op) = next() {
        let arg = next().unwrap_or(0);
        let e = usize::from(arg) % ents.len();
        match op % 12 {
            0 | 1 => {
                if let Ok(id) = core.on_accept(&ents[e], now) {
                    assert!(!open.contains_key(&id) && !closed.contains(&id), "id {id} reused");
                    assert!(known.contains_key(&e), "accepted on unknown entity {}", ents[e]);
                    open.insert(id, e);
                }
            }
            2 => {
                if let Some(id) = pick(&open, arg) {
                    let epoch = core.on_handshake_start(id, now);
                    assert!(epoch >= 1, "handshake_start of an open id gave epoch {epoch}");
                }
            }
            3 => {
                if let Some(id) = pick(&open, arg) {
                    let before = core.conn_state(id).expect("an open id has a state");
                    let ok = core.on_established(id, arg & 0x80 != 0, now).is_ok();
                    let st = core.conn_state(id).expect("an open id has a state");
                    if ok && matches!(before, ConnState::Established { .. } | ConnState::Draining { .. }) {
                        // A repeated event: nothing changes.
                        assert_eq!(st, before);
                    } else if ok {
                        assert!(
                            matches!(st, ConnState::Established { .. }),
                            "established from {before:?} but {st:?}"
                        );
                    } else {
                        assert_eq!(st, ConnState::Closing, "stale but {st:?}");
                    }
                }
            }
            4 | 5 => {
                if let Some(id) = pick(&open, arg) {
                    let kind = CloseKind::ALL[usize::from(arg >> 2) % CloseKind::ALL.len()];
                    let out = core.on_close(id, kind, now);
                    if kind == CloseKind::Clean {
                        assert!(!out.drop_session, "a clean close drops the session");
                    }
                    open.remove(&id);
                    closed.insert(id);
                    // A second close of the same id is ignored.
                    assert_eq!(core.on_close(id, kind, now), Default::default());
                }
            }
            6 => {
                let p = next().unwrap_or(0);
                let cur = known.get(&e).copied().unwrap_or(0);
                let epoch = match p % 4 {
                    0 => cur,
                    1 => cur.saturating_sub(1).max(1),
                    _ => cur + 1,
                }
                .max(1);
                let ch = core.set_epoch(&ents[e], epoch, policy(p), now);
                check_ids("set_epoch", &ch.killed, &open, Some(e));
                if !known.contains_key(&e) || epoch > cur {
                    known.insert(e, epoch.max(cur));
                }
                if let Some(cur) = known.get(&e) {
                    assert_eq!(core.current_epoch(&ents[e]), Some(*cur));
                }
                // The shell closes the killed connections.
                for id in ch.killed {
                    core.on_close(id, CloseKind::Killed, now);
                    open.remove(&id);
                    closed.insert(id);
                }
            }
            7 => {
                let ids = core.disable(&ents[e], now);
                check_ids("disable", &ids, &open, Some(e));
                if known.contains_key(&e) {
                    assert!(!core.is_enabled(&ents[e]));
                }
                if arg & 0x80 != 0 {
                    for id in ids {
                        core.on_close(id, CloseKind::Clean, now);
                        open.remove(&id);
                        closed.insert(id);
                    }
                }
            }
            8 => core.enable(&ents[e]),
            9 => {
                now += Duration::from_millis(u64::from(arg) * 7);
                let due = core.poll_timeouts(now);
                let ids: Vec<ConnId> = due.iter().map(|(id, _)| *id).collect();
                check_ids("poll_timeouts", &ids, &open, None);
                for id in ids {
                    assert_eq!(core.conn_state(id), Some(ConnState::Closing));
                    core.on_close(id, CloseKind::Timeout, now);
                    open.remove(&id);
                    closed.insert(id);
                }
                if let Some(d) = core.next_deadline() {
                    assert!(
                        d > now,
                        "a deadline at or before now is still pending after poll_timeouts"
                    );
                }
            }
            10 => {
                let ids = core.remove_entity(&ents[e]);
                check_ids("remove_entity", &ids, &open, Some(e));
                known.remove(&e);
                let gone: Vec<ConnId> = open.iter().filter(|(_, x)| **x == e).map(|(id, _)| *id).collect();
                for id in gone {
                    assert_eq!(core.conn_state(id), None, "a connection of a removed entity remains");
                    open.remove(&id);
                    closed.insert(id);
                }
            }
            _ => core.on_refused_resumption(&ents[e], now),
        }
        assert_eq!(
            core.open_conns(),
            open.len(),
            "open connections: core {} vs opened-closed {}",
            core.open_conns(),
            open.len()
        );
        for id in open.keys() {
            let st = core
                .conn_state(*id)
                .unwrap_or_else(|| panic!("open id {id} unknown to the core"));
            let ent = core.conn_entity(*id).expect("an open id has an entity");
            assert_eq!(*ent, ents[open[id]]);
            if let Some(ep) = st.epoch() {
                let cur = core.current_epoch(ent).expect("entity of an open id is known");
                assert!(ep <= cur, "connection on epoch {ep} newer than current {cur}");
                if matches!(st, ConnState::Established { .. }) {
                    assert_eq!(ep, cur);
                }
                if matches!(st, ConnState::Draining { .. }) {
                    assert!(ep < cur);
                }
            }
        }
        for id in closed.iter().rev().take(8) {
            assert_eq!(core.conn_state(*id), None, "closed id {id} still known");
        }
    }
    let stats = core.stats();
    assert_eq!(stats.totals.open, core.open_conns());
    let per_entity: usize = stats.entities.iter().map(|e| e.open).sum();
    assert_eq!(per_entity, core.open_conns(), "entity open counts do not add up");
    for e in &stats.entities {
        let live: usize = e.epochs.iter().map(|x| x.live).sum();
        assert_eq!(
            live + e.unbound,
            e.open,
            "{} {}: live {live} + unbound {} != open {}",
            e.kind,
            e.name,
            e.unbound,
            e.open
        );
    }
}

// ----- client_hello ----------------------------------------------------------

pub fn client_hello(data: &[u8]) {
    use shardtls::tls::client_hello::{peek, Peek};
    let whole = peek(data);
    if let Peek::Hello(h) = &whole {
        if let Some(sni) = &h.sni {
            assert!(!sni.is_empty() && sni.len() <= 253, "{sni:?}");
            assert_eq!(sni, &sni.to_ascii_lowercase());
        }
    }
    // Cuts at every length up to 2 KiB, then sparser: a long input stays quick.
    let step = if data.len() > 2048 { data.len() / 512 } else { 1 };
    let mut final_seen = false;
    for cut in (0..data.len()).step_by(step.max(1)) {
        match peek(&data[..cut]) {
            Peek::Incomplete => assert!(!final_seen, "incomplete after a verdict at {cut}"),
            verdict => {
                assert_eq!(verdict, whole, "verdict at {cut} differs from the whole input's");
                final_seen = true;
            }
        }
    }
}

// ----- proxy_header ----------------------------------------------------------

pub fn proxy_header(data: &[u8]) {
    use shardtls::shard::proxy_header::{encode, parse, Parsed, Version, V1_MAX, V2_MAX_PAYLOAD};
    let Parsed::Done { header, len } = parse(data) else {
        return;
    };
    assert!(len <= data.len());
    match header.version {
        Version::V1 => assert!(len <= V1_MAX),
        Version::V2 => assert!(len <= 16 + V2_MAX_PAYLOAD),
    }
    for i in 0..len {
        assert_eq!(parse(&data[..i]), Parsed::Incomplete, "prefix {i}");
    }
    let mut again = Vec::new();
    encode(header.version, header.addrs, None, &mut again);
    match parse(&again) {
        Parsed::Done { header: h, len } => {
            assert_eq!(len, again.len());
            assert_eq!(h.addrs, header.addrs);
        }
        other => panic!("re-encoded header does not parse: {other:?}"),
    }
}
