//! A pool of threads fed over a crossbeam channel, in the manner of tiny_http: a few threads wait from
//! the start, more are started when every thread is busy (up to a maximum: the sum of the virtual
//! servers' MaxConnections for SMTP sessions, MaxOutConnections for deliveries), and threads beyond the
//! minimum end after a minute without work. Each thread keeps a per-thread state `S` from one job to the
//! next (a session thread's buffers).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

/// How long an extra thread waits for work before it ends.
const IDLE: Duration = Duration::from_secs(60);
/// Stack size of a session thread: sessions keep their buffers on the heap.
const STACK: usize = 256 * 1024;

type Handler<J, S> = dyn Fn(J, &mut S) + Send + Sync;

struct Inner<J, S> {
    rx: Receiver<J>,
    idle: AtomicUsize,
    threads: AtomicUsize,
    min: usize,
    max: usize,
    name: &'static str,
    handler: Box<Handler<J, S>>,
}

/// The pool; dropping it lets the threads finish their current job and end.
pub struct Pool<J: Send + 'static, S: Default + 'static> {
    tx: Sender<J>,
    inner: Arc<Inner<J, S>>,
}

impl<J: Send + 'static, S: Default + 'static> Pool<J, S> {
    /// A pool running `handler` for each job, with `min` threads started now and at most `max`.
    pub fn new(
        name: &'static str,
        min: usize,
        max: usize,
        handler: impl Fn(J, &mut S) + Send + Sync + 'static,
    ) -> Pool<J, S> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let inner = Arc::new(Inner {
            rx,
            idle: AtomicUsize::new(0),
            threads: AtomicUsize::new(0),
            min,
            max: max.max(1),
            name,
            handler: Box::new(handler),
        });
        for _ in 0..min.min(max) {
            spawn(&inner, true);
        }
        Pool { tx, inner }
    }

    /// Hands a job to an idle thread, starting one if none is idle. Each job reserves an idle thread
    /// (or a new one) as it is submitted, so a burst of connections never waits behind busy sessions.
    pub fn submit(&self, job: J) {
        let reserved = self
            .inner
            .idle
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |i| i.checked_sub(1))
            .is_ok();
        if !reserved && self.inner.threads.load(Ordering::Acquire) < self.inner.max {
            spawn(&self.inner, false);
        }
        // The receiver lives as long as `inner`, which we hold: sending cannot fail.
        let _ = self.tx.send(job);
    }

    /// Threads alive now.
    pub fn threads(&self) -> usize {
        self.inner.threads.load(Ordering::Acquire)
    }
}

/// Starts a thread, counted idle (waiting for work) or busy (started for a job just submitted).
fn spawn<J: Send + 'static, S: Default + 'static>(inner: &Arc<Inner<J, S>>, idle: bool) {
    inner.threads.fetch_add(1, Ordering::AcqRel);
    if idle {
        inner.idle.fetch_add(1, Ordering::AcqRel);
    }
    let me = Arc::clone(inner);
    let started = thread::Builder::new()
        .name(inner.name.into())
        .stack_size(STACK)
        .spawn(move || worker(me));
    if let Err(e) = started {
        inner.threads.fetch_sub(1, Ordering::AcqRel);
        if idle {
            inner.idle.fetch_sub(1, Ordering::AcqRel);
        }
        log::error!("cannot start a {} thread: {e}", inner.name);
    }
}

fn worker<J, S: Default>(inner: Arc<Inner<J, S>>) {
    let mut bufs = S::default();
    loop {
        match inner.rx.recv_timeout(IDLE) {
            Ok(job) => {
                // The submitter already took this thread off the idle count.
                // A panic in one job must not take the thread's accounting with it.
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    (inner.handler)(job, &mut bufs)
                }));
                if r.is_err() {
                    log::error!("a {} thread panicked; its job was abandoned", inner.name);
                    bufs = S::default();
                }
                inner.idle.fetch_add(1, Ordering::AcqRel);
            }
            Err(RecvTimeoutError::Timeout) => {
                // Leave only if still counted idle: a submit may have just reserved this thread.
                if inner.threads.load(Ordering::Acquire) > inner.min
                    && inner
                        .idle
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |i| i.checked_sub(1))
                        .is_ok()
                {
                    break;
                }
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    inner.threads.fetch_sub(1, Ordering::AcqRel);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn runs_jobs_concurrently_and_grows() {
        let (done_tx, done_rx) = mpsc::channel();
        let (go_tx, go_rx) = crossbeam_channel::unbounded::<()>();
        let pool = Pool::new("test", 1, 4, move |n: u32, _b: &mut ()| {
            let _ = go_rx.recv_timeout(Duration::from_secs(5));
            let _ = done_tx.send(n);
        });
        for n in 0..4 {
            pool.submit(n);
        }
        assert!(pool.threads() >= 4, "one thread per concurrent job");
        for _ in 0..4 {
            go_tx.send(()).unwrap();
        }
        let mut got: Vec<u32> = (0..4)
            .map(|_| done_rx.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        got.sort();
        assert_eq!(got, vec![0, 1, 2, 3]);
    }
}
