//! `GET /metrics`: the shards' statistics and latency histograms in the
//! OpenMetrics text format, encoded by `prometheus-client`.
//!
//! What it does: at each scrape, turns every shard's [`ShardReport`] (shell
//! counters, the core's per-entity and per-epoch counters, histogram
//! snapshots) and the control thread's own figures into metric families.
//! Every family has `# HELP` and `# TYPE`; names are `shardtls_` plus snake
//! case, with the unit in the name before the suffix (`_seconds`, `_bytes`,
//! then `_total` for counters). There are no `# UNIT` lines: the names say
//! it, and some OpenMetrics parsers refuse a unit on a histogram.
//!
//! Histograms are kept per shard (shard-local buckets, no contention) and
//! merged here into one series per vserver or pool: a `shard` label on
//! every bucket would multiply the series by the core count. Per-shard
//! balance shows in the counters, which do carry `shard`.
//!
//! Labels are bounded by the configuration, never by peers: `shard`, an
//! entity's `kind` and `name` (or `vserver` / `service` on histograms), and
//! `epoch` only on the per-epoch families, which list live epochs (current
//! and draining) only. Counters without an `epoch` label sum every epoch of
//! the entity, drained ones included, so they never go down while the
//! entity exists. Addresses, SNI names and other peer input never become
//! labels.
//!
//! What it does not do: count anything. The shards count (shard-local
//! cells, see `core::stats`) and the control loop keeps the propagation
//! histogram; this module only reads copies of them.

use std::collections::BTreeMap;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::core::{EpochCounters, EpochStatus, HistogramSnapshot};
use crate::shard::ShardReport;

/// The Content-Type of the exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Prefix of every family name.
pub const PREFIX: &str = "shardtls";

/// What the control thread itself knows, beside the shards' reports.
#[derive(Debug)]
pub struct ControlFigures {
    pub uptime_s: f64,
    pub generation: u64,
    /// Arrival of a change at the admin API to every shard's acknowledgement.
    pub propagation: HistogramSnapshot,
    /// Admin requests refused for a missing or wrong bearer token (401).
    pub admin_auth_failures: u64,
    /// Admin requests refused for their `Host`, `Origin` or `Content-Type` (403).
    pub admin_forbidden: u64,
}

type Labels = Vec<(&'static str, String)>;

#[derive(Debug)]
enum Value {
    Counter(u64),
    Gauge(i64),
    GaugeF(f64),
    Histogram(HistogramSnapshot),
}

/// One metric family with its samples, ready to encode.
#[derive(Debug)]
struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    samples: Vec<(Labels, Value)>,
}

impl Family {
    fn new(name: &'static str, kind: MetricType, help: &'static str) -> Self {
        Family {
            name,
            help,
            kind,
            samples: Vec::new(),
        }
    }
    fn counter(name: &'static str, help: &'static str) -> Self {
        Self::new(name, MetricType::Counter, help)
    }
    fn gauge(name: &'static str, help: &'static str) -> Self {
        Self::new(name, MetricType::Gauge, help)
    }
    fn histogram(name: &'static str, help: &'static str) -> Self {
        Self::new(name, MetricType::Histogram, help)
    }
    fn push(&mut self, labels: Labels, v: Value) {
        self.samples.push((labels, v));
    }
}

/// Every family of one scrape; a `Collector` so that `prometheus-client`
/// encodes it.
#[derive(Debug)]
struct Exposition(Vec<Family>);

impl Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for f in &self.0 {
            let mut metric = encoder.encode_descriptor(f.name, f.help, None, f.kind)?;
            for (labels, v) in &f.samples {
                let mut m = metric.encode_family(labels)?;
                match v {
                    Value::Counter(n) => m.encode_counter::<NoLabelSet, _, u64>(n, None)?,
                    Value::Gauge(n) => m.encode_gauge(n)?,
                    Value::GaugeF(x) => m.encode_gauge(x)?,
                    Value::Histogram(h) => {
                        m.encode_histogram::<NoLabelSet>(h.sum_seconds(), h.count(), &h.buckets(), None)?
                    }
                }
            }
        }
        Ok(())
    }
}

fn shard_label(r: &ShardReport) -> Labels {
    vec![("shard", r.shard.to_string())]
}

fn with(mut labels: Labels, more: &[(&'static str, &str)]) -> Labels {
    labels.extend(more.iter().map(|(k, v)| (*k, v.to_string())));
    labels
}

fn gauge_of(n: usize) -> Value {
    Value::Gauge(i64::try_from(n).unwrap_or(i64::MAX))
}

/// Families with one sample per shard.
fn shard_families(shards: &[ShardReport]) -> Vec<Family> {
    type Get = fn(&ShardReport) -> Value;
    let table: [(&'static str, MetricType, &'static str, Get); 11] = [
        (
            "client_connections",
            MetricType::Gauge,
            "Client connections open on the shard.",
            |r| gauge_of(r.live_client_connections),
        ),
        (
            "accepted_connections",
            MetricType::Counter,
            "Client connections accepted by the shard.",
            |r| Value::Counter(r.accepted),
        ),
        (
            "refused_connections",
            MetricType::Counter,
            "Client connections closed at accept: the shard at its connection limit, or the vserver full or disabled.",
            |r| Value::Counter(r.refused),
        ),
        (
            "backend_failures",
            MetricType::Counter,
            "Back-end connects or TLS handshakes that failed (each failed member of a failover counts).",
            |r| Value::Counter(r.backend_failures),
        ),
        (
            "health_probes",
            MetricType::Counter,
            "Health probes sent to back-end members marked down.",
            |r| Value::Counter(r.health_probes),
        ),
        (
            "backend_members_down",
            MetricType::Gauge,
            "Back-end members this shard has marked down.",
            |r| gauge_of(r.members_down.len()),
        ),
        (
            "open_fds",
            MetricType::Gauge,
            "Socket and listener descriptors the shard owns (bounded by the linger deadline of each close).",
            |r| Value::Gauge(i64::try_from(r.open_fds).unwrap_or(i64::MAX)),
        ),
        (
            "unflushed_resets",
            MetricType::Counter,
            "Sockets (client or back end) reset at their linger deadline because the peer did not take what was written.",
            |r| Value::Counter(r.unflushed_resets),
        ),
        (
            "recv_private_buffers",
            MetricType::Gauge,
            "Receive buffers of sockets' own, held while the shared pool was dry.",
            |r| Value::Gauge(i64::try_from(r.recv_private_buffers).unwrap_or(i64::MAX)),
        ),
        (
            "draining_epochs",
            MetricType::Gauge,
            "Retired epochs of any entity that still have open connections on the shard.",
            |r| gauge_of(r.core.totals.epochs_draining),
        ),
        (
            "drained_epochs",
            MetricType::Counter,
            "Retired epochs of any entity whose last connection closed on the shard.",
            |r| Value::Counter(r.core.totals.epochs_drained),
        ),
    ];
    let mut out = Vec::new();
    for (name, kind, help, get) in table {
        let mut f = Family::new(name, kind, help);
        for r in shards {
            f.push(shard_label(r), get(r));
        }
        out.push(f);
    }
    let mut bytes = Family::counter(
        "proxied_bytes",
        "Bytes copied between clients and back ends, by direction.",
    );
    for r in shards {
        let l = shard_label(r);
        bytes.push(
            with(l.clone(), &[("direction", "client_to_backend")]),
            Value::Counter(r.bytes_client_to_backend),
        );
        bytes.push(
            with(l, &[("direction", "backend_to_client")]),
            Value::Counter(r.bytes_backend_to_client),
        );
    }
    out.push(bytes);
    out
}

/// Families with one sample per entity per shard, counters summed over
/// every epoch of the entity.
fn entity_families(shards: &[ShardReport]) -> Vec<Family> {
    type Get = fn(&EpochCounters) -> u64;
    let counters: [(&'static str, &'static str, Get); 7] = [
        (
            "handshakes_killed",
            "Handshakes terminated because their epoch retired (R2).",
            |c| c.killed,
        ),
        (
            "handshake_timeouts",
            "Handshakes that ran past the handshake timeout.",
            |c| c.handshake_timeouts,
        ),
        (
            "refused_resumptions",
            "Clients that offered a session of another epoch and got a full handshake (R3).",
            |c| c.refused_resumptions,
        ),
        (
            "closed_by_drain",
            "Connections closed at their retired epoch's drain deadline (R12).",
            |c| c.closed_by_drain,
        ),
        (
            "closed_by_disable",
            "Connections closed because their entity was disabled or removed (R7).",
            |c| c.closed_by_disable,
        ),
        (
            "closed_unflushed",
            "Connections reset at their linger deadline after the close because the peer did not take what was written.",
            |c| c.closed_unflushed,
        ),
        (
            "sessions_dropped",
            "TLS sessions forgotten because their connection did not end cleanly (R8).",
            |c| c.sessions_dropped,
        ),
    ];
    let mut open = Family::gauge(
        "entity_connections",
        "Open connections of the entity, bound to an epoch or not.",
    );
    let mut unbound = Family::gauge(
        "entity_unbound_connections",
        "Open connections of the entity that have not sent a byte yet (no epoch).",
    );
    let mut enabled = Family::gauge("entity_enabled", "1 when the entity is enabled, 0 when disabled.");
    let mut current = Family::gauge("entity_current_epoch", "The epoch new connections of the entity use.");
    let mut refused = Family::counter(
        "refused_accepts",
        "Connections the entity refused at accept: disabled, or at its connection limit.",
    );
    let mut unbound_timeouts = Family::counter(
        "unbound_timeouts",
        "Connections that timed out before their first byte.",
    );
    let mut unbound_disabled = Family::counter(
        "unbound_closed_by_disable",
        "Connections with no byte read, closed because their entity was disabled or removed.",
    );
    let mut proxy_refused = Family::counter(
        "proxy_header_refused",
        "Connections closed for their PROXY header: untrusted source, malformed, oversized, or late.",
    );
    let mut resumed = Family::counter(
        "handshakes",
        "TLS handshakes completed, by mode: full or resumed (for a plain TCP back end, connections established).",
    );
    let mut closed = Family::counter(
        "connections_closed",
        "Connections ended, by end: clean (close_notify sent) or unclean (any other way).",
    );
    let mut per_counter: Vec<Family> = counters
        .iter()
        .map(|(name, help, _)| Family::counter(name, help))
        .collect();
    for r in shards {
        for e in &r.core.entities {
            let l = with(shard_label(r), &[("kind", e.kind), ("name", &e.name)]);
            let mut sum = e.older_epochs;
            for ep in &e.epochs {
                sum += ep.counters;
            }
            open.push(l.clone(), gauge_of(e.open));
            unbound.push(l.clone(), gauge_of(e.unbound));
            enabled.push(l.clone(), Value::Gauge(i64::from(e.enabled)));
            current.push(
                l.clone(),
                Value::Gauge(i64::try_from(e.current_epoch).unwrap_or(i64::MAX)),
            );
            refused.push(l.clone(), Value::Counter(e.entity_counters.refused_accepts));
            unbound_timeouts.push(l.clone(), Value::Counter(e.entity_counters.unbound_timeouts));
            unbound_disabled.push(l.clone(), Value::Counter(e.entity_counters.unbound_closed_by_disable));
            proxy_refused.push(l.clone(), Value::Counter(e.entity_counters.proxy_header_refused));
            resumed.push(with(l.clone(), &[("mode", "full")]), Value::Counter(sum.full));
            resumed.push(with(l.clone(), &[("mode", "resumed")]), Value::Counter(sum.resumed));
            closed.push(with(l.clone(), &[("end", "clean")]), Value::Counter(sum.closed_clean));
            closed.push(
                with(l.clone(), &[("end", "unclean")]),
                Value::Counter(sum.closed_unclean),
            );
            for (f, (_, _, get)) in per_counter.iter_mut().zip(&counters) {
                f.push(l.clone(), Value::Counter(get(&sum)));
            }
        }
    }
    let mut out = vec![
        open,
        unbound,
        enabled,
        current,
        refused,
        unbound_timeouts,
        unbound_disabled,
        proxy_refused,
        resumed,
        closed,
    ];
    out.extend(per_counter);
    out
}

/// Families with one sample per live epoch (current or draining) of each
/// entity per shard; drained epochs leave.
fn epoch_families(shards: &[ShardReport]) -> Vec<Family> {
    let mut conns = Family::gauge(
        "epoch_connections",
        "Open connections bound to a live epoch, by status: current or draining.",
    );
    let mut handshakes = Family::counter(
        "epoch_handshakes",
        "Handshakes completed under a live epoch (the family lists current and draining epochs only).",
    );
    let mut killed = Family::counter(
        "epoch_handshakes_killed",
        "Handshakes terminated because a live epoch retired (R2; draining epochs only count any).",
    );
    for r in shards {
        for e in &r.core.entities {
            for ep in e.epochs.iter().filter(|ep| ep.status != EpochStatus::Drained) {
                let l = with(
                    shard_label(r),
                    &[("kind", e.kind), ("name", &e.name), ("epoch", &ep.epoch.to_string())],
                );
                let status = match ep.status {
                    EpochStatus::Current => "current",
                    _ => "draining",
                };
                conns.push(with(l.clone(), &[("status", status)]), gauge_of(ep.live));
                handshakes.push(l.clone(), Value::Counter(ep.counters.handshakes_completed));
                killed.push(l, Value::Counter(ep.counters.killed));
            }
        }
    }
    vec![conns, handshakes, killed]
}

/// The latency histograms of vservers and pools, each merged over every shard.
fn histogram_families(shards: &[ShardReport]) -> Vec<Family> {
    let mut handshake = Family::histogram(
        "tls_handshake_duration_seconds",
        "Client TLS handshakes that completed, from the first byte received to the handshake's end.",
    );
    let mut lifetime = Family::histogram(
        "client_connection_duration_seconds",
        "Client connections, from accept to close.",
    );
    let mut connect = Family::histogram(
        "backend_connect_duration_seconds",
        "Back-end connections established: TCP connect plus TLS handshake (for SSL_TCP pools).",
    );
    let mut by_vserver: BTreeMap<&str, (HistogramSnapshot, HistogramSnapshot)> = BTreeMap::new();
    let mut by_pool: BTreeMap<&str, HistogramSnapshot> = BTreeMap::new();
    for r in shards {
        for v in &r.vservers {
            let (h, l) = by_vserver.entry(&v.name).or_insert_with(|| {
                (
                    HistogramSnapshot::empty(v.handshake.bounds),
                    HistogramSnapshot::empty(v.lifetime.bounds),
                )
            });
            h.merge(&v.handshake);
            l.merge(&v.lifetime);
        }
        for p in &r.services {
            by_pool
                .entry(&p.name)
                .or_insert_with(|| HistogramSnapshot::empty(p.connect.bounds))
                .merge(&p.connect);
        }
    }
    for (name, (h, l)) in by_vserver {
        handshake.push(vec![("vserver", name.to_string())], Value::Histogram(h));
        lifetime.push(vec![("vserver", name.to_string())], Value::Histogram(l));
    }
    for (name, c) in by_pool {
        connect.push(vec![("service", name.to_string())], Value::Histogram(c));
    }
    vec![handshake, connect, lifetime]
}

fn control_families(control: ControlFigures, shards: usize) -> Vec<Family> {
    let mut uptime = Family::gauge("uptime_seconds", "Seconds since the proxy started.");
    uptime.push(Vec::new(), Value::GaugeF(control.uptime_s));
    let mut generation = Family::gauge(
        "config_generation",
        "Generation of the running configuration; one more per applied change.",
    );
    generation.push(
        Vec::new(),
        Value::Gauge(i64::try_from(control.generation).unwrap_or(i64::MAX)),
    );
    let mut count = Family::gauge("shards", "Shards (one thread pinned per core) serving traffic.");
    count.push(Vec::new(), gauge_of(shards));
    let mut propagation = Family::histogram(
        "change_propagation_duration_seconds",
        "Applied changes, from the command's arrival at the admin API to every shard's acknowledgement.",
    );
    propagation.push(Vec::new(), Value::Histogram(control.propagation));
    let mut auth_failures = Family::counter(
        "admin_auth_failures",
        "Admin API requests refused for a missing or wrong bearer token (401).",
    );
    auth_failures.push(Vec::new(), Value::Counter(control.admin_auth_failures));
    let mut forbidden = Family::counter(
        "admin_requests_forbidden",
        "Admin API requests refused for a Host, Origin or Content-Type no operator's client sends (403).",
    );
    forbidden.push(Vec::new(), Value::Counter(control.admin_forbidden));
    let mut families = vec![uptime, generation, count, propagation, auth_failures, forbidden];
    if let Some(log) = crate::access_log::get() {
        let mut written = Family::counter("access_log_lines_written", "Access log lines written.");
        written.push(Vec::new(), Value::Counter(log.written()));
        let mut dropped = Family::counter(
            "access_log_lines_dropped",
            "Access log lines dropped: the queue to the writer was full, or the write failed.",
        );
        dropped.push(Vec::new(), Value::Counter(log.dropped()));
        families.extend([written, dropped]);
    }
    families
}

/// The OpenMetrics exposition of one scrape, ending with `# EOF`.
pub fn render(control: ControlFigures, shards: &[ShardReport]) -> String {
    let mut families = control_families(control, shards.len());
    families.extend(shard_families(shards));
    families.extend(entity_families(shards));
    families.extend(epoch_families(shards));
    families.extend(histogram_families(shards));
    let mut registry = Registry::with_prefix(PREFIX);
    registry.register_collector(Box::new(Exposition(families)));
    let mut out = String::new();
    // Writing to a String fails only if an encoder refuses a value, which
    // none of ours do; an empty exposition then says so rather than lie.
    if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
        out.clear();
        out.push_str("# EOF\n");
    }
    out
}
