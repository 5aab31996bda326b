//! Rate limits for log lines a peer can cause (a failed handshake, a reset
//! connection, an unreachable back end, an idle timeout, a refused PROXY
//! header).
//!
//! Each shard lets through at most [`LINES_PER_SECOND`] lines per cause per
//! second and counts the rest; once a second (from the shard's ticker) it
//! writes one summary line per cause that had lines held back. A flood of
//! garbage connections therefore costs a bounded number of log writes, and
//! the writer itself never blocks a shard (`main` installs a non-blocking
//! one). State is per thread: no lock, no sharing between shards.
//!
//! It does not decide what is logged or at which level; call sites do.

use std::cell::RefCell;
use std::time::{Duration, Instant};

/// Lines per cause per second a shard writes before it summarises.
pub(crate) const LINES_PER_SECOND: u32 = 50;

/// What a peer-caused line is about.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Cause {
    HandshakeFailed,
    ClientFailed,
    NoBackend,
    BackendFailed,
    IdleTimeout,
    ProxyHeaderRefused,
}

const CAUSES: usize = 6;

impl Cause {
    fn index(self) -> usize {
        self as usize
    }

    fn name(i: usize) -> &'static str {
        [
            "handshake failed",
            "client connection failed",
            "no back end",
            "back-end connection failed",
            "idle timeout",
            "PROXY header refused",
        ][i]
    }
}

#[derive(Clone, Copy)]
struct Window {
    start: Option<Instant>,
    written: u32,
    held_back: u64,
}

thread_local! {
    static WINDOWS: RefCell<[Window; CAUSES]> = const {
        RefCell::new([Window { start: None, written: 0, held_back: 0 }; CAUSES])
    };
}

/// Whether a line for `cause` may be written now (counted if not).
pub(crate) fn allow(cause: Cause, now: Instant) -> bool {
    WINDOWS.with(|w| {
        let mut w = w.borrow_mut();
        let win = &mut w[cause.index()];
        if win
            .start
            .is_none_or(|s| now.duration_since(s) >= Duration::from_secs(1))
        {
            if win.held_back == 0 {
                *win = Window {
                    start: Some(now),
                    written: 0,
                    held_back: 0,
                };
            } else {
                // The summary goes first (from `flush`); keep counting.
                win.held_back += 1;
                return false;
            }
        }
        if win.written < LINES_PER_SECOND {
            win.written += 1;
            true
        } else {
            win.held_back += 1;
            false
        }
    })
}

/// Write one summary line per cause whose second is over and that held
/// lines back. Called from the shard's ticker.
pub(crate) fn flush(shard: usize, now: Instant) {
    WINDOWS.with(|w| {
        let mut w = w.borrow_mut();
        for (i, win) in w.iter_mut().enumerate() {
            let over = win
                .start
                .is_some_and(|s| now.duration_since(s) >= Duration::from_secs(1));
            if over && win.held_back > 0 {
                tracing::info!(
                    shard,
                    "{} more \"{}\" lines held back in the last second (at most {LINES_PER_SECOND} a second per cause)",
                    win.held_back,
                    Cause::name(i)
                );
                *win = Window {
                    start: Some(now),
                    written: 0,
                    held_back: 0,
                };
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_cut_to_the_limit_and_counted() {
        let t0 = Instant::now();
        let allowed = (0..10_000).filter(|_| allow(Cause::HandshakeFailed, t0)).count();
        assert_eq!(allowed, LINES_PER_SECOND as usize);
        // Another cause has its own budget.
        assert!(allow(Cause::NoBackend, t0));
        // Next second: held back until the summary is written, then open again.
        let t1 = t0 + Duration::from_millis(1001);
        assert!(!allow(Cause::HandshakeFailed, t1));
        flush(0, t1);
        assert!(allow(Cause::HandshakeFailed, t1));
    }
}
