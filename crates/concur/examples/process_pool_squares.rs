//! Listing 15, "process pools", in miniature: `map` over a pool of 4
//! worker processes, with results in input order.
//!
//! `concur::ProcessPool` starts its workers by running this same program
//! again; the first line of `main` is where a worker goes its own way,
//! serving tasks until the pool is done with it. Each result says which
//! worker process computed it: the work really happens elsewhere, and the
//! answers come back in the order of the input, whichever worker finished
//! first. The chapter's application on a process pool is the `rates`
//! crate's `process-pool` model.
//!
//! Run it with:
//!
//! ```text
//! cargo run -p concur --example process_pool_squares
//! ```

use concur::{Pool, PoolError, ProcessPool, Registry, Task};
use serde::{Deserialize, Serialize};

/// Squares a number, slowly (so that the work spreads over the workers),
/// and says which process did it.
#[derive(Serialize, Deserialize)]
struct Square(u64);

impl Task for Square {
    type Output = (u64, u32);
    const NAME: &'static str = "square";
    fn run(self) -> (u64, u32) {
        std::thread::sleep(std::time::Duration::from_millis(50));
        (self.0 * self.0, std::process::id())
    }
}

fn main() -> Result<(), PoolError> {
    // In a worker this serves tasks and exits; here it returns at once.
    concur::worker_main(Registry::new().register::<Square>());

    let pool = ProcessPool::builder().size(4).build()?;
    println!("main process pid: {}, worker pids: {:?}", std::process::id(), pool.worker_pids());
    for (x, result) in (0..10).zip(pool.map((0..10).map(Square))) {
        match result {
            Ok((square, pid)) => println!("{x}^2 = {square:>2}  (worker pid {pid})"),
            Err(e) => println!("{x}: {e}"),
        }
    }
    Ok(())
}
