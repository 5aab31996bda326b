//! Load generator and benchmark CLI (`shardtls bench SCENARIO`).
//!
//! # What it does
//! Drives any TLS endpoint (shardtls, HAProxy, nginx, or `shardtls test-server`
//! with a certificate) from one runtime thread (`crate::rt`) per worker, each
//! pinned to its own CPU with `core_affinity`. Scenarios, one small file each
//! under `scenarios/`:
//! - `handshake`: a new connection per operation, full handshakes;
//!   closed-loop (`--concurrency`) or open-loop (`--rate`); `--request` adds
//!   one HTTP request/response per connection;
//! - `resume`: the same with session resumption, reporting the hit rate;
//! - `bulk`: long transfers, `--direction up` (to a sink), `down` (large HTTP
//!   responses) or `both` (to an echo back end), in GB/s;
//! - `latency`: small HTTP exchanges on kept-alive connections at a fixed
//!   offered `--rate`, latency measured from the intended send time
//!   (coordinated omission corrected);
//! - `idle`: opens `--connections` TLS connections, keeps them idle and reports
//!   the server's memory per connection from `/proc/PID/status`;
//! - `rotate`: handshake (with resumption) and request load while posting
//!   configuration changes to the admin API; checks that established
//!   connections never fail and no session resumes across a change.
//!
//! With `--server-pid` it samples the server's CPU time from `/proc/PID/stat`
//! over the measured window and reports every throughput also per server core.
//! Every scenario prints a progress line each second on stderr and a table (or
//! `--json`) at the end; it exits non-zero when the target is unreachable or
//! an invariant breaks.
//!
//! # What it does not do
//! No HTTP/2, no client certificates, no request bodies; it does not start or
//! configure the server it measures (see `perf/`), and it cannot tell the
//! server's CPU from the load generator's when both share a core.

mod admin;
mod http;
mod proc;
mod report;
mod runner;
mod scenarios;
mod tlsconf;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;

pub use report::Report;

/// Result type of the bench entry points.
pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The scenarios `shardtls bench` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    Handshake,
    Resume,
    Bulk,
    Latency,
    Idle,
    Rotate,
}

/// Transfer direction of the bulk scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Direction {
    /// Client to server (use a sink back end).
    Up,
    /// Server to client (HTTP back end with a large --response-size).
    Down,
    /// Both at once (use an echo back end).
    Both,
}

/// TLS protocol version to offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TlsVersion {
    #[value(name = "1.2")]
    V12,
    #[value(name = "1.3")]
    V13,
}

/// Arguments of `shardtls bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Scenario to run (not needed with --gen-cert).
    #[arg(value_enum, required_unless_present = "gen_cert")]
    pub scenario: Option<Scenario>,
    /// Write a throwaway CA and an ECDSA P-256 certificate for localhost and
    /// 127.0.0.1 (ca.pem, cert.pem, key.pem) into DIR and exit.
    #[arg(long, value_name = "DIR")]
    pub gen_cert: Option<PathBuf>,

    /// TLS endpoint to drive.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub target: String,
    /// Server name to send (SNI) and to verify.
    #[arg(long, default_value = "localhost")]
    pub sni: String,
    /// ALPN protocols to offer, comma separated (e.g. http/1.1).
    #[arg(long, value_delimiter = ',')]
    pub alpn: Vec<String>,
    /// Cipher suites to offer, comma separated: ADC names
    /// (TLS1.3-AES128-GCM-SHA256), rustls names or OpenSSL names.
    #[arg(long, value_delimiter = ',')]
    pub cipher: Vec<String>,
    /// Offer only this TLS version (default: 1.2 and 1.3).
    #[arg(long, value_enum)]
    pub tls_version: Option<TlsVersion>,
    /// Trust this CA (PEM) to verify the server.
    #[arg(long, conflicts_with = "insecure")]
    pub ca: Option<PathBuf>,
    /// Do not verify the server certificate (signatures are still checked).
    #[arg(long)]
    pub insecure: bool,

    /// Measured time (e.g. 10, 10s, 500ms, 1m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Unmeasured time before the measurement starts.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Connect, handshake and request timeout.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Worker threads (one pinned executor each).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// CPUs to pin workers to, e.g. 1 or 0-3,6 (default: the first --threads CPUs
    /// this process may use).
    #[arg(long, value_parser = parse_cpu_list)]
    pub cpus: Option<CpuList>,
    /// Connections in flight (handshake, resume, rotate), all workers together.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Offered rate in operations per second, all workers together: open loop
    /// for handshake/resume, required for latency.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Kept-alive connections (bulk, latency, idle, rotate), all workers together.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// handshake/resume/idle: one HTTP request/response on each new connection.
    #[arg(long)]
    pub request: bool,
    /// Path of HTTP requests.
    #[arg(long, default_value = "/")]
    pub path: String,
    /// Direction of bulk transfers.
    #[arg(long, value_enum, default_value_t = Direction::Up)]
    pub direction: Direction,
    /// Write size of bulk transfers, in bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    pub chunk_size: usize,

    /// PID of the server to sample CPU (and memory, for idle) from /proc;
    /// repeat for multi-process servers.
    #[arg(long)]
    pub server_pid: Vec<u32>,
    /// Print the result as JSON on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON result to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,

    /// rotate: admin API address (host:port or Unix socket path) [default: the
    /// default socket of `shardtls run`].
    #[arg(long)]
    pub admin: Option<String>,
    /// rotate: bearer token file for the admin API [default over TCP: the token
    /// `shardtls run` generates, if there is one].
    #[arg(long)]
    pub admin_token_file: Option<std::path::PathBuf>,
    /// rotate: time between configuration changes.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub interval: Duration,
    /// rotate: a change to post (repeat for several; used in turn).
    #[arg(long)]
    pub change: Vec<String>,
    /// rotate: the vserver under load. The default change toggles its
    /// -sessTimeout, and only changes that open a new epoch of it count for
    /// the no-resumption-across-a-change check (a back-end change does not).
    #[arg(long)]
    pub vserver: Option<String>,
    /// rotate: stop after this many applied changes.
    #[arg(long)]
    pub max_changes: Option<u64>,
}

/// Everything a run needs, resolved once from the arguments.
pub struct Plan {
    pub scenario: Scenario,
    pub args: BenchArgs,
    pub target: SocketAddr,
    pub server_name: ServerName<'static>,
    pub client: Arc<rustls::ClientConfig>,
    pub cpus: Vec<usize>,
    /// `GET {path} HTTP/1.1` with Host.
    pub request: Vec<u8>,
}

impl Plan {
    fn new(scenario: Scenario, args: BenchArgs) -> Result<Self> {
        if args.threads == 0 {
            return Err("--threads must be at least 1".into());
        }
        let target = args
            .target
            .to_socket_addrs()
            .map_err(|e| format!("--target {}: {e}", args.target))?
            .next()
            .ok_or_else(|| format!("--target {}: no address", args.target))?;
        let server_name = ServerName::try_from(args.sni.clone()).map_err(|e| format!("--sni {}: {e}", args.sni))?;
        let resumption = matches!(scenario, Scenario::Resume | Scenario::Rotate);
        let client = tlsconf::client_config(&args, resumption)?;
        let cpus = match args.cpus.as_ref().map(|l| &l.0) {
            Some(c) if c.len() < args.threads => {
                return Err(format!("--cpus lists {} CPUs for {} threads", c.len(), args.threads).into())
            }
            Some(c) => c[..args.threads].to_vec(),
            None => {
                let ids = core_affinity::get_core_ids().unwrap_or_default();
                if ids.is_empty() {
                    (0..args.threads).collect()
                } else {
                    (0..args.threads).map(|i| ids[i % ids.len()].id).collect()
                }
            }
        };
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: shardtls-bench\r\n\r\n",
            args.path, args.sni
        )
        .into_bytes();
        Ok(Self {
            scenario,
            args,
            target,
            server_name,
            client,
            cpus,
            request,
        })
    }
}

/// `shardtls bench`: runs a scenario, prints the report, and fails when the
/// target is unreachable or an invariant broke.
pub fn main(args: BenchArgs) -> Result<()> {
    if let Some(dir) = &args.gen_cert {
        let pki = crate::test_server::pki::TestPki::generate(&["localhost", "127.0.0.1"])?;
        pki.write_to(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        eprintln!(
            "wrote {}/{{ca,cert,key}}.pem (ECDSA P-256, localhost, 127.0.0.1)",
            dir.display()
        );
        if args.scenario.is_none() {
            return Ok(());
        }
    }
    let Some(scenario) = args.scenario else {
        return Err("no scenario given".into());
    };
    raise_nofile_limit();
    let plan = Arc::new(Plan::new(scenario, args)?);
    runner::preflight(&plan)?;
    let report = match scenario {
        Scenario::Handshake | Scenario::Resume => scenarios::handshake::run(plan.clone())?,
        Scenario::Bulk => scenarios::bulk::run(plan.clone())?,
        Scenario::Latency => scenarios::latency::run(plan.clone())?,
        Scenario::Idle => scenarios::idle::run(plan.clone())?,
        Scenario::Rotate => scenarios::rotate::run(plan.clone())?,
    };
    let json = report.to_json();
    if let Some(out) = &plan.args.out {
        let text = serde_json::to_string_pretty(&json)?;
        std::fs::write(out, text + "\n").map_err(|e| format!("{}: {e}", out.display()))?;
    }
    if plan.args.json {
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print!("{}", report.table());
    }
    if report.failures.is_empty() {
        Ok(())
    } else {
        Err(format!("invariant broken: {}", report.failures.join("; ")).into())
    }
}

/// Many connections need many descriptors: raise the soft limit to the hard one.
fn raise_nofile_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed in.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Parses `10`, `2.5`, `10s`, `500ms`, `100us`, `2m` into a duration.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let v: f64 = num.trim().parse().map_err(|_| format!("bad duration '{s}'"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("bad duration '{s}'"));
    }
    let secs = match unit {
        "s" => v,
        "ms" => v / 1e3,
        "us" => v / 1e6,
        "m" => v * 60.0,
        _ => return Err(format!("bad duration unit in '{s}' (use s, ms, us or m)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// Parses a CPU list such as `1`, `0-3` or `0-3,6`.
/// A parsed `--cpus` list (one value to clap, many CPUs inside).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuList(pub Vec<usize>);

fn parse_cpu_list(s: &str) -> std::result::Result<CpuList, String> {
    parse_cpus(s).map(CpuList)
}

pub fn parse_cpus(s: &str) -> std::result::Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("bad CPU list '{s}'");
        match part.split_once('-') {
            Some((a, b)) => {
                let a: usize = a.trim().parse().map_err(|_| bad())?;
                let b: usize = b.trim().parse().map_err(|_| bad())?;
                if a > b {
                    return Err(bad());
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().map_err(|_| bad())?),
        }
    }
    if out.is_empty() {
        return Err(format!("empty CPU list '{s}'"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
