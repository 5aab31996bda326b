//! The access log: one line per client connection when it ends
//! (`shardtls run --access-log PATH|-`).
//!
//! A shard formats its line into a buffer taken from a shared pool of
//! spares and pushes it onto a bounded lock-free queue; one writer thread
//! drains the queue every [`WRITE_INTERVAL`] with buffered writes and hands
//! the buffers back, so a connection allocates nothing once the pool is
//! warm. A shard never waits on the disk: when the queue is full the line
//! is dropped and counted ([`AccessLog::dropped`], in `/stats` and
//! `/metrics`). SIGUSR1 makes the writer reopen its file at the same path
//! (logrotate). With no access log configured, [`get`] is `None` and a
//! connection pays one branch.
//!
//! Lines are plain (`key=value` in a fixed order, see [`Record::write_plain`])
//! or JSON (one object per line). Every value a peer chooses (SNI, ALPN) is
//! escaped: in plain lines each byte outside `!`..`~`, and `"` and `\`, is
//! written `\xHH`; JSON lines use JSON's escaping.
//!
//! It does not decide how a connection ended; the shard tells it, in terms
//! of the core's close kinds and reasons ([`Ending`]).

use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use crossbeam::queue::ArrayQueue;
use serde::Serialize;

use crate::config::model::Epoch;
use crate::core::{CloseKind, CloseReason};

/// Lines that may wait for the writer; more are dropped and counted.
pub const QUEUE_LINES: usize = 16 * 1024;

/// How often the writer drains the queue (and looks for SIGUSR1).
pub const WRITE_INTERVAL: Duration = Duration::from_millis(20);

/// Room reserved in a fresh line buffer (a line with a long SNI fits).
const LINE_CAPACITY: usize = 512;

/// Shape of the lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// `key=value` pairs in a fixed order, values escaped.
    #[default]
    Plain,
    /// One JSON object per line.
    Json,
}

/// Where the lines go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Stdout,
    /// Appended to; reopened at the same path on SIGUSR1.
    File(PathBuf),
}

impl Target {
    /// `-` is standard output, anything else a file path.
    pub fn parse(s: &str) -> Target {
        if s == "-" {
            Target::Stdout
        } else {
            Target::File(PathBuf::from(s))
        }
    }

    fn open(&self) -> io::Result<Box<dyn Write + Send>> {
        match self {
            Target::Stdout => Ok(Box::new(io::stdout())),
            Target::File(p) => {
                use std::os::unix::fs::OpenOptionsExt;
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o640)
                    .open(p)
                    .map_err(|e| io::Error::new(e.kind(), format!("cannot open {}: {e}", p.display())))?;
                Ok(Box::new(f))
            }
        }
    }
}

/// How a client connection ended, as the access log words it: the core's
/// [`CloseReason`] when the shard closed it, else its [`CloseKind`], told
/// apart by the side that ended it and whether the handshake completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    /// Closed with close_notify (or a plain EOF before any byte).
    Clean,
    /// The client reset the connection or left without close_notify.
    ClientReset,
    /// The back end failed or reset while proxying.
    BackendReset,
    /// No traffic either way for the vserver's `-cltTimeout`.
    IdleTimeout,
    /// No complete handshake within `-handshakeTimeout`.
    HandshakeTimeout,
    /// Closed by a change: mid-handshake when its epoch retired (R2), or
    /// its vserver disabled or removed (R7).
    Killed,
    /// Still open at a drain deadline (R12 `-drainTimeout`, or SIGTERM).
    Drained,
    /// Closed at accept: the vserver was full (`-maxClients`), disabled, or
    /// the shard at its descriptor limit.
    Refused,
    /// The client sent what TLS refused (a bad ClientHello, a bad record).
    ProtocolError,
    /// No back-end member could be reached.
    NoBackend,
}

impl Ending {
    pub fn as_str(self) -> &'static str {
        match self {
            Ending::Clean => "clean",
            Ending::ClientReset => "client_reset",
            Ending::BackendReset => "backend_reset",
            Ending::IdleTimeout => "idle_timeout",
            Ending::HandshakeTimeout => "handshake_timeout",
            Ending::Killed => "killed",
            Ending::Drained => "drained",
            Ending::Refused => "refused",
            Ending::ProtocolError => "protocol_error",
            Ending::NoBackend => "no_backend",
        }
    }

    /// The shard closed the connection for `reason`.
    pub fn of_reason(reason: CloseReason) -> Ending {
        match reason {
            CloseReason::HandshakeTimeout => Ending::HandshakeTimeout,
            CloseReason::EpochChanged | CloseReason::Disabled => Ending::Killed,
            CloseReason::DrainTimeout => Ending::Drained,
        }
    }

    /// The client side closed as `kind`, after the handshake completed
    /// (`established`) or before.
    pub fn of_kind(kind: CloseKind, established: bool) -> Ending {
        match kind {
            CloseKind::Clean => Ending::Clean,
            CloseKind::PeerReset => Ending::ClientReset,
            CloseKind::ProtocolError => Ending::ProtocolError,
            CloseKind::Timeout if established => Ending::IdleTimeout,
            CloseKind::Timeout => Ending::HandshakeTimeout,
            CloseKind::Killed => Ending::Killed,
            CloseKind::BackendFailed => Ending::NoBackend,
        }
    }
}

/// What one line says about one connection.
#[derive(Clone, Debug)]
pub struct Record<'a> {
    pub shard: usize,
    pub vserver: &'a str,
    /// The client's address, as the connection knows it.
    pub client: Option<SocketAddr>,
    pub sni: Option<&'a str>,
    pub alpn: Option<&'a [u8]>,
    /// `TLSv1.3`, `TLSv1.2`.
    pub tls: Option<&'static str>,
    pub cipher: Option<&'static str>,
    /// `None` when no handshake completed.
    pub resumed: Option<bool>,
    /// First byte to handshake complete.
    pub handshake: Option<Duration>,
    /// The back-end member the connection was proxied to.
    pub backend: Option<SocketAddr>,
    /// Plaintext bytes from the client to the back end.
    pub bytes_in: u64,
    /// Plaintext bytes from the back end to the client.
    pub bytes_out: u64,
    /// Accept to close.
    pub duration: Duration,
    pub end: Ending,
    /// The epoch of the vserver the connection was bound to (at its first byte).
    pub epoch: Option<Epoch>,
}

impl<'a> Record<'a> {
    /// The line of a connection refused at accept: who, where, nothing more.
    pub fn refused(shard: usize, vserver: &'a str, client: Option<SocketAddr>) -> Record<'a> {
        Record {
            shard,
            vserver,
            client,
            sni: None,
            alpn: None,
            tls: None,
            cipher: None,
            resumed: None,
            handshake: None,
            backend: None,
            bytes_in: 0,
            bytes_out: 0,
            duration: Duration::ZERO,
            end: Ending::Refused,
            epoch: None,
        }
    }
}

/// Milliseconds with microsecond precision: `12.345`.
struct Millis(Duration);

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let us = self.0.as_micros();
        write!(f, "{}.{:03}", us / 1000, us % 1000)
    }
}

impl Serialize for Millis {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.0.as_micros() as f64 / 1000.0)
    }
}

/// `2026-12-07T23:30:01.123Z`: RFC 3339, UTC, milliseconds.
pub fn rfc3339(t: SystemTime) -> [u8; 24] {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let (year, month, day) = crate::config::material::civil_from_days(days);
    let mut out = [0u8; 24];
    let mut w = &mut out[..];
    let _ = write!(
        w,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        year.clamp(0, 9999),
        month,
        day,
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since.subsec_millis()
    );
    out
}

/// Append `value` with every byte outside `!`..`~`, and `"` and `\`,
/// written as `\xHH`: the value holds no space, quote or control byte.
pub fn escape_plain(out: &mut Vec<u8>, value: &[u8]) {
    for &b in value {
        if (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\' {
            out.push(b);
        } else {
            let hex = b"0123456789abcdef";
            out.extend_from_slice(&[b'\\', b'x', hex[usize::from(b >> 4)], hex[usize::from(b & 15)]]);
        }
    }
}

impl Record<'_> {
    /// One line in `format`, newline included, appended to `out`.
    pub fn write(&self, format: Format, now: SystemTime, out: &mut Vec<u8>) {
        match format {
            Format::Plain => self.write_plain(now, out),
            Format::Json => self.write_json(now, out),
        }
    }

    /// `time= shard= vserver= client= sni= alpn= tls= cipher= resumed=
    /// handshake_ms= backend= bytes_in= bytes_out= duration_ms= end= epoch=`,
    /// always in this order, separated by one space; `-` where a value is
    /// absent. `resumed` is `yes` or `no`.
    pub fn write_plain(&self, now: SystemTime, out: &mut Vec<u8>) {
        fn opt<T: std::fmt::Display>(out: &mut Vec<u8>, key: &str, v: Option<T>) {
            let _ = match v {
                Some(v) => write!(out, " {key}={v}"),
                None => write!(out, " {key}=-"),
            };
        }
        fn text(out: &mut Vec<u8>, key: &str, v: Option<&[u8]>) {
            let _ = write!(out, " {key}=");
            match v {
                Some(v) => escape_plain(out, v),
                None => out.push(b'-'),
            }
        }
        out.extend_from_slice(b"time=");
        out.extend_from_slice(&rfc3339(now));
        let _ = write!(out, " shard={}", self.shard);
        text(out, "vserver", Some(self.vserver.as_bytes()));
        opt(out, "client", self.client);
        text(out, "sni", self.sni.map(str::as_bytes));
        text(out, "alpn", self.alpn);
        opt(out, "tls", self.tls);
        opt(out, "cipher", self.cipher);
        opt(out, "resumed", self.resumed.map(|r| if r { "yes" } else { "no" }));
        opt(out, "handshake_ms", self.handshake.map(Millis));
        opt(out, "backend", self.backend);
        let _ = write!(
            out,
            " bytes_in={} bytes_out={} duration_ms={} end={}",
            self.bytes_in,
            self.bytes_out,
            Millis(self.duration),
            self.end.as_str()
        );
        opt(out, "epoch", self.epoch);
        out.push(b'\n');
    }

    /// The same fields as one JSON object (`null` where absent; times in
    /// milliseconds as numbers; `resumed` a boolean).
    pub fn write_json(&self, now: SystemTime, out: &mut Vec<u8>) {
        #[derive(Serialize)]
        struct Line<'a> {
            time: &'a str,
            shard: usize,
            vserver: &'a str,
            client: Option<SocketAddr>,
            sni: Option<&'a str>,
            alpn: Option<std::borrow::Cow<'a, str>>,
            tls: Option<&'a str>,
            cipher: Option<&'a str>,
            resumed: Option<bool>,
            handshake_ms: Option<Millis>,
            backend: Option<SocketAddr>,
            bytes_in: u64,
            bytes_out: u64,
            duration_ms: Millis,
            end: Ending,
            epoch: Option<Epoch>,
        }
        let time = rfc3339(now);
        let line = Line {
            time: std::str::from_utf8(&time).unwrap_or("-"),
            shard: self.shard,
            vserver: self.vserver,
            client: self.client,
            sni: self.sni,
            alpn: self.alpn.map(String::from_utf8_lossy),
            tls: self.tls,
            cipher: self.cipher,
            resumed: self.resumed,
            handshake_ms: self.handshake.map(Millis),
            backend: self.backend,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            duration_ms: Millis(self.duration),
            end: self.end,
            epoch: self.epoch,
        };
        // Writing to a Vec fails only on a value serde_json refuses; none here.
        if serde_json::to_writer(&mut *out, &line).is_ok() {
            out.push(b'\n');
        }
    }
}

/// The process's access log: the queue the shards push to and its writer.
pub struct AccessLog {
    format: Format,
    target: Target,
    queue: ArrayQueue<Vec<u8>>,
    /// Buffers the writer handed back, for the next lines.
    spares: ArrayQueue<Vec<u8>>,
    written: AtomicU64,
    dropped: AtomicU64,
    /// Set by SIGUSR1.
    reopen: Arc<AtomicBool>,
    stop: AtomicBool,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

static LOG: OnceLock<AccessLog> = OnceLock::new();

/// The access log, when `run` was given one.
#[inline]
pub fn get() -> Option<&'static AccessLog> {
    LOG.get()
}

/// Open `target` and start the writer thread; `reopen` is the flag
/// SIGUSR1 sets. Once per process.
pub fn start(target: Target, format: Format, reopen: Arc<AtomicBool>) -> io::Result<&'static AccessLog> {
    let out = target.open()?;
    let log = AccessLog {
        format,
        target,
        queue: ArrayQueue::new(QUEUE_LINES),
        spares: ArrayQueue::new(QUEUE_LINES),
        written: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
        reopen,
        stop: AtomicBool::new(false),
        writer: Mutex::new(None),
    };
    LOG.set(log)
        .map_err(|_| io::Error::other("the access log is already started"))?;
    let log = LOG.get().expect("just set");
    let handle = std::thread::Builder::new()
        .name("access-log".into())
        .spawn(move || log.write_loop(out))?;
    *log.writer.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
    Ok(log)
}

impl AccessLog {
    /// Queue one line for `record`; dropped and counted when the queue is full.
    pub fn push(&self, record: &Record<'_>) {
        let mut buf = self.spares.pop().unwrap_or_else(|| Vec::with_capacity(LINE_CAPACITY));
        buf.clear();
        record.write(self.format, SystemTime::now(), &mut buf);
        if let Err(buf) = self.queue.push(buf) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            let _ = self.spares.push(buf);
        }
    }

    /// Lines written (handed to the file or stdout).
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Lines dropped: the queue was full, or the write failed.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Write what is queued, then stop the writer (at exit).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let handle = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            h.thread().unpark();
            let _ = h.join();
        }
    }

    fn write_loop(&self, out: Box<dyn Write + Send>) {
        let mut out = io::BufWriter::with_capacity(64 * 1024, out);
        let mut warned: Option<Instant> = None;
        let mut warn = |what: &str, e: &io::Error| {
            if warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                warned = Some(Instant::now());
                tracing::warn!("access log: {what}: {e}");
            }
        };
        loop {
            let stopping = self.stop.load(Ordering::SeqCst);
            if self.reopen.swap(false, Ordering::SeqCst) {
                if let Err(e) = out.flush() {
                    warn("cannot write", &e);
                }
                match self.target.open() {
                    Ok(f) => out = io::BufWriter::with_capacity(64 * 1024, f),
                    // Keep writing where we were rather than lose lines.
                    Err(e) => warn("cannot reopen", &e),
                }
            }
            while let Some(buf) = self.queue.pop() {
                match out.write_all(&buf) {
                    Ok(()) => self.written.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        warn("cannot write", &e);
                        self.dropped.fetch_add(1, Ordering::Relaxed)
                    }
                };
                let _ = self.spares.push(buf);
            }
            if let Err(e) = out.flush() {
                warn("cannot write", &e);
            }
            if stopping {
                return;
            }
            std::thread::park_timeout(WRITE_INTERVAL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record<'static> {
        Record {
            shard: 1,
            vserver: "www",
            client: Some("192.0.2.7:50312".parse().unwrap()),
            sni: Some("site.test"),
            alpn: Some(b"h2"),
            tls: Some("TLSv1.3"),
            cipher: Some("TLS13_AES_128_GCM_SHA256"),
            resumed: Some(false),
            handshake: Some(Duration::from_micros(1_234)),
            backend: Some("10.0.0.2:8080".parse().unwrap()),
            bytes_in: 517,
            bytes_out: 1024,
            duration: Duration::from_micros(52_001_500),
            end: Ending::Clean,
            epoch: Some(3),
        }
    }

    fn at() -> SystemTime {
        // 2026-12-07T23:30:01.123Z
        SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_686_201_123)
    }

    #[test]
    fn plain_lines_have_every_field_in_order() {
        let mut out = Vec::new();
        record().write_plain(at(), &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "time=2026-12-07T23:30:01.123Z shard=1 vserver=www client=192.0.2.7:50312 sni=site.test \
             alpn=h2 tls=TLSv1.3 cipher=TLS13_AES_128_GCM_SHA256 resumed=no handshake_ms=1.234 \
             backend=10.0.0.2:8080 bytes_in=517 bytes_out=1024 duration_ms=52001.500 end=clean epoch=3\n"
        );
        let refused = Record::refused(1, "www", None);
        let mut out = Vec::new();
        refused.write_plain(at(), &mut out);
        assert!(String::from_utf8(out).unwrap().ends_with(
            "client=- sni=- alpn=- tls=- cipher=- resumed=- handshake_ms=- backend=- \
             bytes_in=0 bytes_out=0 duration_ms=0.000 end=refused epoch=-\n"
        ));
    }

    #[test]
    fn json_lines_are_one_object_each() {
        let mut out = Vec::new();
        record().write_json(at(), &mut out);
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["time"], "2026-12-07T23:30:01.123Z");
        assert_eq!(v["client"], "192.0.2.7:50312");
        assert_eq!(v["backend"], "10.0.0.2:8080");
        assert_eq!(v["resumed"], false);
        assert_eq!(v["handshake_ms"], 1.234);
        assert_eq!(v["end"], "clean");
        assert_eq!(v["epoch"], 3);
    }

    #[test]
    fn what_a_peer_chooses_is_escaped() {
        let sni = "a b\"\\\n\u{1b}é=.test";
        let alpn: &[u8] = b"h2\x00\xff\r\n";
        let r = Record {
            sni: Some(sni),
            alpn: Some(alpn),
            ..record()
        };
        let mut out = Vec::new();
        r.write_plain(at(), &mut out);
        let line = String::from_utf8(out).unwrap();
        assert!(
            line.contains(r" sni=a\x20b\x22\x5c\x0a\x1b\xc3\xa9=.test alpn=h2\x00\xff\x0d\x0a tls="),
            "{line}"
        );
        assert_eq!(line.matches('\n').count(), 1);
        assert!(line.is_ascii());

        let mut out = Vec::new();
        r.write_json(at(), &mut out);
        assert_eq!(out.iter().filter(|&&b| b == b'\n' || b == 0x1b).count(), 1);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["sni"], sni);
        assert_eq!(v["alpn"], "h2\u{0}\u{fffd}\r\n");
    }

    #[test]
    fn dates_are_civil_utc() {
        let s =
            |ms: u64| String::from_utf8(rfc3339(SystemTime::UNIX_EPOCH + Duration::from_millis(ms)).to_vec()).unwrap();
        assert_eq!(s(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(s(951_782_400_999), "2000-02-29T00:00:00.999Z");
        assert_eq!(s(4_107_542_399_000), "2100-02-28T23:59:59.000Z");
    }

    #[test]
    fn endings_follow_the_core_kinds_and_reasons() {
        assert_eq!(Ending::of_kind(CloseKind::Timeout, false), Ending::HandshakeTimeout);
        assert_eq!(Ending::of_kind(CloseKind::Timeout, true), Ending::IdleTimeout);
        assert_eq!(Ending::of_reason(CloseReason::DrainTimeout), Ending::Drained);
        assert_eq!(Ending::of_reason(CloseReason::Disabled), Ending::Killed);
    }
}
