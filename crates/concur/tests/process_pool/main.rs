//! The process pool of the chapter's "process pools" and
//! "multiprocessing.dummy" listings (15, 16), tested with real worker
//! processes: order and completeness of results, chunking, the crash matrix
//! (a panic, an abort, an exit, `kill -9` from outside, while running a
//! task alone or inside a chunk), time limits, recycling, large payloads,
//! serialisation failures, initializers, shutdown, signals, answers
//! through shared memory, and that no worker outlives its pool or its
//! parent.
//!
//! Workers re-execute this test binary under the standard harness, the way
//! procspawn's test support does: a pool built here passes
//! `--exact <this test> --nocapture` to its workers ([`worker_args`]), so a
//! worker runs just the test that built its pool, and every test starts
//! with [`enter`], which serves tasks in a worker and returns anywhere
//! else. The same way, children the tests start in a special role (an
//! orphan maker, a parent for a SIGINT, a grandchild) run one test whose
//! [`enter`] plays that role.
//!
//! `cargo test -p concur --test process_pool -- recycle`

use std::path::Path;
use std::sync::Once;
use std::time::Duration;

use concur::{ProcessPool, ProcessPoolBuilder, Registry};

mod basics;
mod crashes;
mod processes;
mod shared_memory;
mod support;
mod tasks;

use processes::{make_orphans, sigint_parent};
use shared_memory::{Scribble, Tiny};
use tasks::*;

/// How long a task that hangs on purpose hangs: longer than any test.
const TEST_LIMIT: Duration = Duration::from_secs(30);
/// How long the whole run may take before a watchdog aborts it, so that a
/// hang fails CI instead of blocking it.
const SUITE_LIMIT: Duration = Duration::from_secs(120);
/// How long a test waits for something that should happen promptly.
const PROMPTLY: Duration = Duration::from_secs(20);
/// Set in a child of the test to make it build a pool and exit without
/// dropping it (see `workers_die_with_their_parent`).
const ORPHAN_MAKER: &str = "CONCUR_TEST_ORPHAN_MAKER";
/// Set in a program a task starts (see `SpawnSelf`): it prints a line and
/// exits.
const GRANDCHILD: &str = "CONCUR_TEST_GRANDCHILD";
/// Set in a child of the test to make it run one task on a pool and
/// report, while the test sends SIGINT to its process group (see
/// `a_ctrl_c_for_the_parents_group_does_not_reach_the_workers`); the value
/// is a directory for its files.
const SIGINT_PARENT: &str = "CONCUR_TEST_SIGINT_PARENT";
/// The variable that marks workers.
const WORKER_ENV: &str = "CONCUR_WORKER";

fn registry() -> Registry {
    Registry::new()
        .register::<Square>()
        .register::<Slow>()
        .register::<WhoAmI>()
        .register::<Crash>()
        .register::<Reverse>()
        .register::<Echo>()
        .register::<Picky>()
        .register::<Noisy>()
        .register::<Init>()
        .register::<Greet>()
        .register::<InitPanics>()
        .register::<SpawnSelf>()
        .register::<LeaveChild>()
        .register::<Tiny>()
        .register::<Scribble>()
}

/// First thing in every test: in a worker, serves tasks and exits; in a
/// child started in a special role, plays it and exits; in the test run
/// itself, starts the watchdog once and returns.
fn enter() {
    concur::worker_main(registry());
    if std::env::var_os(ORPHAN_MAKER).is_some() {
        make_orphans();
    }
    if let Some(dir) = std::env::var_os(SIGINT_PARENT) {
        sigint_parent(Path::new(&dir));
    }
    if std::env::var_os(GRANDCHILD).is_some() {
        println!("grandchild {} ran main", std::process::id());
        std::process::exit(0);
    }
    static WATCHDOG: Once = Once::new();
    WATCHDOG.call_once(|| {
        std::thread::spawn(|| {
            std::thread::sleep(SUITE_LIMIT);
            eprintln!("process_pool tests overstayed {SUITE_LIMIT:?}: aborting");
            std::process::abort();
        });
    });
}

/// Arguments that make this test binary run only the current test: what
/// workers and special children are started with. The harness names each
/// test's thread after the test.
fn worker_args() -> Vec<String> {
    let current = std::thread::current();
    let test = current.name().expect("tests run on threads named after them");
    ["--exact", test, "--nocapture", "--quiet"].map(str::to_owned).to_vec()
}

/// `ProcessPool::builder()` for workers that run this test.
fn builder() -> ProcessPoolBuilder {
    ProcessPool::builder().args(worker_args())
}
