//! What the end-to-end tests of the `rates` binary share. Each test file
//! that needs it says `mod common;`; not every file uses every item.
#![allow(dead_code, clippy::unwrap_used)]

use std::time::Duration;

use assert_cmd::Command;

/// Every model of the issues, in the chapter's order. Written out, not
/// taken from `rates::Model::ALL`, so a model lost there fails the tests.
pub const MODELS: [&str; 8] = [
    "sync",
    "thread-per-item",
    "thread-pool",
    "two-way-queues",
    "process-pool",
    "dummy-pool",
    "async",
    "async-executor",
];

/// The `rates` binary, ignoring any `RATES_API` of the environment, killed
/// if it runs past a bound so a bug fails the test instead of hanging it.
pub fn rates() -> Command {
    let mut c = Command::cargo_bin("rates").unwrap();
    c.env_remove("RATES_API").timeout(Duration::from_secs(120));
    c
}

/// Runs `rates args` and gives its exit code (-1 if killed), stdout and stderr.
pub fn run(args: &[&str]) -> (i32, String, String) {
    let out = rates().args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}
