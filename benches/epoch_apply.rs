//! Cost of applying a new epoch on one shard holding 10,000 connections
//! (9,900 established, 100 mid-handshake): the core decides which to kill
//! and which drain. Run: `cargo bench --bench epoch_apply`.

use std::time::{Duration, Instant};

use shardtls::config::{EntityKind, EntityRef};
use shardtls::core::{EpochPolicy, ShardCore};

fn main() {
    let v = EntityRef::new(EntityKind::Vserver, "v1");
    let policy = EpochPolicy {
        drain_timeout: Some(Duration::from_secs(60)),
        ..EpochPolicy::default()
    };
    let rounds = 200;
    let mut samples = Vec::with_capacity(rounds);
    let t0 = Instant::now();
    for r in 0..rounds {
        let mut core = ShardCore::with_origin(0, t0);
        let now = t0 + Duration::from_millis(r as u64);
        core.set_epoch(&v, 1, policy.clone(), now);
        for i in 0..10_000 {
            let id = core.on_accept(&v, now).expect("accepted");
            core.on_handshake_start(id, now);
            if i >= 100 {
                core.on_established(id, false, now).expect("current epoch");
            }
        }
        let start = Instant::now();
        let change = core.set_epoch(&v, 2, policy.clone(), now);
        samples.push(start.elapsed());
        assert_eq!(change.killed.len(), 100);
        assert_eq!(change.draining, 9_900);
    }
    samples.sort();
    let p = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    println!(
        "apply epoch to a shard with 10,000 connections (100 handshaking): p50 {:?}, p99 {:?}, max {:?} over {rounds} runs",
        p(0.5),
        p(0.99),
        samples[samples.len() - 1]
    );
}
