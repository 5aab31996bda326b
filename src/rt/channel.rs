//! Channels.
//!
//! [`shared_channel`] carries messages between runtime threads without a
//! lock: a crossbeam queue, and a write to the receiving thread's eventfd,
//! whose read is always posted on that thread's ring, to wake it. The
//! receiver binds to the thread it first receives on. Until it has, a
//! sender has no thread to wake: the receiver looks at the queue and at the
//! sender's end again after it published its thread (a full fence on both
//! sides orders the two), so neither a message nor the sender's drop in
//! between is missed.
//!
//! [`local_channel`] is a bounded queue between tasks of one thread.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Poll, Waker};

use crossbeam::queue::SegQueue;

use super::executor::with_current;
use super::ring::Notifier;

#[cfg(test)]
thread_local! {
    /// Runs once in the next `recv` that is about to bind to its thread,
    /// in tests (to land a sender's drop there).
    pub(crate) static BEFORE_BIND: std::cell::Cell<Option<Box<dyn FnOnce()>>> = const { std::cell::Cell::new(None) };
}

struct Shared<T> {
    queue: SegQueue<T>,
    /// The receiving thread's notifier, once it received for the first time.
    wake: OnceLock<Arc<Notifier>>,
    senders_gone: AtomicBool,
    receiver_gone: AtomicBool,
}

/// Sends to a [`Receiver`] on another (or the same) runtime thread.
pub struct Sender<T> {
    shared: Arc<Shared<T>>,
}

/// Receives on the runtime thread that first calls [`Receiver::recv`].
pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

/// A channel between threads: one sender, one receiver.
pub fn shared_channel<T: Send>() -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        queue: SegQueue::new(),
        wake: OnceLock::new(),
        senders_gone: AtomicBool::new(false),
        receiver_gone: AtomicBool::new(false),
    });
    (Sender { shared: shared.clone() }, Receiver { shared })
}

impl<T: Send> Sender<T> {
    /// Queue `v`; fails (handing it back) when the receiver is gone.
    pub fn send(&self, v: T) -> Result<(), T> {
        if self.shared.receiver_gone.load(Ordering::Acquire) {
            return Err(v);
        }
        self.shared.queue.push(v);
        fence(Ordering::SeqCst);
        if let Some(n) = self.shared.wake.get() {
            n.notify();
        }
        Ok(())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.shared.senders_gone.store(true, Ordering::Release);
        fence(Ordering::SeqCst);
        if let Some(n) = self.shared.wake.get() {
            n.notify();
        }
    }
}

impl<T: Send> Receiver<T> {
    /// The next message; `None` once the sender is gone and the queue empty.
    pub async fn recv(&self) -> Option<T> {
        std::future::poll_fn(|cx| {
            if let Some(v) = self.shared.queue.pop() {
                return Poll::Ready(Some(v));
            }
            if self.shared.senders_gone.load(Ordering::Acquire) {
                return Poll::Ready(self.shared.queue.pop());
            }
            #[cfg(test)]
            BEFORE_BIND.with(|f| f.take().map(|f| f()));
            with_current(|rt| {
                let _ = self.shared.wake.set(rt.driver.eventfd.clone());
                rt.driver.on_eventfd(cx.waker());
            });
            // A message sent, or the sender dropped, before the eventfd was
            // known woke nobody.
            fence(Ordering::SeqCst);
            if let Some(v) = self.shared.queue.pop() {
                return Poll::Ready(Some(v));
            }
            if self.shared.senders_gone.load(Ordering::Acquire) {
                return Poll::Ready(self.shared.queue.pop());
            }
            Poll::Pending
        })
        .await
    }

    /// A message if one is queued.
    pub fn try_recv(&self) -> Option<T> {
        self.shared.queue.pop()
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.shared.receiver_gone.store(true, Ordering::Release);
    }
}

struct Local<T> {
    queue: VecDeque<T>,
    cap: usize,
    receiver: Option<Waker>,
    senders: Vec<Waker>,
    senders_alive: usize,
    receiver_alive: bool,
}

/// Sends to a [`LocalReceiver`] of the same thread.
pub struct LocalSender<T> {
    inner: Rc<RefCell<Local<T>>>,
}

pub struct LocalReceiver<T> {
    inner: Rc<RefCell<Local<T>>>,
}

/// A bounded channel between tasks of one thread.
pub fn local_channel<T>(cap: usize) -> (LocalSender<T>, LocalReceiver<T>) {
    let inner = Rc::new(RefCell::new(Local {
        queue: VecDeque::new(),
        cap: cap.max(1),
        receiver: None,
        senders: Vec::new(),
        senders_alive: 1,
        receiver_alive: true,
    }));
    (LocalSender { inner: inner.clone() }, LocalReceiver { inner })
}

impl<T> LocalSender<T> {
    /// Queue `v` if there is room; hands it back when full or closed.
    pub fn try_send(&self, v: T) -> Result<(), T> {
        let mut l = self.inner.borrow_mut();
        if !l.receiver_alive || l.queue.len() >= l.cap {
            return Err(v);
        }
        l.queue.push_back(v);
        if let Some(w) = l.receiver.take() {
            w.wake();
        }
        Ok(())
    }

    /// Queue `v`, waiting for room; hands it back when the receiver is gone.
    pub async fn send(&self, v: T) -> Result<(), T> {
        let mut v = Some(v);
        std::future::poll_fn(|cx| {
            let mut l = self.inner.borrow_mut();
            if !l.receiver_alive {
                return Poll::Ready(Err(v.take().expect("polled after completion")));
            }
            if l.queue.len() < l.cap {
                l.queue.push_back(v.take().expect("polled after completion"));
                if let Some(w) = l.receiver.take() {
                    w.wake();
                }
                return Poll::Ready(Ok(()));
            }
            l.senders.push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

impl<T> Clone for LocalSender<T> {
    fn clone(&self) -> Self {
        self.inner.borrow_mut().senders_alive += 1;
        LocalSender {
            inner: self.inner.clone(),
        }
    }
}

impl<T> Drop for LocalSender<T> {
    fn drop(&mut self) {
        let mut l = self.inner.borrow_mut();
        l.senders_alive -= 1;
        if l.senders_alive == 0 {
            if let Some(w) = l.receiver.take() {
                w.wake();
            }
        }
    }
}

impl<T> LocalReceiver<T> {
    /// The next message; `None` once every sender is gone and the queue empty.
    pub async fn recv(&self) -> Option<T> {
        std::future::poll_fn(|cx| {
            let mut l = self.inner.borrow_mut();
            if let Some(v) = l.queue.pop_front() {
                for w in l.senders.drain(..) {
                    w.wake();
                }
                return Poll::Ready(Some(v));
            }
            if l.senders_alive == 0 {
                return Poll::Ready(None);
            }
            l.receiver = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

impl<T> Drop for LocalReceiver<T> {
    fn drop(&mut self) {
        let mut l = self.inner.borrow_mut();
        l.receiver_alive = false;
        for w in l.senders.drain(..) {
            w.wake();
        }
    }
}
