//! `/metrics` as Prometheus reads it, against a live proxy: the exposition
//! parses as OpenMetrics text, every family has HELP and TYPE, labels stay
//! bounded (live epochs only), and the histograms count what happened —
//! handshakes, back-end connects, connection lifetimes, change propagation.
//! The Grafana dashboard in `examples/` uses only names and labels that a
//! live proxy exports.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use common::*;
use openmetrics_parser::{MetricsExposition, OpenMetricsType, OpenMetricsValue};
use shardtls::control::admin::client_request;

type Exposition = MetricsExposition<OpenMetricsType, OpenMetricsValue>;

const SHARDS: usize = 2;

/// A proxy of [`SHARDS`] shards with a TLS vserver `v1` in front of an echo service `web`.
fn site() -> EchoSetup {
    echo_setup(SHARDS, "")
}

/// A client that handshook and went through to the back end.
fn client(s: &EchoSetup) -> Client {
    let mut c = Client::connect(s.addr, "site.test", s.pki.client_config()).unwrap();
    assert_eq!(c.echo(b"ping").unwrap(), b"ping");
    c
}

/// The raw HTTP reply to `GET path` on the admin socket, head included.
fn raw_get(proxy: &Proxy, path: &str) -> String {
    let mut s = std::os::unix::net::UnixStream::connect(&proxy.admin).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn scrape(proxy: &Proxy) -> String {
    let (ok, body) = client_request(&proxy.admin, "GET", "/metrics", "", None).unwrap();
    assert!(ok, "GET /metrics: {body}");
    body
}

/// Parse as OpenMetrics (strictly: families, types, suffixes, histogram
/// buckets, `# EOF`); the test fails with the parser's reason otherwise.
fn parse(text: &str) -> Exposition {
    openmetrics_parser::openmetrics::parse_openmetrics(text)
        .unwrap_or_else(|e| panic!("/metrics is not valid OpenMetrics text: {e:?}\n{text}"))
}

fn scrape_parsed(proxy: &Proxy) -> Exposition {
    parse(&scrape(proxy))
}

/// A sample's labels as a map.
fn labels<V: openmetrics_parser::RenderableMetricValue + Clone>(
    s: &openmetrics_parser::Sample<V>,
) -> HashMap<String, String> {
    s.get_labelset()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Observations of histogram `family`, summed over its samples whose
/// label `key` is `value` (all samples when `filter` is None).
fn histogram_count(exp: &Exposition, family: &str, filter: Option<(&str, &str)>) -> u64 {
    let f = exp.families.get(family).unwrap_or_else(|| panic!("no family {family}"));
    assert_eq!(f.family_type, OpenMetricsType::Histogram, "{family}");
    f.iter_samples()
        .filter(|s| filter.is_none_or(|(k, v)| labels(s).get(k).map(String::as_str) == Some(v)))
        .map(|s| match &s.value {
            OpenMetricsValue::Histogram(h) => {
                let count = h.count.expect("a histogram sample has a count");
                let inf = h.buckets.last().and_then(|b| b.count.as_i64()).map(|n| n as u64);
                assert_eq!(inf, Some(count), "{family}: the +Inf bucket holds every observation");
                count
            }
            other => panic!("{family}: not a histogram value: {other:?}"),
        })
        .sum()
}

#[test]
fn the_exposition_is_openmetrics_with_help_and_type_on_every_family() {
    let s = site();
    let c = client(&s);
    c.close();
    let reply = raw_get(&s.proxy, "/metrics");
    let (head, text) = reply.split_once("\r\n\r\n").unwrap();
    assert_eq!(status_of(head), 200, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    let exp = parse(text);
    assert!(exp.families.len() >= 30, "only {} families", exp.families.len());
    for (name, f) in &exp.families {
        assert!(name.starts_with("shardtls_"), "{name} lacks the shardtls_ prefix");
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "{name} is not snake case"
        );
        assert!(!f.help.trim().is_empty(), "{name} has no HELP text");
        assert_ne!(f.family_type, OpenMetricsType::Unknown, "{name} has no TYPE");
        if !f.unit.is_empty() {
            assert!(
                name.ends_with(&format!("_{}", f.unit)),
                "{name}: the unit belongs in the name"
            );
        }
    }
    // The text itself: HELP and TYPE lines for every family, samples only
    // of declared families, `# EOF` last.
    let mut helped = BTreeSet::new();
    let mut typed = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            helped.insert(rest.split(' ').next().unwrap().to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            typed.insert(rest.split(' ').next().unwrap().to_string());
        } else if !line.starts_with('#') {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(
                typed.iter().any(|f| name.starts_with(f.as_str())),
                "sample {name} before its family's TYPE"
            );
        }
    }
    let families: BTreeSet<String> = exp.families.keys().cloned().collect();
    assert_eq!(helped, families, "a family without HELP");
    assert_eq!(typed, families, "a family without TYPE");
    assert!(text.ends_with("# EOF\n"));
    // Units in names, histograms where promised.
    for (family, kind) in [
        ("shardtls_tls_handshake_duration_seconds", OpenMetricsType::Histogram),
        ("shardtls_backend_connect_duration_seconds", OpenMetricsType::Histogram),
        (
            "shardtls_change_propagation_duration_seconds",
            OpenMetricsType::Histogram,
        ),
        (
            "shardtls_client_connection_duration_seconds",
            OpenMetricsType::Histogram,
        ),
        ("shardtls_proxied_bytes", OpenMetricsType::Counter),
        ("shardtls_uptime_seconds", OpenMetricsType::Gauge),
        ("shardtls_handshakes", OpenMetricsType::Counter),
        ("shardtls_handshakes_killed", OpenMetricsType::Counter),
        ("shardtls_epoch_connections", OpenMetricsType::Gauge),
    ] {
        let f = exp.families.get(family).unwrap_or_else(|| panic!("no family {family}"));
        assert_eq!(f.family_type, kind, "{family}");
    }
    assert!(text.contains("\nshardtls_proxied_bytes_total{shard=\"0\",direction=\"client_to_backend\"} "));
}

#[test]
fn histograms_count_handshakes_backend_connects_and_connection_lifetimes() {
    const CLIENTS: u64 = 6;
    let s = site();
    let before = scrape_parsed(&s.proxy);
    assert_eq!(
        histogram_count(&before, "shardtls_tls_handshake_duration_seconds", None),
        0
    );
    for _ in 0..CLIENTS {
        client(&s).close();
    }
    let exp = scrape_parsed(&s.proxy);
    let handshakes = histogram_count(&exp, "shardtls_tls_handshake_duration_seconds", Some(("vserver", "v1")));
    assert_eq!(handshakes, CLIENTS, "one observation per handshake done");
    assert_eq!(
        handshakes,
        total(&s.proxy.stats(), "vserver", "v1", "handshakes_completed"),
        "the histogram and /stats disagree"
    );
    // Every shard's buckets merge into one series per vserver.
    let series = &exp.families["shardtls_tls_handshake_duration_seconds"];
    assert_eq!(series.iter_samples().count(), 1, "one series for v1");
    assert_eq!(series.get_label_names(), ["vserver"]);
    // Every client reached the echo service through a fresh back-end connection.
    assert_eq!(
        histogram_count(
            &exp,
            "shardtls_backend_connect_duration_seconds",
            Some(("service", "web"))
        ),
        CLIENTS
    );
    // Lifetimes are observed when a connection ends, which follows the
    // client's close.
    let ended = wait_for(Duration::from_secs(5), || {
        histogram_count(
            &scrape_parsed(&s.proxy),
            "shardtls_client_connection_duration_seconds",
            Some(("vserver", "v1")),
        ) == CLIENTS
    });
    assert!(ended, "connection lifetimes not observed:\n{}", scrape(&s.proxy));
}

#[test]
fn a_change_through_ctl_adds_one_propagation_observation() {
    let s = site();
    let family = "shardtls_change_propagation_duration_seconds";
    let count = || histogram_count(&scrape_parsed(&s.proxy), family, None);
    let ctl = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_shardtls"))
            .arg("ctl")
            .args(args)
            .env("SHARDTLS_ADMIN", &s.proxy.admin)
            .output()
            .unwrap()
    };
    let start = count();
    let out = ctl(&["set", "ssl", "vserver", "v1", "-sessTimeout", "240"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(count(), start + 1, "an applied change is one observation");
    // Refused changes and queries propagate nothing.
    assert!(!ctl(&["set", "ssl", "vserver", "nosuch", "-sessTimeout", "240"])
        .status
        .success());
    assert!(ctl(&["show", "stats"]).status.success());
    assert_eq!(count(), start + 1);
    let out = ctl(&["set ssl vserver v1 -sessTimeout 120"]);
    assert!(out.status.success());
    assert_eq!(count(), start + 2);
}

#[test]
fn epoch_labels_name_live_epochs_only_and_no_label_comes_from_a_peer() {
    let s = site();
    let mut held = client(&s);
    // A TLS change opens epoch 2; the held connection keeps epoch 1 draining.
    let reply = s.proxy.ctl("set ssl vserver v1 -sessTimeout 240").unwrap();
    assert!(reply.contains("epoch opened: vserver v1"), "{reply}");
    assert_eq!(held.echo(b"still here").unwrap(), b"still here");
    let exp = scrape_parsed(&s.proxy);
    let live: BTreeSet<(String, String)> = exp.families["shardtls_epoch_connections"]
        .iter_samples()
        .map(labels)
        .filter(|l| l["kind"] == "vserver")
        .map(|l| (l["epoch"].clone(), l["status"].clone()))
        .collect();
    assert_eq!(
        live,
        BTreeSet::from([
            ("1".to_string(), "draining".to_string()),
            ("2".to_string(), "current".to_string())
        ]),
        "vserver epochs in /metrics"
    );
    held.close();
    let drained = wait_for(Duration::from_secs(5), || {
        let exp = scrape_parsed(&s.proxy);
        let vserver_epochs: BTreeSet<String> = exp.families["shardtls_epoch_handshakes"]
            .iter_samples()
            .map(labels)
            .filter(|l| l["kind"] == "vserver")
            .map(|l| l["epoch"].clone())
            .collect();
        vserver_epochs == BTreeSet::from(["2".to_string()])
    });
    assert!(drained, "a drained epoch kept its label:\n{}", scrape(&s.proxy));
    // Its counts stay in the epoch-less counters.
    let exp = scrape_parsed(&s.proxy);
    let handshakes: f64 = exp.families["shardtls_handshakes"]
        .iter_samples()
        .filter(|s| labels(s)["name"] == "v1")
        .map(|s| match &s.value {
            OpenMetricsValue::Counter(c) => c.value.as_f64(),
            v => panic!("{v:?}"),
        })
        .sum();
    assert_eq!(handshakes, 1.0);
    // Every label is one the configuration bounds; none carries an address.
    let allowed = [
        "shard",
        "kind",
        "name",
        "epoch",
        "status",
        "vserver",
        "service",
        "direction",
        "mode",
        "end",
    ];
    for (name, f) in &exp.families {
        for key in f.get_label_names() {
            assert!(allowed.contains(&key.as_str()), "{name} has label {key}");
        }
        for s in f.iter_samples() {
            for (k, v) in labels(s) {
                assert!(!v.contains("127.0.0.1"), "{name}: label {k}={v} carries an address");
            }
        }
    }
}

/// Every string in a JSON document.
fn strings<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a str>) {
    match v {
        serde_json::Value::String(s) => out.push(s),
        serde_json::Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        serde_json::Value::Object(m) => m.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

/// The `shardtls_...` names a PromQL text refers to.
fn metric_names(text: &str) -> BTreeSet<String> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("shardtls_") {
        if text[..i].chars().next_back().is_some_and(ident) {
            continue;
        }
        let end = text[i..].find(|c| !ident(c)).map_or(text.len(), |n| i + n);
        out.insert(text[i..end].to_string());
    }
    out
}

/// The label names a PromQL expression groups by or matches on.
fn label_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in expr.match_indices("by (") {
        let list = &expr[i + 4..];
        let list = &list[..list.find(')').unwrap()];
        out.extend(list.split(',').map(|l| l.trim().to_string()));
    }
    for (i, _) in expr.match_indices('{') {
        let inner = &expr[i + 1..];
        let inner = &inner[..inner.find('}').unwrap()];
        for matcher in inner.split(',') {
            let key = matcher.split(['=', '!', '~']).next().unwrap().trim();
            out.insert(key.to_string());
        }
    }
    out
}

#[test]
fn the_grafana_dashboard_uses_only_what_metrics_exports() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/grafana-dashboard.json");
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("the dashboard is not valid JSON");
    let panels = dash["panels"].as_array().expect("the dashboard has panels");
    let mut exprs = Vec::new();
    for p in panels.iter().filter(|p| p["type"] != "row") {
        let targets = p["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("panel {} has no targets", p["title"]));
        assert!(!targets.is_empty(), "panel {} has no targets", p["title"]);
        for t in targets {
            let e = t["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("a target of {} has no expr", p["title"]));
            assert!(e.contains("shardtls_"), "{e}");
            exprs.push(e);
        }
    }
    let mut all = Vec::new();
    strings(&dash, &mut all);
    let referenced: BTreeSet<String> = all.iter().flat_map(|s| metric_names(s)).collect();

    // What a live proxy exports, once it has served a connection.
    let s = site();
    client(&s).close();
    let exp = scrape_parsed(&s.proxy);
    // Sample name -> its label names (Prometheus adds instance and job).
    let mut exported: HashMap<String, BTreeSet<String>> = HashMap::new();
    for (name, f) in &exp.families {
        let suffixes: &[&str] = match f.family_type {
            OpenMetricsType::Counter => &["_total"],
            OpenMetricsType::Histogram => &["_bucket", "_sum", "_count"],
            _ => &[""],
        };
        for x in suffixes {
            let mut labels: BTreeSet<String> = f.get_label_names().iter().cloned().collect();
            labels.extend(["instance", "job"].map(String::from));
            if *x == "_bucket" {
                labels.insert("le".into());
            }
            exported.insert(format!("{name}{x}"), labels);
        }
    }
    for name in &referenced {
        assert!(
            exported.contains_key(name),
            "the dashboard uses {name}, which /metrics does not export"
        );
    }
    for family in [
        "shardtls_tls_handshake_duration_seconds_bucket",
        "shardtls_backend_connect_duration_seconds_bucket",
        "shardtls_change_propagation_duration_seconds_bucket",
        "shardtls_epoch_connections",
        "shardtls_handshakes_total",
        "shardtls_handshakes_killed_total",
        "shardtls_closed_by_drain_total",
    ] {
        assert!(referenced.contains(family), "the dashboard does not show {family}");
    }
    // Every label an expression groups by or matches on belongs to a metric it reads.
    for e in exprs {
        let has: BTreeSet<&String> = metric_names(e).iter().flat_map(|m| &exported[m]).collect();
        for label in label_names(e) {
            assert!(has.contains(&label), "{e}: none of its metrics has label {label}");
        }
    }
}

#[test]
fn promql_names_and_labels_are_found() {
    let e = r#"histogram_quantile(0.99, sum by (le, shard) (rate(shardtls_a_bucket{instance=~"$i",kind!="x"}[5m]))) / shardtls_b"#;
    assert_eq!(
        metric_names(e),
        BTreeSet::from(["shardtls_a_bucket".to_string(), "shardtls_b".to_string()])
    );
    assert_eq!(
        label_names(e),
        BTreeSet::from(["le", "shard", "instance", "kind"].map(String::from))
    );
    assert!(metric_names("not_shardtls_x shardtls").is_empty());
}
