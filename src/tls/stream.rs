//! One leg of a proxied connection: a byte stream, optionally wrapped in a
//! rustls connection, driven by `poll_*` methods.
//!
//! A [`Leg`] owns its stream and its rustls state, so a proxy can drive two
//! legs from one future without splitting sockets or sharing cells. Every
//! method is non-blocking: it returns `Poll::Pending` with the caller's waker
//! registered on the stream. Plaintext goes in and out; TLS records, alerts,
//! session tickets and close_notify are handled here. Calls into rustls that
//! may create or consult sessions run under the leg's [`SessionNotes`], so
//! the shard can forget those sessions if the connection ends badly (R8).
//! A leg may carry a preamble (a PROXY protocol header): bytes that go out
//! before anything else, in the same send as the first bytes written after
//! them (the ClientHello, or the client's first bytes on a plain leg).
//!
//! It does not know about epochs, timers or back-end selection.

use std::io::{self, Read, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_lite::io::{AsyncRead, AsyncWrite};
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, Connection, HandshakeKind, ServerConnection};

use super::session::{with_notes, SessionNotes};

/// Bytes read into rustls before its records are processed: one full record.
const READ_BATCH: usize = 16 * 1024 + 256;

/// Most plaintext queued inside rustls for sending before writers see backpressure.
const TLS_SEND_LIMIT: usize = 64 * 1024;

/// How a leg's peer finished sending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerEnd {
    /// Still open.
    Open,
    /// TLS close_notify received.
    CloseNotify,
    /// TCP EOF (without close_notify, for TLS).
    Eof,
}

/// A stream, plain or under TLS.
pub struct Leg<S> {
    io: S,
    tls: Option<Connection>,
    /// Sessions this leg's TLS connection created or consulted.
    pub notes: SessionNotes,
    socket_eof: bool,
    peer_end: PeerEnd,
    sent_close_notify: bool,
    write_shut: bool,
    /// rustls refused the peer's input; its alert is queued.
    failed: bool,
    /// Some TLS record was written (from then on rustls may be encrypting).
    wrote_tls: bool,
    /// A plaintext fatal alert of our own, and how much of it is written.
    own_alert: Option<([u8; 7], usize)>,
    preamble: Preamble,
}

/// Bytes written before anything else on the stream, and how many went.
#[derive(Default)]
struct Preamble {
    bytes: Vec<u8>,
    sent: usize,
}

impl Preamble {
    fn pending(&self) -> bool {
        self.sent < self.bytes.len()
    }
}

thread_local! {
    /// The preamble and the first bytes after it, gathered for one send.
    static PREAMBLE_GATHER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Write `data` to `io`, behind what is left of `pre` in the same send;
/// returns how much of `data` was taken. With `data` empty, writes the
/// preamble alone.
fn poll_write_after<S: AsyncWrite + Unpin>(
    io: &mut S,
    pre: &mut Preamble,
    cx: &mut Context<'_>,
    data: &[u8],
) -> Poll<io::Result<usize>> {
    while pre.pending() {
        let rest = &pre.bytes[pre.sent..];
        let r = PREAMBLE_GATHER.with(|g| match g.try_borrow_mut() {
            Ok(mut g) if !data.is_empty() => {
                g.clear();
                g.extend_from_slice(rest);
                g.extend_from_slice(&data[..data.len().min(GATHER)]);
                let r = Pin::new(&mut *io).poll_write(cx, &g);
                g.clear();
                g.shrink_to(GATHER);
                r
            }
            _ => Pin::new(&mut *io).poll_write(cx, rest),
        });
        match r {
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) => {
                let of_data = n.saturating_sub(rest.len());
                pre.sent += n - of_data;
                if !pre.pending() {
                    pre.bytes = Vec::new();
                    pre.sent = 0;
                }
                if of_data > 0 || data.is_empty() {
                    return Poll::Ready(Ok(of_data));
                }
            }
            other => return other,
        }
    }
    Pin::new(io).poll_write(cx, data)
}

struct SyncIo<'a, 'b, S> {
    io: &'a mut S,
    cx: &'a mut Context<'b>,
    preamble: &'a mut Preamble,
}

impl<S: AsyncRead + Unpin> Read for SyncIo<'_, '_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match Pin::new(&mut *self.io).poll_read(self.cx, buf) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

/// Largest batch of TLS records gathered into one send.
const GATHER: usize = 32 * 1024;

thread_local! {
    static GATHER_BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(GATHER));
}

impl<S: AsyncWrite + Unpin> Write for SyncIo<'_, '_, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match poll_write_after(self.io, self.preamble, self.cx, buf) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    /// rustls hands over its queued records as separate slices; sending them
    /// in one `send` saves a system call per record (a TLS 1.3 server flight
    /// is several records).
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let non_empty = bufs.iter().filter(|b| !b.is_empty()).count();
        if non_empty <= 1 {
            return match bufs.iter().find(|b| !b.is_empty()) {
                Some(b) => self.write(b),
                None => Ok(0),
            };
        }
        GATHER_BUF.with(|g| {
            let Ok(mut g) = g.try_borrow_mut() else {
                return self.write(bufs.iter().find(|b| !b.is_empty()).expect("non-empty"));
            };
            g.clear();
            for b in bufs {
                if g.len() + b.len() > GATHER && !g.is_empty() {
                    break;
                }
                g.extend_from_slice(b);
            }
            self.write(&g)
        })
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The fatal alert RFC 8446 names for an error rustls raises without one.
fn fitting_alert(e: &rustls::Error) -> rustls::AlertDescription {
    use rustls::{AlertDescription as A, Error as E, PeerMisbehaved as P};
    match e {
        E::InvalidMessage(_) => A::DecodeError,
        E::DecryptError => A::BadRecordMac,
        E::PeerSentOversizedRecord => A::RecordOverflow,
        E::PeerIncompatible(_) => A::HandshakeFailure,
        E::PeerMisbehaved(
            P::MessageInterleavedWithHandshakeMessage
            | P::RejectedEarlyDataInterleavedWithHandshakeMessage
            | P::IllegalMiddleboxChangeCipherSpec
            | P::IllegalTlsInnerPlaintext
            | P::KeyEpochWithPendingFragment
            | P::TooManyEmptyFragments
            | P::TooManyKeyUpdateRequests,
        ) => A::UnexpectedMessage,
        E::InappropriateMessage { .. } | E::InappropriateHandshakeMessage { .. } => A::UnexpectedMessage,
        E::PeerMisbehaved(_) => A::IllegalParameter,
        _ => A::InternalError,
    }
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl<S: AsyncRead + AsyncWrite + Unpin> Leg<S> {
    /// A plain TCP leg.
    pub fn plain(io: S) -> Self {
        Leg {
            io,
            tls: None,
            notes: SessionNotes::default(),
            socket_eof: false,
            peer_end: PeerEnd::Open,
            sent_close_notify: false,
            write_shut: false,
            failed: false,
            wrote_tls: false,
            own_alert: None,
            preamble: Preamble::default(),
        }
    }

    /// Send `bytes` before anything else this leg writes, in the same send
    /// as what follows them. Set before the first write.
    pub fn set_preamble(&mut self, bytes: Vec<u8>) {
        self.preamble = Preamble { bytes, sent: 0 };
    }

    /// The ALPN protocol agreed with the peer.
    pub fn alpn(&self) -> Option<&[u8]> {
        self.tls.as_ref()?.alpn_protocol()
    }

    /// The negotiated version as `TLSv1.2` / `TLSv1.3`, and the suite by
    /// its IANA name, for a PROXY header or a log line.
    pub fn version_and_cipher(&self) -> Option<(&'static str, String)> {
        let (version, name) = self.negotiated_names();
        let (version, name) = (version?, name?);
        // rustls spells the TLS 1.3 suites `TLS13_...`; IANA says `TLS_...`.
        let name = match name.strip_prefix("TLS13_") {
            Some(rest) => format!("TLS_{rest}"),
            None => name.to_string(),
        };
        Some((version, name))
    }

    /// Common name of the peer's certificate, when it sent one that has one.
    pub fn peer_common_name(&self) -> Option<String> {
        let der = self.peer_certificates()?.first()?;
        let (_, x) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
        let cn = x.subject().iter_common_name().next()?.as_str().ok()?.to_string();
        Some(cn)
    }

    /// A server-side TLS leg (client-facing).
    pub fn server(io: S, config: Arc<rustls::ServerConfig>) -> io::Result<Self> {
        let mut conn = ServerConnection::new(config).map_err(tls_error)?;
        conn.set_buffer_limit(Some(TLS_SEND_LIMIT));
        let mut leg = Leg::plain(io);
        leg.tls = Some(Connection::Server(conn));
        Ok(leg)
    }

    /// A client-side TLS leg (server-facing): always a fresh rustls connection,
    /// which may resume a session saved for `name` (R9).
    pub fn client(io: S, config: Arc<rustls::ClientConfig>, name: ServerName<'static>) -> io::Result<Self> {
        let mut conn = ClientConnection::new(config, name).map_err(tls_error)?;
        conn.set_buffer_limit(Some(TLS_SEND_LIMIT));
        let mut leg = Leg::plain(io);
        leg.tls = Some(Connection::Client(conn));
        Ok(leg)
    }

    pub fn io(&self) -> &S {
        &self.io
    }

    /// The stream under this leg; the TLS state goes.
    pub fn into_io(self) -> S {
        self.io
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    pub fn peer_end(&self) -> PeerEnd {
        self.peer_end
    }

    pub fn sent_close_notify(&self) -> bool {
        self.sent_close_notify
    }

    pub fn is_write_shut(&self) -> bool {
        self.write_shut
    }

    /// Whether the handshake resumed a session (`None` for plain legs or
    /// before the handshake completes).
    pub fn resumed(&self) -> Option<bool> {
        let kind = self.tls.as_ref()?.handshake_kind()?;
        Some(kind == HandshakeKind::Resumed)
    }

    /// SNI sent by the client (server legs).
    pub fn server_name(&self) -> Option<&str> {
        match &self.tls {
            Some(Connection::Server(s)) => s.server_name(),
            _ => None,
        }
    }

    /// Negotiated protocol version and suite, for logs and stats.
    pub fn negotiated(&self) -> Option<(rustls::ProtocolVersion, rustls::CipherSuite)> {
        let t = self.tls.as_ref()?;
        Some((t.protocol_version()?, t.negotiated_cipher_suite()?.suite()))
    }

    /// Names of the negotiated protocol version (`TLSv1.3`) and suite
    /// (`TLS13_AES_128_GCM_SHA256`), for logs.
    pub fn negotiated_names(&self) -> (Option<&'static str>, Option<&'static str>) {
        let Some(t) = self.tls.as_ref() else {
            return (None, None);
        };
        let version = t.protocol_version().map(|v| match v {
            rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
            rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
            other => other.as_str().unwrap_or("unknown"),
        });
        let suite = t
            .negotiated_cipher_suite()
            .map(|s| s.suite().as_str().unwrap_or("unknown"));
        (version, suite)
    }

    /// The peer's certificate chain, when it sent one.
    pub fn peer_certificates(&self) -> Option<&[rustls::pki_types::CertificateDer<'static>]> {
        self.tls.as_ref()?.peer_certificates()
    }

    /// Feed bytes already read from the stream (the first flight) to TLS.
    pub fn feed(&mut self, mut data: &[u8]) -> io::Result<()> {
        let Some(tls) = self.tls.as_mut() else {
            return Err(io::Error::other("feed on a plain leg"));
        };
        while !data.is_empty() {
            let n = tls.read_tls(&mut data)?;
            if n == 0 {
                break;
            }
            let r = with_notes(&mut self.notes, || tls.process_new_packets());
            if let Err(e) = r {
                return Err(self.fail(e));
            }
        }
        Ok(())
    }

    /// Read TLS records from the stream into rustls and process them.
    /// Ready(Ok(0)) means the stream reached EOF.
    fn poll_read_tls(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some(tls) = self.tls.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        // rustls takes at most 4 KiB per `read_tls`; take what the socket
        // already holds (up to a full record) before processing it once.
        let mut n = 0;
        loop {
            match tls.read_tls(&mut SyncIo {
                io: &mut self.io,
                cx,
                preamble: &mut self.preamble,
            }) {
                Ok(0) => {
                    if n == 0 {
                        self.socket_eof = true;
                    }
                    break;
                }
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if n == 0 {
                        return Poll::Pending;
                    }
                    break;
                }
                Err(e) if n == 0 => return Poll::Ready(Err(e)),
                // Reported on the next call, after what was read is processed.
                Err(_) => break,
            }
            if n >= READ_BATCH || !tls.wants_read() {
                break;
            }
        }
        let r = with_notes(&mut self.notes, || tls.process_new_packets());
        if let Err(e) = r {
            let e = self.fail(e);
            // Start sending the alert now; callers finish it with
            // `poll_shutdown` (bounded) before the socket closes.
            let _ = self.poll_flush(cx);
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    /// rustls refused the peer's input. rustls queues a fatal alert for
    /// most errors (flushed by the caller, then FIN) but not all: a message
    /// interleaved with a fragmented handshake message, a record with no
    /// content type, a third ChangeCipherSpec, ... Before any record of ours
    /// went out nothing is encrypted, and we send the fitting fatal alert
    /// ourselves. Afterwards the alert would have to go under rustls' keys,
    /// and rustls lets a caller send only close_notify, which would tell the
    /// peer the connection ended in order: RFC 8446 6.2 asks for the fitting
    /// fatal alert or none ("close the connection without sending ...
    /// additional data"), so the connection then ends with a bare FIN.
    ///
    /// A ClientHello refused for its SNI (`-strictSNI`) gets
    /// `unrecognized_name` (RFC 6066 3) instead of the `access_denied`
    /// rustls queues when no certificate is chosen: nothing was encrypted
    /// yet, so that alert is dropped and ours goes out.
    fn fail(&mut self, e: rustls::Error) -> io::Error {
        self.failed = true;
        let Some(tls) = self.tls.as_mut() else {
            return tls_error(e);
        };
        if let Some(sni) = self.notes.sni_refused.take().filter(|_| !self.wrote_tls) {
            while tls.wants_write() && tls.write_tls(&mut io::sink()).is_ok_and(|n| n > 0) {}
            let d = u8::from(rustls::AlertDescription::UnrecognisedName);
            self.own_alert = Some(([21, 3, 3, 0, 2, 2, d], 0));
            let name = if sni.is_empty() {
                "no SNI".to_string()
            } else {
                format!("SNI {sni}")
            };
            return io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{name}: no certificate of this vserver covers it (-strictSNI); unrecognized_name sent"),
            );
        }
        let peer_alert = matches!(e, rustls::Error::AlertReceived(_));
        if !peer_alert && !self.wrote_tls && !tls.wants_write() {
            let d = u8::from(fitting_alert(&e));
            self.own_alert = Some(([21, 3, 3, 0, 2, 2, d], 0));
        }
        tls_error(e)
    }

    /// Drive the TLS handshake to completion.
    pub fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let Some(tls) = self.tls.as_ref() else {
                return Poll::Ready(Ok(()));
            };
            if tls.wants_write() {
                match self.poll_flush(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
            }
            let tls = self.tls.as_ref().expect("checked above");
            if !tls.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            // With nothing left to send, rustls wants to read unless the peer
            // closed: then the handshake cannot finish.
            if !tls.wants_read() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed during the handshake",
                )));
            }
            match self.poll_read_tls(cx) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "peer closed during the handshake",
                    )))
                }
                Poll::Ready(Ok(_)) => continue,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Read plaintext. Ready(Ok(0)) when the peer finished sending
    /// (see [`Leg::peer_end`] for how).
    pub fn poll_read_plain(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        if self.peer_end != PeerEnd::Open {
            return Poll::Ready(Ok(0));
        }
        if self.tls.is_none() {
            let r = Pin::new(&mut self.io).poll_read(cx, buf);
            if let Poll::Ready(Ok(0)) = r {
                self.peer_end = PeerEnd::Eof;
            }
            return r;
        }
        loop {
            let tls = self.tls.as_mut().expect("tls leg");
            match tls.reader().read(buf) {
                Ok(0) => {
                    self.peer_end = PeerEnd::CloseNotify;
                    return Poll::Ready(Ok(0));
                }
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    self.peer_end = PeerEnd::Eof;
                    return Poll::Ready(Ok(0));
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
            if self.socket_eof {
                self.peer_end = PeerEnd::Eof;
                return Poll::Ready(Ok(0));
            }
            match self.poll_read_tls(cx) {
                Poll::Ready(Ok(_)) => continue,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Write plaintext; returns how much was taken.
    pub fn poll_write_plain(&mut self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        if self.tls.is_none() {
            return poll_write_after(&mut self.io, &mut self.preamble, cx, data);
        }
        loop {
            let tls = self.tls.as_mut().expect("tls leg");
            let n = tls.writer().write(data)?;
            if n > 0 {
                // Push records out now; backpressure shows up on the next write.
                if let Poll::Ready(Err(e)) = self.poll_flush(cx) {
                    return Poll::Ready(Err(e));
                }
                return Poll::Ready(Ok(n));
            }
            match self.poll_flush(cx) {
                Poll::Ready(Ok(())) => {
                    if self.tls.as_ref().is_some_and(|t| t.wants_write()) {
                        continue;
                    }
                    // Nothing queued yet the buffer refused: only if data is empty.
                    return Poll::Ready(Ok(0));
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Write every queued TLS record to the stream.
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Queued records carry the preamble in front of them; a preamble
        // with nothing (yet) to follow it goes alone.
        if let Some(tls) = self.tls.as_mut() {
            while tls.wants_write() {
                match tls.write_tls(&mut SyncIo {
                    io: &mut self.io,
                    cx,
                    preamble: &mut self.preamble,
                }) {
                    Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Ok(_) => self.wrote_tls = true,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
        }
        while self.preamble.pending() {
            match poll_write_after(&mut self.io, &mut self.preamble, cx, &[]) {
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        while let Some((alert, done)) = self.own_alert.as_mut() {
            match Pin::new(&mut self.io).poll_write(cx, &alert[*done..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    *done += n;
                    if *done == alert.len() {
                        self.own_alert = None;
                        self.wrote_tls = true;
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Whether TLS records are waiting to be written.
    pub fn wants_flush(&self) -> bool {
        self.preamble.pending() || self.own_alert.is_some() || self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// Finish sending: close_notify (TLS), flush, then shut down the write side.
    pub fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.write_shut {
            return Poll::Ready(Ok(()));
        }
        if let Some(tls) = self.tls.as_mut() {
            // After a refused input the alert is queued already (or the
            // peer's fatal alert ended the connection): nothing more to send.
            if !self.sent_close_notify && !self.failed {
                tls.send_close_notify();
                self.sent_close_notify = true;
            }
        }
        match self.poll_flush(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        match Pin::new(&mut self.io).poll_close(cx) {
            Poll::Ready(r) => {
                self.write_shut = true;
                // A peer that already closed may refuse the shutdown: not our failure.
                match r {
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => Poll::Ready(Ok(())),
                    r => Poll::Ready(r),
                }
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
