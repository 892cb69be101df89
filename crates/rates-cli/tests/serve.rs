//! `rates serve` end to end: it answers on the address it prints, and stops
//! cleanly (exit 0) on SIGTERM and on Ctrl-C.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use common::Served;
use nix::sys::signal::Signal;

mod common;

fn serve_then(signal: Signal) {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("rates"));
    cmd.args(["serve", "--addr", "127.0.0.1:0"]);
    let served = Served::start(cmd);

    let client = rates_core::BlockingClient::new(&served.url(), rates_core::ClientConfig::default()).unwrap();
    let req = rates_core::RateRequest {
        base: "USD".parse().unwrap(),
        symbols: rates_core::Currency::parse_list("PLN").unwrap(),
        date: rates_core::parse_date("2018-10-12").ok(),
    };
    assert_eq!(client.fetch(&req).unwrap().rates.values().next(), Some(&3.709694));
    assert_eq!(served.stop(signal).status.code(), Some(0), "{signal:?}");
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
