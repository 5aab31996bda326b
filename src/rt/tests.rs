use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};

use super::net::{Listener, Stream};
use super::*;
use super::{channel, executor, ring};
use std::io;

fn run<T: 'static>(f: impl std::future::Future<Output = T> + 'static) -> T {
    raise_nofile();
    Runtime::new(64).expect("runtime (memlock?)").block_on(f)
}

/// Some tests hold more sockets than a default soft `ulimit -n` of 1024.
fn raise_nofile() {
    // SAFETY: getrlimit/setrlimit on a struct we own.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn listener() -> (Listener, SocketAddr) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let addr = l.local_addr().unwrap();
    // SAFETY: a listening socket whose ownership moves into the listener.
    (unsafe { Listener::from_raw_fd(l.into_raw_fd()) }, addr)
}

#[test]
fn the_ring_is_set_up_without_interrupts() {
    let rt = Runtime::new(64).unwrap();
    assert_ne!(
        rt.ring_mode(),
        RingMode::Plain,
        "this kernel should take DEFER_TASKRUN or COOP_TASKRUN"
    );
}

#[test]
fn echo_over_loopback_moves_every_byte_in_order() {
    let total = run(async {
        let (l, addr) = listener();
        let server = spawn_local(async move {
            let mut s = l.accept().await.unwrap();
            let mut buf = vec![0u8; 7000];
            let mut n = 0;
            loop {
                let k = s.read(&mut buf).await.unwrap();
                if k == 0 {
                    break;
                }
                s.write_all(&buf[..k]).await.unwrap();
                n += k;
            }
            s.close().await.unwrap();
            n
        });
        let mut c = Stream::connect(addr).await.unwrap();
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut got = Vec::new();
        let mut rbuf = vec![0u8; 50_000];
        let mut sent = 0;
        while sent < data.len() {
            let end = (sent + 100_000).min(data.len());
            c.write_all(&data[sent..end]).await.unwrap();
            sent = end;
            while got.len() < sent {
                let k = c.read(&mut rbuf).await.unwrap();
                assert!(k > 0);
                got.extend_from_slice(&rbuf[..k]);
            }
        }
        c.close().await.unwrap();
        let k = c.read(&mut rbuf).await.unwrap();
        assert_eq!(k, 0, "EOF after the server closed");
        assert_eq!(got, data);
        server.await
    });
    assert_eq!(total, 1_000_000);
}

#[test]
fn timers_fire_in_order_and_timeout_cuts_a_stuck_future() {
    run(async {
        let t0 = Instant::now();
        let order = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let mut tasks = Vec::new();
        for (i, ms) in [(0, 30u64), (1, 10), (2, 20)] {
            let o = order.clone();
            tasks.push(spawn_local(async move {
                sleep(Duration::from_millis(ms)).await;
                o.borrow_mut().push(i);
            }));
        }
        for t in tasks {
            t.await;
        }
        assert_eq!(*order.borrow(), vec![1, 2, 0]);
        assert!(t0.elapsed() >= Duration::from_millis(30));
        let r = timeout(Duration::from_millis(20), futures_lite::future::pending::<()>()).await;
        assert_eq!(r, Err(Elapsed));
        let r = timeout(Duration::from_secs(5), async { 7 }).await;
        assert_eq!(r, Ok(7));
    });
}

#[test]
fn a_dropped_task_is_cancelled_and_a_detached_one_runs() {
    run(async {
        let hits = std::rc::Rc::new(std::cell::Cell::new(0));
        let h = hits.clone();
        let t = spawn_local(async move {
            sleep(Duration::from_millis(20)).await;
            h.set(h.get() + 1);
        });
        drop(t);
        let h = hits.clone();
        spawn_local(async move {
            sleep(Duration::from_millis(20)).await;
            h.set(h.get() + 10);
        })
        .detach();
        sleep(Duration::from_millis(60)).await;
        assert_eq!(hits.get(), 10);
    });
}

#[test]
fn shared_channel_wakes_a_sleeping_thread() {
    let (tx, rx) = shared_channel::<u64>();
    let (back_tx, back_rx) = shared_channel::<u64>();
    let h = Builder::new("echo")
        .spawn(move || async move {
            let mut sum = 0;
            while let Some(v) = rx.recv().await {
                sum += v;
                back_tx.send(v * 2).unwrap();
            }
            sum
        })
        .unwrap();
    let got = run(async move {
        let mut got = 0;
        for i in 1..=100u64 {
            tx.send(i).unwrap();
            got += back_rx.recv().await.unwrap();
        }
        drop(tx);
        got
    });
    assert_eq!(got, 2 * 5050);
    assert_eq!(h.join().unwrap(), 5050);
}

#[test]
fn connect_to_a_closed_port_fails_fast() {
    run(async {
        let (l, addr) = listener();
        drop(l);
        let e = Stream::connect_timeout(addr, Duration::from_secs(2))
            .await
            .err()
            .expect("refused");
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
    });
}

#[test]
fn many_idle_connections_hold_no_receive_buffer() {
    run(async {
        let (l, addr) = listener();
        let mut clients = Vec::new();
        let mut servers = Vec::new();
        // More connections than receive buffers, each with a little data queued.
        for _ in 0..600 {
            let mut c = Stream::connect(addr).await.unwrap();
            c.write_all(b"x").await.unwrap();
            clients.push(c);
            servers.push(l.accept().await.unwrap());
        }
        let mut b = [0u8; 4];
        for s in servers.iter_mut() {
            assert_eq!(s.read(&mut b).await.unwrap(), 1);
        }
        assert_eq!(servers.iter().map(|s| s.buffered_read()).sum::<usize>(), 0);
    });
}

#[test]
fn peers_that_stall_with_the_pool_full_never_stop_another_connection() {
    run(async {
        let (l, addr) = listener();
        let mut clients = Vec::new();
        let mut servers = Vec::new();
        // 300 connections each with 40 KiB waiting: more than the whole pool.
        let blob = vec![7u8; 40 * 1024];
        for _ in 0..300 {
            let mut c = Stream::connect(addr).await.unwrap();
            c.write_all(&blob).await.unwrap();
            c.flush().await.unwrap();
            clients.push(c);
            let mut s = l.accept().await.unwrap();
            let mut one = [0u8; 1];
            // Read one byte: the socket now reads ahead and holds buffers.
            assert_eq!(s.read(&mut one).await.unwrap(), 1);
            servers.push(s);
        }
        sleep(Duration::from_millis(50)).await;
        let held: usize = servers.iter().map(|s| s.buffered_read()).sum();
        assert!(held > 0);
        // A new connection is still served, from a buffer of its own if need be.
        let mut c = Stream::connect(addr).await.unwrap();
        c.write_all(b"hello").await.unwrap();
        let mut s = l.accept().await.unwrap();
        let mut buf = [0u8; 16];
        let n = timeout(Duration::from_secs(2), s.read(&mut buf))
            .await
            .expect("read in time")
            .unwrap();
        assert_eq!(&buf[..n], b"hello");
        // And every stalled one can still be read to the end.
        for s in servers.iter_mut() {
            let mut got = 1;
            let mut b = vec![0u8; 16 * 1024];
            while got < blob.len() {
                got += s.read(&mut b).await.unwrap();
            }
            assert_eq!(got, blob.len());
        }
    });
}

#[test]
fn a_dropped_listener_stops_listening_even_when_the_runtime_ends_at_once() {
    let addr = run(async {
        let (l, addr) = listener();
        let acceptor = spawn_local(async move {
            let _ = l.accept().await;
        });
        // Let the multishot accept be submitted, then drop it and end.
        sleep(Duration::from_millis(10)).await;
        drop(acceptor);
        addr
    });
    let refused = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500));
    assert!(refused.is_err(), "the listener still accepts after it was dropped");
}

/// A connected pair on loopback: (client, server).
async fn pair() -> (Stream, Stream) {
    let (l, addr) = listener();
    let c = Stream::connect(addr).await.unwrap();
    let s = l.accept().await.unwrap();
    (c, s)
}

#[test]
fn a_transient_receive_error_is_retried_not_kept() {
    run(async {
        for err in [libc::EAGAIN, libc::EINTR, libc::ENOBUFS] {
            let (mut c, mut s) = pair().await;
            executor::with_current(|rt| rt.driver.complete_unsubmitted_recv(s.sock(), -err, 0));
            c.write_all(b"hi").await.unwrap();
            let mut buf = [0u8; 8];
            let n = timeout(Duration::from_secs(2), s.read(&mut buf))
                .await
                .expect("read in time")
                .unwrap_or_else(|e| panic!("errno {err} kept as the socket's error: {e}"));
            assert_eq!(&buf[..n], b"hi", "errno {err}");
        }
    });
}

#[test]
fn a_pool_buffer_named_with_no_data_goes_back_to_the_pool() {
    // IORING_CQE_F_BUFFER and IORING_CQE_BUFFER_SHIFT (linux/io_uring.h).
    const CQE_F_BUFFER: u32 = 1;
    const CQE_BUFFER_SHIFT: u32 = 16;
    run(async {
        for (res, what) in [(0, "EOF"), (-libc::ECONNRESET, "error")] {
            let (mut c, s) = pair().await;
            c.write_all(b"x").await.unwrap();
            c.close().await.unwrap();
            // The byte lands in a pool buffer, then EOF; nothing stays in flight.
            executor::with_current(|rt| rt.driver.arm_recv(s.sock()));
            let t0 = Instant::now();
            while !(s.sock().st.borrow().rx_eof && s.buffered_read() == 1) {
                assert!(t0.elapsed() < Duration::from_secs(2), "the byte and EOF arrive");
                sleep(Duration::from_millis(1)).await;
            }
            // As if the kernel had named that buffer with `res` instead.
            let (bid, before) =
                executor::with_current(|rt| (rt.driver.unsee_first_chunk(s.sock()), rt.driver.pool_pushes()));
            s.sock().st.borrow_mut().rx_eof = false;
            let flags = CQE_F_BUFFER | (u32::from(bid) << CQE_BUFFER_SHIFT);
            executor::with_current(|rt| rt.driver.complete_unsubmitted_recv(s.sock(), res, flags));
            let after = executor::with_current(|rt| rt.driver.pool_pushes());
            assert_eq!(
                after,
                before.wrapping_add(1),
                "{what}: buffer {bid} given back to the pool"
            );
        }
    });
}

#[test]
fn a_refilled_pool_takes_back_the_sockets_waiting_on_their_own_buffers() {
    run(async {
        let (l, addr) = listener();
        // Stalled peers: each sends 40 KiB and is read one byte, until the
        // pool is dry and they hold buffers of their own.
        let blob = vec![7u8; 40 * 1024];
        let mut stalled = Vec::new();
        let mut clients = Vec::new();
        for _ in 0..120 {
            let mut c = Stream::connect(addr).await.unwrap();
            c.write_all(&blob).await.unwrap();
            c.flush().await.unwrap();
            let mut s = l.accept().await.unwrap();
            let mut one = [0u8; 1];
            assert_eq!(s.read(&mut one).await.unwrap(), 1);
            clients.push(c);
            stalled.push(s);
        }
        // Keep-alive connections waiting for their next request, posted
        // while the pool is dry.
        let mut waiting = Vec::new();
        let mut waiting_clients = Vec::new();
        for _ in 0..40 {
            let c = Stream::connect(addr).await.unwrap();
            let mut s = l.accept().await.unwrap();
            waiting.push(spawn_local(async move {
                let mut b = [0u8; 8];
                s.read(&mut b).await.unwrap()
            }));
            waiting_clients.push(c);
        }
        sleep(Duration::from_millis(20)).await;
        let private = || loop_stats().unwrap().recv_private_buffers;
        assert!(private() >= 40, "the pool was dry: {} private buffers", private());
        // The stalled peers are read out: their buffers refill the pool.
        for s in stalled.iter_mut() {
            let mut got = 1;
            let mut b = vec![0u8; 16 * 1024];
            while got < blob.len() {
                got += s.read(&mut b).await.unwrap();
            }
        }
        let t0 = Instant::now();
        while private() > 0 && t0.elapsed() < Duration::from_secs(5) {
            sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(private(), 0, "waiting sockets still hold buffers of their own");
        // And the waiting sockets are still served, from the pool.
        for c in waiting_clients.iter_mut() {
            c.write_all(b"ok").await.unwrap();
        }
        for w in waiting {
            assert_eq!(timeout(Duration::from_secs(2), w).await, Ok(2));
        }
    });
}

/// Drive `d` until `done` holds (at most ~2 s).
fn drive_until(d: &ring::Driver, done: impl Fn() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        d.enter(Some(Duration::from_millis(10)));
        d.dispatch();
    }
    assert!(done(), "the ring never delivered the completion");
}

fn pipe() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors we then own.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: fresh descriptors from pipe2.
    unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    }
}

#[test]
fn a_stale_cancel_never_touches_a_newer_operation() {
    use io_uring::{opcode, types};
    use std::os::fd::AsRawFd;
    let d = ring::Driver::new(8).unwrap();
    let (r1, w1) = pipe();
    let (r2, w2) = pipe();
    let mut b1 = Box::new([0u8; 8]);
    let mut b2 = Box::new([0u8; 8]);
    let read = |fd: &std::os::fd::OwnedFd, b: &mut [u8; 8]| {
        opcode::Read::new(types::Fd(fd.as_raw_fd()), b.as_mut_ptr(), 8).build()
    };
    // Operation A completes; its slot is free again.
    let (a, done_a) = d.submit_oneshot(read(&r1, &mut b1), None);
    assert_eq!(std::fs::File::from(w1).write_all_at_once(b"a"), 1);
    drive_until(&d, || done_a.result.get().is_some());
    // Operation B takes the same slot.
    let (b, done_b) = d.submit_oneshot(read(&r2, &mut b2), None);
    assert_eq!(a as u32, b as u32, "B reuses A's slot (else this proves nothing)");
    // A cancel meant for A, late: it must miss B.
    d.abandon(a);
    d.enter(Some(Duration::ZERO));
    d.dispatch();
    assert_eq!(std::fs::File::from(w2).write_all_at_once(b"b"), 1);
    drive_until(&d, || done_b.result.get().is_some());
    assert_eq!(done_b.result.get(), Some(1), "B was cancelled by a cancel meant for A");
    assert_eq!(b2[0], b'b');
}

trait WriteOnce {
    fn write_all_at_once(self, b: &[u8]) -> usize;
}

impl WriteOnce for std::fs::File {
    fn write_all_at_once(mut self, b: &[u8]) -> usize {
        std::io::Write::write(&mut self, b).unwrap()
    }
}

/// `conns` connections, opened at once, each echo `bytes` bytes through a
/// server in the same runtime, a ring of `entries` submission entries (and
/// four times as many completions). `setup` runs first, on the runtime.
/// Returns, per connection, the bytes echoed back (or the error it saw).
fn echo_many(
    entries: u32,
    conns: usize,
    bytes: usize,
    setup: impl FnOnce(&ring::Driver) + 'static,
) -> Vec<io::Result<usize>> {
    raise_nofile();
    Runtime::new(entries).unwrap().block_on(async move {
        executor::with_current(|rt| setup(&rt.driver));
        let (l, addr) = listener();
        let server = spawn_local(async move {
            loop {
                let Ok(mut s) = l.accept().await else { continue };
                spawn_local(async move {
                    let mut buf = vec![0u8; 4096];
                    while let Ok(k) = s.read(&mut buf).await {
                        if k == 0 || s.write_all(&buf[..k]).await.is_err() || s.flush().await.is_err() {
                            break;
                        }
                    }
                    let _ = s.close().await;
                })
                .detach();
            }
        });
        let clients: Vec<_> = (0..conns)
            .map(|i| {
                spawn_local(async move {
                    let mut c = Stream::connect(addr).await?;
                    let data: Vec<u8> = (0..bytes).map(|k| (k * 7 + i) as u8).collect();
                    let mut got = Vec::with_capacity(bytes);
                    let mut rbuf = vec![0u8; 4096];
                    for part in data.chunks(3000) {
                        c.write_all(part).await?;
                        c.flush().await?;
                        let want = got.len() + part.len();
                        while got.len() < want {
                            let k = c.read(&mut rbuf).await?;
                            if k == 0 {
                                return Err(io::ErrorKind::UnexpectedEof.into());
                            }
                            got.extend_from_slice(&rbuf[..k]);
                        }
                    }
                    c.close().await?;
                    assert_eq!(got, data, "connection {i}: the echo differs");
                    Ok(got.len())
                })
            })
            .collect();
        let mut out = Vec::new();
        for c in clients {
            out.push(c.await);
        }
        drop(server);
        out
    })
}

/// A submission queue of four entries and a completion queue of sixteen
/// under a thousand connections: the queue is full on most pushes and
/// completions overflow into the kernel's list, and every byte comes back.
#[test]
fn a_tiny_ring_under_a_thousand_connections_loses_nothing() {
    let out = echo_many(4, 1000, 10_000, |_| {});
    for (i, r) in out.iter().enumerate() {
        assert_eq!(r.as_ref().ok(), Some(&10_000), "connection {i}: {r:?}");
    }
}

/// The kernel refuses submits now and then (EBUSY while completions wait to
/// be reaped, ENOMEM, EAGAIN): the runtime neither panics nor loses an entry.
#[test]
fn refused_submits_on_a_full_queue_lose_nothing() {
    for (errno, conns) in [(libc::EBUSY, 1000), (libc::ENOMEM, 200), (libc::EAGAIN, 200)] {
        let out = echo_many(4, conns, 5_000, move |d| {
            d.fail_submits(ring::Fault {
                nth: 3,
                errno,
                repeat: true,
            })
        });
        for (i, r) in out.iter().enumerate() {
            assert_eq!(r.as_ref().ok(), Some(&5_000), "errno {errno}, connection {i}: {r:?}");
        }
    }
}

/// A failed operation's error reaches its own waiter, and no other: with
/// every 50th completion failed, each connection either echoes everything
/// or sees an error, and they all finish.
#[test]
fn a_failed_completion_reaches_its_waiter_and_the_rest_complete() {
    let out = echo_many(16, 300, 5_000, |d| {
        d.fail_completions(ring::Fault {
            nth: 50,
            errno: libc::ECONNRESET,
            repeat: true,
        })
    });
    let ok = out.iter().filter(|r| matches!(r, Ok(5_000))).count();
    let failed = out.iter().filter(|r| r.is_err()).count();
    assert_eq!(ok + failed, 300, "every connection finished: {out:?}");
    assert!(failed > 0, "some completions were failed");
    assert!(ok > 0, "the others went on");
}

/// Completions the kernel dropped (EBADR) stop the runtime with a message
/// naming it, instead of leaving their operations waiting forever.
#[test]
#[should_panic(expected = "io_uring dropped completions (EBADR)")]
fn dropped_completions_stop_the_runtime() {
    run(async {
        executor::with_current(|rt| {
            rt.driver.fail_submits(ring::Fault {
                nth: 1,
                errno: libc::EBADR,
                repeat: false,
            })
        });
        sleep(Duration::from_millis(5)).await;
    });
}

/// A sender dropped while the receiver's first `recv` binds to its thread
/// (after it saw the sender alive, before a sender could wake it) is not
/// missed: that `recv` ends with `None`.
#[test]
fn a_first_recv_never_misses_the_sender_dropped_meanwhile() {
    run(async {
        let (tx, rx) = shared_channel::<u32>();
        channel::BEFORE_BIND.with(|f| f.set(Some(Box::new(move || drop(tx)))));
        let r = woken_within(Duration::from_secs(1), rx.recv()).await;
        assert_eq!(r, Ok(None), "the sender's drop was missed");
    });
}

/// The fallbacks of older kernels, forced: a ring without DEFER_TASKRUN
/// (COOP_TASKRUN, Linux 5.19) and one without either moves every byte too.
#[test]
fn echo_over_the_fallback_rings_moves_every_byte() {
    for mode in [RingMode::CoopTaskrun, RingMode::Plain] {
        raise_nofile();
        let rt = Runtime::with_ring_mode(8, mode).unwrap();
        assert_eq!(rt.ring_mode(), mode);
        let out = rt.block_on(async {
            let (l, addr) = listener();
            let server = spawn_local(async move {
                let mut s = l.accept().await.unwrap();
                let mut buf = vec![0u8; 4096];
                loop {
                    let k = s.read(&mut buf).await.unwrap();
                    if k == 0 {
                        break;
                    }
                    s.write_all(&buf[..k]).await.unwrap();
                }
                s.close().await.unwrap();
            });
            let mut c = Stream::connect(addr).await.unwrap();
            let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
            let mut got = Vec::new();
            let mut rbuf = vec![0u8; 8192];
            for part in data.chunks(30_000) {
                c.write_all(part).await.unwrap();
                let want = got.len() + part.len();
                while got.len() < want {
                    let k = c.read(&mut rbuf).await.unwrap();
                    assert!(k > 0);
                    got.extend_from_slice(&rbuf[..k]);
                }
            }
            c.close().await.unwrap();
            server.await;
            got == data
        });
        assert!(out, "{mode:?}: the echo differs");
    }
}

/// A task's waker used on another runtime thread wakes that task, on its
/// own thread, not whatever task the other runtime keeps under the same key.
#[test]
fn a_waker_used_on_another_runtime_thread_wakes_its_own_task() {
    let (to_other, wakers) = shared_channel::<std::task::Waker>();
    let other = Builder::new("other")
        .spawn(move || async move {
            // A task of this runtime in the slot the waker names, waiting forever.
            let idle = spawn_local(futures_lite::future::pending::<()>());
            while let Some(w) = wakers.recv().await {
                w.wake();
            }
            drop(idle);
        })
        .unwrap();
    let woken = run(async move {
        let mut sent = false;
        let waited = std::future::poll_fn(|cx| {
            if sent {
                return std::task::Poll::Ready(());
            }
            sent = true;
            to_other.send(cx.waker().clone()).unwrap();
            std::task::Poll::Pending
        });
        let r = woken_within(Duration::from_secs(2), waited).await;
        drop(to_other);
        r
    });
    assert_eq!(woken, Ok(()), "the wake went to the other runtime's task");
    other.join().unwrap();
}

/// `fut`'s output if it completes within `d`, polled only when woken: unlike
/// [`timeout`], the deadline is looked at first, so a future nobody woke is
/// not given one more poll when time is up.
async fn woken_within<T>(d: Duration, fut: impl std::future::Future<Output = T>) -> Result<T, Elapsed> {
    let mut fut = std::pin::pin!(fut);
    let mut give_up = sleep(d);
    std::future::poll_fn(|cx| {
        if std::pin::Pin::new(&mut give_up).poll(cx).is_ready() {
            return std::task::Poll::Ready(Err(Elapsed));
        }
        fut.as_mut().poll(cx).map(Ok)
    })
    .await
}
