//! Limits by default: with `-maxClients` unset, a shard keeps at most as
//! many client connections as its share of `ulimit -n` allows (two
//! descriptors each), closes the ones above that at once, keeps its
//! listener, and serves again as soon as connections close.

mod common;

use std::time::Duration;

use common::*;
use shardtls::test_server::TestServerMode;

/// A vserver v1 (certificate for www.test) on a free port in front of an
/// echo back end: (pki, back end, port, config).
fn echo_site() -> (Pki, shardtls::test_server::TestServerHandle, u16, String) {
    let pki = Pki::new();
    let be = backend(TestServerMode::Echo);
    let port = free_port();
    let (ck, _) = certkey(&pki, "site", &["www.test"]);
    let config = format!(
        "{ck}add service echo 127.0.0.1 {} TCP\n\
         add lb vserver v1 SSL_TCP 127.0.0.1 {port}\n\
         bind ssl vserver v1 -certkeyName site\n\
         bind lb vserver v1 echo\n",
        be.local_addr().port()
    );
    (pki, be, port, config)
}

#[test]
fn a_low_ulimit_caps_connections_and_the_listener_survives() {
    let (pki, _be, port, config) = echo_site();
    // 160 descriptors, 128 kept aside: (160 - 128) / 2 = 16 client connections.
    let proxy = Proxy::try_start_limited(&config, 1, &[], Some(160)).expect("starts with ulimit -n 160");
    let cfg = pki.client_config();
    let mut served = Vec::new();
    let mut refused = 0;
    for _ in 0..30 {
        match Client::connect(lo(port), "www.test", cfg.clone()) {
            Ok(mut c) => match c.echo(b"hi") {
                Ok(r) if r == b"hi" => served.push(c),
                _ => refused += 1,
            },
            Err(_) => refused += 1,
        }
    }
    assert_eq!(
        served.len(),
        16,
        "connections served at the limit ({refused} refused)\n{}",
        proxy.log()
    );
    assert_eq!(refused, 14);
    // Established connections are untouched by the refusals.
    for c in served.iter_mut() {
        assert_eq!(c.echo(b"still").unwrap(), b"still");
    }
    // The log writer is asynchronous: the line shows up shortly.
    assert!(
        wait_for(Duration::from_secs(5), || proxy
            .log()
            .contains("the most this shard keeps")),
        "no warning about the limit\n{}",
        proxy.log()
    );
    // The listener survived: once connections close, new ones are served.
    for c in served.drain(..) {
        c.close();
    }
    let ok = wait_for(Duration::from_secs(5), || {
        Client::connect(lo(port), "www.test", cfg.clone())
            .ok()
            .and_then(|mut c| c.echo(b"again").ok())
            .is_some_and(|r| r == b"again")
    });
    assert!(ok, "no connection served after the others closed\n{}", proxy.log());
    let stats = proxy.stats();
    assert!(stats["shards"][0]["refused"].as_u64().unwrap() >= 14, "{stats}");
}

/// Log lines a peer causes are rate-limited per cause and shard: a flood of
/// garbage connections writes at most 50 "handshake failed" lines a second
/// per shard, then one summary line with the count held back.
#[test]
fn a_garbage_flood_writes_a_bounded_number_of_log_lines() {
    use std::io::Write;
    let (pki, _be, port, config) = echo_site();
    let proxy = Proxy::start(&config, 1);
    let t0 = std::time::Instant::now();
    let floods = 2000;
    for _ in 0..floods {
        if let Ok(mut s) = std::net::TcpStream::connect(lo(port)) {
            // Content type 0x17 before any handshake: rustls refuses it at once.
            let _ = s.write_all(&[0x17, 0x03, 0x03, 0x00, 0x05, 1, 2, 3, 4, 5]);
        }
    }
    let held_back = wait_for(Duration::from_secs(5), || {
        proxy.log().contains("more \"handshake failed\" lines held back")
    });
    let seconds = t0.elapsed().as_secs() + 1;
    let log = proxy.log();
    let written = log.lines().filter(|l| l.contains("handshake failed:")).count() as u64;
    assert!(
        held_back,
        "no summary line after {floods} garbage connections ({written} lines written)"
    );
    assert!(
        written <= 50 * seconds,
        "{written} \"handshake failed\" lines in {seconds} s: the limit is 50 a second"
    );
    // The proxy still serves.
    let mut c = Client::connect(lo(port), "www.test", pki.client_config()).expect("served after the flood");
    assert_eq!(c.echo(b"ok").unwrap(), b"ok");
}
