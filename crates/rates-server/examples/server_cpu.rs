//! The server's own CPU per request against a bare axum server answering
//! the same bytes, which `benches/server.rs` shows as throughput. On a
//! machine where the load generator shares the cores, throughput swings
//! with the scheduler; the CPU the server's runtime threads spend per
//! answer does not, so the ratio of the two servers' costs is the steadier
//! figure.
//!
//! Each server runs on a multi-thread runtime of its own, as `rates serve`
//! does, whose threads are named for it; their CPU is read from
//! `/proc/self/task/*/schedstat` (nanoseconds on a CPU) before and after a
//! load of `REQUESTS` keep-alive `GET /rates?base=USD`s from 1, 4 and 64
//! client threads, each on its own connection. The two servers alternate,
//! round after round.
//!
//! ```text
//! cargo run --release -p rates-server --example server_cpu -- [ROUNDS] [REQUESTS] [CONNECTIONS...]
//! ```
//!
//! Linux only (it reads `/proc`).

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use side_by_side::{REQUEST, Running, read_answer};

mod side_by_side;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let numbers: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let rounds = numbers.first().copied().unwrap_or(5);
    let requests = numbers.get(1).copied().unwrap_or(20_000);
    let connections: Vec<usize> = match numbers.get(2..) {
        Some(c) if !c.is_empty() => c.iter().map(|&c| c as usize).collect(),
        _ => vec![1, 4, 64],
    };

    let ours = side_by_side::ours()?;
    let bare = side_by_side::bare(side_by_side::body_of(&ours)?)?;

    println!("server CPU per answer (µs), {requests} requests a run, {rounds} rounds, alternated");
    println!("(median, range; runs: times the server's threads were scheduled, per answer; wall: µs per answer)");
    println!(
        "{:>11}  {:>18}  {:>18}  {:>16}  {:>5}  {:>5}  {:>6}  {:>6}",
        "connections", "ours", "bare axum", "bare/ours", "runs", "bare", "wall", "bare"
    );
    for clients in connections {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            a.push(cost(&ours, clients, requests)?);
            b.push(cost(&bare, clients, requests)?);
        }
        let ratios: Vec<f64> = a.iter().zip(&b).map(|(o, x)| x.0 / o.0).collect();
        let cpu = |v: &[(f64, f64, f64)]| show(&v.iter().map(|c| c.0).collect::<Vec<_>>());
        let runs = |v: &[(f64, f64, f64)]| median(&v.iter().map(|c| c.1).collect::<Vec<_>>());
        let wall = |v: &[(f64, f64, f64)]| median(&v.iter().map(|c| c.2).collect::<Vec<_>>());
        println!(
            "{clients:>11}  {:>18}  {:>18}  {:>16}  {:>5.2}  {:>5.2}  {:>6.1}  {:>6.1}",
            cpu(&a),
            cpu(&b),
            show(&ratios),
            runs(&a),
            runs(&b),
            wall(&a),
            wall(&b)
        );
    }
    ours.stop();
    bare.stop();
    Ok(())
}

fn sorted(xs: &[f64]) -> Vec<f64> {
    let mut s = xs.to_vec();
    s.sort_by(f64::total_cmp);
    s
}

fn median(xs: &[f64]) -> f64 {
    sorted(xs)[xs.len() / 2]
}

/// Median and range of `xs`.
fn show(xs: &[f64]) -> String {
    let s = sorted(xs);
    format!("{:.2} ({:.2}–{:.2})", s[s.len() / 2], s[0], s[s.len() - 1])
}

/// CPU nanoseconds and the times scheduled to run (the first and third
/// fields of `schedstat`) of this process's threads named `name`.
fn cpu_of(name: &str) -> std::io::Result<(u64, u64)> {
    let (mut cpu, mut runs) = (0, 0);
    for task in std::fs::read_dir("/proc/self/task")? {
        let dir = task?.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim_end() == name {
            let stat = std::fs::read_to_string(dir.join("schedstat")).unwrap_or_default();
            let fields: Vec<u64> = stat.split_whitespace().filter_map(|n| n.parse().ok()).collect();
            cpu += fields.first().copied().unwrap_or(0);
            runs += fields.get(2).copied().unwrap_or(0);
        }
    }
    Ok((cpu, runs))
}

/// The server's CPU per answer in µs, the times its threads ran per
/// answer, and the wall time per answer in µs, for `requests` shared by
/// `clients`.
fn cost(server: &Running, clients: usize, requests: u64) -> std::io::Result<(f64, f64, f64)> {
    let each = requests / clients as u64;
    let before = cpu_of(server.name)?;
    let started = std::time::Instant::now();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..clients).map(|_| s.spawn(|| load(server.addr, each))).collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().unwrap_or_else(|_| Err(std::io::Error::other("a client panicked"))))
    })?;
    let wall = started.elapsed().as_secs_f64() * 1e6;
    let after = cpu_of(server.name)?;
    let answers = (each * clients as u64) as f64;
    Ok(((after.0 - before.0) as f64 / 1e3 / answers, (after.1 - before.1) as f64 / answers, wall / answers))
}

/// `n` requests on one keep-alive connection, each answer read whole.
fn load(addr: SocketAddr, n: u64) -> std::io::Result<()> {
    let mut conn = TcpStream::connect(addr)?;
    conn.set_nodelay(true)?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut buf = vec![0u8; 64 * 1024];
    for _ in 0..n {
        conn.write_all(REQUEST)?;
        read_answer(&mut conn, &mut buf)?;
    }
    Ok(())
}
