//! The broker is not trusted: tasks and results without the key's tag,
//! entries out of range, keys of the wrong type, and tasks past their time
//! limit.

use super::*;

/// The key of the tests' keyed workers and callers.
const KEY: &str = "the tests' key, sixteen bytes+";

fn key(secret: &str) -> QueueKey {
    QueueKey::new(secret.as_bytes()).expect("a test key")
}

/// The reasons of the dead letters so far.
fn dead_reasons(con: &mut redis::Connection) -> Vec<String> {
    let reply: redis::Value = redis::cmd("XRANGE").arg("concur:dead").arg("-").arg("+").query(con).expect("XRANGE");
    format!("{reply:?}").split("reason").skip(1).map(|rest| rest.chars().take(120).collect()).collect()
}

#[test]
fn a_task_without_the_keys_tag_is_a_dead_letter_and_never_runs() {
    enter();
    let redis = RedisServer::start();
    let log = redis.path("forged");
    let _workers = Workers::start_with(1, &redis.url(), CLAIM_AFTER, 5, KEY, None);
    let mut con = redis.con();
    // An attacker without the key (on a loopback broker a caller may go
    // without one; the worker still checks).
    let unkeyed = RedisPool::connect(&redis.url()).expect("pool connects");
    let _forged = unkeyed.apply_async(Counted(log.clone()));
    wait_until("the untagged task is a dead letter", || dead_reasons(&mut con).len() == 1);
    let wrong = RedisPool::builder(redis.url()).key(key("another key, sixteen+")).build().expect("connects");
    let _forged = wrong.apply_async(Counted(log.clone()));
    wait_until("the wrongly tagged task is a dead letter", || dead_reasons(&mut con).len() == 2);
    let reasons = dead_reasons(&mut con);
    assert!(reasons[0].contains("no tag") && reasons[1].contains("wrong tag"), "{reasons:?}");
    assert_eq!(lines(&log), 0, "no forged task ran");
    assert_eq!(pending(&mut con), 0, "both acknowledged");
    // The worker serves the queue's own tasks still.
    let keyed = RedisPool::builder(redis.url()).key(key(KEY)).build().expect("connects");
    assert_eq!(keyed.apply_async(Square(7)).wait(), Ok(49));
    unkeyed.terminate();
    wrong.terminate();
}

#[test]
fn a_result_without_the_keys_tag_is_dropped() {
    enter();
    let redis = RedisServer::start();
    // A worker without the key answers untagged, as a forger would.
    let _workers = Workers::start_with(1, &redis.url(), CLAIM_AFTER, 5, "", None);
    let pool = RedisPool::builder(redis.url()).key(key(KEY)).build().expect("connects");
    let handle = pool.apply_async(Square(3));
    let mut con = redis.con();
    wait_until("the worker answered", || queued(&mut con) == 0 && pending(&mut con) == 0);
    let handle = match handle.wait_timeout(Duration::from_secs(2)) {
        Ok(got) => panic!("an untagged answer was taken: {got:?}"),
        Err(handle) => handle,
    };
    pool.terminate();
    assert_eq!(handle.wait(), Err(TaskError::Cancelled));
}

#[test]
fn a_task_past_its_time_limit_is_ended_and_its_slot_serves_the_next() {
    enter();
    let redis = RedisServer::start();
    // Two slots, tasks ended after half a second.
    let _workers = Workers::start_with(1, &redis.url(), CLAIM_AFTER, 5, "", Some(500));
    let pool = RedisPool::connect(&redis.url()).expect("pool connects");
    let stuck: Vec<_> = (0..2).map(|_| pool.apply_async(Sleeps(3_600_000))).collect();
    let next = pool.apply_async(Square(4));
    for h in stuck {
        let got = h.wait();
        assert!(matches!(&got, Err(TaskError::Failed(m)) if m.contains("time limit")), "{got:?}");
    }
    assert_eq!(next.wait(), Ok(16), "a freed slot ran the next task");
    let mut con = redis.con();
    wait_until("nothing is left pending", || pending(&mut con) == 0);
}

#[test]
fn a_bad_ttl_and_a_results_key_of_the_wrong_type_fail_one_entry_each() {
    enter();
    let redis = RedisServer::start();
    let _workers = Workers::start_with(1, &redis.url(), CLAIM_AFTER, 5, "", None);
    let mut con = redis.con();
    // A task whose time to live would make EXPIRE fail (2^63 s).
    let pool = RedisPool::connect(&redis.url()).expect("pool connects");
    redis::cmd("XADD")
        .arg("concur:tasks")
        .arg("*")
        .arg("job")
        .arg(pool.job())
        .arg("id")
        .arg(1)
        .arg("name")
        .arg("square")
        .arg("ttl")
        .arg("9223372036854775808")
        .arg("payload")
        .arg(&b"\x02"[..])
        .query::<String>(&mut con)
        .expect("XADD");
    wait_until("the bad ttl is a dead letter", || dead_reasons(&mut con).len() == 1);
    assert!(dead_reasons(&mut con)[0].contains("out of range"), "{:?}", dead_reasons(&mut con));
    // A job whose results key is a string: its answer cannot be written.
    let broken = RedisPool::connect(&redis.url()).expect("pool connects");
    let results = format!("concur:job:{}:results", broken.job());
    redis::cmd("SET").arg(&results).arg("not a stream").query::<()>(&mut con).expect("SET");
    let got = broken.apply_async(Square(2)).wait();
    assert!(matches!(&got, Err(TaskError::Failed(m)) if m.contains("WRONGTYPE")), "{got:?}");
    wait_until("the unwritable answer is a dead letter", || dead_reasons(&mut con).len() == 2);
    assert!(dead_reasons(&mut con)[1].contains("cannot write its answer"), "{:?}", dead_reasons(&mut con));
    // The worker goes on with the next task.
    assert_eq!(pool.apply_async(Square(5)).wait(), Ok(25));
    wait_until("nothing is left pending", || pending(&mut con) == 0);
}
