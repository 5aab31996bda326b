//! The end-of-run report: named figures with units, latency percentiles from
//! hdrhistograms, and the invariants checked, printed as a table or JSON.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

use super::runner::Measured;
use super::Plan;

/// Result of one scenario run.
#[derive(Debug)]
pub struct Report {
    pub scenario: String,
    pub target: String,
    params: Map<String, Value>,
    rows: Vec<(String, f64, &'static str)>,
    latencies: Vec<(String, [f64; 6], u64)>,
    /// Invariants that broke (the run exits non-zero when not empty).
    pub failures: Vec<String>,
    checks: Vec<(String, bool)>,
}

impl Report {
    pub fn new(plan: &Plan) -> Self {
        let a = &plan.args;
        let mut params = Map::new();
        params.insert("threads".into(), json!(plan.cpus.len()));
        params.insert("cpus".into(), json!(plan.cpus));
        params.insert("duration_s".into(), json!(a.duration.as_secs_f64()));
        params.insert("warmup_s".into(), json!(a.warmup.as_secs_f64()));
        params.insert("sni".into(), json!(a.sni));
        params.insert("tls_version".into(), json!(a.tls_version.map(|v| format!("{v:?}"))));
        params.insert("cipher".into(), json!(a.cipher));
        params.insert("server_pid".into(), json!(a.server_pid));
        Report {
            scenario: format!("{:?}", plan.scenario).to_lowercase(),
            target: a.target.clone(),
            params,
            rows: Vec::new(),
            latencies: Vec::new(),
            failures: Vec::new(),
            checks: Vec::new(),
        }
    }

    /// Records a run parameter (shown in JSON and at the top of the table).
    pub fn param(&mut self, name: &str, v: impl Into<Value>) {
        self.params.insert(name.into(), v.into());
    }

    pub fn metric(&mut self, name: &str, value: f64, unit: &'static str) {
        self.rows.push((name.to_string(), value, unit));
    }

    /// A rate, also per server core when the server's CPU was sampled.
    pub fn throughput(&mut self, m: &Measured, name: &str, per_s: f64, unit: &'static str) {
        self.metric(name, per_s, unit);
        if let Some(cores) = m.server_cores() {
            if cores > 0.0 {
                self.metric(&format!("{name}_per_server_core"), per_s / cores, unit);
            }
        }
    }

    /// Wall time and server CPU of the window.
    pub fn window(&mut self, m: &Measured) {
        self.metric("wall", m.wall, "s");
        if let Some(c) = m.server_cpu {
            self.metric("server_cpu", c, "s");
        }
        if let Some(c) = m.server_cores() {
            self.metric("server_cores_busy", c, "cores");
        }
    }

    /// p50/p90/p99/p99.9/max/mean of a histogram of nanoseconds, in microseconds.
    pub fn latency(&mut self, name: &str, h: Option<&Histogram<u64>>) {
        let Some(h) = h else { return };
        if h.is_empty() {
            return;
        }
        let us = |v: u64| v as f64 / 1000.0;
        let v = [
            us(h.value_at_quantile(0.5)),
            us(h.value_at_quantile(0.9)),
            us(h.value_at_quantile(0.99)),
            us(h.value_at_quantile(0.999)),
            us(h.max()),
            h.mean() / 1000.0,
        ];
        self.latencies.push((name.to_string(), v, h.len()));
    }

    /// Checks an invariant; a broken one is listed and fails the run.
    pub fn check(&mut self, name: &str, ok: bool) {
        self.checks.push((name.to_string(), ok));
        if !ok {
            self.failures.push(name.to_string());
        }
    }

    pub fn to_json(&self) -> Value {
        let mut metrics = Map::new();
        for (n, v, u) in &self.rows {
            metrics.insert(n.clone(), json!({ "value": v, "unit": u }));
        }
        let mut lat = Map::new();
        for (n, v, count) in &self.latencies {
            lat.insert(
                n.clone(),
                json!({ "unit": "us", "count": count, "p50": v[0], "p90": v[1], "p99": v[2],
                        "p99_9": v[3], "max": v[4], "mean": v[5] }),
            );
        }
        let checks: Map<String, Value> = self.checks.iter().map(|(n, ok)| (n.clone(), json!(ok))).collect();
        json!({
            "scenario": self.scenario,
            "target": self.target,
            "params": self.params,
            "metrics": metrics,
            "latency": lat,
            "invariants": checks,
            "ok": self.failures.is_empty(),
        })
    }

    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "scenario {} against {}", self.scenario, self.target);
        let p: Vec<String> = self
            .params
            .iter()
            .filter(|(_, v)| !v.is_null() && *v != &json!([]))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(out, "  {}", p.join(" "));
        let w = self.rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(24);
        let _ = writeln!(out, "{:-<1$}", "", w + 22);
        for (n, v, u) in &self.rows {
            let _ = writeln!(out, "{n:<w$} {:>14} {u}", fmt_num(*v));
        }
        if !self.latencies.is_empty() {
            let _ = writeln!(out, "{:-<1$}", "", w + 22);
            let _ = writeln!(
                out,
                "{:<w$} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10}",
                "latency (us)", "p50", "p90", "p99", "p99.9", "max", "mean", "count"
            );
            for (n, v, c) in &self.latencies {
                let _ = writeln!(
                    out,
                    "{n:<w$} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {c:>10}",
                    v[0], v[1], v[2], v[3], v[4], v[5]
                );
            }
        }
        if !self.checks.is_empty() {
            let _ = writeln!(out, "{:-<1$}", "", w + 22);
            for (n, ok) in &self.checks {
                let _ = writeln!(out, "{n:<w$} {:>14}", if *ok { "ok" } else { "BROKEN" });
            }
        }
        out
    }
}

fn fmt_num(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e15 {
        format!("{v:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}
