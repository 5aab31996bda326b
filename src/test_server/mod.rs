//! Built-in test server (`shardtls test-server`): echo, sink and fixed HTTP/1.1
//! response, over plain TCP or TLS, to stand behind the proxy in tests, demos
//! and benchmarks. The proxy's own back-end side is `shard::backends`.
//!
//! # What it does
//! - `echo`: writes back what it reads; after the client's end of stream
//!   (FIN, or close_notify under TLS) it finishes writing and then shuts its
//!   own write side, so half-close is honoured.
//! - `sink`: reads and discards, counting bytes; shuts down when the client does.
//! - `http`: parses HTTP/1.1 requests with `httparse` (pipelined requests and
//!   `Content-Length` bodies included) and answers each with `200 OK` and a
//!   fixed body of `response_size` bytes, keeping the connection alive unless
//!   the client asks otherwise. Malformed or oversized requests get a 4xx/5xx
//!   and the connection is closed; chunked request bodies are refused (501).
//!
//! With a TLS configuration it terminates TLS itself (rustls, ring provider,
//! session resumption through both a server-side cache and stateless
//! tickets), which makes it a valid TLS target for `shardtls bench` without
//! any proxy in between.
//!
//! # How it runs, and why
//! One runtime thread (`crate::rt`) per `threads`, each with its own
//! `SO_REUSEPORT` listener on the same address, so the kernel spreads
//! connections across threads and nothing on the connection path is shared
//! except per-thread, cache-padded counters. This is the same shape as the
//! proxy, so a back end with as many threads as the proxy has shards never
//! bottlenecks it, and it copes with the tens of thousands of short or idle
//! connections the benchmarks open (a thread per connection would not).
//! Threads are unbound, so `taskset` on the process decides where they run.
//! Each thread's ring is set up like a shard's (`tuning.md`, "Locked memory").
//!
//! # What it does not do
//! No routing, no request bodies other than `Content-Length`, no HTTP/2, no
//! client certificates, no configuration reload. It is a fixture, not a server.

pub mod pki;
pub mod stream;

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crossbeam::utils::CachePadded;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use self::stream::TlsStream;
use crate::rt;
use crate::rt::net::{TcpListener, TcpStream};

/// Submission queue entries of each thread's ring (as a shard's).
const RING_ENTRIES: u32 = 1024;
/// Backlog of each listener (capped by net.core.somaxconn): the benchmarks
/// open connections in bursts of thousands.
const LISTEN_BACKLOG: i32 = 4096;
/// Largest HTTP request head accepted.
const MAX_REQUEST_HEAD: usize = 64 * 1024;
/// Responses up to this size are kept fully built in memory.
const PREBUILT_LIMIT: usize = 1024 * 1024;
/// Chunk written repeatedly for larger responses.
const BODY_CHUNK: usize = 64 * 1024;
/// A TLS handshake that takes longer than this is abandoned.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the back end does with each connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TestServerMode {
    /// Write back what is read; honour half-close.
    Echo,
    /// Read and discard.
    Sink,
    /// Answer each HTTP/1.1 request with a fixed body, keep-alive.
    Http,
}

impl fmt::Display for TestServerMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TestServerMode::Echo => "echo",
            TestServerMode::Sink => "sink",
            TestServerMode::Http => "http",
        })
    }
}

/// Arguments of `shardtls test-server`.
#[derive(clap::Args, Debug)]
pub struct TestServerArgs {
    /// Address to listen on, e.g. 127.0.0.1:9000.
    #[arg(long)]
    pub listen: SocketAddr,
    /// What to do with each connection.
    #[arg(long, value_enum, default_value_t = TestServerMode::Echo)]
    pub mode: TestServerMode,
    /// Body size of the fixed HTTP response (http mode), in bytes.
    #[arg(long, default_value_t = 128)]
    pub response_size: usize,
    /// Serve TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Number of threads, each with its own SO_REUSEPORT listener.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

/// Configuration of a back end started with [`spawn`].
#[derive(Clone)]
pub struct TestServerConfig {
    /// Address to bind; port 0 picks a free port (see [`TestServerHandle::local_addr`]).
    pub listen: SocketAddr,
    pub mode: TestServerMode,
    /// Body size of the fixed HTTP response.
    pub response_size: usize,
    /// Terminate TLS with this configuration; plain TCP when `None`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Threads (at least 1).
    pub threads: usize,
}

impl fmt::Debug for TestServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestServerConfig")
            .field("listen", &self.listen)
            .field("mode", &self.mode)
            .field("response_size", &self.response_size)
            .field("tls", &self.tls.is_some())
            .field("threads", &self.threads)
            .finish()
    }
}

/// Per-thread counters, on their own cache line.
#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    active: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    errors: AtomicU64,
}

struct Shared {
    stop: AtomicBool,
    /// Accept loops still running.
    alive: AtomicUsize,
    counters: Vec<CachePadded<Counters>>,
}

impl Shared {
    fn sum(&self, f: impl Fn(&Counters) -> &AtomicU64) -> u64 {
        self.counters.iter().map(|c| f(c).load(Ordering::Relaxed)).sum()
    }
}

/// A running back end. Dropping it stops it.
pub struct TestServerHandle {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl fmt::Debug for TestServerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestServerHandle")
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

impl TestServerHandle {
    /// The bound address (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.sum(|c| &c.connections)
    }

    /// Connections open now.
    pub fn active(&self) -> u64 {
        self.shared.sum(|c| &c.active)
    }

    /// Application bytes received (after TLS decryption).
    pub fn bytes(&self) -> u64 {
        self.shared.sum(|c| &c.bytes_in)
    }

    /// Application bytes sent.
    pub fn bytes_sent(&self) -> u64 {
        self.shared.sum(|c| &c.bytes_out)
    }

    /// Connections that ended with an error (handshake failure, reset, bad request).
    pub fn errors(&self) -> u64 {
        self.shared.sum(|c| &c.errors)
    }

    /// Stops accepting, closes every connection and joins the threads.
    /// Calling it again does nothing.
    pub fn stop(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        self.shared.stop.store(true, Ordering::SeqCst);
        // Each accept loop sees the flag after its next accept; connect until
        // all of them have (SO_REUSEPORT hashes each connection to one of them).
        let wake = wake_addr(self.local_addr);
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.shared.alive.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            let _ = std::net::TcpStream::connect_timeout(&wake, Duration::from_millis(100));
            std::thread::sleep(Duration::from_millis(1));
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for TestServerHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What to add to a failed runtime start: out of memory there is most
/// often the memlock limit (`tuning.md`, "Locked memory").
pub(crate) fn memlock_hint(e: &io::Error) -> &'static str {
    if e.raw_os_error() == Some(libc::ENOMEM) {
        " (see tuning.md: memlock)"
    } else {
        ""
    }
}

/// A `SO_REUSEPORT` listener on `addr`, and the address it got.
fn bind_listener(addr: SocketAddr) -> io::Result<(TcpListener, SocketAddr)> {
    use socket2::{Domain, Protocol, Socket, Type};
    use std::os::fd::{FromRawFd, IntoRawFd};
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM.cloexec(), Some(Protocol::TCP))?;
    sock.set_reuse_port(true)?;
    sock.set_reuse_address(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(LISTEN_BACKLOG)?;
    let local = sock
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("not an IP socket"))?;
    // SAFETY: a bound, listening TCP socket whose ownership moves here.
    Ok((unsafe { TcpListener::from_raw_fd(sock.into_raw_fd()) }, local))
}

/// The address to connect to in order to reach a listener bound to `addr`.
fn wake_addr(addr: SocketAddr) -> SocketAddr {
    let mut a = addr;
    if a.ip().is_unspecified() {
        a.set_ip(match a {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    a
}

/// A TLS server configuration for the back end: ring provider, TLS 1.2 and
/// 1.3, session resumption through a 64k-entry cache and stateless tickets.
pub fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    cfg.session_storage = rustls::server::ServerSessionMemoryCache::new(65_536);
    cfg.ticketer = rustls::crypto::ring::Ticketer::new()?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Loads a certificate chain and key from PEM files into [`server_config`].
pub fn load_server_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<Arc<rustls::ServerConfig>, Box<dyn std::error::Error>> {
    let cert_bytes = std::fs::read(cert).map_err(|e| format!("{}: {e}", cert.display()))?;
    let certs = CertificateDer::pem_slice_iter(&cert_bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: malformed PEM: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate found", cert.display()).into());
    }
    let key_bytes = std::fs::read(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => format!("{}: no PEM private key found", key.display()),
        e => format!("{}: malformed PEM: {e}", key.display()),
    })?;
    server_config(certs, key_der).map_err(|e| format!("{} / {}: {e}", cert.display(), key.display()).into())
}

/// Starts the back end. Returns once every thread is listening, so the
/// address (port 0 included) can be connected to right away.
pub fn spawn(cfg: TestServerConfig) -> io::Result<TestServerHandle> {
    let threads = cfg.threads.max(1);
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        alive: AtomicUsize::new(0),
        counters: (0..threads).map(|_| CachePadded::new(Counters::default())).collect(),
    });
    let body = Arc::new(ResponseBody::new(cfg.response_size));
    let mut handle = TestServerHandle {
        local_addr: cfg.listen,
        shared: shared.clone(),
        threads: Vec::new(),
    };
    for idx in 0..threads {
        // The first thread binds the asked-for address; the others bind the
        // address it got, so port 0 means one port for all of them.
        let addr = if idx == 0 { cfg.listen } else { handle.local_addr };
        let (tx, rx) = mpsc::channel();
        let shared2 = shared.clone();
        let tls = cfg.tls.clone();
        let body = body.clone();
        let mode = cfg.mode;
        let join = std::thread::Builder::new()
            .name(format!("backend-{idx}"))
            .spawn(move || {
                // Set up here rather than with `rt::Builder`, so a failure is
                // this call's error, not the end of the process.
                let runtime = match rt::Runtime::new(RING_ENTRIES) {
                    Ok(r) => r,
                    Err(e) => {
                        let why = format!(
                            "backend thread {idx}: cannot start its runtime: {e}{}",
                            memlock_hint(&e)
                        );
                        let _ = tx.send(Err(io::Error::new(e.kind(), why)));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let listener = match bind_listener(addr) {
                        Ok((l, local)) => {
                            shared2.alive.fetch_add(1, Ordering::SeqCst);
                            let _ = tx.send(Ok(local));
                            l
                        }
                        Err(e) => {
                            let why = format!("cannot listen on {addr}: {e}");
                            let _ = tx.send(Err(io::Error::new(e.kind(), why)));
                            return;
                        }
                    };
                    let srv = Rc::new(Server {
                        shared: shared2.clone(),
                        idx,
                        tls,
                        mode,
                        body,
                        stop_wakers: RefCell::new(slab::Slab::new()),
                    });
                    accept_loop(listener, srv).await;
                    shared2.alive.fetch_sub(1, Ordering::SeqCst);
                })
            })?;
        handle.threads.push(join);
        match rx.recv() {
            Ok(Ok(a)) => handle.local_addr = a,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(io::Error::other("back-end thread exited before listening")),
        }
    }
    Ok(handle)
}

/// `shardtls test-server`: runs until SIGINT or SIGTERM, then prints its counters.
pub fn main(args: TestServerArgs) -> Result<(), Box<dyn std::error::Error>> {
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => Some(load_server_config(c, k)?),
        (None, None) => None,
        _ => return Err("--tls-cert and --tls-key go together".into()),
    };
    if args.threads == 0 {
        return Err("--threads must be at least 1".into());
    }
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])?;
    let mut handle = spawn(TestServerConfig {
        listen: args.listen,
        mode: args.mode,
        response_size: args.response_size,
        tls: tls.clone(),
        threads: args.threads,
    })?;
    eprintln!(
        "backend: {} {} on {} ({} thread{}, pid {})",
        if tls.is_some() { "tls" } else { "plain" },
        args.mode,
        handle.local_addr(),
        args.threads,
        if args.threads == 1 { "" } else { "s" },
        std::process::id()
    );
    let _ = signals.forever().next();
    handle.stop();
    eprintln!(
        "backend: stopped; {} connections, {} bytes in, {} bytes out, {} errors",
        handle.connections(),
        handle.bytes(),
        handle.bytes_sent(),
        handle.errors()
    );
    Ok(())
}

/// The fixed HTTP response, built once.
struct ResponseBody {
    /// Full response (head and body) when small enough, else only the head.
    bytes: Vec<u8>,
    /// Body bytes still to send after `bytes` (large responses).
    rest: usize,
    chunk: Vec<u8>,
}

impl ResponseBody {
    fn new(size: usize) -> Self {
        let head = format!(
            "HTTP/1.1 200 OK\r\nServer: shardtls-backend\r\nContent-Type: application/octet-stream\r\nContent-Length: {size}\r\n\r\n"
        );
        let mut bytes = head.into_bytes();
        if size <= PREBUILT_LIMIT {
            bytes.resize(bytes.len() + size, b'x');
            Self {
                bytes,
                rest: 0,
                chunk: Vec::new(),
            }
        } else {
            Self {
                bytes,
                rest: size,
                chunk: vec![b'x'; BODY_CHUNK],
            }
        }
    }
}

/// What every connection task of one thread shares.
struct Server {
    shared: Arc<Shared>,
    idx: usize,
    tls: Option<Arc<rustls::ServerConfig>>,
    mode: TestServerMode,
    body: Arc<ResponseBody>,
    /// Connection tasks waiting for the stop flag.
    stop_wakers: RefCell<slab::Slab<Waker>>,
}

impl Server {
    fn counters(&self) -> &Counters {
        &self.shared.counters[self.idx]
    }

    /// Wakes every connection task so it sees the stop flag, then waits (up
    /// to a second) until they have all closed their sockets.
    async fn close_all(&self) {
        for w in self.stop_wakers.borrow_mut().drain() {
            w.wake();
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        while self.counters().active.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
            rt::sleep(Duration::from_millis(1)).await;
        }
        // Let the loop finish the closes of the dropped sockets.
        rt::sleep(Duration::from_millis(5)).await;
    }
}

/// Completes when the back end is stopping.
struct Stopped<'a> {
    srv: &'a Server,
    key: Option<usize>,
}

impl Future for Stopped<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.srv.shared.stop.load(Ordering::SeqCst) {
            return Poll::Ready(());
        }
        let mut wakers = self.srv.stop_wakers.borrow_mut();
        match self.key {
            Some(k) if wakers.contains(k) => wakers[k].clone_from(cx.waker()),
            _ => {
                let k = wakers.insert(cx.waker().clone());
                drop(wakers);
                self.key = Some(k);
            }
        }
        Poll::Pending
    }
}

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        if let Some(k) = self.key {
            let mut wakers = self.srv.stop_wakers.borrow_mut();
            if wakers.contains(k) {
                wakers.remove(k);
            }
        }
    }
}

async fn accept_loop(listener: TcpListener, srv: Rc<Server>) {
    loop {
        let accepted = listener.accept().await;
        if srv.shared.stop.load(Ordering::SeqCst) {
            drop(accepted);
            srv.close_all().await;
            return;
        }
        match accepted {
            Ok(s) => {
                let srv = srv.clone();
                rt::spawn_local(async move {
                    let c = srv.counters();
                    c.connections.fetch_add(1, Ordering::Relaxed);
                    c.active.fetch_add(1, Ordering::Relaxed);
                    let stopped = async {
                        Stopped { srv: &srv, key: None }.await;
                        Ok(())
                    };
                    if let Err(e) = futures_lite::future::or(serve(s, &srv), stopped).await {
                        srv.counters().errors.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!("backend connection ended: {e}");
                    }
                    srv.counters().active.fetch_sub(1, Ordering::Relaxed);
                })
                .detach();
            }
            Err(e) => {
                // Out of descriptors or a transient error: back off briefly.
                tracing::warn!("backend accept failed: {e}");
                rt::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// A plain or TLS connection, as the modes see it.
enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<rustls::ServerConnection>>),
}

impl Conn {
    /// Reads application bytes; 0 is the end of the client's stream (a TLS
    /// close without close_notify counts as one too: this is a test fixture).
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf).await,
            Conn::Tls(s) => match s.read(buf).await {
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                r => r,
            },
        }
    }

    async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.write_all(data).await,
            Conn::Tls(s) => s.write_all(data).await,
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            // Waits until the kernel took everything, then shuts the write side.
            Conn::Plain(s) => s.close().await,
            Conn::Tls(s) => s.shutdown().await,
        }
    }
}

async fn serve(sock: TcpStream, srv: &Server) -> io::Result<()> {
    sock.set_nodelay(true)?;
    let mut conn = match &srv.tls {
        None => Conn::Plain(sock),
        Some(cfg) => {
            let tls = rustls::ServerConnection::new(cfg.clone())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            let mut s = Box::new(TlsStream::new(sock, tls));
            rt::timeout(HANDSHAKE_TIMEOUT, s.handshake())
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
            Conn::Tls(s)
        }
    };
    match srv.mode {
        TestServerMode::Echo => echo(&mut conn, srv.counters()).await,
        TestServerMode::Sink => sink(&mut conn, srv.counters()).await,
        TestServerMode::Http => http(&mut conn, srv.counters(), &srv.body).await,
    }
}

async fn echo(conn: &mut Conn, c: &Counters) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = conn.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        c.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        conn.write_all(&buf[..n]).await?;
        c.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
    }
    conn.shutdown().await
}

async fn sink(conn: &mut Conn, c: &Counters) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = conn.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        c.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
    }
    conn.shutdown().await
}

/// What to do after the requests parsed so far.
#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    /// Complete requests answered; wait for more bytes.
    More,
    /// Answer, then close (the client asked to).
    Close,
    /// A request was refused; send this response and close.
    Refuse(&'static str),
}

/// Parses every complete request at the front of `req`, counting responses
/// to send in `responses`. `skip` carries body bytes still to discard.
fn parse_requests(req: &mut Vec<u8>, skip: &mut usize, responses: &mut usize) -> Parsed {
    let mut pos = 0;
    let outcome = loop {
        if *skip > 0 {
            let n = (*skip).min(req.len() - pos);
            pos += n;
            *skip -= n;
            if *skip > 0 {
                break Parsed::More;
            }
        }
        if pos == req.len() {
            break Parsed::More;
        }
        let mut headers = [httparse::EMPTY_HEADER; 48];
        let mut r = httparse::Request::new(&mut headers);
        match r.parse(&req[pos..]) {
            Ok(httparse::Status::Partial) => {
                if req.len() - pos > MAX_REQUEST_HEAD {
                    break Parsed::Refuse("431 Request Header Fields Too Large");
                }
                break Parsed::More;
            }
            Err(httparse::Error::TooManyHeaders) => break Parsed::Refuse("431 Request Header Fields Too Large"),
            Err(_) => break Parsed::Refuse("400 Bad Request"),
            Ok(httparse::Status::Complete(len)) => {
                let mut close = r.version == Some(0);
                let mut body = 0usize;
                for h in r.headers.iter() {
                    if h.name.eq_ignore_ascii_case("content-length") {
                        match std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse().ok()) {
                            Some(n) => body = n,
                            None => return Parsed::Refuse("400 Bad Request"),
                        }
                    } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                        return Parsed::Refuse("501 Not Implemented");
                    } else if h.name.eq_ignore_ascii_case("connection") {
                        let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
                        if v.contains("close") {
                            close = true;
                        } else if v.contains("keep-alive") {
                            close = false;
                        }
                    }
                }
                pos += len;
                *skip = body;
                *responses += 1;
                if close {
                    break Parsed::Close;
                }
            }
        }
    };
    req.drain(..pos);
    outcome
}

async fn http(conn: &mut Conn, c: &Counters, body: &ResponseBody) -> io::Result<()> {
    let mut req: Vec<u8> = Vec::with_capacity(4096);
    let mut buf = vec![0u8; 16 * 1024];
    let mut skip = 0usize;
    loop {
        let n = conn.read(&mut buf).await?;
        if n == 0 {
            return conn.shutdown().await;
        }
        c.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        req.extend_from_slice(&buf[..n]);
        let mut responses = 0;
        let outcome = parse_requests(&mut req, &mut skip, &mut responses);
        for _ in 0..responses {
            conn.write_all(&body.bytes).await?;
            let mut rest = body.rest;
            while rest > 0 {
                let k = rest.min(body.chunk.len());
                conn.write_all(&body.chunk[..k]).await?;
                rest -= k;
            }
            c.bytes_out
                .fetch_add((body.bytes.len() + body.rest) as u64, Ordering::Relaxed);
        }
        match outcome {
            Parsed::More => {}
            Parsed::Close => return conn.shutdown().await,
            Parsed::Refuse(status) => {
                let msg = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                conn.write_all(msg.as_bytes()).await?;
                conn.shutdown().await?;
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("refused request: {status}"),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests;
