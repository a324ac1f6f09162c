//! A listener on loopback that hands every connection to a function of the test's own, on a thread of
//! its own: the base of the sink and of the tests' raw next hops. Dropping it stops accepting, closes
//! the listener, shuts down the connections still open and waits (bounded) for the accept thread.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// How long the accept loop waits after a failed accept (e.g. out of file descriptors).
const RETRY: Duration = Duration::from_millis(10);
/// The bound of the connection that wakes the accept loop when the acceptor is dropped.
const WAKE: Duration = Duration::from_secs(5);

type Open = Arc<Mutex<Vec<(usize, TcpStream)>>>;

fn lock(open: &Open) -> MutexGuard<'_, Vec<(usize, TcpStream)>> {
    open.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running listener; see the module docs.
pub struct Acceptor {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    open: Open,
    accept: Option<JoinHandle<()>>,
}

impl Acceptor {
    /// Listens on `addr` (port 0: an ephemeral one) and runs `serve(n, stream)` for every
    /// connection, `n` counting from 0 in accept order. When `serve` returns the connection is shut
    /// down, also if `serve` kept another handle of it.
    pub fn bind<F>(addr: SocketAddr, serve: F) -> io::Result<Acceptor>
    where
        F: Fn(usize, TcpStream) + Send + Sync + 'static,
    {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let open: Open = Arc::default();
        let serve = Arc::new(serve);
        let (flag, conns) = (stop.clone(), open.clone());
        let accept = thread::spawn(move || {
            let mut next = 0;
            loop {
                match listener.accept() {
                    Ok((stream, _)) => {
                        if flag.load(Ordering::SeqCst) {
                            break;
                        }
                        let n = next;
                        next += 1;
                        if let Ok(clone) = stream.try_clone() {
                            lock(&conns).push((n, clone));
                        }
                        let (serve, conns) = (serve.clone(), conns.clone());
                        thread::spawn(move || {
                            serve(n, stream);
                            lock(&conns).retain(|(k, s)| {
                                if *k == n {
                                    let _ = s.shutdown(Shutdown::Both);
                                }
                                *k != n
                            });
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) if flag.load(Ordering::SeqCst) => break,
                    Err(_) => thread::sleep(RETRY),
                }
            }
        });
        Ok(Acceptor {
            addr,
            stop,
            open,
            accept: Some(accept),
        })
    }

    /// [`Acceptor::bind`] on 127.0.0.1, an ephemeral port; panics if that fails.
    pub fn start<F>(serve: F) -> Acceptor
    where
        F: Fn(usize, TcpStream) + Send + Sync + 'static,
    {
        Acceptor::bind(SocketAddr::from(([127, 0, 0, 1], 0)), serve).expect("listen on 127.0.0.1")
    }

    /// Connections open right now (accepted, their `serve` not yet returned).
    pub fn open(&self) -> usize {
        lock(&self.open).len()
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // The accept loop waits in accept(): a connection of our own wakes it to see the flag.
        let woke = TcpStream::connect_timeout(&self.addr, WAKE).is_ok();
        if let Some(h) = self.accept.take()
            && woke
        {
            let _ = h.join();
        }
        for (_, s) in lock(&self.open).drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}
