//! Peeking at a TLS ClientHello without terminating TLS: the server name,
//! the ALPN protocols and the offered versions, for routing a connection
//! (SNI routing, `SSL_BRIDGE` passthrough) before anything answers it.
//!
//! [`peek`] is pure and does no IO: given the bytes received so far it says
//! [`Peek::Incomplete`] (read more and call again with everything received),
//! [`Peek::NotTls`] (never going to be a ClientHello we route: garbage, an
//! SSLv2 hello, a malformed or oversized hello), or [`Peek::Hello`]. A hello
//! may be split across several TLS records and any number of TCP segments;
//! the bytes are never consumed or changed, so the caller relays them as they
//! came. Bounded: a hello body over [`MAX_HELLO_LEN`] or one still incomplete
//! after [`MAX_PEEK_LEN`] bytes of records is refused, so a peer cannot make
//! the caller buffer more than that.
//!
//! It checks the structure of the hello as far as routing needs (lengths,
//! no duplicate extension, a well-formed host name), not the rest of the
//! handshake: whoever terminates TLS checks that.

use std::fmt;

/// The longest ClientHello body accepted (the handshake message, without its
/// 4-byte header).
pub const MAX_HELLO_LEN: usize = 16 * 1024;

/// The most bytes (record headers included) [`peek`] looks at before giving
/// up on an incomplete hello: the longest hello plus the headers of a hello
/// cut into small records.
pub const MAX_PEEK_LEN: usize = MAX_HELLO_LEN + 4 * 1024;

const RECORD_HEADER: usize = 5;
const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
/// A TLS plaintext record carries at most 2^14 bytes.
const MAX_RECORD_PAYLOAD: usize = 16 * 1024;

const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;
const EXT_SUPPORTED_VERSIONS: u16 = 43;

/// What the bytes received so far are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peek {
    /// Not enough bytes yet: read more and call again with all of them.
    Incomplete,
    /// Not a ClientHello this proxy routes; the reason is for a log line.
    NotTls(NotTls),
    /// A complete ClientHello.
    Hello(ClientHello),
}

/// Why the bytes are not a ClientHello we route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotTls {
    /// Not TLS handshake records (plain text, another protocol, noise).
    Garbage,
    /// An SSLv2-format ClientHello (SSL 2.0, or SSL 3.0 in the old format).
    SslV2,
    /// TLS records, but not a well-formed ClientHello.
    Malformed,
    /// A hello longer than [`MAX_HELLO_LEN`], or not complete within
    /// [`MAX_PEEK_LEN`] bytes.
    TooLong,
}

impl fmt::Display for NotTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NotTls::Garbage => "not TLS",
            NotTls::SslV2 => "SSLv2 ClientHello",
            NotTls::Malformed => "malformed ClientHello",
            NotTls::TooLong => "ClientHello too long",
        })
    }
}

/// The routing-relevant fields of a ClientHello.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientHello {
    /// The server name (SNI host_name), lower-cased; `None` when absent.
    pub sni: Option<String>,
    /// ALPN protocol names in the client's order; empty when absent.
    pub alpn: Vec<Vec<u8>>,
    /// The `supported_versions` list (0x0304 is TLS 1.3) when the client
    /// sent one, else the hello's legacy version alone.
    pub versions: Vec<u16>,
}

/// Look at the bytes received so far on a new connection.
pub fn peek(buf: &[u8]) -> Peek {
    match peek_records(buf) {
        Peek::Incomplete if buf.len() >= MAX_PEEK_LEN => Peek::NotTls(NotTls::TooLong),
        other => other,
    }
}

fn peek_records(buf: &[u8]) -> Peek {
    // SSLv2 record header: high bit set, then message type 1 (CLIENT-HELLO).
    if buf.first().is_some_and(|b| b & 0x80 != 0) {
        return match buf.get(2) {
            None => Peek::Incomplete,
            Some(1) => Peek::NotTls(NotTls::SslV2),
            Some(_) => Peek::NotTls(NotTls::Garbage),
        };
    }
    // First pass: check the record headers and count the payload, copying
    // nothing, so a hello arriving a byte at a time costs a walk over the
    // headers per call, not a copy of everything so far.
    let mut head = [0u8; 4];
    let mut avail = 0;
    let mut at = 0;
    let body = loop {
        if at >= MAX_PEEK_LEN {
            return Peek::NotTls(NotTls::TooLong);
        }
        let header = &buf[at.min(buf.len())..buf.len().min(at + RECORD_HEADER)];
        // Judge each header byte as soon as it arrives: garbage is refused
        // without waiting for a full header.
        if let Some(&t) = header.first() {
            if t != CONTENT_HANDSHAKE {
                return Peek::NotTls(if at == 0 { NotTls::Garbage } else { NotTls::Malformed });
            }
        }
        if let Some(&major) = header.get(1) {
            if major != 3 {
                return Peek::NotTls(if at == 0 { NotTls::Garbage } else { NotTls::Malformed });
            }
        }
        if header.len() < RECORD_HEADER {
            return Peek::Incomplete;
        }
        let len = u16::from_be_bytes([header[3], header[4]]) as usize;
        if len == 0 || len > MAX_RECORD_PAYLOAD {
            return Peek::NotTls(NotTls::Malformed);
        }
        let start = at + RECORD_HEADER;
        if start + len > MAX_PEEK_LEN {
            return Peek::NotTls(NotTls::TooLong);
        }
        let payload = &buf[start.min(buf.len())..(start + len).min(buf.len())];
        let have = avail.min(head.len());
        let take = (head.len() - have).min(payload.len());
        head[have..have + take].copy_from_slice(&payload[..take]);
        avail += payload.len();
        // The handshake header says how long the hello is.
        if avail >= 1 && head[0] != HANDSHAKE_CLIENT_HELLO {
            return Peek::NotTls(NotTls::Malformed);
        }
        if avail >= 4 {
            let body = u32::from_be_bytes([0, head[1], head[2], head[3]]) as usize;
            if body > MAX_HELLO_LEN {
                return Peek::NotTls(NotTls::TooLong);
            }
            if avail >= 4 + body {
                break body;
            }
        }
        if payload.len() < len {
            return Peek::Incomplete;
        }
        at = start + len;
    };
    // Second pass: the hello is all here. In one record (the usual case) it
    // is read in place; across several, their payloads are joined.
    let first_len = u16::from_be_bytes([buf[3], buf[4]]) as usize;
    let parsed = if first_len >= 4 + body {
        parse_body(&buf[RECORD_HEADER + 4..RECORD_HEADER + 4 + body])
    } else {
        let mut hello = Vec::with_capacity(4 + body);
        let mut at = 0;
        while hello.len() < 4 + body {
            let len = u16::from_be_bytes([buf[at + 3], buf[at + 4]]) as usize;
            let start = at + RECORD_HEADER;
            hello.extend_from_slice(&buf[start..(start + len).min(buf.len())]);
            at = start + len;
        }
        parse_body(&hello[4..4 + body])
    };
    match parsed {
        Some(h) => Peek::Hello(h),
        None => Peek::NotTls(NotTls::Malformed),
    }
}

/// A cursor over a byte slice; every read is bounds-checked.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.buf.len() {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a one-byte length prefix.
    fn vec8(&mut self) -> Option<Reader<'a>> {
        let n = self.u8()? as usize;
        self.take(n).map(|buf| Reader { buf })
    }

    /// A vector with a two-byte length prefix.
    fn vec16(&mut self) -> Option<Reader<'a>> {
        let n = self.u16()? as usize;
        self.take(n).map(|buf| Reader { buf })
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

fn parse_body(body: &[u8]) -> Option<ClientHello> {
    let mut r = Reader { buf: body };
    let legacy_version = r.u16()?;
    if legacy_version >> 8 != 3 {
        return None;
    }
    r.take(32)?; // random
    let session_id = r.vec8()?;
    if session_id.buf.len() > 32 {
        return None;
    }
    let suites = r.vec16()?;
    if suites.buf.is_empty() || suites.buf.len() % 2 != 0 {
        return None;
    }
    if r.vec8()?.is_empty() {
        return None; // no compression method at all
    }
    let mut hello = ClientHello {
        versions: vec![legacy_version],
        ..Default::default()
    };
    if r.is_empty() {
        return Some(hello); // no extensions
    }
    let mut exts = r.vec16()?;
    if !r.is_empty() {
        return None;
    }
    let mut seen: Vec<u16> = Vec::new();
    while !exts.is_empty() {
        let kind = exts.u16()?;
        let mut data = exts.vec16()?;
        if seen.contains(&kind) {
            return None;
        }
        seen.push(kind);
        match kind {
            EXT_SERVER_NAME => hello.sni = server_name(&mut data)?,
            EXT_ALPN => hello.alpn = alpn(&mut data)?,
            EXT_SUPPORTED_VERSIONS => hello.versions = versions(&mut data)?,
            _ => {}
        }
    }
    Some(hello)
}

/// The host_name entry of a server_name extension, lower-cased.
fn server_name(data: &mut Reader<'_>) -> Option<Option<String>> {
    let mut list = data.vec16()?;
    if !data.is_empty() {
        return None;
    }
    let mut name = None;
    while !list.is_empty() {
        let kind = list.u8()?;
        let value = list.vec16()?;
        if kind == 0 {
            if name.is_some() {
                return None; // at most one host_name (RFC 6066)
            }
            name = Some(host_name(value.buf)?);
        }
    }
    Some(name)
}

/// A DNS host name as SNI carries it: ASCII letters, digits, `-`, `_` and
/// `.`, no empty label, no trailing dot, at most 253 bytes.
fn host_name(raw: &[u8]) -> Option<String> {
    if raw.is_empty() || raw.len() > 253 {
        return None;
    }
    let ok = raw
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if !ok
        || raw
            .split(|&b| b == b'.')
            .any(|label| label.is_empty() || label.len() > 63)
    {
        return None;
    }
    Some(String::from_utf8_lossy(raw).to_ascii_lowercase())
}

fn alpn(data: &mut Reader<'_>) -> Option<Vec<Vec<u8>>> {
    let mut list = data.vec16()?;
    if !data.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    while !list.is_empty() {
        let name = list.vec8()?;
        if name.is_empty() {
            return None;
        }
        out.push(name.buf.to_vec());
    }
    Some(out)
}

fn versions(data: &mut Reader<'_>) -> Option<Vec<u16>> {
    let mut list = data.vec8()?;
    if !data.is_empty() || list.buf.is_empty() || list.buf.len() % 2 != 0 {
        return None;
    }
    let mut out = Vec::new();
    while !list.is_empty() {
        out.push(list.u16()?);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use rustls::pki_types::ServerName;

    /// The first flight of a rustls client: its ClientHello records.
    fn rustls_hello(
        versions: &[&'static rustls::SupportedProtocolVersion],
        sni: &str,
        alpn: &[&[u8]],
        max_fragment: Option<usize>,
    ) -> Vec<u8> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config.max_fragment_size = max_fragment;
        let name = ServerName::try_from(sni.to_string()).unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out).unwrap();
        }
        out
    }

    fn hello_of(bytes: &[u8]) -> ClientHello {
        match peek(bytes) {
            Peek::Hello(h) => h,
            other => panic!("expected a hello, got {other:?}"),
        }
    }

    /// Every proper prefix is Incomplete, the whole is the hello.
    fn assert_segmented(bytes: &[u8]) -> ClientHello {
        for cut in 0..bytes.len() {
            assert_eq!(peek(&bytes[..cut]), Peek::Incomplete, "prefix of {cut} bytes");
        }
        hello_of(bytes)
    }

    fn record_count(bytes: &[u8]) -> usize {
        let mut at = 0;
        let mut n = 0;
        while at + 5 <= bytes.len() {
            at += 5 + u16::from_be_bytes([bytes[at + 3], bytes[at + 4]]) as usize;
            n += 1;
        }
        n
    }

    #[test]
    fn tls13_hello_from_rustls() {
        let bytes = rustls_hello(&[&rustls::version::TLS13], "A.Example", &[b"h2", b"http/1.1"], None);
        let h = assert_segmented(&bytes);
        assert_eq!(h.sni.as_deref(), Some("a.example"));
        assert_eq!(h.alpn, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
        assert_eq!(h.versions, vec![0x0304]);
    }

    #[test]
    fn tls12_hello_fragmented_across_records_and_segments() {
        let bytes = rustls_hello(&[&rustls::version::TLS12], "b.example", &[], Some(32));
        assert!(record_count(&bytes) > 3, "the hello spans several records");
        let h = assert_segmented(&bytes);
        assert_eq!(h.sni.as_deref(), Some("b.example"));
        assert!(h.alpn.is_empty());
        assert!(
            h.versions.contains(&0x0303) && !h.versions.contains(&0x0304),
            "{:x?}",
            h.versions
        );
    }

    #[test]
    fn tls13_hello_fragmented_across_records() {
        let bytes = rustls_hello(
            &[&rustls::version::TLS13, &rustls::version::TLS12],
            "c.example",
            &[b"h2"],
            Some(32),
        );
        assert!(record_count(&bytes) > 5);
        let h = assert_segmented(&bytes);
        assert_eq!(h.sni.as_deref(), Some("c.example"));
        assert_eq!(h.versions, vec![0x0304, 0x0303]);
    }

    #[test]
    fn bytes_after_the_hello_do_not_matter() {
        let mut bytes = rustls_hello(&[&rustls::version::TLS13], "a.example", &[], None);
        bytes.extend_from_slice(b"\x14\x03\x03\x00\x01\x01 and anything else");
        assert_eq!(hello_of(&bytes).sni.as_deref(), Some("a.example"));
    }

    #[test]
    fn hello_without_sni() {
        // rustls sends no SNI for an IP address.
        let bytes = rustls_hello(&[&rustls::version::TLS13], "127.0.0.1", &[], None);
        let h = hello_of(&bytes);
        assert_eq!(h.sni, None);
        assert_eq!(h.versions, vec![0x0304]);
    }

    #[test]
    fn garbage_is_refused_at_the_first_byte() {
        assert_eq!(peek(b"G"), Peek::NotTls(NotTls::Garbage));
        assert_eq!(peek(b"GET / HTTP/1.1\r\n\r\n"), Peek::NotTls(NotTls::Garbage));
        assert_eq!(peek(b"\x16\x09"), Peek::NotTls(NotTls::Garbage));
        assert_eq!(peek(b"\x16\x03"), Peek::Incomplete);
        assert_eq!(peek(b""), Peek::Incomplete);
        // A handshake record that is not a ClientHello (a ServerHello).
        assert_eq!(
            peek(b"\x16\x03\x03\x00\x04\x02\x00\x00\x00"),
            Peek::NotTls(NotTls::Malformed)
        );
        // An empty record.
        assert_eq!(peek(b"\x16\x03\x01\x00\x00"), Peek::NotTls(NotTls::Malformed));
    }

    #[test]
    fn sslv2_hello_is_refused() {
        // SSLv2-format CLIENT-HELLO as old clients send it (2-byte header, type 1, version 3.1).
        let v2 = b"\x80\x2e\x01\x03\x01\x00\x15\x00\x00\x00\x10";
        assert_eq!(peek(v2), Peek::NotTls(NotTls::SslV2));
    }

    #[test]
    fn oversized_hello_is_refused_from_its_header() {
        let mut bytes = b"\x16\x03\x01\x40\x00\x01".to_vec();
        bytes.extend_from_slice(&((MAX_HELLO_LEN + 1) as u32).to_be_bytes()[1..]);
        assert_eq!(peek(&bytes), Peek::NotTls(NotTls::TooLong));
    }

    #[test]
    fn a_hello_in_endless_tiny_records_is_refused() {
        // Handshake header promising the longest hello, then one-byte records.
        let mut bytes = b"\x16\x03\x01\x00\x04\x01".to_vec();
        bytes.extend_from_slice(&(MAX_HELLO_LEN as u32).to_be_bytes()[1..]);
        while bytes.len() <= MAX_PEEK_LEN {
            bytes.extend_from_slice(b"\x16\x03\x01\x00\x01\x00");
        }
        assert_eq!(peek(&bytes), Peek::NotTls(NotTls::TooLong));
    }

    #[test]
    fn truncated_or_corrupt_hellos_never_panic() {
        let bytes = rustls_hello(&[&rustls::version::TLS13], "a.example", &[b"h2"], None);
        for i in 5..bytes.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bad = bytes.clone();
                bad[i] ^= flip;
                let _ = peek(&bad);
            }
        }
    }

    #[test]
    fn malformed_server_names_are_refused() {
        assert_eq!(host_name(b"a.example"), Some("a.example".into()));
        assert_eq!(host_name(b"a.example."), None);
        assert_eq!(host_name(b"a..example"), None);
        assert_eq!(host_name(b"a example"), None);
        assert_eq!(host_name(b"\xc3\xa9.example"), None);
        assert_eq!(host_name(b""), None);
    }
}
