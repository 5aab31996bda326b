//! The in-memory ceiling: the same rustls configuration the proxy builds,
//! driven through full and resumed handshakes and the record path with no
//! sockets. `perf/RESULTS.md` compares the proxy's per-core rates to these.
//!
//! Run: `cargo bench --bench tls_limit` (add `-- --json` for JSON lines).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, ServerConnection};
use shardtls::config::material::load_cert_key;
use shardtls::config::{CertBinding, CertKey, EntityKind, EntityRef, Model, Vserver};
use shardtls::pki::Ca;
use shardtls::tls::FrontendSpec;

fn model(ca: &Ca) -> Model {
    let leaf = ca.issue(&["bench.test"], 7).unwrap();
    let material = load_cert_key(
        leaf.cert_pem.as_bytes(),
        "bench.pem",
        Some((leaf.key_pem.as_bytes(), "bench.key")),
    )
    .unwrap();
    let mut m = Model::default();
    m.certkeys.insert(
        "site".into(),
        CertKey {
            name: "site".into(),
            cert_path: "bench.pem".into(),
            key_path: Some("bench.key".into()),
            linked_to: None,
            material: Arc::new(material),
        },
    );
    let mut vs = Vserver {
        name: "v".into(),
        proto: shardtls::config::BackendProto::SslTcp,
        addr: "127.0.0.1:443".parse().unwrap(),
        enabled: true,
        max_clients: None,
        client_timeout: 180,
        ssl_profile: None,
        params: Default::default(),
        bindings: Default::default(),
        targets: vec![],
        net_profile: None,
    };
    vs.bindings.certkeys.push(CertBinding {
        certkey: "site".into(),
        sni: false,
        ca: false,
    });
    m.vservers.insert("v".into(), vs);
    m.epochs.insert(EntityRef::new(EntityKind::Vserver, "v"), 1);
    m
}

fn transfer(from: &mut dyn FnMut(&mut Vec<u8>), to: &mut dyn FnMut(&[u8])) -> bool {
    let mut buf = Vec::new();
    from(&mut buf);
    if buf.is_empty() {
        return false;
    }
    to(&buf);
    true
}

fn handshake(client: &mut ClientConnection, server: &mut ServerConnection) {
    loop {
        let a = transfer(
            &mut |b| {
                while client.wants_write() {
                    client.write_tls(b).unwrap();
                }
            },
            &mut |d| {
                let mut d = d;
                while !d.is_empty() {
                    server.read_tls(&mut d).unwrap();
                }
                server.process_new_packets().unwrap();
            },
        );
        let b = transfer(
            &mut |b| {
                while server.wants_write() {
                    server.write_tls(b).unwrap();
                }
            },
            &mut |d| {
                let mut d = d;
                while !d.is_empty() {
                    client.read_tls(&mut d).unwrap();
                }
                client.process_new_packets().unwrap();
            },
        );
        if !a && !b && !client.is_handshaking() && !server.is_handshaking() {
            break;
        }
    }
}

fn rate(label: &str, secs: f64, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs_f64(secs) {
        f();
        n += 1;
    }
    let r = n as f64 / start.elapsed().as_secs_f64();
    println!("{label:<48} {r:>12.0} /s   ({:.1} us each)", 1e6 / r);
    r
}

fn main() {
    let json = std::env::args().any(|a| a == "--json");
    let secs: f64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let ca = Ca::new("bench CA").unwrap();
    let m = model(&ca);
    let spec = FrontendSpec::build(&m, "v", 1).unwrap();
    let shard = spec.shard_config();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client_cfg = Arc::new(
        ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots.clone())
            .with_no_client_auth(),
    );
    let mut no_resume = (*client_cfg).clone();
    no_resume.resumption = rustls::client::Resumption::disabled();
    let no_resume = Arc::new(no_resume);
    let name = ServerName::try_from("bench.test").unwrap();
    let mut results = BTreeMap::new();

    println!("in-memory rustls limit, one core (ECDSA P-256, X25519, TLS 1.3):");
    results.insert(
        "full_handshakes_per_s",
        rate("full handshake (client + server)", secs, || {
            let mut c = ClientConnection::new(no_resume.clone(), name.clone()).unwrap();
            let mut s = ServerConnection::new(shard.config.clone()).unwrap();
            handshake(&mut c, &mut s);
        }),
    );
    // Server-side cost only: time the server's share by measuring the client alone.
    let client_only = {
        let start = Instant::now();
        let mut n = 0;
        let mut client_time = Duration::ZERO;
        while start.elapsed() < Duration::from_secs_f64(secs) {
            let mut c = ClientConnection::new(no_resume.clone(), name.clone()).unwrap();
            let mut s = ServerConnection::new(shard.config.clone()).unwrap();
            loop {
                let t = Instant::now();
                let mut buf = Vec::new();
                while c.wants_write() {
                    c.write_tls(&mut buf).unwrap();
                }
                client_time += t.elapsed();
                if !buf.is_empty() {
                    let mut d = &buf[..];
                    while !d.is_empty() {
                        s.read_tls(&mut d).unwrap();
                    }
                    s.process_new_packets().unwrap();
                }
                let mut buf2 = Vec::new();
                while s.wants_write() {
                    s.write_tls(&mut buf2).unwrap();
                }
                if !buf2.is_empty() {
                    let t = Instant::now();
                    let mut d = &buf2[..];
                    while !d.is_empty() {
                        c.read_tls(&mut d).unwrap();
                    }
                    c.process_new_packets().unwrap();
                    client_time += t.elapsed();
                }
                if buf.is_empty() && buf2.is_empty() && !c.is_handshaking() && !s.is_handshaking() {
                    break;
                }
            }
            n += 1;
        }
        let total = start.elapsed();
        let server_time = total.saturating_sub(client_time);
        let r = n as f64 / server_time.as_secs_f64();
        println!(
            "{:<48} {r:>12.0} /s   ({:.1} us each)",
            "full handshake, server side only",
            1e6 / r
        );
        r
    };
    results.insert("server_full_handshakes_per_s", client_only);
    // Resumption: prime one ticket per handshake.
    results.insert(
        "resumed_handshakes_per_s",
        rate("resumed handshake (client + server, ticket)", secs, || {
            let mut c = ClientConnection::new(client_cfg.clone(), name.clone()).unwrap();
            let mut s = ServerConnection::new(shard.config.clone()).unwrap();
            handshake(&mut c, &mut s);
        }),
    );
    // Record path: 16 KiB application records, encrypt + decrypt.
    let mut c = ClientConnection::new(no_resume.clone(), name.clone()).unwrap();
    let mut s = ServerConnection::new(shard.config.clone()).unwrap();
    handshake(&mut c, &mut s);
    let payload = vec![0x5au8; 16 * 1024];
    let mut sink = vec![0u8; 16 * 1024];
    let mut wire = Vec::with_capacity(32 * 1024);
    let r = rate("record path 16 KiB (encrypt + decrypt + copy)", secs, || {
        c.writer().write_all(&payload).unwrap();
        wire.clear();
        while c.wants_write() {
            c.write_tls(&mut wire).unwrap();
        }
        let mut d = &wire[..];
        while !d.is_empty() {
            s.read_tls(&mut d).unwrap();
            s.process_new_packets().unwrap();
        }
        let mut got = 0;
        while got < payload.len() {
            got += s.reader().read(&mut sink).unwrap();
        }
    });
    let gbps = r * 16.0 * 1024.0 / 1e9;
    println!(
        "{:<48} {gbps:>12.2} GB/s ({:.3} ns/byte)",
        "record path throughput",
        1e9 / (r * 16384.0)
    );
    results.insert("record_path_gb_per_s", gbps);
    if json {
        println!("{}", serde_json::to_string(&results).unwrap());
    }
}
