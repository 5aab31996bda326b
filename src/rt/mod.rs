//! The thread-per-core runtime the shards and the control plane run on: one
//! single-threaded executor per thread, driving one io_uring of its own.
//!
//! Why a runtime of our own: the kept-alive request is dominated by the
//! reactor, not by TLS (`perf/RESULTS.md`, "Reactor"). The ring is set up with
//! `SINGLE_ISSUER | DEFER_TASKRUN` (falling back to `COOP_TASKRUN`), so a
//! completion fired from a peer's CPU never interrupts this core with an IPI;
//! it waits for the next loop turn. Each loop turn is:
//!
//! 1. run the tasks that were woken (bounded, so IO is never starved);
//! 2. turn every stream's buffered writes into `SEND` entries;
//! 3. one `io_uring_enter` that submits them and, when nothing is runnable,
//!    waits for a completion or the next timer deadline;
//! 4. dispatch the completions (multishot accept, receives into a
//!    provided-buffer ring, sends, connects, the cross-thread eventfd);
//! 5. read the clock once and fire the timers that are due.
//!
//! Sockets are completion-based: reads never issue a system call (the kernel
//! fills shared buffers, see [`net`]), writes are queued and sent together.
//!
//! What it does not do: work stealing, blocking file IO, or running futures
//! that must be `Send`. Tasks are `!Send` and stay on the thread that spawned
//! them; a waker used on another thread hands the wake to the task's own
//! thread (through its eventfd).

mod channel;
mod executor;
pub mod net;
mod ring;
mod time;

pub use channel::{local_channel, shared_channel, LocalReceiver, LocalSender, Receiver, Sender};
pub use executor::{spawn_local, yield_if_needed, Task, TaskHandle};
pub use time::{now, sleep, timeout, Elapsed, Sleep};

use std::future::Future;
use std::io;
use std::rc::Rc;

/// How a thread's ring was set up, for logs and statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum RingMode {
    /// `SINGLE_ISSUER | DEFER_TASKRUN | TASKRUN_FLAG`: completions are run only
    /// when this thread enters the kernel (Linux 6.1+).
    DeferTaskrun,
    /// `COOP_TASKRUN | TASKRUN_FLAG`: no IPI, completions run on the next
    /// kernel entry (Linux 5.19+).
    CoopTaskrun,
    /// No flags (older kernels): a completion may interrupt the thread.
    Plain,
}

/// Settings of one runtime thread.
#[derive(Clone, Debug)]
pub struct Builder {
    name: String,
    cpu: Option<usize>,
    /// Submission queue entries (completion queue gets four times as many).
    pub entries: u32,
    batch_wait_us: u32,
    exit_on_panic: Option<i32>,
    ring_mode: RingMode,
}

impl Builder {
    pub fn new(name: &str) -> Self {
        Builder {
            name: name.to_string(),
            cpu: None,
            entries: 1024,
            batch_wait_us: 0,
            exit_on_panic: None,
            ring_mode: RingMode::DeferTaskrun,
        }
    }

    /// Fail-stop: if the thread panics, exit the whole process with `code`
    /// (after the panic message), instead of leaving a dead thread whose
    /// sockets stay open. The exit runs no destructor (the runtime is left
    /// as the panic found it); the hook set with [`before_fail_stop`] runs
    /// first, so buffered log lines get out.
    pub fn exit_on_panic(mut self, code: i32) -> Self {
        self.exit_on_panic = Some(code);
        self
    }

    /// When the loop has nothing to run, let the kernel gather up to 16
    /// completions for at most `us` microseconds before waking it for fewer
    /// (`IORING_ENTER_EXT_ARG` min-wait, Linux 6.12+; ignored before). Fewer
    /// wake-ups per request under moderate load, at most `us` more latency.
    pub fn batch_wait_us(mut self, us: u32) -> Self {
        self.batch_wait_us = us;
        self
    }

    /// Set the ring up in `best` mode at most: `CoopTaskrun` or `Plain`
    /// skip what a kernel offers beyond them, as on an older kernel (the
    /// default is the best the kernel takes).
    pub fn ring_mode(mut self, best: RingMode) -> Self {
        self.ring_mode = best;
        self
    }

    /// Pin the thread to `cpu`.
    pub fn pin(mut self, cpu: Option<usize>) -> Self {
        self.cpu = cpu;
        self
    }

    /// Start a thread that runs `make()`'s future to completion on a fresh
    /// runtime, then returns its output. Fails if the thread's ring cannot
    /// be set up (the error says why and what to change, see [`probe`]).
    pub fn spawn<F, Fut, T>(self, make: F) -> io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::channel::<io::Result<()>>();
        let entries = self.entries;
        let batch = self.batch_wait_us;
        let cpu = self.cpu;
        let exit_on_panic = self.exit_on_panic;
        let best = self.ring_mode;
        let name = self.name.clone();
        let handle = std::thread::Builder::new().name(self.name.clone()).spawn(move || {
            if let Some(cpu) = cpu {
                core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
            }
            let rt = match Runtime::with_ring_mode(entries, best).inspect(|rt| rt.inner.driver.set_batch_wait_us(batch))
            {
                Ok(rt) => {
                    let _ = tx.send(Ok(()));
                    rt
                }
                Err(e) => {
                    // The caller reports it; nobody joins this thread.
                    let _ = tx.send(Err(e));
                    return None;
                }
            };
            match exit_on_panic {
                None => Some(rt.block_on(make())),
                Some(code) => match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.block_on(make()))) {
                    Ok(v) => Some(v),
                    Err(_) => fail_stop(&name, code),
                },
            }
        })?;
        match rx.recv() {
            Ok(Ok(())) => Ok(JoinHandle(handle)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::Error::other("runtime thread died while starting")),
        }
    }
}

/// A runtime thread started by [`Builder::spawn`].
pub struct JoinHandle<T>(std::thread::JoinHandle<Option<T>>);

impl<T> JoinHandle<T> {
    /// Wait for the thread; its output, or the panic that ended it.
    pub fn join(self) -> std::thread::Result<T> {
        // `None` only from a thread whose runtime failed to start, whose
        // handle `spawn` never returns.
        self.0.join().map(|v| v.expect("a started runtime returns its output"))
    }
}

static BEFORE_FAIL_STOP: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Run `f` before a fail-stop exit ([`Builder::exit_on_panic`]), e.g. to
/// flush a buffered log writer. Set once; later calls are ignored.
pub fn before_fail_stop(f: fn()) {
    let _ = BEFORE_FAIL_STOP.set(f);
}

/// End the process after thread `name` panicked: the panic message is out
/// (the panic hook wrote it); flush the logs, say which thread stopped the
/// process, and exit with `code` without running any destructor (the
/// runtime's state is whatever the panic left; other threads keep running
/// until the exit and must not observe a half torn-down process).
fn fail_stop(name: &str, code: i32) -> ! {
    if let Some(f) = BEFORE_FAIL_STOP.get() {
        f();
    }
    eprintln!("shardtls: thread {name} panicked: stopping the process (fail-stop, exit {code})");
    let _ = std::io::Write::flush(&mut std::io::stdout());
    // SAFETY: _exit has no preconditions; it ends the process at once.
    unsafe { libc::_exit(code) }
}

/// Check that this host lets a runtime start: set up a ring the way a
/// runtime does (falling back as it does) and register its provided-buffer
/// ring. The error names what failed, the errno, and what to change.
pub fn probe() -> io::Result<RingMode> {
    ring::probe()
}

/// One thread's executor and ring. Created and used on one thread.
pub struct Runtime {
    inner: Rc<executor::Inner>,
}

impl Runtime {
    /// A runtime on the current thread, with a ring of `entries` entries.
    pub fn new(entries: u32) -> io::Result<Self> {
        Self::with_ring_mode(entries, RingMode::DeferTaskrun)
    }

    /// As [`Runtime::new`], with the ring set up in `best` mode at most (the
    /// fallbacks of older kernels, on purpose; see [`Builder::ring_mode`]).
    pub fn with_ring_mode(entries: u32, best: RingMode) -> io::Result<Self> {
        let inner = Rc::new(executor::Inner::new(entries, best)?);
        Ok(Runtime { inner })
    }

    /// How this runtime's ring was set up.
    pub fn ring_mode(&self) -> RingMode {
        self.inner.driver.mode
    }

    /// Run `fut` and every task it spawns until `fut` completes.
    pub fn block_on<T: 'static>(self, fut: impl Future<Output = T> + 'static) -> T {
        executor::block_on(self.inner, fut)
    }
}

/// The current thread's ring mode (`None` outside a runtime).
pub fn ring_mode() -> Option<RingMode> {
    executor::try_with_current(|rt| rt.driver.mode)
}

/// Loop counters of the current thread's runtime (see [`LoopStats`]).
pub fn loop_stats() -> Option<LoopStats> {
    executor::try_with_current(|rt| rt.stats())
}

/// What a runtime's loop has done since it started.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct LoopStats {
    pub turns: u64,
    pub enters: u64,
    pub completions: u64,
    pub polls: u64,
    /// Receives that found the provided-buffer ring empty.
    pub recv_no_buffers: u64,
    /// Receive buffers of sockets' own (the pool was dry when they were
    /// posted) not freed yet; they go once the pool refills.
    pub recv_private_buffers: u64,
    /// Socket and listener descriptors the runtime owns now.
    pub open_fds: u64,
    /// Sockets closed with a reset at their linger deadline because the
    /// peer did not take what was written.
    pub closed_unflushed: u64,
}

#[cfg(test)]
mod tests;
