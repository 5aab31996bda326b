//! Tasks, wakers and the loop turn.
//!
//! A task is a boxed `!Send` future in a slab slot; its waker is the slot's
//! key, its generation and the runtime's id packed into the waker's data
//! word, so waking is a thread-local queue push with no reference count and
//! no allocation. A stale waker (its task finished, the slot reused) finds
//! another generation and does nothing (or, once the 24-bit generation
//! wrapped onto the same slot, polls a task once more than needed).
//!
//! A waker used on another thread (another runtime's included) does not
//! touch that thread's runtime: it queues the wake for the runtime its id
//! names and writes that runtime's eventfd, and the owner schedules the task
//! on its next loop turn.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};
use std::time::Instant;

use std::sync::{Arc, Mutex};

use crossbeam::queue::SegQueue;
use slab::Slab;

use super::ring::{Driver, Notifier};
use super::time::Timers;
use super::LoopStats;

type BoxedTask = Pin<Box<dyn Future<Output = ()>>>;

struct TaskSlot {
    generation: u32,
    /// `None` while the task is being polled.
    future: Option<BoxedTask>,
    queued: bool,
    /// Cancelled while being polled: drop it instead of putting it back.
    cancelled: bool,
}

/// Most task polls per loop turn before IO gets its turn again.
const POLLS_PER_TURN: usize = 4096;

/// Task generations and keys are 24 bits in a waker (the runtime id takes 16).
const GENERATION_MASK: u32 = (1 << 24) - 1;
const MAX_TASKS: usize = 1 << 24;

/// Wakes for one runtime's tasks that came from other threads.
struct Remote {
    wakes: SegQueue<(u32, u32)>,
    notifier: Arc<Notifier>,
}

/// The runtimes of this process by id (index + 1; a waker's id 0 names none).
static REMOTES: Mutex<Vec<Option<Arc<Remote>>>> = Mutex::new(Vec::new());

fn remotes() -> std::sync::MutexGuard<'static, Vec<Option<Arc<Remote>>>> {
    REMOTES.lock().unwrap_or_else(|e| e.into_inner())
}

fn register(remote: Arc<Remote>) -> io::Result<u16> {
    let mut all = remotes();
    let i = match all.iter().position(Option::is_none) {
        Some(i) => i,
        None if all.len() < u16::MAX as usize => {
            all.push(None);
            all.len() - 1
        }
        None => return Err(io::Error::other("too many runtimes in one process")),
    };
    all[i] = Some(remote);
    Ok(i as u16 + 1)
}

pub(crate) struct Inner {
    /// This runtime's id in [`REMOTES`] and in its wakers.
    id: u16,
    remote: Arc<Remote>,
    tasks: RefCell<Slab<TaskSlot>>,
    ready: RefCell<VecDeque<(u32, u32)>>,
    next_generation: Cell<u32>,
    pub(crate) timers: Timers,
    pub(crate) driver: Driver,
    /// The clock as read once per loop turn.
    pub(crate) now: Cell<Instant>,
    stats: Cell<LoopStats>,
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<Inner>>> = const { RefCell::new(None) };
    /// Set while waking tasks that go to the front of the queue.
    static URGENT: Cell<bool> = const { Cell::new(false) };
}

/// Run `f`; the tasks it wakes run before every task already queued.
pub(crate) fn urgently(f: impl FnOnce()) {
    URGENT.with(|u| u.set(true));
    f();
    URGENT.with(|u| u.set(false));
}

/// Run `f` with the current thread's runtime; panics outside one.
pub(crate) fn with_current<R>(f: impl FnOnce(&Rc<Inner>) -> R) -> R {
    CURRENT.with(|c| {
        let c = c.borrow();
        let rt = c.as_ref().expect("not inside a shardtls runtime thread");
        f(rt)
    })
}

/// Run `f` with the current thread's runtime, if there is one. `None` also
/// while the thread's locals are being destroyed, so a drop that runs then
/// (a task or socket kept in another thread-local) never panics.
pub(crate) fn try_with_current<R>(f: impl FnOnce(&Rc<Inner>) -> R) -> Option<R> {
    CURRENT
        .try_with(|c| c.try_borrow().ok()?.as_ref().map(f))
        .ok()
        .flatten()
}

impl Inner {
    pub(crate) fn new(entries: u32, best: super::RingMode) -> io::Result<Self> {
        let driver = Driver::with_mode(entries, best)?;
        let remote = Arc::new(Remote {
            wakes: SegQueue::new(),
            notifier: driver.eventfd.clone(),
        });
        let id = register(remote.clone())?;
        Ok(Inner {
            id,
            remote,
            tasks: RefCell::new(Slab::with_capacity(1024)),
            ready: RefCell::new(VecDeque::with_capacity(1024)),
            next_generation: Cell::new(1),
            timers: Timers::default(),
            driver,
            now: Cell::new(Instant::now()),
            stats: Cell::new(LoopStats::default()),
        })
    }

    pub(crate) fn stats(&self) -> LoopStats {
        let mut s = self.stats.get();
        self.driver.fill_stats(&mut s);
        s
    }

    fn spawn(&self, future: BoxedTask) -> (u32, u32) {
        let generation = self.next_generation.get();
        self.next_generation.set(((generation + 1) & GENERATION_MASK).max(1));
        let key = self.tasks.borrow_mut().insert(TaskSlot {
            generation,
            future: Some(future),
            queued: true,
            cancelled: false,
        });
        assert!(key < MAX_TASKS, "more than 2^24 tasks on one thread");
        let key = key as u32;
        self.ready.borrow_mut().push_back((key, generation));
        (key, generation)
    }

    fn schedule(&self, key: u32, generation: u32) {
        let Ok(mut tasks) = self.tasks.try_borrow_mut() else {
            // Only while a slot is being changed; the queue tolerates a stale entry.
            self.ready.borrow_mut().push_back((key, generation));
            return;
        };
        if let Some(slot) = tasks.get_mut(key as usize) {
            if slot.generation == generation && !slot.queued {
                slot.queued = true;
                if URGENT.with(|u| u.get()) {
                    self.ready.borrow_mut().push_front((key, generation));
                } else {
                    self.ready.borrow_mut().push_back((key, generation));
                }
            }
        }
    }

    /// Schedule the tasks other threads woke.
    fn take_remote_wakes(&self) {
        while let Some((key, generation)) = self.remote.wakes.pop() {
            self.schedule(key, generation);
        }
    }

    /// Drop a task's future (its `Task` handle was dropped or cancelled).
    fn cancel(&self, key: u32, generation: u32) {
        let future = {
            let mut tasks = self.tasks.borrow_mut();
            match tasks.get_mut(key as usize) {
                Some(slot) if slot.generation == generation => match slot.future.take() {
                    Some(f) => {
                        tasks.remove(key as usize);
                        Some(f)
                    }
                    None => {
                        slot.cancelled = true;
                        None
                    }
                },
                _ => None,
            }
        };
        // Dropped outside the borrow: its drop may spawn, wake or cancel.
        drop(future);
    }

    /// Poll one woken task. Returns false when the queue is empty.
    fn run_one(&self) -> bool {
        let Some((key, generation)) = self.ready.borrow_mut().pop_front() else {
            return false;
        };
        let future = {
            let mut tasks = self.tasks.borrow_mut();
            match tasks.get_mut(key as usize) {
                Some(slot) if slot.generation == generation && slot.queued => {
                    slot.queued = false;
                    slot.future.take()
                }
                _ => None,
            }
        };
        let Some(mut future) = future else { return true };
        let waker = task_waker(key, generation, self.id);
        let mut cx = Context::from_waker(&waker);
        let done = future.as_mut().poll(&mut cx).is_ready();
        let finished = {
            let mut tasks = self.tasks.borrow_mut();
            let slot = tasks.get_mut(key as usize).expect("a polled task keeps its slot");
            if done || slot.cancelled {
                tasks.remove(key as usize);
                Some(future)
            } else {
                slot.future = Some(future);
                None
            }
        };
        drop(finished);
        true
    }

    /// One loop turn. `main_done` stops the loop before it waits.
    fn turn(&self, main_done: &dyn Fn() -> bool) {
        let mut stats = self.stats.get();
        stats.turns += 1;
        let mut polls = 0;
        while polls < POLLS_PER_TURN && self.run_one() {
            polls += 1;
            self.driver.take_remote_wake();
        }
        stats.polls += polls as u64;
        if main_done() {
            self.stats.set(stats);
            return;
        }
        self.driver.flush_writes();
        self.driver.return_private_receives();
        let busy = !self.ready.borrow().is_empty();
        let deadline = if busy { None } else { self.timers.next_deadline() };
        let now = self.now.get();
        let wait = if busy {
            Some(std::time::Duration::ZERO)
        } else {
            deadline.map(|d| d.saturating_duration_since(now))
        };
        if self.driver.enter(wait) {
            stats.enters += 1;
        }
        stats.completions += self.driver.dispatch() as u64;
        self.take_remote_wakes();
        let now = Instant::now();
        self.now.set(now);
        self.timers.fire(now);
        self.stats.set(stats);
    }
}

/// Leaks the thread's runtime if `block_on` unwinds (see there).
struct LeakOnUnwind;

impl Drop for LeakOnUnwind {
    fn drop(&mut self) {
        let rt = CURRENT.try_with(|c| c.try_borrow_mut().ok().and_then(|mut c| c.take()));
        if let Ok(Some(rt)) = rt {
            std::mem::forget(rt);
        }
    }
}

/// Run `fut` and the tasks it spawns until `fut` completes; then drop the
/// tasks left (their drops may still use the runtime) and detach.
///
/// A panic that unwinds out of a task leaves the runtime as it was at that
/// instant, possibly half-way through a change. Nothing of it is dropped
/// then: the runtime is detached and leaked, its descriptors close when the
/// process ends (at once under fail-stop, [`super::Builder::exit_on_panic`]).
/// Running its drops could observe the half-done change, and a second panic
/// during unwinding aborts the process.
pub(crate) fn block_on<T: 'static>(rt: Rc<Inner>, fut: impl Future<Output = T> + 'static) -> T {
    CURRENT.with(|c| {
        let mut c = c.borrow_mut();
        assert!(c.is_none(), "a runtime is already running on this thread");
        *c = Some(rt.clone());
    });
    let leak_on_unwind = LeakOnUnwind;
    let out: Rc<RefCell<Option<T>>> = Rc::new(RefCell::new(None));
    let slot = out.clone();
    rt.spawn(Box::pin(async move {
        let v = fut.await;
        *slot.borrow_mut() = Some(v);
    }));
    let done = || out.borrow().is_some();
    while !done() {
        rt.turn(&done);
    }
    // Drop what is left (their drops may still use the runtime), then detach.
    let rest: Vec<BoxedTask> = rt.tasks.borrow_mut().drain().filter_map(|s| s.future).collect();
    drop(rest);
    rt.driver.shutdown();
    CURRENT.with(|c| c.borrow_mut().take());
    drop(leak_on_unwind);
    let v = out.borrow_mut().take().expect("main future finished");
    v
}

impl Drop for Inner {
    fn drop(&mut self) {
        remotes()[self.id as usize - 1] = None;
    }
}

// Wakers: the task's key and generation, 24 bits each, and the runtime's id.

fn pack(key: u32, generation: u32, runtime: u16) -> *const () {
    ((runtime as u64) << 48 | (generation as u64) << 24 | key as u64) as usize as *const ()
}

fn unpack(data: *const ()) -> (u32, u32, u16) {
    let v = data as usize as u64;
    (
        v as u32 & GENERATION_MASK,
        (v >> 24) as u32 & GENERATION_MASK,
        (v >> 48) as u16,
    )
}

static VTABLE: RawWakerVTable = RawWakerVTable::new(clone_waker, wake_waker, wake_waker, drop_waker);

fn clone_waker(data: *const ()) -> RawWaker {
    RawWaker::new(data, &VTABLE)
}

fn wake_waker(data: *const ()) {
    let (key, generation, runtime) = unpack(data);
    let here = try_with_current(|rt| rt.id == runtime && (rt.schedule(key, generation), true).1);
    if here != Some(true) {
        // Another thread: hand the wake to the task's own runtime.
        let remote = remotes().get(runtime as usize - 1).cloned().flatten();
        if let Some(r) = remote {
            r.wakes.push((key, generation));
            r.notifier.notify();
        }
    }
}

fn drop_waker(_: *const ()) {}

fn task_waker(key: u32, generation: u32, runtime: u16) -> Waker {
    // SAFETY: the vtable's functions never dereference the data word; it is
    // a plain integer, valid to copy and to drop on any thread.
    unsafe { Waker::from_raw(RawWaker::new(pack(key, generation, runtime), &VTABLE)) }
}

// Spawning and joining.

struct JoinState<T> {
    output: Option<T>,
    waiter: Option<Waker>,
}

/// A spawned task. Awaiting it gives its output; dropping it cancels the
/// task (its future is dropped); [`Task::detach`] lets it run on its own.
pub struct Task<T> {
    key: u32,
    generation: u32,
    state: Rc<RefCell<JoinState<T>>>,
    detached: bool,
}

/// A detached task, which can still be cancelled.
pub struct TaskHandle {
    key: u32,
    generation: u32,
}

impl TaskHandle {
    pub fn cancel(&self) {
        try_with_current(|rt| rt.cancel(self.key, self.generation));
    }
}

impl<T> Task<T> {
    pub fn detach(mut self) -> TaskHandle {
        self.detached = true;
        TaskHandle {
            key: self.key,
            generation: self.generation,
        }
    }
}

impl<T> Future for Task<T> {
    type Output = T;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let mut s = self.state.borrow_mut();
        match s.output.take() {
            Some(v) => Poll::Ready(v),
            None => {
                s.waiter = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl<T> Drop for Task<T> {
    fn drop(&mut self) {
        if !self.detached {
            try_with_current(|rt| rt.cancel(self.key, self.generation));
        }
    }
}

/// Spawn `fut` on the current thread's runtime.
pub fn spawn_local<T: 'static>(fut: impl Future<Output = T> + 'static) -> Task<T> {
    let state = Rc::new(RefCell::new(JoinState {
        output: None,
        waiter: None,
    }));
    let s = state.clone();
    let wrapped = async move {
        let v = fut.await;
        let waiter = {
            let mut st = s.borrow_mut();
            st.output = Some(v);
            st.waiter.take()
        };
        if let Some(w) = waiter {
            w.wake();
        }
    };
    let (key, generation) = with_current(|rt| rt.spawn(Box::pin(wrapped)));
    Task {
        key,
        generation,
        state,
        detached: false,
    }
}

/// Let other tasks and IO run if this task has had the thread for long
/// enough (here: always yields once).
pub async fn yield_if_needed() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}
