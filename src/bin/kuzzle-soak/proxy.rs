//! A TCP proxy on 127.0.0.1 that injects the faults of a network link between a node and
//! its Redis: `cut` (every connection reset, new ones refused with a reset, until `pass`),
//! `freeze` (connections stay open and nothing flows either way, until `pass`),
//! `blackhole` (the connections open now never pass a byte again, and are never closed:
//! half-open links; new ones pass), and `pass`. It runs on a thread and a runtime of its
//! own, so that it keeps forwarding whatever the test's runtime is doing.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Pass,
    Cut,
    Freeze,
}

pub struct FaultProxy {
    /// Where clients connect (on 127.0.0.1).
    pub port: u16,
    mode: watch::Sender<Link>,
    accepted: Arc<AtomicUsize>,
    /// Connections accepted before this many are dead for good.
    dead_before: Arc<AtomicUsize>,
}

impl FaultProxy {
    /// Forwards 127.0.0.1:`port` to 127.0.0.1:`target`.
    pub fn start(target: u16) -> FaultProxy {
        let (mode, watching) = watch::channel(Link::Pass);
        let accepted = Arc::new(AtomicUsize::new(0));
        let dead_before = Arc::new(AtomicUsize::new(0));
        let counted = accepted.clone();
        let dead = dead_before.clone();
        let (bound, port) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the proxy");
            runtime.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
                let _ = bound.send(listener.local_addr().expect("address").port());
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        continue;
                    };
                    let index = counted.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(serve(client, target, watching.clone(), index, dead.clone()));
                }
            });
        });
        let port = port.recv().expect("the proxy listens");
        FaultProxy {
            port,
            mode,
            accepted,
            dead_before,
        }
    }

    pub fn pass(&self) {
        self.mode.send_replace(Link::Pass);
    }

    /// Resets every connection, and every new one until `pass`.
    pub fn cut(&self) {
        self.mode.send_replace(Link::Cut);
    }

    /// Nothing flows either way; nobody is told.
    pub fn freeze(&self) {
        self.mode.send_replace(Link::Freeze);
    }

    /// Every connection open now stops passing bytes, for good, without being closed;
    /// connections opened from now on pass.
    pub fn blackhole(&self) {
        self.dead_before
            .store(self.accepted.load(Ordering::SeqCst), Ordering::SeqCst);
        // Wakes the pumps, so that they look at `dead_before`.
        self.mode.send_replace(Link::Pass);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // The thread's connections end with their peers; cut them now.
        self.mode.send_replace(Link::Cut);
    }
}

/// Closes with a reset (RST), not a FIN.
fn reset(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(std::time::Duration::ZERO));
    drop(stream);
}

async fn serve(
    client: TcpStream,
    target: u16,
    mut mode: watch::Receiver<Link>,
    index: usize,
    dead_before: Arc<AtomicUsize>,
) {
    // A connection made while frozen waits, open, for the link to come back.
    let current = match mode.wait_for(|m| *m != Link::Freeze).await {
        Ok(m) => *m,
        Err(_) => Link::Cut,
    };
    if current == Link::Cut {
        reset(client);
        return;
    }
    let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else {
        reset(client);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let dead = || index < dead_before.load(Ordering::SeqCst);
    let upstream = pump(&mut client_read, &mut server_write, mode.clone(), &dead);
    let downstream = pump(&mut server_read, &mut client_write, mode.clone(), &dead);
    tokio::select! {
        _ = upstream => {},
        _ = downstream => {},
    }
    if let (Ok(client), Ok(server)) = (
        client_read.reunite(client_write),
        server_read.reunite(server_write),
    ) {
        reset(client);
        reset(server);
    }
}

/// Copies one direction while the link passes; returns when it is cut or either side ends.
async fn pump(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Link>,
    dead: &impl Fn() -> bool,
) {
    let mut buf = vec![0; 64 * 1024];
    loop {
        if dead() {
            // A half-open link: open, silent, forever (until the proxy goes).
            std::future::pending::<()>().await;
        }
        let current = *mode.borrow_and_update();
        match current {
            Link::Cut => return,
            Link::Freeze => {
                if mode.changed().await.is_err() {
                    return;
                }
                continue;
            }
            Link::Pass => {}
        }
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            changed = mode.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        };
        // Bytes read before a freeze still go: what was in flight had left its sender.
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
