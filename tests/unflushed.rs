//! Every close is bounded: a client that never reads what the proxy wrote
//! to it holds the proxy's descriptor only until its linger deadline (the
//! vserver's `-handshakeTimeout` after the close), then its socket is reset
//! and the close counted as `closed_unflushed` on its epoch.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rustls::pki_types::ServerName;
use shardtls::control::admin::client_request;

/// A back end that sends `bytes` to each connection, then closes it.
fn firehose(bytes: usize) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let chunk = vec![b'z'; 64 * 1024];
                let mut sent = 0;
                while sent < bytes {
                    if conn.write_all(&chunk).is_err() {
                        return;
                    }
                    sent += chunk.len();
                }
            });
        }
    });
    addr
}

/// A TLS client with a small receive window that completes its handshake,
/// then never reads again.
fn non_reader(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(8 * 1024).unwrap();
    s.connect(&addr.into()).unwrap();
    let sock: TcpStream = s.into();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let conn = rustls::ClientConnection::new(cfg, ServerName::try_from("www.test").unwrap()).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).unwrap();
    }
    tls
}

#[test]
fn clients_that_never_read_are_reset_at_the_linger_deadline_and_their_descriptors_freed() {
    const CLIENTS: usize = 6;
    let pki = Pki::new();
    let origin = firehose(16 << 20);
    let port = free_port();
    let (ck, _) = certkey(&pki, "site", &["www.test"]);
    let config = format!(
        "{ck}add service web {} TCP\n\
         add lb vserver v1 SSL_TCP 127.0.0.1 {port} -cltTimeout 1\n\
         set ssl vserver v1 -handshakeTimeout 1\n\
         bind ssl vserver v1 -certkeyName site\n\
         bind lb vserver v1 web\n",
        origin.to_string().replace(':', " ")
    );
    let proxy = Proxy::start(&config, 1);
    let pid = proxy.child.id();
    let baseline = open_fds(pid);
    let baseline_owned = shard_counter(&proxy.stats(), "open_fds")[0];

    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| non_reader(lo(port), pki.client_config()))
        .collect();
    // Each client and its back end hold a descriptor of the proxy's.
    assert!(
        wait_for(Duration::from_secs(5), || open_fds(pid) >= baseline + 2 * CLIENTS),
        "the connections are open: {} descriptors, {baseline} before",
        open_fds(pid)
    );

    // Idle timeout (1 s), close_notify that cannot be delivered (1 s), then
    // the linger deadline (1 s): the clients' sockets are reset.
    let freed = wait_for(Duration::from_secs(30), || open_fds(pid) <= baseline);
    let stats = proxy.stats();
    assert!(
        freed,
        "descriptors still held after the linger deadline: {} (baseline {baseline})\n{stats}",
        open_fds(pid)
    );
    assert_eq!(
        total(&stats, "vserver", "v1", "closed_unflushed"),
        CLIENTS as u64,
        "{stats}"
    );
    assert_eq!(shard_counter(&stats, "open_fds"), vec![baseline_owned], "{stats}");
    assert!(
        shard_counter(&stats, "unflushed_resets")[0] >= CLIENTS as u64,
        "{stats}"
    );
    let (_, metrics) = client_request(&proxy.admin, "GET", "/metrics", "", None).unwrap();
    assert!(
        metrics.contains(&format!(
            "\nshardtls_closed_unflushed_total{{shard=\"0\",kind=\"vserver\",name=\"v1\"}} {CLIENTS}\n"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("\nshardtls_open_fds{{shard=\"0\"}} {baseline_owned}\n")),
        "{metrics}"
    );
    drop(clients);
}
