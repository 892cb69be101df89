//! The process pool's log lines: a worker lost and its replacement are
//! logged (`tracing`, target `concur::process_pool`, info level), so a
//! user running with `-v` sees workers die and respawn.
//!
//! Workers re-execute this test binary, running just this test, whose first
//! line serves tasks in a worker.

use std::io::Write;
use std::sync::Mutex;

use concur::sync;
use concur::{Pool, ProcessPool, Registry, Task, TaskError};
use serde::{Deserialize, Serialize};

/// Gives its value, or exits its worker with status 3 when asked.
#[derive(Serialize, Deserialize)]
struct MaybeExit {
    value: u64,
    exit: bool,
}

impl Task for MaybeExit {
    type Output = u64;
    const NAME: &'static str = "maybe-exit";
    fn run(self) -> u64 {
        if self.exit {
            std::process::exit(3);
        }
        self.value
    }
}

/// Everything logged, from every thread (the pool's manager threads log).
static LOGGED: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        sync::lock(&LOGGED).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_lost_worker_and_its_replacement_are_logged() {
    concur::worker_main(Registry::new().register::<MaybeExit>());
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(|| Capture)
        .with_ansi(false)
        .try_init()
        .expect("the only subscriber of this test binary");
    let pool = ProcessPool::builder()
        .size(1)
        .args(["--exact", "a_lost_worker_and_its_replacement_are_logged", "--nocapture", "--quiet"])
        .build()
        .expect("pool starts");
    let got = pool.map([
        MaybeExit { value: 1, exit: false },
        MaybeExit { value: 2, exit: true },
        MaybeExit { value: 3, exit: false },
    ]);
    assert_eq!(got[0], Ok(1));
    assert!(
        matches!(&got[1], Err(TaskError::WorkerDied(why)) if why.code == Some(3) && why.detail.contains("status 3")),
        "{got:?}"
    );
    assert_eq!(got[2], Ok(3));
    drop(pool);

    let logged = String::from_utf8(LOGGED.lock().expect("not poisoned").clone()).expect("UTF-8");
    let lines: Vec<&str> = logged.lines().filter(|l| l.contains("concur::process_pool")).collect();
    assert_eq!(lines.len(), 2, "{logged}");
    assert!(lines[0].contains("INFO") && lines[0].contains("slot=0") && lines[0].contains("worker lost:"), "{logged}");
    assert!(lines[0].contains("exited with status 3"), "{logged}");
    assert!(lines[1].contains("worker respawned") && lines[1].contains("pid="), "{logged}");
}
