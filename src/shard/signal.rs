//! A shard-local one-shot signal that tells a connection to close.

use std::cell::{Cell, RefCell};
use std::task::{Context, Poll, Waker};

use crate::core::CloseReason;

/// Set once by the shard (epoch change, drain timeout, disable, timeouts),
/// observed by the connection's future.
#[derive(Default)]
pub struct ConnSignal {
    reason: Cell<Option<CloseReason>>,
    waker: RefCell<Option<Waker>>,
}

impl ConnSignal {
    pub fn fire(&self, reason: CloseReason) {
        if self.reason.get().is_none() {
            self.reason.set(Some(reason));
            if let Some(w) = self.waker.borrow_mut().take() {
                w.wake();
            }
        }
    }

    pub fn fired(&self) -> Option<CloseReason> {
        self.reason.get()
    }

    pub fn poll_fired(&self, cx: &mut Context<'_>) -> Poll<CloseReason> {
        match self.reason.get() {
            Some(r) => Poll::Ready(r),
            None => {
                let mut w = self.waker.borrow_mut();
                match w.as_ref() {
                    Some(old) if old.will_wake(cx.waker()) => {}
                    _ => *w = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }

    pub async fn wait(&self) -> CloseReason {
        std::future::poll_fn(|cx| self.poll_fired(cx)).await
    }
}
