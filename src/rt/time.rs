//! Timers: an ordered map of deadlines checked once per loop turn against
//! one clock read, and the ring's wait bounded by the earliest deadline.
//! A [`Sleep`] registers once and moves its entry only when its deadline
//! changes, so a busy connection's idle timer costs nothing per wake-up.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::executor::{try_with_current, with_current};

#[derive(Default)]
pub(crate) struct Timers {
    map: RefCell<BTreeMap<(Instant, u64), Waker>>,
    seq: Cell<u64>,
}

impl Timers {
    fn insert(&self, deadline: Instant, waker: Waker) -> (Instant, u64) {
        let seq = self.seq.get() + 1;
        self.seq.set(seq);
        self.map.borrow_mut().insert((deadline, seq), waker);
        (deadline, seq)
    }

    fn remove(&self, key: (Instant, u64)) {
        self.map.borrow_mut().remove(&key);
    }

    fn update_waker(&self, key: (Instant, u64), waker: &Waker) {
        if let Some(w) = self.map.borrow_mut().get_mut(&key) {
            if !w.will_wake(waker) {
                *w = waker.clone();
            }
        }
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.map.borrow().keys().next().map(|(d, _)| *d)
    }

    /// Wake every timer due at `now`.
    pub(crate) fn fire(&self, now: Instant) {
        loop {
            let due = {
                let mut map = self.map.borrow_mut();
                match map.first_key_value() {
                    Some(((d, _), _)) if *d <= now => map.pop_first().map(|(_, w)| w),
                    _ => None,
                }
            };
            match due {
                Some(w) => w.wake(),
                None => break,
            }
        }
    }
}

/// The clock as read at the start of this loop turn (falls back to the
/// real clock outside a runtime).
pub fn now() -> Instant {
    try_with_current(|rt| rt.now.get()).unwrap_or_else(Instant::now)
}

/// A future that completes at a deadline.
pub struct Sleep {
    deadline: Instant,
    key: Option<(Instant, u64)>,
    /// The waker registered with `key` (to skip the map when it is unchanged).
    waker: Option<Waker>,
}

impl Sleep {
    pub fn until(deadline: Instant) -> Self {
        Sleep {
            deadline,
            key: None,
            waker: None,
        }
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Move the deadline; the timer entry moves on the next poll.
    pub fn reset(&mut self, deadline: Instant) {
        self.deadline = deadline;
    }

    fn unregister(&mut self) {
        if let Some(k) = self.key.take() {
            try_with_current(|rt| rt.timers.remove(k));
        }
    }
}

impl Future for Sleep {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        with_current(|rt| {
            if this.deadline <= rt.now.get() {
                if let Some(k) = this.key.take() {
                    rt.timers.remove(k);
                }
                return Poll::Ready(());
            }
            match this.key {
                // Registered at this deadline and not yet due, so still in
                // the map (firing removes only entries due at the turn clock).
                Some(k) if k.0 == this.deadline => {
                    if !this.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        rt.timers.update_waker(k, cx.waker());
                        this.waker = Some(cx.waker().clone());
                    }
                }
                old => {
                    if let Some(k) = old {
                        rt.timers.remove(k);
                    }
                    this.key = Some(rt.timers.insert(this.deadline, cx.waker().clone()));
                    this.waker = Some(cx.waker().clone());
                }
            }
            Poll::Pending
        })
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.unregister();
    }
}

/// Sleep for `d`.
pub fn sleep(d: Duration) -> Sleep {
    Sleep::until(Instant::now() + d)
}

/// The deadline passed before the future completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

impl std::fmt::Display for Elapsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("timed out")
    }
}

impl std::error::Error for Elapsed {}

/// Run `fut` for at most `d`.
pub async fn timeout<T>(d: Duration, fut: impl Future<Output = T>) -> Result<T, Elapsed> {
    let mut fut = std::pin::pin!(fut);
    let mut timer = sleep(d);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Ok(v));
        }
        match Pin::new(&mut timer).poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}
