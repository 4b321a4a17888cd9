//! A fault-injecting TCP proxy between two endpoints on loopback: between a client and a
//! node, or on one directed link between two nodes. Faults, switched at any time:
//!
//! - **cut**: every open connection is closed and new ones are closed as soon as they
//!   are accepted (a peer sees a reset or an end of stream at once);
//! - **drop**: bytes are read and thrown away in both directions, connections stay open
//!   (a black hole: the sender sees nothing but silence). A TCP stream that lost bytes
//!   cannot go on, so `heal` closes every connection that dropped any;
//! - **delay**: every chunk waits this long before it is forwarded;
//! - **heal**: back to forwarding everything at once.
//!
//! `start(target, cuts)` also cuts each of the first `cuts` connections once a byte budget
//! (different for each) has passed through it in either direction, so cuts land inside
//! requests and inside replies, whatever the timing.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

const MODE_PASS: u8 = 0;
const MODE_DROP: u8 = 1;
const MODE_CUT: u8 = 2;

pub struct Proxy {
    pub address: SocketAddr,
    control: Arc<Control>,
}

/// What every connection of one proxy consults before forwarding a chunk.
struct Control {
    mode: AtomicU8,
    delay_us: AtomicU64,
    /// Connections cut by their byte budget.
    budget_cuts: AtomicUsize,
    links: Mutex<Vec<Arc<Link>>>,
    stopping: AtomicBool,
}

/// One proxied connection: both sockets, and what may still pass before a budget cut.
struct Link {
    client: TcpStream,
    server: TcpStream,
    budget: Option<usize>,
    passed: AtomicUsize,
    dropped_bytes: AtomicBool,
    control: Arc<Control>,
}

impl Proxy {
    /// A proxy that forwards everything to `target` until a fault is switched on.
    pub fn new(target: SocketAddr) -> Proxy {
        Proxy::start(target, 0)
    }

    /// Listens on a free loopback port and forwards each connection to `target`; the
    /// first `cuts` connections are each cut after their byte budget.
    pub fn start(target: SocketAddr, cuts: usize) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("the proxy binds");
        let address = listener.local_addr().expect("a bound listener has an address");
        let control = Arc::new(Control {
            mode: AtomicU8::new(MODE_PASS),
            delay_us: AtomicU64::new(0),
            budget_cuts: AtomicUsize::new(0),
            links: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
        });
        let accepting = control.clone();
        std::thread::spawn(move || accepting.accept(&listener, target, cuts));
        Proxy { address, control }
    }

    /// Connections cut by their byte budget so far.
    pub fn cuts(&self) -> usize {
        self.control.budget_cuts.load(Ordering::Acquire)
    }

    /// Closes every connection and refuses new ones until `heal`.
    pub fn cut(&self) {
        self.control.mode.store(MODE_CUT, Ordering::Release);
        for link in self.control.take_links(|_| true) {
            link.close();
        }
    }

    /// Silently throws away every byte in both directions until `heal`.
    pub fn drop_traffic(&self) {
        self.control.mode.store(MODE_DROP, Ordering::Release);
    }

    /// Holds every chunk for `delay` before forwarding it (until `heal`).
    pub fn delay(&self, delay: Duration) {
        let micros = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.control.delay_us.store(micros, Ordering::Release);
    }

    /// Forwards everything at once again; connections that dropped bytes are closed.
    pub fn heal(&self) {
        self.control.delay_us.store(0, Ordering::Release);
        self.control.mode.store(MODE_PASS, Ordering::Release);
        for link in self.control.take_links(|link| link.dropped_bytes.load(Ordering::Acquire)) {
            link.close();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.control.stopping.store(true, Ordering::Release);
        self.cut();
        // Wakes the accept loop so that it sees `stopping` and releases the port.
        let _ = TcpStream::connect(self.address);
    }
}

impl Control {
    fn accept(self: Arc<Control>, listener: &TcpListener, target: SocketAddr, cuts: usize) {
        for (index, client) in listener.incoming().enumerate() {
            if self.stopping.load(Ordering::Acquire) {
                return;
            }
            let Ok(client) = client else { continue };
            if self.mode.load(Ordering::Acquire) == MODE_CUT {
                let _ = client.shutdown(Shutdown::Both);
                continue;
            }
            let Ok(server) = TcpStream::connect(target) else {
                let _ = client.shutdown(Shutdown::Both);
                continue;
            };
            // Budgets from 1 KiB to about 20 KiB: a few requests to a dozen.
            let budget = (index < cuts).then_some(1024 + index * 7919 % 19_000);
            let link = Arc::new(Link {
                client,
                server,
                budget,
                passed: AtomicUsize::new(0),
                dropped_bytes: AtomicBool::new(false),
                control: self.clone(),
            });
            self.links.lock().unwrap_or_else(PoisonError::into_inner).push(link.clone());
            let upstream = link.clone();
            std::thread::spawn(move || upstream.pump(true));
            std::thread::spawn(move || link.pump(false));
        }
    }

    /// Removes and returns the links `select` picks (closed ones are forgotten too).
    fn take_links(&self, select: impl Fn(&Link) -> bool) -> Vec<Arc<Link>> {
        let mut links = self.links.lock().unwrap_or_else(PoisonError::into_inner);
        let (taken, kept): (Vec<_>, Vec<_>) = links.drain(..).partition(|link| select(link));
        *links = kept.into_iter().filter(|link| Arc::strong_count(link) > 1).collect();
        taken
    }
}

impl Link {
    fn pump(&self, upstream: bool) {
        let (mut from, mut to) = if upstream { (&self.client, &self.server) } else { (&self.server, &self.client) };
        let mut buffer = [0u8; 16 * 1024];
        loop {
            let read = match from.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(read) => read,
            };
            match self.control.mode.load(Ordering::Acquire) {
                MODE_CUT => break,
                MODE_DROP => {
                    self.dropped_bytes.store(true, Ordering::Release);
                    continue;
                }
                _ => {}
            }
            let delay_us = self.control.delay_us.load(Ordering::Acquire);
            if delay_us > 0 {
                std::thread::sleep(Duration::from_micros(delay_us));
            }
            let before = self.passed.fetch_add(read, Ordering::AcqRel);
            let allowed = self.budget.map_or(read, |budget| budget.saturating_sub(before).min(read));
            if to.write_all(&buffer[..allowed]).is_err() {
                break;
            }
            if allowed < read {
                if self.budget.is_some_and(|budget| before < budget) {
                    self.control.budget_cuts.fetch_add(1, Ordering::AcqRel);
                }
                break;
            }
        }
        self.close();
    }

    fn close(&self) {
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.server.shutdown(Shutdown::Both);
    }
}
