//! Copies bytes both ways between a client leg and a back-end leg.
//!
//! One future drives both directions: each poll reads what it can from a
//! side into that direction's buffer (only while the buffer has room, which
//! is the backpressure), writes what it can to the other side, and forwards
//! a finished direction as a half-close (close_notify and FIN). It ends when
//! both directions are finished, a side fails, the idle timeout passes, or
//! the shard fires the connection's [`ConnSignal`].

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::rt::Sleep;
use futures_lite::io::{AsyncRead, AsyncWrite};

use super::signal::ConnSignal;
use crate::core::CloseReason;
use crate::tls::stream::Leg;

/// Most bytes moved per read.
const CHUNK: usize = 16 * 1024;

thread_local! {
    /// Every connection of a shard reads through this one buffer and writes
    /// straight on; only bytes the destination could not take yet are copied
    /// into the connection's own `pending` buffer. An idle or flowing
    /// connection therefore holds no copy buffer at all.
    static SCRATCH: std::cell::RefCell<Box<[u8]>> = std::cell::RefCell::new(vec![0u8; CHUNK].into_boxed_slice());
}

/// How proxying ended.
#[derive(Debug)]
pub enum ProxyEnd {
    /// Both directions finished cleanly.
    Done,
    /// The shard asked the connection to close.
    Killed(CloseReason),
    IdleTimeout,
    ClientError(io::Error),
    BackendError(io::Error),
}

/// One direction of the copy.
struct Direction {
    /// Bytes read but not yet taken by the destination (backpressure: no
    /// reading while this is non-empty). Empty and unallocated most of the time.
    pending: Vec<u8>,
    start: usize,
    eof: bool,
    shut: bool,
    bytes: u64,
}

impl Direction {
    fn new() -> Self {
        Direction {
            pending: Vec::new(),
            start: 0,
            eof: false,
            shut: false,
            bytes: 0,
        }
    }
}

enum Fault {
    Src(io::Error),
    Dst(io::Error),
}

/// Move bytes from `src` to `dst` until neither side can make progress.
fn pump<A, B>(src: &mut Leg<A>, dst: &mut Leg<B>, d: &mut Direction, cx: &mut Context<'_>) -> Result<bool, Fault>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let mut any = false;
    loop {
        let mut progress = false;
        // Bytes left over from an earlier read go first.
        if d.start < d.pending.len() {
            match dst.poll_write_plain(cx, &d.pending[d.start..]) {
                Poll::Ready(Ok(0)) => return Err(Fault::Dst(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    d.start += n;
                    if d.start == d.pending.len() {
                        d.pending = Vec::new();
                        d.start = 0;
                    }
                    progress = true;
                }
                Poll::Ready(Err(e)) => return Err(Fault::Dst(e)),
                Poll::Pending => {}
            }
        }
        if d.pending.is_empty() && !d.eof {
            let step = SCRATCH.with(|scratch| {
                let mut buf = scratch.borrow_mut();
                match src.poll_read_plain(cx, &mut buf[..]) {
                    Poll::Ready(Ok(0)) => {
                        d.eof = true;
                        Ok(true)
                    }
                    Poll::Ready(Ok(n)) => {
                        d.bytes += n as u64;
                        let taken = match dst.poll_write_plain(cx, &buf[..n]) {
                            Poll::Ready(Ok(0)) => return Err(Fault::Dst(io::ErrorKind::WriteZero.into())),
                            Poll::Ready(Ok(w)) => w,
                            Poll::Ready(Err(e)) => return Err(Fault::Dst(e)),
                            Poll::Pending => 0,
                        };
                        if taken < n {
                            d.pending = buf[taken..n].to_vec();
                            d.start = 0;
                        }
                        Ok(true)
                    }
                    Poll::Ready(Err(e)) => Err(Fault::Src(e)),
                    Poll::Pending => Ok(false),
                }
            })?;
            progress |= step;
        }
        if d.pending.is_empty() && d.eof && !d.shut {
            match dst.poll_shutdown(cx) {
                Poll::Ready(Ok(())) => {
                    d.shut = true;
                    progress = true;
                }
                Poll::Ready(Err(e)) => return Err(Fault::Dst(e)),
                Poll::Pending => {}
            }
        }
        // Records rustls queued on its own (tickets, alerts, key updates).
        if src.wants_flush() {
            if let Poll::Ready(Err(e)) = src.poll_flush(cx) {
                return Err(Fault::Src(e));
            }
        }
        if dst.wants_flush() {
            if let Poll::Ready(Err(e)) = dst.poll_flush(cx) {
                return Err(Fault::Dst(e));
            }
        }
        if !progress {
            return Ok(any);
        }
        any = true;
    }
}

/// The bidirectional copy of one proxied connection.
pub struct Proxy<'a, A, B> {
    front: &'a mut Leg<A>,
    back: &'a mut Leg<B>,
    signal: &'a ConnSignal,
    up: Direction,
    down: Direction,
    idle: Duration,
    last_activity: Instant,
    /// Fires at `last_activity + idle` as last registered; moved only when it fires.
    timer: Sleep,
}

impl<'a, A, B> Proxy<'a, A, B> {
    pub fn new(front: &'a mut Leg<A>, back: &'a mut Leg<B>, signal: &'a ConnSignal, idle: Duration) -> Self {
        Proxy {
            front,
            back,
            signal,
            up: Direction::new(),
            down: Direction::new(),
            idle,
            last_activity: Instant::now(),
            timer: Sleep::until(Instant::now() + idle),
        }
    }
}

impl<A, B> Future for Proxy<'_, A, B>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    type Output = (ProxyEnd, u64, u64);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let (up, down) = (this.up.bytes, this.down.bytes);
        if let Poll::Ready(r) = this.signal.poll_fired(cx) {
            return Poll::Ready((ProxyEnd::Killed(r), up, down));
        }
        let moved_up = match pump(this.front, this.back, &mut this.up, cx) {
            Ok(p) => p,
            Err(Fault::Src(e)) => return Poll::Ready((ProxyEnd::ClientError(e), up, down)),
            Err(Fault::Dst(e)) => return Poll::Ready((ProxyEnd::BackendError(e), up, down)),
        };
        let moved_down = match pump(this.back, this.front, &mut this.down, cx) {
            Ok(p) => p,
            Err(Fault::Src(e)) => return Poll::Ready((ProxyEnd::BackendError(e), up, down)),
            Err(Fault::Dst(e)) => return Poll::Ready((ProxyEnd::ClientError(e), up, down)),
        };
        let (up, down) = (this.up.bytes, this.down.bytes);
        if this.up.shut && this.down.shut && !this.front.wants_flush() && !this.back.wants_flush() {
            return Poll::Ready((ProxyEnd::Done, up, down));
        }
        let now = crate::rt::now();
        if moved_up || moved_down {
            this.last_activity = now;
        }
        // Idle timer: re-armed lazily so busy connections do not touch it.
        while Pin::new(&mut this.timer).poll(cx).is_ready() {
            let idle_for = now.saturating_duration_since(this.last_activity);
            if idle_for >= this.idle {
                return Poll::Ready((ProxyEnd::IdleTimeout, up, down));
            }
            this.timer.reset(now + (this.idle - idle_for));
        }
        Poll::Pending
    }
}
