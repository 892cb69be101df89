//! A job given up by its caller (cancelled, or the caller killed) and
//! resumed by another: each task runs once, and what was answered or is
//! still queued is taken as it is.

use super::*;

/// Starts a resumable job of [`gated`] tasks under ids 0..20, waits for
/// the five free ones, then gives it up (cancels its caller): the others
/// are held by the worker or still queued. The pool, given up.
pub(crate) fn give_up_half_way(url: &str, about: &str, log: &Path, gate: &Path) -> RedisPool {
    let cancel = CancelToken::new();
    let pool = RedisPool::builder(url).describe(about).cancel_on(cancel.clone()).build().expect("pool connects");
    let mut handles: Vec<_> =
        gated(log, gate).into_iter().enumerate().map(|(id, task)| pool.apply_with_id(id as u64, task)).collect();
    let held = handles.split_off(5);
    for (value, h) in handles.into_iter().enumerate() {
        assert_eq!(h.wait(), Ok(value as u64));
    }
    cancel.cancel();
    for h in held {
        let got = h.wait_timeout(PROMPTLY).expect("answered promptly once cancelled");
        assert_eq!(got, Err(TaskError::Cancelled));
    }
    pool
}

#[test]
fn a_job_given_up_and_resumed_runs_each_task_once_waiting_for_those_still_queued() {
    enter();
    let redis = RedisServer::start();
    let _workers = Workers::start(1, &redis.url(), CLAIM_AFTER, 5);
    let (log, gate) = (redis.path("log"), redis.path("gate"));
    let given_up = give_up_half_way(&redis.url(), "twenty logged", &log, &gate);
    let job = given_up.job().to_owned();
    drop(given_up);

    let pool = RedisPool::builder(redis.url()).describe("twenty logged").resume(&job).build().expect("resumes");
    assert_eq!(pool.job(), job);
    assert_eq!(pool.answered(), (0..5).collect::<Vec<u64>>(), "what the first caller got");
    // Two held by the worker (its concurrency), the rest queued: none lost
    // when the first caller left, none skipped.
    assert_eq!(pool.still_queued(), (5..20).collect::<Vec<u64>>());
    assert_eq!(pool.answer::<Logged>(3), Some(Ok(3)));
    let handles: Vec<_> =
        gated(&log, &gate).into_iter().enumerate().map(|(id, task)| pool.apply_with_id(id as u64, task)).collect();
    assert!(pool.still_queued().is_empty(), "every task asked for");
    support::write_file(&gate, "open");
    for (value, h) in handles.into_iter().enumerate() {
        assert_eq!(h.wait(), Ok(value as u64), "task {value}");
    }
    let mut con = redis.con();
    assert_eq!(queued(&mut con), 0, "nothing queued twice");
    assert_eq!(pending(&mut con), 0);
    assert_eq!(runs(&log), vec![1; 20], "each task ran exactly once");
}

#[test]
fn a_resumed_job_gives_what_workers_finished_after_its_caller_left_without_running_it_again() {
    enter();
    let redis = RedisServer::start();
    let _workers = Workers::start(1, &redis.url(), CLAIM_AFTER, 5);
    let (log, gate) = (redis.path("log"), redis.path("gate"));
    let given_up = give_up_half_way(&redis.url(), "twenty logged", &log, &gate);
    let job = given_up.job().to_owned();
    // The job lives on though its caller gave it up: the worker goes on
    // with its tasks rather than skip them.
    support::write_file(&gate, "open");
    let mut con = redis.con();
    wait_until("the worker has run the job's tasks", || queued(&mut con) == 0 && pending(&mut con) == 0);
    assert_eq!(runs(&log), vec![1; 20], "every task ran once, none skipped");
    drop(given_up);

    let pool = RedisPool::builder(redis.url()).describe("twenty logged").resume(&job).build().expect("resumes");
    assert_eq!(pool.answered(), (0..20).collect::<Vec<u64>>());
    assert!(pool.still_queued().is_empty());
    for (id, task) in gated(&log, &gate).into_iter().enumerate() {
        assert_eq!(pool.apply_with_id(id as u64, task).wait(), Ok(id as u64));
    }
    // A new task (a new id) runs as in any pool.
    let more = Logged { log: log.clone(), gate: None, value: 7 };
    assert_eq!(pool.apply_with_id(20, more).wait(), Ok(7));
    let mut expected = vec![1; 20];
    expected[7] = 2;
    assert_eq!(runs(&log), expected, "only the new task ran");
}

#[test]
fn resuming_an_unknown_a_finished_an_expired_or_another_job_is_refused() {
    enter();
    let redis = RedisServer::start();
    let url = redis.url();
    let resume = |job: &str, about: &str| RedisPool::builder(&url).describe(about).resume(job).build();
    assert!(matches!(resume("nosuchjob", "a"), Err(QueueError::UnknownJob(j)) if j == "nosuchjob"));

    // A job that ended well is gone.
    let finished = RedisPool::builder(&url).describe("a").build().expect("pool connects");
    let job = finished.job().to_owned();
    drop(finished);
    assert!(matches!(resume(&job, "a"), Err(QueueError::UnknownJob(j)) if j == job));

    // A job given up: resumable for its time to live, for the same work only.
    let cancel = CancelToken::new();
    let pool = RedisPool::builder(&url)
        .describe("squares")
        .job_ttl(Duration::from_secs(3))
        .cancel_on(cancel.clone())
        .build()
        .expect("pool connects");
    let job = pool.job().to_owned();
    let waiting = pool.apply_with_id(0, Square(3));
    cancel.cancel();
    assert_eq!(waiting.wait_timeout(PROMPTLY).expect("cancelled promptly"), Err(TaskError::Cancelled));
    drop(pool);
    let got = resume(&job, "cubes");
    assert!(
        matches!(&got, Err(QueueError::NotTheSameJob { job: j, was, asked }) if *j == job && was == "squares" && asked == "cubes"),
        "{got:?}"
    );
    let mut con = redis.con();
    wait_until("the given-up job expires", || {
        redis::cmd("EXISTS").arg(format!("concur:job:{job}:alive")).query::<i64>(&mut con).expect("EXISTS") == 0
    });
    assert!(matches!(resume(&job, "squares"), Err(QueueError::UnknownJob(j)) if j == job));
    // Ids from 2^63 are the pool's own.
    let pool = RedisPool::connect(&url).expect("pool connects");
    assert!(matches!(pool.apply_with_id(1 << 63, Square(1)).wait(), Err(TaskError::Failed(_))));
}

#[test]
fn the_job_of_a_killed_caller_is_resumed_by_another_and_each_task_runs_once() {
    enter();
    let redis = RedisServer::start();
    let _workers = Workers::start(1, &redis.url(), CLAIM_AFTER, 5);
    let (log, gate, marker) = (redis.path("log"), redis.path("gate"), redis.path("job"));
    let current = std::thread::current();
    let test = current.name().expect("tests run on threads named after them");
    let role = format!("{};{};{};{}", redis.url(), log.display(), gate.display(), marker.display());
    let mut caller = std::process::Command::new(std::env::current_exe().expect("the test binary"))
        .args(["--exact", test, "--nocapture", "--quiet"])
        .env(RESUMABLE_CALLER_ROLE, role)
        .spawn()
        .expect("the caller starts");
    let job = wait_for_file(&marker);
    // As a host gone: nothing is cleaned up.
    caller.kill().expect("the caller can be killed");
    caller.wait().expect("reaped");

    let pool = RedisPool::builder(redis.url()).describe("twenty logged").resume(&job).build().expect("resumes");
    assert_eq!(pool.answered(), (0..5).collect::<Vec<u64>>());
    assert_eq!(pool.still_queued(), (5..20).collect::<Vec<u64>>());
    let handles: Vec<_> =
        gated(&log, &gate).into_iter().enumerate().map(|(id, task)| pool.apply_with_id(id as u64, task)).collect();
    support::write_file(&gate, "open");
    for (value, h) in handles.into_iter().enumerate() {
        assert_eq!(h.wait(), Ok(value as u64), "task {value}");
    }
    assert_eq!(runs(&log), vec![1; 20], "each task ran exactly once");
    assert_eq!(pending(&mut redis.con()), 0);
}

#[test]
fn a_job_cancelled_after_its_last_answer_can_still_be_resumed() {
    enter();
    let redis = RedisServer::start();
    let _workers = Workers::start(1, &redis.url(), CLAIM_AFTER, 5);
    let cancel = CancelToken::new();
    let pool = RedisPool::builder(redis.url()).describe("squares").cancel_on(cancel.clone()).build().expect("connects");
    assert_eq!(pool.apply_with_id(0, Square(3)).wait(), Ok(9));
    // Cancelled with nothing waiting (the caller had items left unasked),
    // and dropped before the results thread looks at the token.
    cancel.cancel();
    let job = pool.job().to_owned();
    drop(pool);
    let pool = RedisPool::builder(redis.url()).describe("squares").resume(&job).build().expect("resumes");
    assert_eq!(pool.answered(), [0]);
    assert_eq!(pool.apply_with_id(0, Square(3)).wait(), Ok(9));
    assert_eq!(pool.apply_with_id(1, Square(4)).wait(), Ok(16));
}
