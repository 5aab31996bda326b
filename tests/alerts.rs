//! Every refused TLS input ends with an alert the peer can read, then EOF:
//! hand-built records against a vserver (the cases a TLS conformance suite
//! probes), each asserting the alert's description and that the proxy
//! never leaves the peer waiting with nothing to read.
//!
//! Where rustls queues a fatal alert for the error, the peer reads that
//! alert before EOF. Where it queues none (a message interleaved with a
//! fragmented handshake message, a record with no content type, a third
//! ChangeCipherSpec record), the proxy sends the fitting fatal alert itself
//! while nothing is encrypted yet; once records are encrypted it cannot
//! (rustls sends only close_notify for a caller, which would claim an
//! orderly end), and the peer reads a bare EOF, at once. The tests name
//! which is expected, and none waits past a bound with nothing to read.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use ring::aead;
use rustls::pki_types::ServerName;
use rustls::{AlertDescription, ConnectionTrafficSecrets};
use shardtls::test_server::TestServerMode;

/// The longest any probe may wait for the proxy's answer and EOF.
const BOUND: Duration = Duration::from_secs(5);

const CHANGE_CIPHER_SPEC: u8 = 20;
const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
const APPLICATION_DATA: u8 = 23;

struct Site {
    proxy: Proxy,
    port: u16,
    pki: Pki,
    _be: shardtls::test_server::TestServerHandle,
}

/// A vserver for www.test in front of an echo back end, with `extra` lines.
fn site(extra: &str) -> Site {
    let pki = Pki::new();
    let be = backend(TestServerMode::Echo);
    let port = free_port();
    let (ck, _) = certkey(&pki, "site", &["www.test"]);
    let cfg = format!(
        "{ck}add service echo 127.0.0.1 {} TCP\n\
         add lb vserver v1 SSL_TCP 127.0.0.1 {port}\n\
         bind ssl vserver v1 -certkeyName site\n\
         bind lb vserver v1 echo\n{extra}",
        be.local_addr().port()
    );
    let proxy = Proxy::start(&cfg, 1);
    Site {
        proxy,
        port,
        pki,
        _be: be,
    }
}

/// A TLS 1.3 client config (AES-128-GCM only) trusting the test CA, with
/// secret extraction on so tests can build records after the handshake.
fn client_config(pki: &Pki) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.cert_der()).unwrap();
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .retain(|s| s.suite() == rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.enable_secret_extraction = true;
    Arc::new(cfg)
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect_timeout(&lo(port), Duration::from_secs(3)).expect("connect");
    s.set_nodelay(true).unwrap();
    s
}

fn record(typ: u8, payload: &[u8]) -> Vec<u8> {
    let mut r = vec![typ, 3, 3];
    r.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    r.extend_from_slice(payload);
    r
}

/// Split a flight of records into (type, payload) pairs.
fn records(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while bytes.len() >= 5 {
        let len = u16::from_be_bytes([bytes[3], bytes[4]]) as usize;
        if bytes.len() < 5 + len {
            break;
        }
        out.push((bytes[0], bytes[5..5 + len].to_vec()));
        bytes = &bytes[5 + len..];
    }
    out
}

/// Everything the proxy sends until EOF; fails if the connection is still
/// open after `BOUND` (a peer left waiting with nothing to read).
fn read_until_eof(s: &mut TcpStream) -> Result<Vec<u8>, String> {
    let t0 = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let left = BOUND
            .checked_sub(t0.elapsed())
            .ok_or_else(|| format!("still open after {BOUND:?} ({} bytes received)", got.len()))?;
        s.set_read_timeout(Some(left.max(Duration::from_millis(1)))).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return Ok(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                return Err(format!("still open after {BOUND:?} ({} bytes received)", got.len()))
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reset instead of EOF after {} bytes: {e}", got.len())),
        }
    }
}

/// The ClientHello records a rustls client sends first.
fn first_flight(conn: &mut rustls::ClientConnection) -> Vec<u8> {
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    out
}

fn new_client(pki: &Pki) -> rustls::ClientConnection {
    rustls::ClientConnection::new(client_config(pki), ServerName::try_from("www.test").unwrap()).unwrap()
}

/// The alert the proxy sent during the handshake, read through the client
/// that started it (it holds the handshake keys): the proxy's bytes up to
/// EOF are fed to `conn`, which must report an alert.
fn handshake_alert(conn: &mut rustls::ClientConnection, bytes: &[u8]) -> Result<AlertDescription, String> {
    // A plaintext alert before any server flight needs no client state.
    if let Some((ALERT, p)) = records(bytes).first() {
        return Ok(AlertDescription::from(p[1]));
    }
    let mut rd = bytes;
    while !rd.is_empty() {
        if conn.read_tls(&mut rd).map_err(|e| e.to_string())? == 0 {
            break;
        }
        match conn.process_new_packets() {
            Err(rustls::Error::AlertReceived(d)) => return Ok(d),
            Err(e) => return Err(format!("client error {e} instead of an alert")),
            Ok(st) if st.peer_has_closed() => return Ok(AlertDescription::CloseNotify),
            Ok(_) => {}
        }
    }
    Err(format!("no alert in the {} bytes before EOF", bytes.len()))
}

/// One direction of TLS 1.3 record protection, from extracted secrets.
struct Keys {
    key: aead::LessSafeKey,
    iv: [u8; 12],
    seq: u64,
}

impl Keys {
    fn new((seq, secrets): (u64, ConnectionTrafficSecrets)) -> Keys {
        let ConnectionTrafficSecrets::Aes128Gcm { key, iv } = secrets else {
            panic!("AES-128-GCM was the only suite offered");
        };
        let key = aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_128_GCM, key.as_ref()).unwrap());
        Keys {
            key,
            iv: iv.as_ref().try_into().unwrap(),
            seq,
        }
    }

    fn nonce(&mut self) -> aead::Nonce {
        let mut n = self.iv;
        for (b, s) in n[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *b ^= s;
        }
        self.seq += 1;
        aead::Nonce::assume_unique_for_key(n)
    }

    /// A protected record carrying `payload` with inner type `typ` and `pad` zero bytes.
    fn seal(&mut self, typ: u8, payload: &[u8], pad: usize) -> Vec<u8> {
        let mut inner = payload.to_vec();
        inner.push(typ);
        inner.resize(inner.len() + pad, 0);
        let len = (inner.len() + aead::AES_128_GCM.tag_len()) as u16;
        let header = [APPLICATION_DATA, 3, 3, (len >> 8) as u8, len as u8];
        let nonce = self.nonce();
        self.key
            .seal_in_place_append_tag(nonce, aead::Aad::from(header), &mut inner)
            .unwrap();
        let mut r = header.to_vec();
        r.extend_from_slice(&inner);
        r
    }

    /// (inner type, content) of a protected record's payload.
    fn open(&mut self, payload: &[u8]) -> Result<(u8, Vec<u8>), String> {
        let len = payload.len() as u16;
        let header = [APPLICATION_DATA, 3, 3, (len >> 8) as u8, len as u8];
        let mut buf = payload.to_vec();
        let nonce = self.nonce();
        let plain = self
            .key
            .open_in_place(nonce, aead::Aad::from(header), &mut buf)
            .map_err(|_| "a record the client cannot decrypt".to_string())?;
        let end = plain
            .iter()
            .rposition(|b| *b != 0)
            .ok_or("a record with no content type")?;
        Ok((plain[end], plain[..end].to_vec()))
    }
}

/// An established TLS 1.3 connection whose records the test builds itself.
struct Established {
    sock: TcpStream,
    tx: Keys,
    rx: Keys,
}

fn establish(port: u16, pki: &Pki) -> Established {
    let mut sock = connect(port);
    sock.set_read_timeout(Some(BOUND)).unwrap();
    let mut conn = new_client(pki);
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).expect("handshake");
    }
    while conn.wants_write() {
        conn.write_tls(&mut sock).unwrap();
    }
    let secrets = conn.dangerous_extract_secrets().expect("secrets");
    Established {
        sock,
        tx: Keys::new(secrets.tx),
        rx: Keys::new(secrets.rx),
    }
}

impl Established {
    /// EOF, at once, with no alert among the proxy's records (tickets may come).
    fn eof_without_alert(&mut self) -> Result<(), String> {
        let bytes = read_until_eof(&mut self.sock)?;
        for (typ, payload) in records(&bytes) {
            let (inner, content) = match typ {
                APPLICATION_DATA => self.rx.open(&payload)?,
                other => (other, payload),
            };
            if inner == ALERT {
                return Err(format!("alert {content:?} before EOF"));
            }
        }
        Ok(())
    }

    /// The alert among the proxy's records up to EOF (tickets may come first).
    fn alert_before_eof(&mut self) -> Result<AlertDescription, String> {
        let bytes = read_until_eof(&mut self.sock)?;
        let mut seen = Vec::new();
        for (typ, payload) in records(&bytes) {
            let (inner, content) = match typ {
                APPLICATION_DATA => self.rx.open(&payload)?,
                other => (other, payload),
            };
            if inner == ALERT {
                return Ok(AlertDescription::from(content[1]));
            }
            seen.push(inner);
        }
        Err(format!("EOF with no alert; record types before it: {seen:?}"))
    }
}

/// A ClientHello from a fresh client followed by `extra` records, on a new
/// connection; the client (for reading what comes back) and everything the
/// proxy sent up to EOF.
fn hello_then(s: &Site, extra: &[Vec<u8>]) -> (rustls::ClientConnection, Vec<u8>) {
    let mut conn = new_client(&s.pki);
    let mut bytes = first_flight(&mut conn);
    for r in extra {
        bytes.extend_from_slice(r);
    }
    let mut sock = connect(s.port);
    sock.write_all(&bytes).unwrap();
    let got = read_until_eof(&mut sock).unwrap();
    (conn, got)
}

/// A KeyUpdate (update_not_requested).
const KEY_UPDATE: [u8; 5] = [24, 0, 0, 1, 0];

#[test]
fn record_of_content_type_zero_before_the_handshake_gets_decode_error() {
    let s = site("");
    let mut sock = connect(s.port);
    sock.write_all(&record(0, b"\x01\x00\x00\x00")).unwrap();
    let bytes = read_until_eof(&mut sock).unwrap();
    let alert = handshake_alert(&mut new_client(&s.pki), &bytes).unwrap();
    assert_eq!(alert, AlertDescription::DecodeError, "{bytes:02x?}");
}

#[test]
fn record_with_no_content_type_after_the_handshake_ends_at_once() {
    let s = site("");
    let mut c = establish(s.port, &s.pki);
    // An inner plaintext of zeros only: no content type.
    let r = c.tx.seal(0, b"", 0);
    c.sock.write_all(&r).unwrap();
    // rustls queues no alert for it (IllegalTlsInnerPlaintext): bare EOF.
    c.eof_without_alert().unwrap();
}

#[test]
fn record_with_no_content_type_and_padding_after_the_handshake_ends_at_once() {
    let s = site("");
    let mut c = establish(s.port, &s.pki);
    let r = c.tx.seal(0, b"", 32);
    c.sock.write_all(&r).unwrap();
    c.eof_without_alert().unwrap();
}

#[test]
fn zero_length_application_data_inside_a_fragmented_client_hello_gets_an_alert() {
    let s = site("");
    let mut conn = new_client(&s.pki);
    let flight = first_flight(&mut conn);
    let (typ, hello) = records(&flight).remove(0);
    assert_eq!(typ, HANDSHAKE);
    let mut bytes = record(HANDSHAKE, &hello[..40]);
    bytes.extend(record(APPLICATION_DATA, b""));
    bytes.extend(record(HANDSHAKE, &hello[40..]));
    let mut sock = connect(s.port);
    sock.write_all(&bytes).unwrap();
    let got = read_until_eof(&mut sock).unwrap();
    // rustls queues none (MessageInterleavedWithHandshakeMessage); nothing is
    // encrypted yet, so the proxy sends the fitting fatal alert itself.
    assert_eq!(
        handshake_alert(&mut conn, &got).unwrap(),
        AlertDescription::UnexpectedMessage
    );
}

#[test]
fn a_fatal_alert_from_the_client_is_not_answered() {
    // RFC 8446 6.2: on receipt of a fatal alert, close at once; the proxy
    // sends nothing after it (no close_notify), then EOF.
    let s = site("");
    let mut c = establish(s.port, &s.pki);
    let r = c.tx.seal(ALERT, &[2, 48], 0); // fatal unknown_ca
    c.sock.write_all(&r).unwrap();
    let bytes = read_until_eof(&mut c.sock).unwrap();
    for (typ, payload) in records(&bytes) {
        let (inner, content) = match typ {
            APPLICATION_DATA => c.rx.open(&payload).unwrap(),
            other => (other, payload),
        };
        assert_ne!(inner, ALERT, "the proxy answered a fatal alert with alert {content:?}");
    }
}

#[test]
fn zero_length_application_data_between_handshake_records_is_ignored_when_aligned() {
    // The same empty record between two whole messages is legal: the
    // handshake goes on (the server's flight arrives) and the connection stays up.
    let s = site("");
    let mut conn = new_client(&s.pki);
    let mut bytes = first_flight(&mut conn);
    bytes.extend(record(APPLICATION_DATA, b""));
    let mut sock = connect(s.port);
    sock.write_all(&bytes).unwrap();
    sock.set_read_timeout(Some(BOUND)).unwrap();
    let mut buf = [0u8; 4096];
    let n = sock.read(&mut buf).expect("the server's flight");
    assert!(n > 0 && buf[0] == HANDSHAKE, "{:02x?}", &buf[..n.min(8)]);
}

#[test]
fn key_update_fragmented_around_application_data_ends_at_once() {
    let s = site("");
    let mut c = establish(s.port, &s.pki);
    let mut bytes = c.tx.seal(HANDSHAKE, &KEY_UPDATE[..2], 0);
    bytes.extend(c.tx.seal(APPLICATION_DATA, b"between", 0));
    bytes.extend(c.tx.seal(HANDSHAKE, &KEY_UPDATE[2..], 0));
    c.sock.write_all(&bytes).unwrap();
    // rustls queues none (MessageInterleavedWithHandshakeMessage): bare EOF.
    c.eof_without_alert().unwrap();
}

#[test]
fn key_update_split_over_two_records_is_accepted() {
    // The control: a fragmented KeyUpdate with nothing between is legal, and
    // the connection keeps echoing under the client's next keys.
    let s = site("");
    let mut c = establish(s.port, &s.pki);
    let mut bytes = c.tx.seal(HANDSHAKE, &KEY_UPDATE[..2], 0);
    bytes.extend(c.tx.seal(HANDSHAKE, &KEY_UPDATE[2..], 0));
    c.sock.write_all(&bytes).unwrap();
    // No alert and no EOF within a moment: the proxy kept the connection.
    c.sock.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let mut buf = [0u8; 4096];
    match c.sock.read(&mut buf) {
        Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {}
        Ok(n) => {
            for (typ, payload) in records(&buf[..n]) {
                let (inner, _) = if typ == APPLICATION_DATA {
                    c.rx.open(&payload).unwrap()
                } else {
                    (typ, payload)
                };
                assert_ne!(inner, ALERT, "an alert for a legal fragmented KeyUpdate");
            }
            assert!(n > 0, "EOF after a legal fragmented KeyUpdate");
        }
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn application_data_sealed_under_bad_keys_gets_bad_record_mac() {
    // rustls' own fatal alert reaches the peer before EOF.
    let s = site("");
    let mut c = establish(s.port, &s.pki);
    let mut r = c.tx.seal(APPLICATION_DATA, b"tampered", 0);
    let last = r.len() - 1;
    r[last] ^= 1;
    c.sock.write_all(&r).unwrap();
    assert_eq!(c.alert_before_eof().unwrap(), AlertDescription::BadRecordMac);
}

#[test]
fn early_data_records_after_a_hello_without_early_data_get_an_alert() {
    // 0-RTT records the client had no right to send (its hello offered no
    // early data): undecryptable, so refused with rustls' bad_record_mac.
    let s = site("");
    let garbage: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37)).collect();
    let (mut conn, got) = hello_then(
        &s,
        &[
            record(APPLICATION_DATA, &garbage),
            record(APPLICATION_DATA, &garbage[..20]),
        ],
    );
    assert_eq!(
        handshake_alert(&mut conn, &got).unwrap(),
        AlertDescription::BadRecordMac
    );
}

#[test]
fn three_change_cipher_specs_end_at_once() {
    // rustls drops two middlebox CCS records and refuses the third with no
    // alert of its own; its flight (under handshake keys) is out, so the
    // proxy ends the connection with a bare EOF, at once.
    let s = site("");
    let (mut conn, got) = hello_then(&s, &vec![record(CHANGE_CIPHER_SPEC, b"\x01"); 3]);
    assert!(handshake_alert(&mut conn, &got).is_err(), "an alert after a third CCS");
    assert!(
        records(&got).first().is_some_and(|(t, _)| *t == HANDSHAKE),
        "no server flight"
    );
}

#[test]
fn change_cipher_spec_with_a_bad_value_gets_unexpected_message() {
    let s = site("");
    let (mut conn, got) = hello_then(&s, &[record(CHANGE_CIPHER_SPEC, b"\x02")]);
    assert_eq!(
        handshake_alert(&mut conn, &got).unwrap(),
        AlertDescription::UnexpectedMessage
    );
}

#[test]
fn two_change_cipher_specs_then_silence_end_with_an_alert_at_the_handshake_timeout() {
    // Two CCS records are legal and the handshake waits for the client's
    // Finished; a client that then says nothing is not left waiting for ever:
    // the handshake timeout ends it with close_notify, then EOF.
    let s = site("set ssl vserver v1 -handshakeTimeout 1\n");
    let (mut conn, got) = hello_then(&s, &vec![record(CHANGE_CIPHER_SPEC, b"\x01"); 2]);
    assert_eq!(handshake_alert(&mut conn, &got).unwrap(), AlertDescription::CloseNotify);
    assert!(!s.proxy.log().contains("panicked"));
}
