//! The io_uring driver of one runtime thread.
//!
//! Owns the ring, the table of operations in flight, the provided-buffer
//! ring that receives fill, and the list of sockets with writes to send this
//! turn. An operation's table entry keeps what the kernel may still touch
//! (the socket state with its send buffer, a connect's address) alive until
//! the operation's last completion, whatever happened to the handle meanwhile.
//!
//! The `user_data` of an entry is its slot in that table (low 32 bits) and
//! the slot's generation (high 32 bits), so a completion or a cancel that
//! outlived its operation never reaches the operation that reused the slot.
//!
//! A submission that finds the queue full hands the queued entries to the
//! kernel; if the kernel refuses them too (`EBUSY` while completions wait to
//! be reaped, `ENOMEM`, `EAGAIN`), the entry waits, in order, in a backlog the
//! next loop turn submits after it reaped completions. Nothing is dropped and
//! nothing panics. Completions the kernel could not even hold in its
//! overflow list (`EBADR`) are lost for good: that stops the runtime.

use std::any::Any;
use std::cell::{Cell, RefCell, UnsafeCell};
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::task::Waker;
use std::time::Duration;

use io_uring::{cqueue, opcode, squeue, types, IoUring};
use slab::Slab;

use super::RingMode;

/// `user_data` of entries whose completion nobody waits for (cancels, closes);
/// never an operation's (no table has 2^32 - 1 slots).
const IGNORED: u64 = u64::MAX;
/// The provided-buffer group every receive uses.
const BUFFER_GROUP: u16 = 0;
/// Buffers in the provided-buffer ring (a power of two).
pub(crate) const RECV_BUFFERS: u16 = 128;
/// Size of each receive buffer: a whole TLS record fits (2.2 MiB in all per
/// thread, resident once used; 17 KiB moved 8-25% more bytes per core than
/// 8 KiB in `shardtls bench bulk`).
pub(crate) const RECV_BUFFER_SIZE: usize = 17 * 1024;
/// Read-ahead: a socket keeps receiving without its reader asking while it
/// holds fewer bytes than this (and the pool is not low).
pub(crate) const RECV_QUEUE_LIMIT: usize = 32 * 1024;
/// Below this many free pool buffers, sockets receive only when read.
const POOL_LOW_WATER: u16 = RECV_BUFFERS / 4;
/// Bytes buffered for sending before writers see backpressure.
pub(crate) const SEND_LIMIT: usize = 64 * 1024;
/// Send buffers kept for reuse.
const SPARE_SEND_BUFFERS: usize = 64;
/// How long a released socket may take to send what its handle wrote,
/// unless the handle set its own ([`super::net::Stream::set_linger`]): past
/// it the send is cancelled and the socket reset, so a peer that never reads
/// cannot pin a descriptor.
pub(crate) const DEFAULT_LINGER: Duration = Duration::from_secs(10);
/// Receives into sockets' own buffers moved back to the pool per loop turn.
const PRIVATE_RECVS_RETURNED_PER_TURN: usize = 64;

/// A received buffer not yet read out: where its bytes are, its length,
/// and how much was read already.
pub(crate) struct RxChunk {
    pub buf: RxBuf,
    pub len: u32,
    pub off: u32,
}

pub(crate) enum RxBuf {
    /// A buffer of the shared pool, given back once read.
    Pool(u16),
    /// The socket's own buffer, used when the pool ran dry.
    Own(Box<[u8]>),
}

/// Whether a released socket delivered what its handle wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Released {
    /// Everything written was handed to the kernel (or the socket had
    /// failed already), then the descriptor was closed.
    Flushed,
    /// The linger deadline passed first: the send was cancelled and the
    /// socket closed with a reset.
    Reset,
}

/// One socket's state, shared by its handle and its operations in flight.
pub(crate) struct Sock {
    pub fd: RawFd,
    pub st: RefCell<SockState>,
}

#[derive(Default)]
pub(crate) struct SockState {
    pub rx: VecDeque<RxChunk>,
    pub rx_bytes: usize,
    pub rx_eof: bool,
    pub rx_err: Option<i32>,
    /// The receive in flight (its `user_data`).
    pub recv_op: Option<u64>,
    /// The receive in flight fills the socket's own buffer (the pool was dry).
    pub recv_private: bool,
    /// In the driver's list of sockets receiving into their own buffer.
    pub private_listed: bool,
    pub reader: Option<Waker>,
    /// Written, not yet handed to the kernel.
    pub tx_next: Vec<u8>,
    /// Handed to the kernel (from `tx_off` on).
    pub tx_inflight: Vec<u8>,
    pub tx_off: usize,
    pub send_op: Option<u64>,
    pub tx_err: Option<i32>,
    /// The task waiting to write; once released, the one waiting for the close.
    pub writer: Option<Waker>,
    /// In the driver's list of sockets to send for.
    pub dirty: bool,
    /// Shut down for writing.
    pub shut_wr: bool,
    /// The handle is gone: finish sending what it wrote, then close.
    pub dropped: bool,
    pub closed: bool,
    /// Closed at the linger deadline with bytes unsent.
    pub reset: bool,
    /// Milliseconds a released socket may take to send (0: [`DEFAULT_LINGER`]).
    pub linger_ms: u32,
    /// The linger deadline in flight (its `user_data`).
    pub linger_op: Option<u64>,
    /// Operations in flight (the linger deadline aside).
    pub ops: u32,
}

impl SockState {
    pub fn tx_buffered(&self) -> usize {
        self.tx_next.len() + (self.tx_inflight.len() - self.tx_off)
    }
}

/// A listener's state: accepted descriptors not yet taken by its handle.
pub(crate) struct Listen {
    pub fd: RawFd,
    pub st: RefCell<ListenState>,
}

#[derive(Default)]
pub(crate) struct ListenState {
    pub queue: VecDeque<Result<RawFd, i32>>,
    pub op: Option<u64>,
    pub waiter: Option<Waker>,
    pub dropped: bool,
    pub closed: bool,
}

/// A single-shot operation's result, and what the kernel may read until then.
#[derive(Default)]
pub(crate) struct OneShot {
    pub result: Cell<Option<i32>>,
    pub waker: RefCell<Option<Waker>>,
    pub payload: RefCell<Option<Box<dyn Any>>>,
}

/// The operations in flight, by `user_data`: slot key and generation.
struct OpTable {
    slots: Slab<(u32, Op)>,
    next_generation: u32,
}

impl OpTable {
    fn with_capacity(n: usize) -> Self {
        OpTable {
            slots: Slab::with_capacity(n),
            next_generation: 0,
        }
    }

    /// Add `op`; returns the `user_data` its entries carry.
    fn insert(&mut self, op: Op) -> u64 {
        let generation = self.next_generation;
        self.next_generation = generation.wrapping_add(1);
        let key = self.slots.insert((generation, op));
        assert!(key < u32::MAX as usize, "operation table full");
        ((generation as u64) << 32) | key as u64
    }

    fn slot(user_data: u64) -> (usize, u32) {
        (user_data as u32 as usize, (user_data >> 32) as u32)
    }

    /// The operation `user_data` names, if it is still in flight.
    fn get(&self, user_data: u64) -> Option<&Op> {
        let (key, generation) = Self::slot(user_data);
        match self.slots.get(key) {
            Some((g, op)) if *g == generation => Some(op),
            _ => None,
        }
    }

    fn remove(&mut self, user_data: u64) -> Option<Op> {
        self.get(user_data)?;
        Some(self.slots.remove(Self::slot(user_data).0).1)
    }

    /// Leak every operation: the kernel may still write into what they hold.
    fn forget_all(&mut self) {
        std::mem::forget(std::mem::take(&mut self.slots));
    }
}

enum Op {
    /// A receive into a pool buffer (`None`) or into the socket's own.
    Recv(Rc<Sock>, Option<Box<[u8]>>),
    Send(Rc<Sock>),
    /// The deadline of a released socket's last sends (the kernel reads
    /// the time when the entry is submitted).
    Linger {
        sock: Rc<Sock>,
        _limit: Box<types::Timespec>,
    },
    Accept(Rc<Listen>),
    OneShot(Rc<OneShot>),
    EventFd,
}

/// How other threads wake this one: a flag checked between task polls, and
/// an eventfd whose read is always posted on the ring (for a sleeping loop).
pub(crate) struct Notifier {
    pub(crate) fd: OwnedFd,
    pub(crate) pending: std::sync::atomic::AtomicBool,
}

impl Notifier {
    /// Called by the sending thread after it queued a message.
    pub(crate) fn notify(&self) {
        self.pending.store(true, std::sync::atomic::Ordering::Release);
        let one: u64 = 1;
        // SAFETY: an 8-byte write from a valid buffer to our eventfd.
        unsafe { libc::write(self.fd.as_raw_fd(), &one as *const u64 as *const libc::c_void, 8) };
    }
}

/// The provided-buffer ring: the kernel picks a buffer when data arrives, so
/// a connection waiting for data holds no buffer of its own.
struct BufferRing {
    entries: *mut types::BufRingEntry,
    memory: *mut u8,
    tail: Cell<u16>,
    /// Buffers currently in the ring (the rest are queued in sockets).
    free: Cell<u16>,
}

impl BufferRing {
    fn new() -> Self {
        let ring_layout = std::alloc::Layout::from_size_align(RECV_BUFFERS as usize * 16, 4096).expect("layout");
        let mem_layout =
            std::alloc::Layout::from_size_align(RECV_BUFFERS as usize * RECV_BUFFER_SIZE, 4096).expect("layout");
        // SAFETY: non-zero sizes; both are leaked on purpose: the kernel may
        // write into them until the ring is gone, which is the thread's end.
        let (entries, memory) = unsafe {
            (
                std::alloc::alloc_zeroed(ring_layout) as *mut types::BufRingEntry,
                std::alloc::alloc(mem_layout),
            )
        };
        assert!(
            !entries.is_null() && !memory.is_null(),
            "out of memory for receive buffers"
        );
        let ring = BufferRing {
            entries,
            memory,
            tail: Cell::new(0),
            free: Cell::new(0),
        };
        for bid in 0..RECV_BUFFERS {
            ring.push(bid);
        }
        ring
    }

    fn push(&self, bid: u16) {
        let tail = self.tail.get();
        // SAFETY: the index is masked into the ring; the entry is ours until
        // the tail store below publishes it to the kernel.
        unsafe {
            let e = &mut *self.entries.add((tail & (RECV_BUFFERS - 1)) as usize);
            e.set_addr(self.memory.add(bid as usize * RECV_BUFFER_SIZE) as u64);
            e.set_len(RECV_BUFFER_SIZE as u32);
            e.set_bid(bid);
        }
        let tail = tail.wrapping_add(1);
        self.tail.set(tail);
        // SAFETY: the tail lives in the first entry's reserved field.
        unsafe {
            let t = types::BufRingEntry::tail(self.entries) as *const std::sync::atomic::AtomicU16;
            (*t).store(tail, std::sync::atomic::Ordering::Release);
        }
        self.free.set(self.free.get() + 1);
    }

    fn bytes<'a>(&'a self, c: &'a RxChunk) -> &'a [u8] {
        match &c.buf {
            // SAFETY: buffer `bid` was filled with `len` bytes by the kernel and
            // is not in the ring (so not written) until `push` gives it back.
            RxBuf::Pool(bid) => unsafe {
                std::slice::from_raw_parts(
                    self.memory.add(*bid as usize * RECV_BUFFER_SIZE + c.off as usize),
                    (c.len - c.off) as usize,
                )
            },
            RxBuf::Own(b) => &b[c.off as usize..c.len as usize],
        }
    }
}

pub(crate) struct Driver {
    ring: RefCell<IoUring>,
    pub(crate) mode: RingMode,
    ops: RefCell<OpTable>,
    /// Entries the kernel did not take yet (see the module docs), in order.
    backlog: RefCell<VecDeque<squeue::Entry>>,
    buffers: BufferRing,
    dirty: RefCell<Vec<Rc<Sock>>>,
    spare_send: RefCell<Vec<Vec<u8>>>,
    completions: RefCell<Vec<(u64, i32, u32)>>,
    /// Written by other threads (channels) to wake this one.
    pub(crate) eventfd: Arc<Notifier>,
    eventfd_value: Box<UnsafeCell<u64>>,
    eventfd_waiters: RefCell<Vec<Waker>>,
    pub(crate) recv_no_buffers: Cell<u64>,
    /// Sockets whose receive in flight fills a buffer of their own, to move
    /// back to the pool once it refills.
    private_recvs: RefCell<VecDeque<Rc<Sock>>>,
    /// Receive buffers of sockets' own, allocated and not freed yet.
    recv_private_buffers: Cell<u64>,
    /// Descriptors of sockets and listeners this ring owns.
    open_fds: Cell<u64>,
    /// Sockets reset at their linger deadline with bytes unsent.
    closed_unflushed: Cell<u64>,
    shut: Cell<bool>,
    faults: Faults,
    /// Completion batching when idle: wait up to this long for
    /// [`BATCH_COMPLETIONS`] completions before taking fewer (0: wake on the first).
    batch_wait_us: Cell<u32>,
}

/// Errors injected into the ring's submits and completions, in tests only.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct Faults {
    submit: FaultPoint,
    completion: FaultPoint,
}

/// Fail the `nth` submit (or completion) from now with `errno`; with
/// `repeat`, every `nth` one.
#[cfg(test)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fault {
    pub nth: u32,
    pub errno: i32,
    pub repeat: bool,
}

#[cfg(test)]
#[derive(Default)]
struct FaultPoint {
    fault: Cell<Option<Fault>>,
    seen: Cell<u32>,
}

#[cfg(test)]
impl FaultPoint {
    fn set(&self, f: Fault) {
        self.seen.set(0);
        self.fault.set(Some(f));
    }

    /// Count one event; the errno when it is the one to fail.
    fn hit(&self) -> Option<i32> {
        let f = self.fault.get()?;
        let seen = self.seen.get() + 1;
        if seen < f.nth {
            self.seen.set(seen);
            return None;
        }
        self.seen.set(0);
        if !f.repeat {
            self.fault.set(None);
        }
        Some(f.errno)
    }
}

#[cfg(test)]
impl Faults {
    fn new() -> Self {
        Faults::default()
    }

    fn submit(&self) -> Option<io::Error> {
        self.submit.hit().map(io::Error::from_raw_os_error)
    }

    /// `res`, or the injected error. A receive that was given a pool buffer
    /// keeps its result (a failed receive takes no buffer); a descriptor an
    /// accept had got is closed (a failed accept gives none).
    fn completion(&self, op: &Op, res: i32, flags: u32) -> i32 {
        if cqueue::buffer_select(flags).is_some() {
            return res;
        }
        let Some(errno) = self.completion.hit() else { return res };
        if matches!(op, Op::Accept(_)) && res >= 0 {
            // SAFETY: the accepted descriptor is ours and used nowhere else.
            unsafe { libc::close(res) };
        }
        -errno
    }
}

#[cfg(not(test))]
struct Faults;

#[cfg(not(test))]
impl Faults {
    fn new() -> Self {
        Faults
    }

    #[inline(always)]
    fn submit(&self) -> Option<io::Error> {
        None
    }

    #[inline(always)]
    fn completion(&self, _op: &Op, res: i32, _flags: u32) -> i32 {
        res
    }
}

#[cfg(test)]
impl Driver {
    pub(crate) fn fail_submits(&self, f: Fault) {
        self.faults.submit.set(f);
    }

    pub(crate) fn fail_completions(&self, f: Fault) {
        self.faults.completion.set(f);
    }
}

/// Completions a waiting loop turn asks for before `batch_wait_us` passes.
const BATCH_COMPLETIONS: usize = 16;

/// A ring in the best mode this kernel takes, `best` at most.
fn build_ring(entries: u32, best: RingMode) -> io::Result<(IoUring, RingMode)> {
    let cq = entries * 4;
    if best == RingMode::DeferTaskrun {
        let defer = IoUring::builder()
            .setup_cqsize(cq)
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_taskrun_flag()
            .setup_submit_all()
            .build(entries);
        if let Ok(r) = defer {
            return Ok((r, RingMode::DeferTaskrun));
        }
    }
    if best != RingMode::Plain {
        let coop = IoUring::builder()
            .setup_cqsize(cq)
            .setup_coop_taskrun()
            .setup_taskrun_flag()
            .setup_submit_all()
            .build(entries);
        if let Ok(r) = coop {
            return Ok((r, RingMode::CoopTaskrun));
        }
    }
    let r = IoUring::builder()
        .setup_cqsize(cq)
        .build(entries)
        .map_err(|e| unavailable("io_uring_setup", e))?;
    Ok((r, RingMode::Plain))
}

/// `e`, from `step` of setting up a ring, as an error that names io_uring,
/// the errno, and what to change on the host.
fn unavailable(step: &str, e: io::Error) -> io::Error {
    const SECCOMP: &str = "the container's seccomp profile must allow io_uring_setup, io_uring_enter and \
                           io_uring_register (Docker's and containerd's default profiles block them)";
    let errno = e.raw_os_error().unwrap_or(0);
    let (name, hint) = match errno {
        libc::EPERM => (
            "EPERM",
            format!("io_uring is disabled or blocked here: the sysctl kernel.io_uring_disabled must be 0 (or 1 with this user in kernel.io_uring_group), and {SECCOMP}"),
        ),
        libc::EACCES => ("EACCES", format!("io_uring is blocked by a security policy (SELinux, AppArmor or seccomp): {SECCOMP}")),
        libc::ENOSYS => (
            "ENOSYS",
            format!("this kernel has no io_uring (or a seccomp profile hides it): shardtls needs Linux 5.19 or later built with CONFIG_IO_URING, and {SECCOMP}"),
        ),
        libc::ENOMEM => (
            "ENOMEM",
            "not enough locked memory for the ring: raise the memlock limit (ulimit -l, systemd LimitMEMLOCK=; see tuning.md)".to_string(),
        ),
        libc::EINVAL => (
            "EINVAL",
            "this kernel's io_uring lacks what shardtls needs (provided-buffer rings, multishot accept): Linux 5.19 or later".to_string(),
        ),
        _ => ("", "shardtls needs io_uring on Linux 5.19 or later (see tuning.md)".to_string()),
    };
    let errno = if name.is_empty() {
        format!("{e}")
    } else {
        format!("{name}: {e}")
    };
    io::Error::new(
        e.kind(),
        format!("io_uring unavailable: {step} failed ({errno}): {hint}"),
    )
}

/// Set up a ring and register a provided-buffer ring, as a runtime does;
/// see [`super::probe`].
pub(crate) fn probe() -> io::Result<RingMode> {
    Driver::new(8).map(|d| d.mode)
}

impl Driver {
    pub(crate) fn new(entries: u32) -> io::Result<Self> {
        Self::with_mode(entries, RingMode::DeferTaskrun)
    }

    /// A driver whose ring is set up in `best` mode at most.
    pub(crate) fn with_mode(entries: u32, best: RingMode) -> io::Result<Self> {
        let (ring, mode) = build_ring(entries, best)?;
        let buffers = BufferRing::new();
        // SAFETY: the ring memory is page-aligned, sized for RECV_BUFFERS
        // entries and never freed.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(buffers.entries as u64, RECV_BUFFERS, BUFFER_GROUP, 0)
                .map_err(|e| unavailable("registering the provided-buffer ring", e))?;
        }
        // SAFETY: eventfd has no preconditions; the result is checked.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if efd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor we own.
        let eventfd = Arc::new(Notifier {
            fd: unsafe { OwnedFd::from_raw_fd(efd) },
            pending: std::sync::atomic::AtomicBool::new(false),
        });
        let d = Driver {
            ring: RefCell::new(ring),
            mode,
            ops: RefCell::new(OpTable::with_capacity(4096)),
            backlog: RefCell::new(VecDeque::new()),
            buffers,
            dirty: RefCell::new(Vec::new()),
            spare_send: RefCell::new(Vec::new()),
            completions: RefCell::new(Vec::with_capacity(1024)),
            eventfd,
            eventfd_value: Box::new(UnsafeCell::new(0)),
            eventfd_waiters: RefCell::new(Vec::new()),
            recv_no_buffers: Cell::new(0),
            private_recvs: RefCell::new(VecDeque::new()),
            recv_private_buffers: Cell::new(0),
            open_fds: Cell::new(0),
            closed_unflushed: Cell::new(0),
            shut: Cell::new(false),
            faults: Faults::new(),
            batch_wait_us: Cell::new(0),
        };
        d.arm_eventfd();
        Ok(d)
    }

    /// See [`super::Builder::batch_wait_us`]; kept at 0 where the kernel
    /// lacks `IORING_FEAT_MIN_TIMEOUT`.
    pub(crate) fn set_batch_wait_us(&self, us: u32) {
        let supported = self.ring.borrow().params().is_feature_min_timeout();
        self.batch_wait_us.set(if supported { us } else { 0 });
    }

    /// Queue `sqe` for the kernel: in the submission queue, or when that is
    /// full and the kernel takes nothing now, in the backlog (module docs).
    fn push(&self, sqe: squeue::Entry) {
        if self.shut.get() {
            return;
        }
        let mut backlog = self.backlog.borrow_mut();
        if backlog.is_empty() {
            let mut ring = self.ring.borrow_mut();
            // SAFETY: every pointer in an entry built here stays valid until its
            // completion: it points into state the operation table keeps alive.
            if unsafe { ring.submission().push(&sqe) }.is_ok() {
                return;
            }
            // Full: hand the queue to the kernel and try once more.
            // SAFETY: as above.
            if self.submit(&ring).is_ok() && unsafe { ring.submission().push(&sqe) }.is_ok() {
                return;
            }
        }
        backlog.push_back(sqe);
    }

    /// Move backlog entries into the submission queue, submitting as it
    /// fills. False when the kernel refused and some are still waiting.
    fn drain_backlog(&self, ring: &mut IoUring) -> bool {
        let mut backlog = self.backlog.borrow_mut();
        while !backlog.is_empty() {
            {
                let mut sq = ring.submission();
                while let Some(sqe) = backlog.front() {
                    // SAFETY: as in `push`.
                    if unsafe { sq.push(sqe) }.is_err() {
                        break;
                    }
                    backlog.pop_front();
                }
            }
            if !backlog.is_empty() && self.submit(ring).is_err() {
                return false;
            }
        }
        true
    }

    /// Submit without waiting (reaping overflowed and deferred completions).
    fn submit(&self, ring: &IoUring) -> io::Result<usize> {
        if let Some(e) = self.faults.submit() {
            return Err(e);
        }
        ring.submit()
    }

    /// Cancel the operation `op` (its exact `user_data`: a cancel that
    /// arrives late finds nothing, whatever reused the slot).
    fn cancel(&self, op: u64) {
        self.push(opcode::AsyncCancel::new(op).build().user_data(IGNORED));
    }

    fn arm_eventfd(&self) {
        let key = self.ops.borrow_mut().insert(Op::EventFd);
        let sqe = opcode::Read::new(
            types::Fd(self.eventfd.fd.as_raw_fd()),
            self.eventfd_value.get() as *mut u8,
            8,
        )
        .build()
        .user_data(key);
        self.push(sqe);
    }

    /// Wake the tasks waiting for other threads, ahead of every other
    /// task, if another thread sent since the last call. Called between
    /// task polls, so a busy loop sees a control message after the poll
    /// that is running, not after its whole turn.
    pub(crate) fn take_remote_wake(&self) -> bool {
        use std::sync::atomic::Ordering;
        if !self.eventfd.pending.load(Ordering::Relaxed) || !self.eventfd.pending.swap(false, Ordering::Acquire) {
            return false;
        }
        let waiters = std::mem::take(&mut *self.eventfd_waiters.borrow_mut());
        super::executor::urgently(|| {
            for w in waiters {
                w.wake();
            }
        });
        true
    }

    /// Wake `w` the next time another thread writes the eventfd.
    pub(crate) fn on_eventfd(&self, w: &Waker) {
        let mut ws = self.eventfd_waiters.borrow_mut();
        if !ws.iter().any(|x| x.will_wake(w)) {
            ws.push(w.clone());
        }
    }

    // Sockets.

    /// Post a receive for `sock` unless one is in flight: into a pool
    /// buffer the kernel picks when data arrives (so a waiting socket holds
    /// none), or into a buffer of its own when the pool is empty, so a pool
    /// held by stalled peers never stops another connection. A socket
    /// receiving into its own buffer is listed, and moved back to the pool
    /// once the pool refills ([`Self::return_private_receives`]).
    pub(crate) fn arm_recv(&self, sock: &Rc<Sock>) {
        {
            let st = sock.st.borrow();
            if st.recv_op.is_some() || st.rx_eof || st.rx_err.is_some() || st.dropped {
                return;
            }
        }
        let own = (self.buffers.free.get() == 0).then(|| {
            self.recv_private_buffers.set(self.recv_private_buffers.get() + 1);
            vec![0u8; RECV_BUFFER_SIZE].into_boxed_slice()
        });
        let sqe = match &own {
            None => opcode::Recv::new(types::Fd(sock.fd), std::ptr::null_mut(), RECV_BUFFER_SIZE as u32)
                .buf_group(BUFFER_GROUP)
                .build()
                .flags(squeue::Flags::BUFFER_SELECT),
            Some(b) => opcode::Recv::new(types::Fd(sock.fd), b.as_ptr() as *mut u8, b.len() as u32).build(),
        };
        let private = own.is_some();
        let key = self.ops.borrow_mut().insert(Op::Recv(sock.clone(), own));
        let list = {
            let mut st = sock.st.borrow_mut();
            st.recv_op = Some(key);
            st.recv_private = private;
            st.ops += 1;
            let list = private && !st.private_listed;
            st.private_listed |= list;
            list
        };
        if list {
            self.private_recvs.borrow_mut().push_back(sock.clone());
        }
        self.push(sqe.user_data(key));
    }

    /// Once the pool has refilled above its low-water mark, cancel the
    /// receives that fill sockets' own buffers (at most
    /// [`PRIVATE_RECVS_RETURNED_PER_TURN`] per call); each is posted again
    /// from the pool when its cancellation completes, so a waiting socket
    /// holds no receive buffer again. Called once per loop turn.
    pub(crate) fn return_private_receives(&self) {
        if self.buffers.free.get() <= POOL_LOW_WATER || self.private_recvs.borrow().is_empty() {
            return;
        }
        let mut cancelled = 0;
        while cancelled < PRIVATE_RECVS_RETURNED_PER_TURN {
            let Some(sock) = self.private_recvs.borrow_mut().pop_front() else {
                break;
            };
            let key = {
                let mut st = sock.st.borrow_mut();
                st.private_listed = false;
                st.recv_op.filter(|_| st.recv_private && !st.dropped)
            };
            if let Some(k) = key {
                self.cancel(k);
                cancelled += 1;
            }
        }
    }

    /// The received bytes of a chunk.
    pub(crate) fn rx_bytes<'a>(&'a self, c: &'a RxChunk) -> &'a [u8] {
        self.buffers.bytes(c)
    }

    /// Give a read-out chunk's buffer back to the pool (or free the
    /// socket's own).
    pub(crate) fn recycle(&self, c: RxChunk) {
        match c.buf {
            RxBuf::Pool(bid) => self.buffers.push(bid),
            RxBuf::Own(_) => self.recv_private_buffers.set(self.recv_private_buffers.get() - 1),
        }
    }

    /// A send buffer, reused when one is spare.
    pub(crate) fn send_buffer(&self) -> Vec<u8> {
        self.spare_send
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(16 * 1024))
    }

    fn spare(&self, mut b: Vec<u8>) {
        let mut spare = self.spare_send.borrow_mut();
        if spare.len() < SPARE_SEND_BUFFERS && b.capacity() <= SEND_LIMIT * 2 {
            b.clear();
            spare.push(b);
        }
    }

    /// Note that `sock` has bytes to send this turn.
    pub(crate) fn mark_dirty(&self, sock: &Rc<Sock>) {
        let mut st = sock.st.borrow_mut();
        if !st.dirty {
            st.dirty = true;
            self.dirty.borrow_mut().push(sock.clone());
        }
    }

    /// Turn buffered writes into send entries (one in flight per socket).
    pub(crate) fn flush_writes(&self) {
        let socks = std::mem::take(&mut *self.dirty.borrow_mut());
        for s in &socks {
            s.st.borrow_mut().dirty = false;
            self.start_send(s);
        }
        let mut d = self.dirty.borrow_mut();
        if d.is_empty() {
            // Keep the allocation.
            *d = socks;
            d.clear();
        }
    }

    fn start_send(&self, sock: &Rc<Sock>) {
        let (ptr, len) = {
            let mut st = sock.st.borrow_mut();
            if st.send_op.is_some() || st.tx_err.is_some() || st.closed {
                return;
            }
            if st.tx_off >= st.tx_inflight.len() {
                if st.tx_next.is_empty() {
                    return;
                }
                let next = std::mem::take(&mut st.tx_next);
                let done = std::mem::replace(&mut st.tx_inflight, next);
                st.tx_off = 0;
                if done.capacity() > 0 {
                    self.spare(done);
                }
            }
            let off = st.tx_off;
            (st.tx_inflight[off..].as_ptr(), (st.tx_inflight.len() - off) as u32)
        };
        let key = self.ops.borrow_mut().insert(Op::Send(sock.clone()));
        {
            let mut st = sock.st.borrow_mut();
            st.send_op = Some(key);
            st.ops += 1;
        }
        self.push(
            opcode::Send::new(types::Fd(sock.fd), ptr, len)
                .flags(libc::MSG_NOSIGNAL)
                .build()
                .user_data(key),
        );
    }

    /// The handle of `sock` is gone: stop receiving, finish sending what was
    /// written (unless the socket failed), then close. Sending is bounded by
    /// the socket's linger deadline: past it the send is cancelled and the
    /// socket reset ([`Self::on_linger`]).
    pub(crate) fn release(&self, sock: &Rc<Sock>) {
        let (recv, send_cancel, linger) = {
            let mut st = sock.st.borrow_mut();
            st.dropped = true;
            st.reader = None;
            st.writer = None;
            let chunks: Vec<RxChunk> = st.rx.drain(..).collect();
            st.rx_bytes = 0;
            for c in chunks {
                self.recycle(c);
            }
            let failed = st.tx_err.is_some();
            let unsent = !failed && st.tx_buffered() > 0 && st.linger_op.is_none();
            (
                st.recv_op,
                if failed { st.send_op } else { None },
                unsent.then_some(st.linger_ms),
            )
        };
        if let Some(k) = recv {
            self.cancel(k);
        }
        if let Some(k) = send_cancel {
            self.cancel(k);
        }
        if let Some(ms) = linger {
            let limit = if ms == 0 {
                DEFAULT_LINGER
            } else {
                Duration::from_millis(ms.into())
            };
            let ts = Box::new(types::Timespec::from(limit));
            let sqe = opcode::Timeout::new(&*ts).build();
            let key = self.ops.borrow_mut().insert(Op::Linger {
                sock: sock.clone(),
                _limit: ts,
            });
            sock.st.borrow_mut().linger_op = Some(key);
            self.push(sqe.user_data(key));
        }
        self.maybe_close(sock);
    }

    /// A released socket's linger deadline passed (or was cancelled by its
    /// close): if it is still sending, the peer did not take what was
    /// written in time; cancel the send and close with a reset (SO_LINGER 0),
    /// so the descriptor and the kernel's send queue go at once.
    fn on_linger(&self, sock: &Rc<Sock>, res: i32) {
        let send = {
            let mut st = sock.st.borrow_mut();
            st.linger_op = None;
            if res == -libc::ECANCELED || st.closed || st.tx_err.is_some() {
                return;
            }
            st.tx_err = Some(libc::ETIMEDOUT);
            st.reset = true;
            st.send_op
        };
        let lin = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: a valid option value and its length for our own, still open socket.
        unsafe {
            libc::setsockopt(
                sock.fd,
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                &lin as *const libc::linger as *const libc::c_void,
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        self.closed_unflushed.set(self.closed_unflushed.get() + 1);
        if let Some(k) = send {
            self.cancel(k);
        }
        self.maybe_close(sock);
    }

    fn maybe_close(&self, sock: &Rc<Sock>) {
        let mut st = sock.st.borrow_mut();
        if !st.dropped || st.closed || st.ops > 0 {
            return;
        }
        if st.tx_err.is_none() && st.tx_buffered() > 0 {
            drop(st);
            self.start_send(sock);
            return;
        }
        st.closed = true;
        let bufs = (std::mem::take(&mut st.tx_next), std::mem::take(&mut st.tx_inflight));
        let linger = st.linger_op.take();
        let waiter = st.writer.take();
        drop(st);
        for b in [bufs.0, bufs.1] {
            if b.capacity() > 0 {
                self.spare(b);
            }
        }
        if let Some(k) = linger {
            self.cancel(k);
        }
        self.push(opcode::Close::new(types::Fd(sock.fd)).build().user_data(IGNORED));
        self.fd_closed();
        if let Some(w) = waiter {
            w.wake();
        }
    }

    /// A socket or listener descriptor now belongs to this ring.
    pub(crate) fn fd_opened(&self) {
        self.open_fds.set(self.open_fds.get() + 1);
    }

    fn fd_closed(&self) {
        self.open_fds.set(self.open_fds.get().saturating_sub(1));
    }

    /// The driver's part of the loop counters.
    pub(crate) fn fill_stats(&self, s: &mut super::LoopStats) {
        s.recv_no_buffers = self.recv_no_buffers.get();
        s.recv_private_buffers = self.recv_private_buffers.get();
        s.open_fds = self.open_fds.get();
        s.closed_unflushed = self.closed_unflushed.get();
    }

    // Listeners.

    pub(crate) fn arm_accept(&self, l: &Rc<Listen>) {
        {
            let st = l.st.borrow();
            if st.op.is_some() || st.dropped {
                return;
            }
        }
        let key = self.ops.borrow_mut().insert(Op::Accept(l.clone()));
        l.st.borrow_mut().op = Some(key);
        self.push(
            opcode::AcceptMulti::new(types::Fd(l.fd))
                .flags(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK)
                .build()
                .user_data(key),
        );
    }

    pub(crate) fn release_listener(&self, l: &Rc<Listen>) {
        let (op, queued) = {
            let mut st = l.st.borrow_mut();
            st.dropped = true;
            st.waiter = None;
            (st.op, std::mem::take(&mut st.queue))
        };
        for r in queued.into_iter().flatten() {
            // SAFETY: an accepted descriptor nobody took.
            unsafe { libc::close(r) };
            self.fd_closed();
        }
        // Stop listening now, whatever the ring does next: the accept in
        // flight holds the socket open until its cancellation completes,
        // which a runtime that is about to end may never see. Linux stops a
        // listening socket on shutdown(2) and fails its pending accepts.
        // SAFETY: shutdown on our own descriptor, still open.
        unsafe { libc::shutdown(l.fd, libc::SHUT_RDWR) };
        match op {
            Some(k) => self.cancel(k),
            None => self.close_listener(l),
        }
    }

    fn close_listener(&self, l: &Rc<Listen>) {
        let mut st = l.st.borrow_mut();
        if !st.closed {
            st.closed = true;
            // Synchronous: the address must be free when the caller goes on.
            // SAFETY: the listener's own descriptor, closed once.
            unsafe { libc::close(l.fd) };
            drop(st);
            self.fd_closed();
        }
    }

    // Single-shot operations.

    /// Submit `sqe` (built with any `user_data`); `payload` lives until it completes.
    pub(crate) fn submit_oneshot(&self, sqe: squeue::Entry, payload: Option<Box<dyn Any>>) -> (u64, Rc<OneShot>) {
        let os = Rc::new(OneShot::default());
        *os.payload.borrow_mut() = payload;
        let key = self.ops.borrow_mut().insert(Op::OneShot(os.clone()));
        self.push(sqe.user_data(key));
        (key, os)
    }

    /// The waiter of a single-shot operation is gone before it completed.
    pub(crate) fn abandon(&self, op: u64) {
        self.cancel(op);
    }

    // The loop.

    /// Submit what is queued and, with `wait` other than zero, wait for a
    /// completion (`None`: without limit). True when the kernel was entered.
    pub(crate) fn enter(&self, wait: Option<Duration>) -> bool {
        let mut ring = self.ring.borrow_mut();
        // Entries the kernel refused earlier go first; while some still wait,
        // this turn does not sleep (their completions are what it would wait for).
        let wait = if self.drain_backlog(&mut ring) {
            wait
        } else {
            Some(Duration::ZERO)
        };
        let pending_sq = !ring.submission().is_empty();
        let taskrun = ring.submission().taskrun();
        let overflow = ring.submission().cq_overflow();
        let cq_ready = !ring.completion().is_empty();
        let result = if let Some(e) = self.faults.submit() {
            Err(e)
        } else {
            match wait {
                Some(d) if d.is_zero() || cq_ready => {
                    if !pending_sq && !taskrun && !overflow && self.mode != RingMode::Plain {
                        return false;
                    }
                    ring.submit()
                }
                Some(d) => {
                    let ts = types::Timespec::from(d);
                    let batch = self.batch_wait_us.get();
                    let args = types::SubmitArgs::new().timespec(&ts).min_wait_usec(batch);
                    ring.submitter()
                        .submit_with_args(if batch > 0 { BATCH_COMPLETIONS } else { 1 }, &args)
                }
                None => {
                    let batch = self.batch_wait_us.get();
                    if batch > 0 {
                        let args = types::SubmitArgs::new().min_wait_usec(batch);
                        ring.submitter().submit_with_args(BATCH_COMPLETIONS, &args)
                    } else {
                        ring.submit_and_wait(1)
                    }
                }
            }
        };
        if let Err(e) = result {
            match e.raw_os_error() {
                // Timed out, interrupted, or completions to reap first
                // (EBUSY): what was not submitted stays queued for the next turn.
                Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::EAGAIN) => {}
                Some(libc::EBADR) => {
                    panic!("io_uring dropped completions (EBADR): the kernel could not hold them; operations they finished would wait forever, so this runtime stops")
                }
                _ => tracing::warn!("io_uring_enter: {e}"),
            }
        }
        true
    }

    /// Handle every completion queued; returns how many.
    pub(crate) fn dispatch(&self) -> usize {
        let mut batch = std::mem::take(&mut *self.completions.borrow_mut());
        {
            let mut ring = self.ring.borrow_mut();
            loop {
                let mut cq = ring.completion();
                cq.sync();
                for cqe in &mut cq {
                    batch.push((cqe.user_data(), cqe.result(), cqe.flags()));
                }
                drop(cq);
                // Completions the queue had no room for wait in the kernel's
                // overflow list; an enter with GETEVENTS moves them in.
                if !ring.submission().cq_overflow() || self.submit(&ring).is_err() {
                    break;
                }
            }
        }
        let n = batch.len();
        for &(ud, res, flags) in &batch {
            if ud != IGNORED {
                self.complete(ud, res, flags);
            }
        }
        batch.clear();
        *self.completions.borrow_mut() = batch;
        n
    }

    /// Deliver one completion to the operation `user_data` names; one whose
    /// operation is gone (an older generation of the slot) is dropped.
    fn complete(&self, user_data: u64, res: i32, flags: u32) {
        let more = cqueue::more(flags);
        let op = {
            let mut ops = self.ops.borrow_mut();
            if more {
                match ops.get(user_data) {
                    Some(Op::Accept(l)) => Op::Accept(l.clone()),
                    _ => return,
                }
            } else {
                match ops.remove(user_data) {
                    Some(op) => op,
                    None => return,
                }
            }
        };
        let res = self.faults.completion(&op, res, flags);
        match op {
            Op::Recv(sock, own) => self.on_recv(&sock, res, flags, own),
            Op::Send(sock) => self.on_send(&sock, res),
            Op::Linger { sock, .. } => self.on_linger(&sock, res),
            Op::Accept(l) => self.on_accept(&l, res, more),
            Op::OneShot(os) => {
                os.result.set(Some(res));
                os.payload.borrow_mut().take();
                if let Some(w) = os.waker.borrow_mut().take() {
                    w.wake();
                }
            }
            Op::EventFd => {
                self.eventfd.pending.store(false, std::sync::atomic::Ordering::Relaxed);
                let waiters = std::mem::take(&mut *self.eventfd_waiters.borrow_mut());
                super::executor::urgently(|| {
                    for w in waiters {
                        w.wake();
                    }
                });
                self.arm_eventfd();
            }
        }
    }

    fn on_recv(&self, sock: &Rc<Sock>, res: i32, flags: u32, own: Option<Box<[u8]>>) {
        let mut st = sock.st.borrow_mut();
        st.recv_op = None;
        st.recv_private = false;
        st.ops -= 1;
        let mut again = false;
        if res <= 0 {
            match &own {
                Some(_) => self.recv_private_buffers.set(self.recv_private_buffers.get() - 1),
                // A pool buffer named with no data in it goes straight back.
                None => {
                    if let Some(bid) = cqueue::buffer_select(flags) {
                        self.buffers.free.set(self.buffers.free.get() - 1);
                        self.buffers.push(bid);
                    }
                }
            }
        }
        if res > 0 {
            let buf = match own {
                Some(b) => RxBuf::Own(b),
                None => {
                    let bid = cqueue::buffer_select(flags).expect("a receive with data names its buffer");
                    self.buffers.free.set(self.buffers.free.get() - 1);
                    RxBuf::Pool(bid)
                }
            };
            let chunk = RxChunk {
                buf,
                len: res as u32,
                off: 0,
            };
            if st.dropped {
                self.recycle(chunk);
            } else {
                st.rx.push_back(chunk);
                st.rx_bytes += res as usize;
                // Read ahead while the socket holds little and the pool has plenty.
                again = st.rx_bytes < RECV_QUEUE_LIMIT && self.buffers.free.get() >= POOL_LOW_WATER;
            }
        } else if res == 0 {
            st.rx_eof = true;
        } else if res == -libc::ENOBUFS {
            // The pool emptied between posting and receiving: post again
            // (into a buffer of its own if it is still empty).
            self.recv_no_buffers.set(self.recv_no_buffers.get() + 1);
            again = !st.dropped;
        } else if res == -libc::EAGAIN || res == -libc::EINTR {
            // Transient: nothing is wrong with the socket; receive again.
            again = !st.dropped;
        } else if res == -libc::ECANCELED {
            // A receive into the socket's own buffer cancelled because the
            // pool refilled: post it again, from the pool. (A released
            // socket's receive is cancelled too, and stays so.)
            again = own.is_some() && !st.dropped;
        } else {
            st.rx_err = Some(-res);
        }
        let waker = st.reader.take();
        drop(st);
        if again {
            self.arm_recv(sock);
        }
        if let Some(w) = waker {
            w.wake();
        }
        self.maybe_close(sock);
    }

    fn on_send(&self, sock: &Rc<Sock>, res: i32) {
        let mut st = sock.st.borrow_mut();
        st.send_op = None;
        st.ops -= 1;
        if res >= 0 {
            st.tx_off += res as usize;
            if st.tx_off == st.tx_inflight.len() {
                // All sent: an idle socket keeps no send buffer.
                let done = std::mem::take(&mut st.tx_inflight);
                st.tx_off = 0;
                if done.capacity() > 0 {
                    self.spare(done);
                }
            }
        } else if res != -libc::ECANCELED || st.tx_err.is_none() {
            st.tx_err = Some(if res == -libc::ECANCELED { libc::EPIPE } else { -res });
        }
        let more_to_send = st.tx_err.is_none() && st.tx_buffered() > 0;
        let waker = st.writer.take();
        drop(st);
        if more_to_send {
            self.start_send(sock);
        }
        if let Some(w) = waker {
            w.wake();
        }
        self.maybe_close(sock);
    }

    fn on_accept(&self, l: &Rc<Listen>, res: i32, more: bool) {
        let mut st = l.st.borrow_mut();
        if !more {
            st.op = None;
        }
        if res >= 0 {
            if st.dropped {
                // SAFETY: a descriptor accepted after the handle was dropped.
                unsafe { libc::close(res) };
            } else {
                st.queue.push_back(Ok(res));
                self.fd_opened();
            }
        } else if res != -libc::ECANCELED {
            st.queue.push_back(Err(-res));
        }
        let waker = st.waiter.take();
        let close = st.dropped && st.op.is_none();
        drop(st);
        if close {
            self.close_listener(l);
        }
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// The thread is ending: submit nothing more. Operations still in flight
    /// are cancelled by the kernel when the ring closes; their memory is
    /// never freed, so the kernel cannot write into freed memory.
    pub(crate) fn shutdown(&self) {
        let _ = self.ring.borrow_mut().submit();
        self.shut.set(true);
        self.ops.borrow_mut().forget_all();
        self.backlog.borrow_mut().clear();
    }
}

/// Hooks for the runtime's tests: completions the kernel would deliver in
/// rare cases, and what the pool holds.
#[cfg(test)]
impl Driver {
    /// Complete a pool receive of `sock` that was never submitted, as if the
    /// kernel had ended it with `res` and `flags` (the socket has no receive
    /// in flight).
    pub(super) fn complete_unsubmitted_recv(&self, sock: &Rc<Sock>, res: i32, flags: u32) {
        let key = self.ops.borrow_mut().insert(Op::Recv(sock.clone(), None));
        {
            let mut st = sock.st.borrow_mut();
            assert!(st.recv_op.is_none(), "a receive is in flight");
            st.recv_op = Some(key);
            st.ops += 1;
        }
        self.complete(key, res, flags);
    }

    /// Take the first received chunk of `sock` back unread, as if the
    /// kernel still held its pool buffer and no completion had named it;
    /// returns that buffer's id.
    pub(super) fn unsee_first_chunk(&self, sock: &Rc<Sock>) -> u16 {
        let mut st = sock.st.borrow_mut();
        let c = st.rx.pop_front().expect("a received chunk");
        st.rx_bytes -= (c.len - c.off) as usize;
        match c.buf {
            RxBuf::Pool(bid) => {
                self.buffers.free.set(self.buffers.free.get() + 1);
                bid
            }
            RxBuf::Own(_) => panic!("a pool chunk"),
        }
    }

    /// Buffers handed to the kernel's ring since it was set up.
    pub(super) fn pool_pushes(&self) -> u16 {
        self.buffers.tail.get()
    }
}
