//! Sockets on the ring: [`Stream`] (TCP or Unix) and [`Listener`].
//!
//! Reading never makes a system call: a receive is posted on the ring and
//! the kernel fills a buffer of the shared provided-buffer ring when data
//! arrives; `poll_read` copies out of it and gives the buffer back as soon
//! as it is read. A socket reads ahead while it holds less than
//! `RECV_QUEUE_LIMIT` bytes and the pool is not low; past that it receives
//! only when read (backpressure). A socket waiting for data holds no buffer.
//!
//! Writing never makes a system call either: `poll_write` appends to the
//! socket's send buffer and the loop submits one `SEND` per socket per turn,
//! with the wait. Backpressure starts at [`ring::SEND_LIMIT`] buffered bytes.
//! `poll_flush` waits until the kernel took everything; `poll_close` flushes,
//! then shuts the write side down. A dropped stream finishes sending what it
//! was given, then closes; within its linger deadline ([`Stream::set_linger`],
//! else `ring::DEFAULT_LINGER`), past which the send is cancelled and the
//! socket reset, so a peer that never reads cannot hold a descriptor.
//! [`Stream::release`] drops a stream and tells how that close went.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::io::{AsyncRead, AsyncWrite};
use io_uring::{opcode, types};

use super::executor::with_current;
use super::ring::{Listen, ListenState, OneShot, Sock, SockState, SEND_LIMIT};

pub use super::ring::Released;

/// A connected stream socket driven by the ring.
pub struct Stream {
    sock: Rc<Sock>,
}

pub type TcpStream = Stream;
pub type UnixStream = Stream;

impl Stream {
    /// A stream over `fd`, which the current runtime (if any) now owns.
    fn adopt(fd: RawFd) -> Self {
        super::executor::try_with_current(|rt| rt.driver.fd_opened());
        Stream::new(fd)
    }

    /// A stream over `fd`, already counted as the runtime's (accepted).
    fn new(fd: RawFd) -> Self {
        Stream {
            sock: Rc::new(Sock {
                fd,
                st: std::cell::RefCell::new(SockState::default()),
            }),
        }
    }

    /// Connect to `addr`, giving up after `limit`.
    pub async fn connect_timeout(addr: SocketAddr, limit: Duration) -> io::Result<Stream> {
        match super::timeout(limit, Self::connect(addr)).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
        }
    }

    /// Connect to `addr` (an IORING_OP_CONNECT).
    pub async fn connect(addr: SocketAddr) -> io::Result<Stream> {
        use socket2::{Domain, Protocol, SockAddr, Socket, Type};
        let sock = Socket::new(
            Domain::for_address(addr),
            Type::STREAM.nonblocking().cloexec(),
            Some(Protocol::TCP),
        )?;
        let stream = Stream::adopt(sock.into_raw_fd());
        let target = Box::new(SockAddr::from(addr));
        let sqe = opcode::Connect::new(types::Fd(stream.sock.fd), target.as_ptr(), target.len()).build();
        let res = Completion::submit(sqe, Some(target)).await;
        if res < 0 {
            return Err(io::Error::from_raw_os_error(-res));
        }
        Ok(stream)
    }

    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        let v: libc::c_int = on as libc::c_int;
        // SAFETY: a valid option value and its length for our own socket.
        let rc = unsafe {
            libc::setsockopt(
                self.sock.fd,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                &v as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        // SAFETY: borrowed for the call only; ManuallyDrop keeps the fd open.
        let s = std::mem::ManuallyDrop::new(unsafe { socket2::Socket::from_raw_fd(self.sock.fd) });
        s.peer_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("not an IP socket"))
    }

    /// Bytes received and not read yet.
    pub fn buffered_read(&self) -> usize {
        self.sock.st.borrow().rx_bytes
    }

    /// How long this stream, once dropped, may take to send what was
    /// written to it before it is reset (at least 1 ms, at most 49 days).
    pub fn set_linger(&self, limit: Duration) {
        let ms = u32::try_from(limit.as_millis()).unwrap_or(u32::MAX).max(1);
        self.sock.st.borrow_mut().linger_ms = ms;
    }

    /// Drop the stream and wait until its descriptor is closed: what was
    /// written is still sent, within the linger deadline. Inside a runtime
    /// only (without one, dropping closes at once and this never completes).
    pub fn release(self) -> impl std::future::Future<Output = Released> {
        let sock = self.sock.clone();
        drop(self);
        std::future::poll_fn(move |cx| {
            let mut st = sock.st.borrow_mut();
            if st.closed {
                return Poll::Ready(if st.reset { Released::Reset } else { Released::Flushed });
            }
            st.writer = Some(cx.waker().clone());
            Poll::Pending
        })
    }

    #[cfg(test)]
    pub(super) fn sock(&self) -> &Rc<Sock> {
        &self.sock
    }
}

impl FromRawFd for Stream {
    /// Takes ownership of a connected stream socket.
    unsafe fn from_raw_fd(fd: RawFd) -> Self {
        Stream::adopt(fd)
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.fd
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let sock = self.sock.clone();
        if super::executor::try_with_current(|rt| rt.driver.release(&sock)).is_none() {
            // SAFETY: no runtime, so nothing in flight: close our descriptor.
            unsafe { libc::close(self.sock.fd) };
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let sock = &self.sock;
        let mut st = sock.st.borrow_mut();
        if !st.rx.is_empty() {
            let n = with_current(|rt| {
                let mut n = 0;
                while n < buf.len() {
                    let Some(c) = st.rx.front_mut() else { break };
                    let bytes = rt.driver.rx_bytes(c);
                    let k = bytes.len().min(buf.len() - n);
                    buf[n..n + k].copy_from_slice(&bytes[..k]);
                    n += k;
                    c.off += k as u32;
                    if c.off == c.len {
                        if let Some(c) = st.rx.pop_front() {
                            rt.driver.recycle(c);
                        }
                    }
                }
                n
            });
            st.rx_bytes -= n;
            return Poll::Ready(Ok(n));
        }
        if let Some(e) = st.rx_err {
            return Poll::Ready(Err(io::Error::from_raw_os_error(e)));
        }
        if st.rx_eof || buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        match &st.reader {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => st.reader = Some(cx.waker().clone()),
        }
        let arm = st.recv_op.is_none();
        drop(st);
        if arm {
            with_current(|rt| rt.driver.arm_recv(sock));
        }
        Poll::Pending
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let sock = &self.sock;
        let mut st = sock.st.borrow_mut();
        if let Some(e) = st.tx_err {
            return Poll::Ready(Err(io::Error::from_raw_os_error(e)));
        }
        if st.shut_wr {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let buffered = st.tx_buffered();
        if buffered >= SEND_LIMIT {
            st.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = data.len().min(SEND_LIMIT - buffered);
        with_current(|rt| {
            if st.tx_next.capacity() == 0 {
                st.tx_next = rt.driver.send_buffer();
            }
            st.tx_next.extend_from_slice(&data[..n]);
            drop(st);
            rt.driver.mark_dirty(sock);
        });
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut st = self.sock.st.borrow_mut();
        if let Some(e) = st.tx_err {
            return Poll::Ready(Err(io::Error::from_raw_os_error(e)));
        }
        if st.tx_buffered() == 0 {
            return Poll::Ready(Ok(()));
        }
        st.writer = Some(cx.waker().clone());
        Poll::Pending
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.sock.st.borrow().shut_wr {
            return Poll::Ready(Ok(()));
        }
        match self.as_mut().poll_flush(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        self.sock.st.borrow_mut().shut_wr = true;
        // SAFETY: shutdown on our own socket.
        if unsafe { libc::shutdown(self.sock.fd, libc::SHUT_WR) } != 0 {
            return Poll::Ready(Err(io::Error::last_os_error()));
        }
        Poll::Ready(Ok(()))
    }
}

/// A single-shot operation awaited by one task; cancelled if dropped early.
struct Completion {
    key: u64,
    os: Rc<OneShot>,
    done: bool,
}

impl Completion {
    fn submit(sqe: io_uring::squeue::Entry, payload: Option<Box<dyn std::any::Any>>) -> Self {
        let (key, os) = with_current(|rt| rt.driver.submit_oneshot(sqe, payload));
        Completion { key, os, done: false }
    }
}

impl std::future::Future for Completion {
    type Output = i32;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<i32> {
        match self.os.result.get() {
            Some(r) => {
                self.done = true;
                Poll::Ready(r)
            }
            None => {
                *self.os.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if !self.done && self.os.result.get().is_none() {
            let key = self.key;
            super::executor::try_with_current(|rt| rt.driver.abandon(key));
        }
    }
}

/// A listening socket with a multishot accept.
pub struct Listener {
    l: Rc<Listen>,
}

pub type TcpListener = Listener;

impl FromRawFd for Listener {
    /// Takes ownership of a bound, listening socket.
    unsafe fn from_raw_fd(fd: RawFd) -> Self {
        super::executor::try_with_current(|rt| rt.driver.fd_opened());
        Listener {
            l: Rc::new(Listen {
                fd,
                st: std::cell::RefCell::new(ListenState::default()),
            }),
        }
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        self.l.fd
    }
}

impl Listener {
    /// A Unix-socket listener at `path`.
    pub fn bind_unix(path: &std::path::Path) -> io::Result<Listener> {
        let l = std::os::unix::net::UnixListener::bind(path)?;
        l.set_nonblocking(true)?;
        // SAFETY: a bound, listening socket whose ownership moves here.
        Ok(unsafe { Listener::from_raw_fd(l.into_raw_fd()) })
    }

    /// The next accepted connection.
    pub async fn accept(&self) -> io::Result<Stream> {
        std::future::poll_fn(|cx| self.poll_accept(cx)).await
    }

    pub fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<Stream>> {
        let mut st = self.l.st.borrow_mut();
        if let Some(r) = st.queue.pop_front() {
            return Poll::Ready(match r {
                Ok(fd) => Ok(Stream::new(fd)),
                Err(e) => Err(io::Error::from_raw_os_error(e)),
            });
        }
        st.waiter = Some(cx.waker().clone());
        let arm = st.op.is_none();
        drop(st);
        if arm {
            with_current(|rt| rt.driver.arm_accept(&self.l));
        }
        Poll::Pending
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let l = self.l.clone();
        let done = super::executor::try_with_current(|rt| rt.driver.release_listener(&l));
        if done.is_none() {
            // SAFETY: no runtime: nothing in flight; close our descriptor.
            unsafe { libc::close(self.l.fd) };
        }
    }
}
