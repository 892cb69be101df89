//! `rates serve` end to end: it answers on the address it prints, and stops
//! cleanly (exit 0) on SIGTERM and on Ctrl-C.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn serve_then(signal: Signal) {
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("rates"))
        .args(["serve", "--addr", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let url = line.split_whitespace().find(|w| w.starts_with("http://")).unwrap_or_else(|| panic!("{line}"));

    let client = rates::BlockingClient::new(url, rates::ClientConfig::default()).unwrap();
    let req = rates::RateRequest {
        base: "USD".parse().unwrap(),
        symbols: rates::Currency::parse_list("PLN").unwrap(),
        date: rates::parse_date("2018-10-12").ok(),
    };
    assert_eq!(client.fetch(&req).unwrap().rates.values().next(), Some(&3.709694));

    kill(Pid::from_raw(child.id() as i32), signal).unwrap();
    for _ in 0..200 {
        if let Some(status) = child.try_wait().unwrap() {
            assert_eq!(status.code(), Some(0), "{signal:?}");
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("rates serve did not stop within 10 s of {signal:?}");
}

#[test]
fn serves_and_stops_on_sigterm() {
    serve_then(Signal::SIGTERM);
}

#[test]
fn serves_and_stops_on_ctrl_c() {
    serve_then(Signal::SIGINT);
}

#[test]
fn bad_fault_options_exit_2() {
    let out = Command::new(assert_cmd::cargo::cargo_bin("rates"))
        .args(["serve", "--addr", "127.0.0.1:0", "--fail-rate", "7"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("'7'"));
}
