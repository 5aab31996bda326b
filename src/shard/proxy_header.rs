//! The PROXY protocol header (versions 1 and 2, haproxy's
//! `proxy-protocol.txt`): built for a back end, parsed from a load balancer
//! in front.
//!
//! [`encode`] writes the header a back end receives before any client byte:
//! the client's and the vserver's addresses and, for version 2, the TLVs of
//! the client's TLS connection (ALPN, authority = SNI, and the SSL TLV with
//! its sub-TLVs). Without addresses it writes a LOCAL header (version 2) or
//! `PROXY UNKNOWN` (version 1), as a health probe sends.
//!
//! [`parse`] reads a header from the first bytes of a connection and tells
//! a header still arriving ([`Parsed::Incomplete`]) from one that never will
//! be valid ([`Parsed::Invalid`]); it never reads past the header, and never
//! accepts more than [`V1_MAX`] bytes (version 1) or [`V2_MAX_PAYLOAD`]
//! bytes after the fixed part (version 2).
//!
//! No IO and no rustls here: callers pass what the TLS leg reports.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// The version a net profile sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

impl From<crate::config::ProxyProtocolVersion> for Version {
    fn from(v: crate::config::ProxyProtocolVersion) -> Self {
        match v {
            crate::config::ProxyProtocolVersion::V1 => Version::V1,
            crate::config::ProxyProtocolVersion::V2 => Version::V2,
        }
    }
}

/// Longest version 1 header, CRLF included (the specification's bound).
pub const V1_MAX: usize = 107;
/// Most bytes accepted after a version 2 header's fixed 16: the largest
/// address block (216, unix sockets) and 1 KiB of TLVs.
pub const V2_MAX_PAYLOAD: usize = 216 + 1024;

/// The version 2 signature.
pub const V2_SIG: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
const V1_SIG: &[u8] = b"PROXY ";

/// TLV types (version 2).
pub const PP2_TYPE_ALPN: u8 = 0x01;
pub const PP2_TYPE_AUTHORITY: u8 = 0x02;
pub const PP2_TYPE_SSL: u8 = 0x20;
pub const PP2_SUBTYPE_SSL_VERSION: u8 = 0x21;
pub const PP2_SUBTYPE_SSL_CN: u8 = 0x22;
pub const PP2_SUBTYPE_SSL_CIPHER: u8 = 0x23;
pub const PP2_SUBTYPE_SSL_SIG_ALG: u8 = 0x24;
pub const PP2_SUBTYPE_SSL_KEY_ALG: u8 = 0x25;
/// Client flags of the SSL TLV.
pub const PP2_CLIENT_SSL: u8 = 0x01;
pub const PP2_CLIENT_CERT_CONN: u8 = 0x02;
pub const PP2_CLIENT_CERT_SESS: u8 = 0x04;

/// What the client's TLS connection tells a version 2 back end.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFacts {
    /// SNI the client sent (the authority TLV).
    pub sni: Option<String>,
    pub alpn: Option<Vec<u8>>,
    /// `TLSv1.2`, `TLSv1.3`.
    pub version: Option<String>,
    /// The negotiated suite, IANA name.
    pub cipher: Option<String>,
    /// Signature algorithm of the certificate served to the client.
    pub sig_alg: Option<String>,
    /// Key algorithm of the certificate served to the client.
    pub key_alg: Option<String>,
    /// The client presented a certificate on this connection (full handshake).
    pub cert_conn: bool,
    /// The client's session carries a certificate (this or an earlier handshake).
    pub cert_sess: bool,
    /// Common name of the client's certificate.
    pub client_cn: Option<String>,
}

/// The two addresses of a proxied connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Addrs {
    /// The client (source).
    pub source: SocketAddr,
    /// The address the client connected to (destination).
    pub dest: SocketAddr,
}

impl Addrs {
    /// Both addresses in one family: an IPv4 address next to an IPv6 one is
    /// written IPv4-mapped.
    fn same_family(self) -> (SocketAddr, SocketAddr) {
        let map = |a: SocketAddr| match a.ip() {
            IpAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), a.port()),
            IpAddr::V6(_) => a,
        };
        if self.source.is_ipv4() == self.dest.is_ipv4() {
            (self.source, self.dest)
        } else {
            (map(self.source), map(self.dest))
        }
    }
}

/// Append the header to `out`. `addrs: None` writes a LOCAL header (v2) or
/// `PROXY UNKNOWN` (v1); `tls` adds the TLS TLVs (v2 only).
pub fn encode(version: Version, addrs: Option<Addrs>, tls: Option<&TlsFacts>, out: &mut Vec<u8>) {
    match version {
        Version::V1 => encode_v1(addrs, out),
        Version::V2 => encode_v2(addrs, tls, out),
    }
}

fn encode_v1(addrs: Option<Addrs>, out: &mut Vec<u8>) {
    let mut line = String::with_capacity(V1_MAX);
    match addrs.map(Addrs::same_family) {
        Some((s, d)) => {
            let fam = if s.is_ipv4() { "TCP4" } else { "TCP6" };
            let _ = write!(line, "PROXY {fam} {} {} {} {}\r\n", s.ip(), d.ip(), s.port(), d.port());
        }
        None => line.push_str("PROXY UNKNOWN\r\n"),
    }
    out.extend_from_slice(line.as_bytes());
}

fn push_tlv(out: &mut Vec<u8>, kind: u8, value: &[u8]) {
    // Values are bounded by the caller (names, suites, SNI, ALPN): far under 64 KiB.
    let len = value.len().min(u16::MAX as usize);
    out.push(kind);
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&value[..len]);
}

fn encode_v2(addrs: Option<Addrs>, tls: Option<&TlsFacts>, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&V2_SIG);
    let Some(addrs) = addrs else {
        // LOCAL, AF_UNSPEC, no payload.
        out.extend_from_slice(&[0x20, 0x00, 0, 0]);
        return;
    };
    let (s, d) = addrs.same_family();
    out.push(0x21);
    match (s.ip(), d.ip()) {
        (IpAddr::V4(si), IpAddr::V4(di)) => {
            out.extend_from_slice(&[0x11, 0, 0]);
            out.extend_from_slice(&si.octets());
            out.extend_from_slice(&di.octets());
        }
        (si, di) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V6(a) => a,
                IpAddr::V4(a) => a.to_ipv6_mapped(),
            };
            out.extend_from_slice(&[0x21, 0, 0]);
            out.extend_from_slice(&v6(si).octets());
            out.extend_from_slice(&v6(di).octets());
        }
    }
    out.extend_from_slice(&s.port().to_be_bytes());
    out.extend_from_slice(&d.port().to_be_bytes());
    if let Some(t) = tls {
        if let Some(alpn) = &t.alpn {
            push_tlv(out, PP2_TYPE_ALPN, alpn);
        }
        if let Some(sni) = &t.sni {
            push_tlv(out, PP2_TYPE_AUTHORITY, sni.as_bytes());
        }
        let mut ssl = Vec::with_capacity(64);
        let mut flags = PP2_CLIENT_SSL;
        if t.cert_conn {
            flags |= PP2_CLIENT_CERT_CONN;
        }
        if t.cert_sess {
            flags |= PP2_CLIENT_CERT_SESS;
        }
        ssl.push(flags);
        // verify: 0 = the certificate was verified (or none was presented);
        // a connection whose certificate failed never gets this far.
        ssl.extend_from_slice(&0u32.to_be_bytes());
        let subs = [
            (PP2_SUBTYPE_SSL_VERSION, &t.version),
            (PP2_SUBTYPE_SSL_CN, &t.client_cn),
            (PP2_SUBTYPE_SSL_CIPHER, &t.cipher),
            (PP2_SUBTYPE_SSL_SIG_ALG, &t.sig_alg),
            (PP2_SUBTYPE_SSL_KEY_ALG, &t.key_alg),
        ];
        for (kind, v) in subs {
            if let Some(v) = v {
                push_tlv(&mut ssl, kind, v.as_bytes());
            }
        }
        push_tlv(out, PP2_TYPE_SSL, &ssl);
    }
    let len = (out.len() - start - 16) as u16;
    out[start + 14..start + 16].copy_from_slice(&len.to_be_bytes());
}

/// A header read from the front of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub version: Version,
    /// `None`: LOCAL (v2), UNKNOWN (v1) or an address family other than TCP
    /// over IPv4 or IPv6: the connection's own addresses stand.
    pub addrs: Option<Addrs>,
    /// Version 2 TLVs, type and value, in order.
    pub tlvs: Vec<(u8, Vec<u8>)>,
}

/// What [`parse`] made of the bytes so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A valid header of `len` bytes; the connection's own bytes follow it.
    Done { header: Header, len: usize },
    /// A valid beginning: read more.
    Incomplete,
    /// Not a header, or a malformed or oversized one.
    Invalid(&'static str),
}

/// Parse a PROXY header at the start of `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    let n = buf.len().min(V2_SIG.len());
    if buf[..n] == V2_SIG[..n] {
        return if n < V2_SIG.len() {
            Parsed::Incomplete
        } else {
            parse_v2(buf)
        };
    }
    let n = buf.len().min(V1_SIG.len());
    if buf[..n] == V1_SIG[..n] {
        return if n < V1_SIG.len() {
            Parsed::Incomplete
        } else {
            parse_v1(buf)
        };
    }
    Parsed::Invalid("no PROXY header")
}

fn parse_v1(buf: &[u8]) -> Parsed {
    let window = &buf[..buf.len().min(V1_MAX)];
    // Only what a v1 line can hold may come before its CR: anything else
    // (a bare LF, binary) fails at once rather than waiting for more.
    let line_end = window.iter().position(|&b| b == b'\r').unwrap_or(window.len());
    if !window[..line_end]
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b' ' | b'.' | b':'))
    {
        return Parsed::Invalid("v1 header: unexpected byte");
    }
    let Some(cr) = window.iter().position(|&b| b == b'\r') else {
        return if buf.len() < V1_MAX {
            Parsed::Incomplete
        } else {
            Parsed::Invalid("v1 header longer than 107 bytes")
        };
    };
    match window.get(cr + 1) {
        None if buf.len() < V1_MAX => return Parsed::Incomplete,
        Some(b'\n') => {}
        _ => return Parsed::Invalid("v1 header: CR without LF"),
    }
    let Ok(line) = std::str::from_utf8(&window[..cr]) else {
        return Parsed::Invalid("v1 header: not ASCII");
    };
    let len = cr + 2;
    let words: Vec<&str> = line.split(' ').collect();
    let header = |addrs| Parsed::Done {
        header: Header {
            version: Version::V1,
            addrs,
            tlvs: vec![],
        },
        len,
    };
    match words.as_slice() {
        ["PROXY", "UNKNOWN", ..] => header(None),
        ["PROXY", fam @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let v4 = *fam == "TCP4";
            let ip = |s: &str| -> Option<IpAddr> {
                let ip: IpAddr = s.parse().ok()?;
                (ip.is_ipv4() == v4).then_some(ip)
            };
            let port = |s: &str| -> Option<u16> {
                let ok = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
                ok.then(|| s.parse().ok()).flatten()
            };
            match (ip(src), ip(dst), port(sport), port(dport)) {
                (Some(s), Some(d), Some(sp), Some(dp)) => header(Some(Addrs {
                    source: SocketAddr::new(s, sp),
                    dest: SocketAddr::new(d, dp),
                })),
                _ => Parsed::Invalid("v1 header: bad address or port"),
            }
        }
        _ => Parsed::Invalid("v1 header: bad protocol or field count"),
    }
}

fn parse_v2(buf: &[u8]) -> Parsed {
    if buf.len() < 16 {
        return Parsed::Incomplete;
    }
    let (ver, cmd) = (buf[12] >> 4, buf[12] & 0x0f);
    if ver != 2 {
        return Parsed::Invalid("v2 header: bad version");
    }
    if cmd > 1 {
        return Parsed::Invalid("v2 header: bad command");
    }
    let fam = buf[13];
    let payload_len = u16::from_be_bytes([buf[14], buf[15]]) as usize;
    if payload_len > V2_MAX_PAYLOAD {
        return Parsed::Invalid("v2 header: longer than accepted");
    }
    let addr_len = match fam {
        0x00 => 0,
        0x11 | 0x12 => 12,
        0x21 | 0x22 => 36,
        0x31 | 0x32 => 216,
        _ => return Parsed::Invalid("v2 header: bad address family"),
    };
    if payload_len < addr_len {
        return Parsed::Invalid("v2 header: address block truncated");
    }
    if buf.len() < 16 + payload_len {
        return Parsed::Incomplete;
    }
    let payload = &buf[16..16 + payload_len];
    let a = &payload[..addr_len];
    let port = |i: usize| u16::from_be_bytes([a[i], a[i + 1]]);
    let addrs = match (cmd, fam) {
        (1, 0x11) => {
            let ip = |i: usize| IpAddr::from([a[i], a[i + 1], a[i + 2], a[i + 3]]);
            Some(Addrs {
                source: SocketAddr::new(ip(0), port(8)),
                dest: SocketAddr::new(ip(4), port(10)),
            })
        }
        (1, 0x21) => {
            let ip = |i: usize| {
                let mut o = [0u8; 16];
                o.copy_from_slice(&a[i..i + 16]);
                IpAddr::V6(Ipv6Addr::from(o))
            };
            Some(Addrs {
                source: SocketAddr::new(ip(0), port(32)),
                dest: SocketAddr::new(ip(16), port(34)),
            })
        }
        _ => None,
    };
    let Some(tlvs) = parse_tlvs(&payload[addr_len..]) else {
        return Parsed::Invalid("v2 header: malformed TLV");
    };
    Parsed::Done {
        header: Header {
            version: Version::V2,
            addrs,
            tlvs,
        },
        len: 16 + payload_len,
    }
}

/// Split a TLV block; `None` when a TLV runs past its end.
pub fn parse_tlvs(mut b: &[u8]) -> Option<Vec<(u8, Vec<u8>)>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        if b.len() < 3 {
            return None;
        }
        let len = u16::from_be_bytes([b[1], b[2]]) as usize;
        let value = b.get(3..3 + len)?;
        out.push((b[0], value.to_vec()));
        b = &b[3 + len..];
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn addrs(s: &str, d: &str) -> Option<Addrs> {
        Some(Addrs {
            source: sa(s),
            dest: sa(d),
        })
    }

    fn enc(v: Version, a: Option<Addrs>, t: Option<&TlsFacts>) -> Vec<u8> {
        let mut out = Vec::new();
        encode(v, a, t, &mut out);
        out
    }

    #[test]
    fn v1_lines_as_specified() {
        let a = addrs("192.0.2.1:56324", "198.51.100.7:443");
        assert_eq!(
            enc(Version::V1, a, None),
            b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n"
        );
        assert_eq!(
            enc(Version::V1, addrs("[2001:db8::1]:1", "[::1]:2"), None),
            b"PROXY TCP6 2001:db8::1 ::1 1 2\r\n"
        );
        assert_eq!(
            enc(Version::V1, addrs("192.0.2.1:1", "[::1]:2"), None),
            b"PROXY TCP6 ::ffff:192.0.2.1 ::1 1 2\r\n"
        );
        assert_eq!(enc(Version::V1, None, None), b"PROXY UNKNOWN\r\n");
        // The longest line fits the specification's bound.
        let long = enc(
            Version::V1,
            addrs(
                "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
                "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
            ),
            None,
        );
        assert!(long.len() <= V1_MAX, "{}", long.len());
    }

    #[test]
    fn v2_bytes_as_specified() {
        let a = addrs("192.0.2.1:256", "198.51.100.7:443");
        let b = enc(Version::V2, a, None);
        let mut want = V2_SIG.to_vec();
        want.extend_from_slice(&[0x21, 0x11, 0, 12, 192, 0, 2, 1, 198, 51, 100, 7, 1, 0, 1, 187]);
        assert_eq!(b, want);
        let local = enc(Version::V2, None, None);
        let mut want = V2_SIG.to_vec();
        want.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(local, want);
    }

    #[test]
    fn v2_round_trips_with_tls_tlvs() {
        let t = TlsFacts {
            sni: Some("a.example".into()),
            alpn: Some(b"h2".to_vec()),
            version: Some("TLSv1.3".into()),
            cipher: Some("TLS_AES_128_GCM_SHA256".into()),
            sig_alg: None,
            key_alg: None,
            cert_conn: true,
            cert_sess: true,
            client_cn: Some("client one".into()),
        };
        let a = addrs("[2001:db8::5]:40000", "[::1]:8443");
        let mut b = enc(Version::V2, a, Some(&t));
        b.extend_from_slice(b"\x16\x03\x01rest");
        let Parsed::Done { header, len } = parse(&b) else {
            panic!("{:?}", parse(&b))
        };
        assert_eq!(&b[len..], b"\x16\x03\x01rest");
        assert_eq!(header.addrs, a);
        assert_eq!(header.tlvs[0], (PP2_TYPE_ALPN, b"h2".to_vec()));
        assert_eq!(header.tlvs[1], (PP2_TYPE_AUTHORITY, b"a.example".to_vec()));
        let (kind, ssl) = &header.tlvs[2];
        assert_eq!(*kind, PP2_TYPE_SSL);
        assert_eq!(ssl[0], PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS);
        assert_eq!(ssl[1..5], [0, 0, 0, 0]);
        let subs = parse_tlvs(&ssl[5..]).unwrap();
        assert_eq!(
            subs,
            [
                (PP2_SUBTYPE_SSL_VERSION, b"TLSv1.3".to_vec()),
                (PP2_SUBTYPE_SSL_CN, b"client one".to_vec()),
                (PP2_SUBTYPE_SSL_CIPHER, b"TLS_AES_128_GCM_SHA256".to_vec()),
            ]
        );
    }

    #[test]
    fn v1_parses_and_leaves_the_rest() {
        let b = b"PROXY TCP4 10.1.2.3 10.0.0.1 5000 443\r\n\x16\x03";
        let Parsed::Done { header, len } = parse(b) else {
            panic!()
        };
        assert_eq!(&b[len..], b"\x16\x03");
        assert_eq!(header.addrs, addrs("10.1.2.3:5000", "10.0.0.1:443"));
        let Parsed::Done { header, .. } = parse(b"PROXY UNKNOWN ffff::1 ::1 1 2\r\n") else {
            panic!()
        };
        assert_eq!(header.addrs, None);
    }

    #[test]
    fn every_prefix_of_a_header_is_incomplete() {
        let v2 = enc(
            Version::V2,
            addrs("1.2.3.4:5", "6.7.8.9:10"),
            Some(&TlsFacts::default()),
        );
        let v1 = enc(Version::V1, addrs("1.2.3.4:5", "6.7.8.9:10"), None);
        for h in [&v2, &v1] {
            for i in 0..h.len() {
                assert_eq!(parse(&h[..i]), Parsed::Incomplete, "prefix {i} of {h:?}");
            }
            assert!(matches!(parse(h), Parsed::Done { len, .. } if len == h.len()));
        }
    }

    #[test]
    fn hostile_headers_are_invalid() {
        for bad in [
            &b"\x16\x03\x01\x02\x00"[..],
            b"GET / HTTP/1.1\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX",
        ] {
            assert!(
                matches!(parse(bad), Parsed::Invalid(_)),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // v1 longer than 107 bytes without its CRLF.
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(V1_MAX, b'a');
        assert!(matches!(parse(&long), Parsed::Invalid(_)));
        assert_eq!(parse(&long[..V1_MAX - 1]), Parsed::Incomplete);
        // v2: oversized, bad version, bad command, bad family, short address, bad TLV.
        let v2 = |ver_cmd: u8, fam: u8, payload: &[u8], len: u16| {
            let mut b = V2_SIG.to_vec();
            b.extend_from_slice(&[ver_cmd, fam]);
            b.extend_from_slice(&len.to_be_bytes());
            b.extend_from_slice(payload);
            b
        };
        let addr4 = [1u8, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2];
        assert!(matches!(parse(&v2(0x21, 0x11, &[], 2000)), Parsed::Invalid(_)));
        assert!(matches!(parse(&v2(0x11, 0x11, &addr4, 12)), Parsed::Invalid(_)));
        assert!(matches!(parse(&v2(0x22, 0x11, &addr4, 12)), Parsed::Invalid(_)));
        assert!(matches!(parse(&v2(0x21, 0x41, &addr4, 12)), Parsed::Invalid(_)));
        assert!(matches!(parse(&v2(0x21, 0x21, &addr4, 12)), Parsed::Invalid(_)));
        let mut bad_tlv = addr4.to_vec();
        bad_tlv.extend_from_slice(&[0x01, 0, 9, b'x']);
        assert!(matches!(parse(&v2(0x21, 0x11, &bad_tlv, 16)), Parsed::Invalid(_)));
        assert!(matches!(
            parse(&v2(0x21, 0x11, &addr4, 12)),
            Parsed::Done { len: 28, .. }
        ));
    }
}
