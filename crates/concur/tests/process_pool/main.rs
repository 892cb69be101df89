//! The process pool of the chapter's "process pools" and
//! "multiprocessing.dummy" listings (15, 16), tested with real worker
//! processes: order and completeness of results, chunking, the crash matrix
//! (a panic, an abort, an exit, `kill -9` from outside, while running a
//! task alone or inside a chunk), recycling, large payloads, serialisation
//! failures, initializers, shutdown, and that no worker outlives its pool
//! or its parent.
//!
//! Workers re-execute this test binary, so it has no libtest harness
//! (`harness = false` in `Cargo.toml`): `main` first enters worker mode,
//! then runs each test on its own thread with a deadline, printing
//! `test NAME ... ok`. A hang fails its test instead of blocking CI, and a
//! watchdog aborts the whole run if it overstays. Arguments that do not
//! start with `-` filter tests by substring:
//! `cargo test -p concur --test process_pool -- recycle`.

use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use concur::Registry;

mod basics;
mod crashes;
mod processes;
mod support;
mod tasks;

use basics::*;
use crashes::*;
use processes::*;
use tasks::*;

/// How long one test may take before it counts as hung.
const TEST_LIMIT: Duration = Duration::from_secs(30);
/// How long the whole run may take.
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
}

fn main() {
    concur::worker_main(registry());
    if std::env::var_os(ORPHAN_MAKER).is_some() {
        make_orphans();
    }
    if let Some(dir) = std::env::var_os(SIGINT_PARENT) {
        sigint_parent(Path::new(&dir));
    }
    if std::env::var_os(GRANDCHILD).is_some() {
        println!("grandchild {} ran main", std::process::id());
        return;
    }
    thread::spawn(|| {
        thread::sleep(SUITE_LIMIT);
        eprintln!("process_pool tests overstayed {SUITE_LIMIT:?}: aborting");
        std::process::abort();
    });

    let tests: &[(&str, fn())] = &[
        ("map_keeps_input_order", map_keeps_input_order),
        ("imap_keeps_input_order", imap_keeps_input_order),
        ("imap_unordered_gives_every_index_once", imap_unordered_gives_every_index_once),
        ("apply_async_and_empty_input", apply_async_and_empty_input),
        ("a_panic_is_that_tasks_error_and_kills_no_worker", a_panic_is_that_tasks_error_and_kills_no_worker),
        ("an_abort_fails_only_its_task", an_abort_fails_only_its_task),
        ("an_exit_fails_only_its_task", an_exit_fails_only_its_task),
        ("a_worker_killed_from_outside_fails_only_its_task", a_worker_killed_from_outside_fails_only_its_task),
        ("a_worker_killed_while_idle_is_replaced_without_blame", a_worker_killed_while_idle_is_replaced_without_blame),
        ("max_tasks_per_child_recycles_workers", max_tasks_per_child_recycles_workers),
        ("large_payloads_cross_intact", large_payloads_cross_intact),
        ("an_unserialisable_output_is_that_tasks_error", an_unserialisable_output_is_that_tasks_error),
        ("an_unserialisable_task_is_that_tasks_error", an_unserialisable_task_is_that_tasks_error),
        ("an_unregistered_task_is_that_tasks_error", an_unregistered_task_is_that_tasks_error),
        ("a_tasks_printing_does_not_corrupt_the_protocol", a_tasks_printing_does_not_corrupt_the_protocol),
        ("the_initializer_runs_once_per_worker", the_initializer_runs_once_per_worker),
        ("a_failing_initializer_fails_tasks_not_the_caller", a_failing_initializer_fails_tasks_not_the_caller),
        ("close_refuses_new_work", close_refuses_new_work),
        ("terminate_cancels_queued_work_and_kills_workers", terminate_cancels_queued_work_and_kills_workers),
        (
            "a_program_that_is_not_a_worker_fails_tasks_not_the_caller",
            a_program_that_is_not_a_worker_fails_tasks_not_the_caller,
        ),
        ("a_program_started_by_a_task_is_not_a_worker", a_program_started_by_a_task_is_not_a_worker),
        ("no_worker_outlives_the_pool", no_worker_outlives_the_pool),
        ("workers_die_with_their_parent", workers_die_with_their_parent),
        ("threads_and_processes_give_equal_results", threads_and_processes_give_equal_results),
        (
            "an_inherited_worker_variable_is_ignored_with_a_warning",
            an_inherited_worker_variable_is_ignored_with_a_warning,
        ),
        ("a_worker_that_dies_while_starting_hands_its_chunk_on", a_worker_that_dies_while_starting_hands_its_chunk_on),
        ("a_worker_killed_while_idle_is_reaped_at_once", a_worker_killed_while_idle_is_reaped_at_once),
        ("a_task_over_its_time_limit_fails_alone", a_task_over_its_time_limit_fails_alone),
        ("a_stopped_task_times_out_and_the_pool_drops", a_stopped_task_times_out_and_the_pool_drops),
        ("a_per_call_time_limit_applies_to_that_call_only", a_per_call_time_limit_applies_to_that_call_only),
        ("a_tasks_children_do_not_outlive_its_worker", a_tasks_children_do_not_outlive_its_worker),
        (
            "a_ctrl_c_for_the_parents_group_does_not_reach_the_workers",
            a_ctrl_c_for_the_parents_group_does_not_reach_the_workers,
        ),
        ("random_kills_lose_no_task_and_leave_no_process", random_kills_lose_no_task_and_leave_no_process),
    ];

    let filters: Vec<String> =
        std::env::args().skip(1).filter(|a| !a.starts_with('-') && a.parse::<u64>().is_err()).collect();
    let chosen: Vec<_> = tests
        .iter()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())))
        .collect();
    println!("\nrunning {} tests", chosen.len());
    let started = Instant::now();
    let mut failed = Vec::new();
    for (name, test) in chosen.iter().copied() {
        print!("test {name} ... ");
        let _ = std::io::stdout().flush();
        match run_within(*test, TEST_LIMIT) {
            Ok(()) => println!("ok"),
            Err(why) => {
                println!("FAILED");
                eprintln!("---- {name} ----\n{why}");
                failed.push(*name);
            }
        }
    }
    let passed = chosen.len() - failed.len();
    if failed.is_empty() {
        println!("\ntest result: ok. {passed} passed; 0 failed; finished in {:.2}s\n", started.elapsed().as_secs_f64());
    } else {
        println!("\nfailures: {failed:?}");
        println!("\ntest result: FAILED. {passed} passed; {} failed\n", failed.len());
        std::process::exit(1);
    }
}

/// Runs a test on its own thread; a panic or a hang is its failure. A hung
/// test ends the run at once: its pool cannot be cleaned up from here (its
/// workers die with this process).
fn run_within(test: fn(), limit: Duration) -> Result<(), String> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    thread::spawn(move || {
        let result = catch_unwind(AssertUnwindSafe(test)).map_err(|payload| concur::panic_message(&*payload));
        let _ = tx.send(result);
    });
    match rx.recv_timeout(limit) {
        Ok(result) => result,
        Err(_) => {
            println!("FAILED (hung for {limit:?})");
            std::process::exit(1);
        }
    }
}
