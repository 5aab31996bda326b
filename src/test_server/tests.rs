//! Tests of the back end over real loopback sockets, plain and TLS.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use super::pki::TestPki;
use super::*;

fn start(mode: TestServerMode, tls: Option<Arc<rustls::ServerConfig>>, threads: usize) -> TestServerHandle {
    spawn(TestServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        mode,
        response_size: 1000,
        tls,
        threads,
    })
    .expect("backend starts")
}

fn connect(h: &TestServerHandle) -> TcpStream {
    let s = TcpStream::connect(h.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn tls_connect(
    h: &TestServerHandle,
    cfg: &Arc<rustls::ClientConfig>,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let conn = rustls::ClientConnection::new(cfg.clone(), "localhost".try_into().unwrap()).unwrap();
    let mut s = rustls::StreamOwned::new(conn, connect(h));
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock).unwrap();
    }
    s
}

fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// Reads until close_notify (Ok(0)); a bare EOF is an error for these tests.
fn read_to_close<R: Read>(r: &mut R) -> Vec<u8> {
    let mut out = Vec::new();
    r.read_to_end(&mut out).expect("clean close");
    out
}

fn wait_for(mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("condition not reached");
}

#[test]
fn echo_plain_honours_half_close() {
    let h = start(TestServerMode::Echo, None, 2);
    let mut s = connect(&h);
    let data = payload(1 << 20);
    let mut w = s.try_clone().unwrap();
    let d2 = data.clone();
    let writer = std::thread::spawn(move || {
        w.write_all(&d2).unwrap();
        w.shutdown(Shutdown::Write).unwrap();
    });
    let got = read_to_close(&mut s);
    writer.join().unwrap();
    assert_eq!(got, data);
    wait_for(|| h.bytes() == data.len() as u64 && h.bytes_sent() == data.len() as u64);
    assert_eq!(h.connections(), 1);
}

#[test]
fn echo_tls_honours_close_notify() {
    let pki = TestPki::generate(&["localhost"]).unwrap();
    let h = start(TestServerMode::Echo, Some(pki.server_config().unwrap()), 1);
    let mut s = tls_connect(&h, &pki.client_config().unwrap());
    let data = payload(100_000);
    s.write_all(&data).unwrap();
    s.conn.send_close_notify();
    s.flush().unwrap();
    let got = read_to_close(&mut s);
    assert_eq!(got, data);
}

#[test]
fn sink_counts_bytes_plain_and_tls() {
    let h = start(TestServerMode::Sink, None, 1);
    let mut s = connect(&h);
    s.write_all(&payload(300_000)).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert!(read_to_close(&mut s).is_empty());
    assert_eq!(h.bytes(), 300_000);

    let pki = TestPki::generate(&["localhost"]).unwrap();
    let h = start(TestServerMode::Sink, Some(pki.server_config().unwrap()), 1);
    let mut s = tls_connect(&h, &pki.client_config().unwrap());
    s.write_all(&payload(200_000)).unwrap();
    s.conn.send_close_notify();
    s.flush().unwrap();
    assert!(read_to_close(&mut s).is_empty());
    assert_eq!(h.bytes(), 200_000);
    assert_eq!(h.bytes_sent(), 0);
}

/// Reads one response with a Content-Length body; returns the body length.
fn read_response<R: Read>(r: &mut R, pending: &mut Vec<u8>) -> usize {
    let mut buf = [0u8; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut resp = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(len) = resp.parse(pending).unwrap() {
            assert_eq!(resp.code, Some(200));
            let cl: usize = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
                .unwrap();
            while pending.len() < len + cl {
                let n = r.read(&mut buf).unwrap();
                assert!(n > 0, "short body");
                pending.extend_from_slice(&buf[..n]);
            }
            assert!(pending[len..len + cl].iter().all(|&b| b == b'x'));
            pending.drain(..len + cl);
            return cl;
        }
        let n = r.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed before a full response");
        pending.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn http_plain_keep_alive_pipelining_and_close() {
    let h = start(TestServerMode::Http, None, 1);
    let mut s = connect(&h);
    let mut pending = Vec::new();
    // Two pipelined requests, one with a body split across writes.
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n01234")
        .unwrap();
    assert_eq!(read_response(&mut s, &mut pending), 1000);
    s.write_all(b"56789").unwrap();
    assert_eq!(read_response(&mut s, &mut pending), 1000);
    // Still alive; then ask to close.
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut s, &mut pending), 1000);
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty() && pending.is_empty());
    assert_eq!(h.connections(), 1);
}

#[test]
fn http_bad_request_is_refused() {
    let h = start(TestServerMode::Http, None, 1);
    let mut s = connect(&h);
    s.write_all(b"\x00\x01garbage\r\n\r\n").unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    assert!(out.starts_with(b"HTTP/1.1 400"), "{}", String::from_utf8_lossy(&out));
}

#[test]
fn http_tls_large_response_and_resumption() {
    let pki = TestPki::generate(&["localhost"]).unwrap();
    let h = spawn(TestServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        mode: TestServerMode::Http,
        response_size: 3 * 1024 * 1024 + 7,
        tls: Some(pki.server_config().unwrap()),
        threads: 2,
    })
    .unwrap();
    let client = pki.client_config().unwrap();
    for round in 0..3 {
        let mut s = tls_connect(&h, &client);
        let kind = s.conn.handshake_kind();
        if round == 0 {
            assert_eq!(kind, Some(rustls::HandshakeKind::Full));
        } else {
            assert_eq!(kind, Some(rustls::HandshakeKind::Resumed), "round {round}");
        }
        s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        let mut pending = Vec::new();
        assert_eq!(read_response(&mut s, &mut pending), 3 * 1024 * 1024 + 7);
        s.conn.send_close_notify();
        s.flush().unwrap();
        assert!(read_to_close(&mut s).is_empty());
    }
    assert_eq!(h.connections(), 3);
    assert_eq!(h.errors(), 0);
}

#[test]
fn stop_closes_listener_and_connections() {
    let mut h = start(TestServerMode::Echo, None, 3);
    let addr = h.local_addr();
    assert_ne!(addr.port(), 0);
    let mut idle = connect(&h);
    wait_for(|| h.active() == 1);
    h.stop();
    assert!(TcpStream::connect(addr).is_err(), "listener still open after stop");
    let mut buf = [0u8; 1];
    // The idle connection was closed (EOF or reset, never a hang).
    assert!(matches!(idle.read(&mut buf), Ok(0) | Err(_)));
    h.stop();
}

#[test]
fn parse_requests_edge_cases() {
    let mut skip = 0;
    let mut n = 0;
    let mut req = b"GET / HTTP/1.1\r\nContent-Length: 3\r\n\r\nab".to_vec();
    assert_eq!(parse_requests(&mut req, &mut skip, &mut n), Parsed::More);
    assert_eq!((n, skip, req.len()), (1, 1, 0));
    let mut req = b"cGET / HTTP/1.0\r\n\r\n".to_vec();
    assert_eq!(parse_requests(&mut req, &mut skip, &mut n), Parsed::Close);
    assert_eq!(n, 2);
    let mut req = b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    assert_eq!(
        parse_requests(&mut req, &mut skip, &mut n),
        Parsed::Refuse("501 Not Implemented")
    );
    let mut req = b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n".to_vec();
    assert_eq!(
        parse_requests(&mut req, &mut skip, &mut n),
        Parsed::Refuse("400 Bad Request")
    );
    let mut req = b"GET / HTTP/1.1\r\nX: ".to_vec();
    req.resize(MAX_REQUEST_HEAD + 10, b'a');
    assert!(matches!(parse_requests(&mut req, &mut skip, &mut n), Parsed::Refuse(s) if s.starts_with("431")));
}
