//! `SSL_BRIDGE` passthrough end to end: the proxy peeks at the ClientHello
//! without terminating TLS and relays every byte to an `SSL_BRIDGE` back
//! end, which completes the handshake with the client itself.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rustls::pki_types::ServerName;
use shardtls::test_server::TestServerMode;

/// A TLS echo back end for `a.example` behind an SSL_BRIDGE vserver that
/// holds no certificate of its own.
struct Bridge {
    pki: Pki,
    serial: String,
    _origin: shardtls::test_server::TestServerHandle,
    proxy: Proxy,
    addr: SocketAddr,
}

fn bridge(shards: usize) -> Bridge {
    let pki = Pki::new();
    let (cert, key, serial) = pki.issue("origin", &["a.example"]);
    let origin = tls_backend(TestServerMode::Echo, server_config_from(&cert, &key));
    let port = free_port();
    let config = format!(
        "add service b {} SSL_BRIDGE\n\
         add lb vserver pt SSL_BRIDGE 127.0.0.1 {port}\n\
         set ssl vserver pt -handshakeTimeout 2\n\
         bind lb vserver pt b\n",
        origin.local_addr().to_string().replace(':', " ")
    );
    let proxy = Proxy::start(&config, shards);
    Bridge {
        pki,
        serial,
        _origin: origin,
        proxy,
        addr: lo(port),
    }
}

/// A TLS client whose ClientHello is cut into records of at most
/// `fragment` bytes (`max_fragment_size`), written `segment` bytes per TCP
/// segment; then the handshake completes normally and data echoes.
fn fragmented_client(
    addr: SocketAddr,
    pki: &Pki,
    version: &'static rustls::SupportedProtocolVersion,
    fragment: usize,
    segment: usize,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let mut cfg = (*client_config(&pki.ca, Some(version))).clone();
    cfg.max_fragment_size = Some(fragment);
    let mut conn = rustls::ClientConnection::new(Arc::new(cfg), ServerName::try_from("a.example").unwrap()).unwrap();
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello).unwrap();
    }
    assert!(hello.len() > 2 * fragment, "the hello spans several records");
    let mut sock = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).unwrap();
    sock.set_nodelay(true).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for piece in hello.chunks(segment) {
        sock.write_all(piece).unwrap();
        // Separate segments: the proxy sees the hello arrive in pieces.
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut tls = rustls::StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).unwrap();
    }
    tls
}

fn serial_of(tls: &rustls::StreamOwned<rustls::ClientConnection, TcpStream>) -> String {
    let der = &tls.conn.peer_certificates().unwrap()[0];
    let (_, x) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
    x.tbs_certificate.raw_serial_as_string()
}

#[test]
fn fragmented_tls12_and_tls13_hellos_pass_through_to_the_back_end() {
    let b = bridge(2);
    let cases: [(&'static rustls::SupportedProtocolVersion, rustls::ProtocolVersion); 2] = [
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
    ];
    for (version, want) in cases {
        // Several connections: both shards take some (SO_REUSEPORT).
        for (fragment, segment) in [(32, 7), (48, 1), (64, 100), (40, 3)] {
            let mut tls = fragmented_client(b.addr, &b.pki, version, fragment, segment);
            assert_eq!(tls.conn.protocol_version(), Some(want));
            // The back end's own certificate: TLS is end to end.
            assert_eq!(serial_of(&tls), b.serial);
            tls.write_all(b"through the bridge").unwrap();
            let mut back = [0u8; 18];
            tls.read_exact(&mut back).unwrap();
            assert_eq!(&back, b"through the bridge");
            tls.conn.send_close_notify();
            let _ = tls.conn.complete_io(&mut tls.sock);
        }
    }
    let stats = b.proxy.stats();
    assert_eq!(total(&stats, "vserver", "pt", "handshakes_completed"), 8, "{stats}");
    assert_eq!(total(&stats, "vserver", "pt", "killed"), 0, "{stats}");
}

#[test]
fn garbage_and_sslv2_hellos_are_closed_with_a_log_line() {
    let b = bridge(1);
    for junk in [
        &b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n"[..],
        b"\x80\x2e\x01\x03\x01\x00\x15\x00\x00\x00\x10",
    ] {
        let mut sock = TcpStream::connect(b.addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        sock.write_all(junk).unwrap();
        let mut buf = [0u8; 64];
        // Closed without an answer (EOF, or a reset).
        assert!(matches!(sock.read(&mut buf), Ok(0) | Err(_)));
    }
    assert!(
        wait_for(Duration::from_secs(5), || b
            .proxy
            .log()
            .contains("passthrough refused: SSLv2 ClientHello")),
        "{}",
        b.proxy.log()
    );
    assert!(
        b.proxy.log().contains("passthrough refused: not TLS"),
        "{}",
        b.proxy.log()
    );
}

#[test]
fn an_unfinished_hello_is_closed_at_the_handshake_timeout() {
    let b = bridge(1);
    let mut sock = TcpStream::connect(b.addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // A record header promising more than ever comes.
    sock.write_all(b"\x16\x03\x01\x02\x00\x01").unwrap();
    let mut buf = [0u8; 16];
    assert!(matches!(sock.read(&mut buf), Ok(0) | Err(_)));
}

#[test]
fn an_oversized_hello_is_refused_from_its_header() {
    let b = bridge(1);
    let mut sock = TcpStream::connect(b.addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // A handshake header promising a 64 KiB ClientHello.
    sock.write_all(b"\x16\x03\x01\x00\x04\x01\x01\x00\x00").unwrap();
    let mut buf = [0u8; 16];
    assert!(matches!(sock.read(&mut buf), Ok(0) | Err(_)));
    assert!(
        wait_for(Duration::from_secs(5), || b
            .proxy
            .log()
            .contains("passthrough refused: ClientHello too long")),
        "{}",
        b.proxy.log()
    );
}

#[test]
fn disable_closes_relayed_connections_and_routing_resumes_on_enable() {
    let b = bridge(2);
    let mut tls = fragmented_client(b.addr, &b.pki, &rustls::version::TLS13, 64, 1000);
    tls.write_all(b"ping").unwrap();
    let mut back = [0u8; 4];
    tls.read_exact(&mut back).unwrap();
    b.proxy.ctl("disable lb vserver pt").unwrap();
    // R7: the relayed connection is closed (FIN or reset, never an answer).
    let mut buf = [0u8; 16];
    assert!(matches!(tls.sock.read(&mut buf), Ok(0) | Err(_)));
    b.proxy.ctl("enable lb vserver pt").unwrap();
    let mut again = fragmented_client(b.addr, &b.pki, &rustls::version::TLS12, 64, 1000);
    again.write_all(b"pong").unwrap();
    again.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"pong");
}
