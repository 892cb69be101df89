//! The two servers the side-by-side measures compare, shared by
//! `benches/server.rs` and `examples/server_cpu.rs`: the project's server
//! as `rates -q serve` runs it with nothing configured (metrics, the fault
//! layer and the connection limits present, no access log), and a bare
//! axum server answering `GET /rates` with the same bytes. Each runs on a
//! multi-thread runtime of its own, as `rates serve` does, whose threads
//! carry the server's name (so their CPU can be told apart).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use axum::body::Bytes;
use rates_server::{ServerOptions, Shared};

/// The request both servers are measured with.
pub const REQUEST: &[u8] = b"GET /rates?base=USD HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n";

/// A server on its runtime's thread: where it listens, what stops it (the
/// sender) and waits for it (the thread).
pub struct Running {
    pub addr: SocketAddr,
    /// Its runtime's threads' name, at most 15 bytes (a thread's `comm`).
    pub name: &'static str,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Running {
    pub fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

fn start<F, Fut>(name: &'static str, serve: F) -> std::io::Result<Running>
where
    F: FnOnce(tokio::net::TcpListener, tokio::sync::oneshot::Receiver<()>) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name(name).build()?;
    let listener = {
        let _in_runtime = rt.enter();
        rates_server::listen(SocketAddr::from(([127, 0, 0, 1], 0)))?
    };
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let thread = std::thread::Builder::new().name(name.into()).spawn(move || rt.block_on(serve(listener, stopped)))?;
    Ok(Running { addr, name, stop, thread })
}

/// The project's server, as `rates -q serve` runs it with no faults.
pub fn ours() -> std::io::Result<Running> {
    start("rates_usd", |listener, stop| async move {
        let shared = Shared::new(rates_core::Dataset::embedded(), ServerOptions::default()).expect("default options");
        let _ = rates_server::run(listener, shared, async {
            let _ = stop.await;
        })
        .await;
    })
}

/// A bare axum server answering `GET /rates` with `body`: no middleware,
/// metrics, limits or faults.
pub fn bare(body: Bytes) -> std::io::Result<Running> {
    start("bare_axum", move |listener, stop| async move {
        let app = axum::Router::new().route(
            "/rates",
            axum::routing::get(move || {
                let body = body.clone();
                async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], body) }
            }),
        );
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stop.await;
            })
            .await;
    })
}

/// The body `server` answers [`REQUEST`] with.
pub fn body_of(server: &Running) -> std::io::Result<Bytes> {
    let mut conn = TcpStream::connect(server.addr)?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    conn.write_all(REQUEST)?;
    let mut buf = vec![0u8; 64 * 1024];
    let (head, total) = read_answer(&mut conn, &mut buf)?;
    Ok(Bytes::copy_from_slice(&buf[head..total]))
}

/// Reads one answer with a `content-length` into `buf`: where its body
/// starts and where it ends.
pub fn read_answer(conn: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<(usize, usize)> {
    let mut filled = 0;
    let head = loop {
        filled += read_some(conn, &mut buf[filled..])?;
        if let Some(end) = buf[..filled].windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if filled == buf.len() {
            return Err(std::io::Error::other("an answer head larger than the buffer"));
        }
    };
    let text = String::from_utf8_lossy(&buf[..head]).to_ascii_lowercase();
    let length = text
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .ok_or_else(|| std::io::Error::other("an answer without content-length"))?;
    let total = head + length;
    if total > buf.len() {
        return Err(std::io::Error::other("an answer larger than the buffer"));
    }
    while filled < total {
        filled += read_some(conn, &mut buf[filled..])?;
    }
    Ok((head, total))
}

/// One read into `buf`; an end of stream is an error.
fn read_some(conn: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    match conn.read(buf)? {
        0 => Err(std::io::ErrorKind::UnexpectedEof.into()),
        got => Ok(got),
    }
}
