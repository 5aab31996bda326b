//! `shardtls ctl show stats --watch`: a live table of per-shard, per-epoch
//! counters, redrawn every interval, as `watch` or `hatop` show theirs.
//!
//! What it does: fetches `/stats` from the admin API every interval and
//! renders one row per live epoch (current or draining) of each entity on
//! each shard: open connections, handshakes per second since the previous
//! sample (timed by the proxy's own uptime, so the rate does not depend on
//! when the sample arrived), handshakes, killed handshakes and connections
//! closed at the drain deadline. On a terminal each sample replaces the last
//! (clear screen, then the table); otherwise each sample is appended as a
//! block followed by a blank line, for pipes and logs. Ctrl-C or SIGTERM
//! ends it with status 0 once the request under way is answered or times
//! out ([`request_timeout`]: a few seconds); a second one ends it at once
//! (status 130 for SIGINT, 143 for SIGTERM). A reader that goes away ends it
//! with 0 too. It fails as plain `ctl` does: 70 when the admin API cannot be
//! reached, does not answer in time or answers 500, 1 when it refuses the
//! request (400, 401, 409).
//!
//! What it does not do: change anything, or keep more than the previous
//! sample. Drained epochs are left out (`show stats` has them).

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::admin::{client_request_within, CtlError};

/// Default time between two samples.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

/// Shortest interval accepted (the admin API serializes requests).
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// How long one sample may take before `--watch` gives up (exit 70): twice
/// the interval, from 3 to 10 seconds. Short, so that a proxy that stopped
/// answering shows at once and Ctrl-C never waits long.
pub fn request_timeout(interval: Duration) -> Duration {
    (interval * 2).clamp(Duration::from_secs(3), Duration::from_secs(10))
}

/// First line of every block.
pub const HEADER: &str = "shardtls stats";

/// What `ctl` was asked: the command words left once `--watch` and
/// `--interval SECONDS` typed after `show stats` are taken out.
#[derive(Debug, PartialEq)]
pub struct CtlWords {
    pub words: Vec<String>,
    pub watch: bool,
    pub interval: Option<Duration>,
}

/// Take `--watch` and `--interval SECONDS` (or `--interval=SECONDS`) out of
/// `words` when the rest is `show stats`; any other command keeps its words
/// untouched (its own flags pass through).
pub fn take_watch_flags(words: Vec<String>) -> Result<CtlWords, String> {
    let mut rest = Vec::new();
    let mut watch = false;
    let mut interval = None;
    let mut it = words.iter();
    while let Some(w) = it.next() {
        match w.as_str() {
            "--watch" | "-w" => watch = true,
            "--interval" => interval = Some(it.next().map(String::as_str).unwrap_or("")),
            w if w.starts_with("--interval=") => interval = Some(&w["--interval=".len()..]),
            _ => rest.push(w.clone()),
        }
    }
    let show_stats = rest.len() == 2 && rest[0].eq_ignore_ascii_case("show") && rest[1].eq_ignore_ascii_case("stats");
    if !show_stats || (!watch && interval.is_none()) {
        return Ok(CtlWords {
            words,
            watch: false,
            interval: None,
        });
    }
    let interval = interval.map(parse_interval).transpose()?;
    Ok(CtlWords {
        words: rest,
        watch,
        interval,
    })
}

/// Seconds, as a decimal number, at least [`MIN_INTERVAL`].
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("--interval takes seconds (such as 1 or 0.5), not {s:?}"))?;
    if !secs.is_finite() || secs < MIN_INTERVAL.as_secs_f64() || secs > 3600.0 {
        return Err(format!(
            "--interval must be between {} and 3600 seconds",
            MIN_INTERVAL.as_secs_f64()
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// One row: a live epoch of one entity on one shard.
#[derive(Debug, PartialEq)]
struct Row {
    shard: u64,
    kind: String,
    name: String,
    epoch: u64,
    status: String,
    live: u64,
    handshakes: u64,
    killed: u64,
    drained: u64,
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn rows(stats: &Value) -> Vec<Row> {
    let mut out = Vec::new();
    for shard in stats["shards"].as_array().into_iter().flatten() {
        for e in shard["core"]["entities"].as_array().into_iter().flatten() {
            for ep in e["epochs"].as_array().into_iter().flatten() {
                let status = ep["status"].as_str().unwrap_or("");
                if status == "drained" {
                    continue;
                }
                out.push(Row {
                    shard: u(&shard["shard"]),
                    kind: e["kind"].as_str().unwrap_or("?").to_string(),
                    name: e["name"].as_str().unwrap_or("?").to_string(),
                    epoch: u(&ep["epoch"]),
                    status: status.to_string(),
                    live: u(&ep["live"]),
                    handshakes: u(&ep["handshakes_completed"]),
                    killed: u(&ep["killed"]),
                    drained: u(&ep["closed_by_drain"]),
                });
            }
        }
    }
    out
}

/// Handshakes per second of `row` since `prev`, or None without a usable
/// previous sample. An epoch absent before started since: it counts from 0.
fn rate(row: &Row, prev: Option<(&[Row], f64)>, now_s: f64) -> Option<f64> {
    let (prev_rows, prev_s) = prev?;
    let dt = now_s - prev_s;
    if dt.is_nan() || dt <= 0.0 {
        return None;
    }
    let before = prev_rows
        .iter()
        .find(|p| (p.shard, &p.kind, &p.name, p.epoch) == (row.shard, &row.kind, &row.name, row.epoch))
        .map_or(0, |p| p.handshakes);
    Some(row.handshakes.saturating_sub(before) as f64 / dt)
}

/// The block for sample `cur`, with rates against `prev` (the previous
/// sample) when given: a header line, then the table.
pub fn render(prev: Option<&Value>, cur: &Value) -> String {
    let now_s = cur["uptime_s"].as_f64().unwrap_or(0.0);
    let prev_rows = prev.map(|p| (rows(p), p["uptime_s"].as_f64().unwrap_or(0.0)));
    let prev_ref = prev_rows.as_ref().map(|(r, s)| (r.as_slice(), *s));
    let shards = cur["shards"].as_array().map_or(0, Vec::len);
    let clients: u64 = cur["shards"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| u(&s["live_client_connections"]))
        .sum();
    let mut out = format!(
        "{HEADER}: generation {}, uptime {:.1} s, {shards} shards, {clients} client connections\n",
        u(&cur["generation"]),
        now_s
    );
    let header = [
        "SHARD",
        "KIND",
        "NAME",
        "EPOCH",
        "STATUS",
        "CONNS",
        "HS/S",
        "HANDSHAKES",
        "KILLED",
        "DRAINED",
    ];
    let mut table: Vec<[String; 10]> = vec![header.map(String::from)];
    for r in rows(cur) {
        let hs = rate(&r, prev_ref, now_s).map_or_else(|| "-".to_string(), |x| format!("{x:.1}"));
        table.push([
            r.shard.to_string(),
            r.kind.clone(),
            r.name.clone(),
            r.epoch.to_string(),
            r.status.clone(),
            r.live.to_string(),
            hs,
            r.handshakes.to_string(),
            r.killed.to_string(),
            r.drained.to_string(),
        ]);
    }
    let mut widths = [0usize; 10];
    for row in &table {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    // Text columns (kind, name, status) align left, numbers right.
    const LEFT: [bool; 10] = [false, true, true, false, true, false, false, false, false, false];
    for row in &table {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .zip(LEFT)
            .map(|((c, w), left)| if left { format!("{c:<w$}") } else { format!("{c:>w$}") })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Clear the screen and move the cursor home (ANSI).
const CLEAR: &str = "\x1b[H\x1b[2J";

/// Fetch `/stats` every `interval` and print it as a table until Ctrl-C or
/// SIGTERM; a terminal gets each table in place, anything else a block per
/// sample.
pub fn run(admin: &str, token: Option<&str>, interval: Duration) -> Result<(), CtlError> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // In this order: the second signal finds `stop` set and exits.
        signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, stop.clone())
            .and_then(|_| signal_hook::flag::register(sig, stop.clone()))
            .map_err(|e| CtlError::Fault(format!("cannot watch signals: {e}")))?;
    }
    let tty = std::io::stdout().is_terminal();
    let limit = request_timeout(interval);
    let mut prev: Option<Value> = None;
    while !stop.load(Ordering::Relaxed) {
        let next = Instant::now() + interval;
        let (status, body) = match client_request_within(admin, "GET", "/stats", "", token, limit) {
            Ok(reply) => reply,
            // Asked to stop while waiting: the failure is moot.
            Err(_) if stop.load(Ordering::Relaxed) => return Ok(()),
            Err(e) => return Err(CtlError::Unreachable(e)),
        };
        if status != 200 {
            print!("{body}");
            return Err(CtlError::from_status(status));
        }
        let cur: Value = serde_json::from_str(&body)
            .map_err(|e| CtlError::Fault(format!("the admin API sent statistics that are not JSON: {e}")))?;
        let block = render(prev.as_ref(), &cur);
        let mut out = std::io::stdout().lock();
        let written = if tty {
            write!(out, "{CLEAR}{block}")
        } else {
            writeln!(out, "{block}")
        };
        if written.and_then(|_| out.flush()).is_err() {
            // Whoever read our output is gone (a closed pipe): done.
            return Ok(());
        }
        prev = Some(cur);
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now >= next {
                break;
            }
            std::thread::sleep((next - now).min(Duration::from_millis(50)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn epoch(epoch: u64, status: &str, live: u64, hs: u64, killed: u64) -> Value {
        json!({"epoch": epoch, "status": status, "live": live, "handshakes_completed": hs,
               "killed": killed, "closed_by_drain": 0})
    }

    fn sample(uptime: f64, shard0: Vec<Value>, shard1: Vec<Value>) -> Value {
        let shard = |id: u64, epochs: Vec<Value>| {
            json!({"shard": id, "live_client_connections": 2,
                   "core": {"entities": [{"kind": "vserver", "name": "www", "epochs": epochs}]}})
        };
        json!({"uptime_s": uptime, "generation": 3, "shards": [shard(0, shard0), shard(1, shard1)]})
    }

    #[test]
    fn a_table_of_live_epochs_per_shard_with_rates_from_two_samples() {
        let first = sample(
            10.0,
            vec![epoch(1, "current", 2, 100, 0)],
            vec![epoch(1, "current", 1, 40, 0)],
        );
        let second = sample(
            12.0,
            vec![epoch(2, "current", 1, 10, 0), epoch(1, "draining", 1, 120, 3)],
            vec![epoch(2, "current", 1, 4, 0), epoch(1, "drained", 0, 50, 0)],
        );
        let text = render(Some(&first), &second);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "shardtls stats: generation 3, uptime 12.0 s, 2 shards, 4 client connections"
        );
        let cols = |l: &str| l.split_whitespace().map(String::from).collect::<Vec<_>>();
        assert_eq!(
            cols(lines[1]),
            [
                "SHARD",
                "KIND",
                "NAME",
                "EPOCH",
                "STATUS",
                "CONNS",
                "HS/S",
                "HANDSHAKES",
                "KILLED",
                "DRAINED"
            ]
        );
        // Epoch 2 is new: its 10 handshakes came within the 2 s between samples.
        assert_eq!(
            cols(lines[2]),
            ["0", "vserver", "www", "2", "current", "1", "5.0", "10", "0", "0"]
        );
        assert_eq!(
            cols(lines[3]),
            ["0", "vserver", "www", "1", "draining", "1", "10.0", "120", "3", "0"]
        );
        assert_eq!(
            cols(lines[4]),
            ["1", "vserver", "www", "2", "current", "1", "2.0", "4", "0", "0"]
        );
        // The drained epoch of shard 1 has no row.
        assert_eq!(lines.len(), 5, "{text}");
        // Columns line up: every row as wide as the header (trailing spaces trimmed).
        let width = lines[1].len();
        assert!(lines[2..].iter().all(|l| l.len() == width), "{text}");
    }

    #[test]
    fn without_a_previous_sample_rates_are_unknown() {
        let s = sample(1.0, vec![epoch(1, "current", 0, 7, 0)], vec![]);
        let text = render(None, &s);
        let row: Vec<&str> = text.lines().nth(2).unwrap().split_whitespace().collect();
        assert_eq!(row[6], "-");
        // A proxy that restarted (uptime went back) gives no rate either.
        let text = render(Some(&sample(50.0, vec![], vec![])), &s);
        assert_eq!(text.lines().nth(2).unwrap().split_whitespace().nth(6), Some("-"));
    }

    #[test]
    fn statistics_of_an_unexpected_shape_render_without_panicking() {
        for v in [
            json!(null),
            json!({"shards": 3}),
            json!({"shards": [{"core": {"entities": [{}]}}]}),
        ] {
            assert!(render(Some(&v), &v).starts_with(HEADER));
        }
    }

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn a_sample_waits_a_few_seconds_at_most() {
        assert_eq!(request_timeout(DEFAULT_INTERVAL), Duration::from_secs(3));
        assert_eq!(request_timeout(MIN_INTERVAL), Duration::from_secs(3));
        assert_eq!(request_timeout(Duration::from_secs(4)), Duration::from_secs(8));
        assert_eq!(request_timeout(Duration::from_secs(3600)), Duration::from_secs(10));
    }

    #[test]
    fn watch_flags_are_taken_only_after_show_stats() {
        let w = take_watch_flags(words("show stats --watch --interval 2.5")).unwrap();
        assert_eq!(w.words, words("show stats"));
        assert!(w.watch);
        assert_eq!(w.interval, Some(Duration::from_millis(2500)));
        let w = take_watch_flags(words("show stats --interval=0.5 -w")).unwrap();
        assert_eq!((w.watch, w.interval), (true, Some(Duration::from_millis(500))));
        let w = take_watch_flags(words("show stats")).unwrap();
        assert!(!w.watch);
        // Another command keeps its words, even ones that look like ours.
        let other = words("set ssl vserver v -watch --watch");
        assert_eq!(take_watch_flags(other.clone()).unwrap().words, other);
        assert!(take_watch_flags(words("show stats --watch --interval soon")).is_err());
        assert!(take_watch_flags(words("show stats --watch --interval 0")).is_err());
    }
}
