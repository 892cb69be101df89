//! The floor of a connection storm on this machine, with no HTTP library
//! on either side: N clients connect at once to a bare tokio server, each
//! sends one small request, the server answers after a latency on
//! tokio's timer, and the client reads the answer.
//!
//! ```text
//! storm_floor serve                      # prints its address, serves
//! storm_floor ADDR [N] [MS] [--reserve]  # one storm from a fresh process
//! storm_floor [N] [MS]                   # server and 5 storms in-process
//! ```
//!
//! A storm from a fresh process shows what the descriptor table costs
//! (`--reserve` grows it first, as `rates` does at start-up).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--reserve") {
        concur::descriptors::reserve(16_384)?;
    }
    let target: Option<SocketAddr> = args.first().and_then(|a| a.parse().ok());
    let numbers: Vec<u64> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let n = numbers.first().copied().unwrap_or(2000) as usize;
    let latency = Duration::from_millis(numbers.get(1).copied().unwrap_or(50));

    if let Some(addr) = target {
        return storm(addr, n);
    }
    let server = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let listener = {
        let _in_runtime = server.enter();
        rates_server::listen(([127, 0, 0, 1], 0).into())?
    };
    let addr = listener.local_addr()?;
    server.spawn(serve(listener, latency));
    if args.first().is_some_and(|a| a == "serve") {
        println!("{addr}");
        std::thread::park();
        return Ok(());
    }
    for _ in 0..5 {
        storm(addr, n)?;
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

async fn serve(listener: tokio::net::TcpListener, latency: Duration) {
    while let Ok((mut s, _)) = listener.accept().await {
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok(1..) = s.read(&mut buf).await {
                tokio::time::sleep(latency).await;
                if s.write_all(ANSWER).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// One storm of `n` connections on a client runtime of two threads.
fn storm(addr: SocketAddr, n: usize) -> std::io::Result<()> {
    let client = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let started = Instant::now();
    let (last_start, open) = client.block_on(async move {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..n {
            set.spawn(async move {
                let start = started.elapsed();
                let mut s = tokio::net::TcpStream::connect(addr).await?;
                s.set_nodelay(true)?;
                s.write_all(b"GET /rates HTTP/1.1\r\nhost: x\r\n\r\n").await?;
                let mut buf = [0u8; 512];
                match s.read(&mut buf).await? {
                    0 => Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof)),
                    _ => Ok::<_, std::io::Error>((start, s)),
                }
            });
        }
        let mut last_start = Duration::ZERO;
        let mut open = Vec::with_capacity(n);
        while let Some(done) = set.join_next().await {
            if let Ok(Ok((start, s))) = done {
                last_start = last_start.max(start);
                open.push(s);
            }
        }
        (last_start, open)
    });
    let answered = started.elapsed();
    let ok = open.len();
    drop(open);
    drop(client);
    println!(
        "{} of {n} answered in {answered:.1?} (the last began at {last_start:.1?}), closed by {:.1?}",
        ok,
        started.elapsed()
    );
    Ok(())
}
