//! Listing 11, "forks": `fork()` makes a second process, a copy of the
//! first.
//!
//! Parent and child each add their own pid to the list of pids they know and
//! print it. Each sees only its own addition: at the fork the child got a
//! *copy* of the parent's memory, not a share of it, so what one process
//! writes afterwards the other never sees.
//!
//! `fork` copies only the calling thread, so it is safe only in a process
//! with one thread, like this one (a lock held by another thread would stay
//! locked forever in the child). That is why `concur::ProcessPool` never
//! forks: it starts its workers by running the program again.
//!
//! Run it with:
//!
//! ```text
//! cargo run -p concur --example forks
//! ```

use std::io::Write;

use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, fork};

fn main() {
    let mut pid_list = vec![std::process::id()];
    // Anything still buffered would be printed twice, once by each process.
    std::io::stdout().flush().expect("stdout flushed");

    // SAFETY: this program has one thread, so the child's copy of it holds
    // no lock that another thread could have taken.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            pid_list.push(std::process::id());
            println!();
            println!("CHLD: hey, I am the child process");
            println!("CHLD: all the pids I know {pid_list:?}");
        }
        ForkResult::Parent { child } => {
            pid_list.push(std::process::id());
            println!();
            println!("PRNT: hey, I am the parent process");
            println!("PRNT: the child pid is {child}");
            println!("PRNT: all the pids I know {pid_list:?}");
            waitpid(child, None).expect("the child is reaped");
        }
    }
}
