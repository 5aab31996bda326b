//! rustls over a runtime `Stream` (`crate::rt::net`), as plain async methods.
//!
//! Shared by the built-in test server (server side) and the load generator
//! (client side). It is deliberately small: one task owns the stream and calls
//! `read`, `write_all` and `shutdown` in turn; there is no `AsyncRead` /
//! `AsyncWrite` implementation and no concurrent reading and writing from two
//! tasks. Records are handed to the stream as soon as rustls has them (the
//! runtime sends them on its next loop turn), so no data sits in a buffer
//! waiting for a later call.
//!
//! Errors from rustls (bad records, alerts) come back as
//! `io::ErrorKind::InvalidData` with rustls' reason; a peer that closes the TCP
//! connection without `close_notify` is reported as `UnexpectedEof` by `read`.

use std::io::{self, Read, Write};
use std::ops::{Deref, DerefMut};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use rustls::{ConnectionCommon, SideData};

use crate::rt::net::TcpStream;

/// Bytes read from the socket at a time: one maximal TLS record and its header.
// Never more ciphertext than rustls accepts as plaintext in one go (16 KiB),
// so a read can always be fed whole.
const READ_CHUNK: usize = 16 * 1024;

/// A TLS connection (client or server) driven over a runtime TCP stream.
pub struct TlsStream<C> {
    io: TcpStream,
    conn: C,
    /// Ciphertext read buffer, allocated on first read; `release_buffers`
    /// frees it so an idle connection costs only rustls' own state.
    rbuf: Vec<u8>,
    /// Ciphertext write buffer, reused between flushes.
    wbuf: Vec<u8>,
    /// `rbuf[rstart..rend]`: ciphertext read but not yet given to rustls
    /// (held back while rustls has undelivered plaintext).
    rstart: usize,
    rend: usize,
    /// The socket reported end of file.
    eof: bool,
}

fn tls_err(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl<C, D> TlsStream<C>
where
    C: DerefMut<Target = ConnectionCommon<D>> + Deref<Target = ConnectionCommon<D>>,
    D: SideData,
{
    /// Wraps a connected socket and a fresh rustls connection. Nothing is
    /// sent until `handshake` or the first `read`/`write_all`.
    pub fn new(io: TcpStream, conn: C) -> Self {
        Self {
            io,
            conn,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            rstart: 0,
            rend: 0,
            eof: false,
        }
    }

    /// The rustls connection (negotiated version, ALPN, handshake kind...).
    pub fn conn(&self) -> &C {
        &self.conn
    }

    /// The underlying socket.
    pub fn socket(&self) -> &TcpStream {
        &self.io
    }

    /// Frees the read and write buffers (they are allocated again on use).
    pub fn release_buffers(&mut self) {
        if self.rstart < self.rend {
            return; // still holds ciphertext
        }
        self.rbuf = Vec::new();
        self.wbuf = Vec::new();
    }

    /// Sends every TLS record rustls has queued.
    pub async fn flush(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            self.wbuf.clear();
            while self.conn.wants_write() {
                self.conn.write_tls(&mut self.wbuf)?;
            }
            self.io.write_all(&self.wbuf).await?;
        }
        if self.wbuf.capacity() > 256 * 1024 {
            self.wbuf = Vec::new();
        }
        Ok(())
    }

    /// Reads once from the socket and feeds rustls. Returns the number of
    /// ciphertext bytes read; 0 means end of file.
    async fn fill(&mut self) -> io::Result<usize> {
        if self.rstart >= self.rend {
            if self.eof {
                return Ok(0);
            }
            if self.rbuf.len() < READ_CHUNK {
                self.rbuf.resize(READ_CHUNK, 0);
            }
            let n = self.io.read(&mut self.rbuf[..]).await?;
            if n == 0 {
                self.eof = true;
                // Tells rustls the transport is gone, so a missing close_notify
                // surfaces as UnexpectedEof from the reader.
                let _ = self.conn.read_tls(&mut io::empty());
                return Ok(0);
            }
            self.rstart = 0;
            self.rend = n;
        }
        // Feed only while rustls wants more: a read can hold several records,
        // and rustls refuses ciphertext while its plaintext buffer is full.
        let before = self.rend - self.rstart;
        while self.rstart < self.rend && self.conn.wants_read() {
            let mut data = &self.rbuf[self.rstart..self.rend];
            let used = self.conn.read_tls(&mut data)?;
            self.rstart += used;
            if let Err(e) = self.conn.process_new_packets() {
                // Let the peer see the alert, then report the reason.
                let _ = self.flush().await;
                return Err(tls_err(e));
            }
            if used == 0 {
                break;
            }
        }
        Ok((before - (self.rend - self.rstart)).max(1))
    }

    /// Completes the handshake (a no-op when it is already complete).
    pub async fn handshake(&mut self) -> io::Result<()> {
        while self.conn.is_handshaking() {
            self.flush().await?;
            if !self.conn.is_handshaking() {
                break;
            }
            if self.conn.wants_read() && self.fill().await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed the connection during the TLS handshake",
                ));
            }
        }
        self.flush().await
    }

    /// Reads application data. `Ok(0)` means the peer sent close_notify (or,
    /// for a handshake-less error path, closed); a close without close_notify
    /// is `Err(UnexpectedEof)`.
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            // Key updates and tickets may need an answer before more arrives.
            self.flush().await?;
            if self.fill().await? == 0 {
                // Loop once more: the reader now reports close_notify or EOF.
                match self.conn.reader().read(buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(io::ErrorKind::UnexpectedEof.into()),
                    Err(e) => return Err(e),
                }
            }
        }
    }

    /// Encrypts and sends all of `data`.
    pub async fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = self.conn.writer().write(data)?;
            data = &data[n..];
            self.flush().await?;
            if n == 0 && self.conn.is_handshaking() {
                self.handshake().await?;
            }
        }
        self.flush().await
    }

    /// Sends close_notify and shuts the write side of the socket.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.conn.send_close_notify();
        self.flush().await?;
        // Waits until the kernel took every record, then shuts the write side.
        self.io.close().await
    }

    /// Sends close_notify, shuts the write side, then reads (and discards)
    /// until the peer closes too, so both ends have finished their work.
    pub async fn close_gracefully(&mut self) -> io::Result<()> {
        self.shutdown().await?;
        let mut scratch = [0u8; 1024];
        loop {
            match self.read(&mut scratch).await {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }
}
