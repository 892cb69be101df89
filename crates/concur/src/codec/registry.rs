//! Tasks by name: the [`Registry`] a worker finds the code for a task in.

use std::any::TypeId;
use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

use super::frames;
use crate::pool::{Task, panic_message};

/// Runs one serialised task and appends the complete reply frame to the
/// buffer: a worker reuses one buffer for every answer.
pub(crate) type RunFn = fn(&[u8], &mut Vec<u8>);

/// The tasks a worker process can run, by [`Task::NAME`].
///
/// A process cannot be sent a function, only data; a worker finds the code
/// for a task it receives by the task's name in its registry. Register
/// every task type the program submits to a
/// [`ProcessPool`](crate::ProcessPool), in the call to
/// [`worker_main`](crate::worker_main) at the top of `main`.
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize)]
/// # struct Square(u64);
/// # impl concur::Task for Square {
/// #     type Output = u64;
/// #     const NAME: &'static str = "square";
/// #     fn run(self) -> u64 { self.0 * self.0 }
/// # }
/// let registry = concur::Registry::new().register::<Square>();
/// assert_eq!(registry.names().collect::<Vec<_>>(), ["square"]);
/// ```
#[derive(Default)]
pub struct Registry {
    tasks: HashMap<&'static str, (TypeId, RunFn)>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds task type `T` under [`T::NAME`](Task::NAME). Registering the
    /// same type twice is harmless.
    ///
    /// # Panics
    ///
    /// If another type is already registered under the same name: the
    /// worker could not tell them apart.
    #[must_use]
    pub fn register<T: Task>(mut self) -> Self {
        let entry = (TypeId::of::<T>(), run_task::<T> as RunFn);
        if let Some((other, _)) = self.tasks.insert(T::NAME, entry) {
            assert!(other == entry.0, "two task types are registered as {:?}: task names must be unique", T::NAME);
        }
        self
    }

    /// The registered task names, in no particular order.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.tasks.keys().copied()
    }

    /// Runs the task called `name` on its serialised `payload` and gives
    /// its answer, which [`read_answer`](super::read_answer) reads: the
    /// output serialised, or why there is none (the task panicked, no
    /// task has that name, the payload does not decode). A panic of the
    /// task is caught.
    pub fn answer(&self, name: &str, payload: &[u8]) -> Vec<u8> {
        let mut frame = self.run(name, payload);
        frame.drain(..4);
        frame
    }

    /// Runs the task called `name` on `payload` and gives the reply frame.
    pub(crate) fn run(&self, name: &str, payload: &[u8]) -> Vec<u8> {
        let mut frame = Vec::new();
        match self.runner(name) {
            Some(run) => run(payload, &mut frame),
            None => frame = self.unknown(name),
        }
        frame
    }

    /// The code for tasks called `name`: looked up once per chunk, not
    /// once per task.
    pub(crate) fn runner(&self, name: &str) -> Option<RunFn> {
        self.tasks.get(name).map(|&(_, run)| run)
    }

    /// The error frame for a task whose name is not registered.
    pub(crate) fn unknown(&self, name: &str) -> Vec<u8> {
        let mut known: Vec<_> = self.names().collect();
        known.sort_unstable();
        frames::error_frame(
            frames::FAILED,
            &format!(
                "no task named {name:?} is registered in the worker \
                 (registered: {known:?}); register it in the call to \
                 concur::worker_main"
            ),
        )
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<_> = self.names().collect();
        names.sort_unstable();
        f.debug_struct("Registry").field("tasks", &names).finish()
    }
}

/// The worker's handling of one task of type `T`: decode, run with panics
/// caught, encode the output. Every failure is an error frame for this
/// task only.
fn run_task<T: Task>(payload: &[u8], frame: &mut Vec<u8>) {
    let task: T = match postcard::from_bytes(payload) {
        Ok(task) => task,
        Err(e) => {
            let message = format!("cannot deserialise task {:?}: {e}", T::NAME);
            return frame.extend_from_slice(&frames::error_frame(frames::SERIALIZE, &message));
        }
    };
    match catch_unwind(AssertUnwindSafe(|| task.run())) {
        Ok(output) => frames::push_output_frame(frame, &output, T::NAME),
        Err(payload) => frame.extend_from_slice(&frames::error_frame(frames::PANICKED, &panic_message(&*payload))),
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::codec::{decode, encode};
    use crate::pool::TaskError;

    struct Refuses;

    impl Serialize for Refuses {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("refuses to be serialised"))
        }
    }

    /// The task answer in a reply frame.
    fn answer_of(frame: &[u8]) -> Result<Vec<u8>, TaskError> {
        let body = frames::read_frame(&mut &frame[..]).expect("reads").expect("a frame");
        match frames::answer(&body).expect("an answer") {
            frames::Answer::Task(result) => result.map(<[u8]>::to_vec),
            frames::Answer::Ack => panic!("an acknowledgement, not an answer"),
        }
    }

    #[test]
    fn a_serialize_error_keeps_its_message() {
        assert_eq!(
            encode(&Refuses, || "the thing".to_owned()),
            Err(TaskError::Serialize("cannot serialise the thing: refuses to be serialised".into()))
        );
        let frame = frames::output_frame(&Refuses, "t");
        assert!(matches!(
            answer_of(&frame),
            Err(TaskError::Serialize(m)) if m.contains("refuses to be serialised")
        ));
    }

    #[derive(Serialize, Deserialize)]
    struct Double(i32);

    impl Task for Double {
        type Output = i32;
        const NAME: &'static str = "double";
        fn run(self) -> i32 {
            assert!(self.0 >= 0, "negative");
            self.0 * 2
        }
    }

    #[test]
    fn the_registry_runs_tasks_by_name() {
        let registry = Registry::new().register::<Double>().register::<Double>();
        let answer =
            |frame: Vec<u8>| -> Result<i32, TaskError> { answer_of(&frame).and_then(|b| decode(&b, "double")) };
        let payload = postcard::to_allocvec(&Double(21)).expect("encodes");
        assert_eq!(answer(registry.run("double", &payload)), Ok(42));
        let payload = postcard::to_allocvec(&Double(-1)).expect("encodes");
        assert_eq!(answer(registry.run("double", &payload)), Err(TaskError::Panicked("negative".into())));
        assert!(matches!(
            answer(registry.run("triple", &payload)),
            Err(TaskError::Failed(m)) if m.contains("\"triple\"") && m.contains("\"double\"")
        ));
        assert!(matches!(answer(registry.run("double", &[])), Err(TaskError::Serialize(_))));
    }

    #[test]
    #[should_panic(expected = "two task types are registered as \"double\"")]
    fn two_types_under_one_name_are_refused() {
        #[derive(Serialize, Deserialize)]
        struct Other;
        impl Task for Other {
            type Output = ();
            const NAME: &'static str = "double";
            fn run(self) {}
        }
        let _ = Registry::new().register::<Double>().register::<Other>();
    }
}
