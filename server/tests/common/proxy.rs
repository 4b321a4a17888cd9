//! A TCP proxy that cuts connections mid-stream: the dropped connections of a flaky
//! network, between a client and a real node. The first `cuts` connections are each cut
//! once a byte budget (different for each) has passed through them in either direction,
//! so cuts land inside requests and inside replies, whatever the timing.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct Proxy {
    pub address: SocketAddr,
    cut: Arc<AtomicUsize>,
}

/// One proxied connection: both sockets, and what may still pass before the cut.
struct Link {
    client: TcpStream,
    server: TcpStream,
    budget: Option<usize>,
    passed: AtomicUsize,
    cut: Arc<AtomicUsize>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards each connection to `target`.
    pub fn start(target: SocketAddr, cuts: usize) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("the proxy binds");
        let address = listener.local_addr().expect("a bound listener has an address");
        let cut = Arc::new(AtomicUsize::new(0));
        let counter = cut.clone();
        std::thread::spawn(move || {
            for (index, client) in listener.incoming().enumerate() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(target) else { continue };
                // Budgets from 1 KiB to about 20 KiB: a few requests to a dozen.
                let budget = (index < cuts).then_some(1024 + index * 7919 % 19_000);
                let link = Arc::new(Link { client, server, budget, passed: AtomicUsize::new(0), cut: counter.clone() });
                let upstream = link.clone();
                std::thread::spawn(move || upstream.pump(true));
                std::thread::spawn(move || link.pump(false));
            }
        });
        Proxy { address, cut }
    }

    /// Connections cut so far.
    pub fn cuts(&self) -> usize {
        self.cut.load(Ordering::Acquire)
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
            let before = self.passed.fetch_add(read, Ordering::AcqRel);
            let allowed = self.budget.map_or(read, |budget| budget.saturating_sub(before).min(read));
            if to.write_all(&buffer[..allowed]).is_err() {
                break;
            }
            if allowed < read {
                if self.budget.is_some_and(|budget| before < budget) {
                    self.cut.fetch_add(1, Ordering::AcqRel);
                }
                break;
            }
        }
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.server.shutdown(Shutdown::Both);
    }
}
