//! Tasks by name: the [`Registry`] a worker finds the code for a task in,
//! and the (de)serialisation of tasks and outputs on both sides.

use std::any::TypeId;
use std::collections::HashMap;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::wire;
use crate::pool::{Task, TaskError, panic_message};

/// Runs one serialised task and appends the complete reply frame to the
/// buffer: a worker reuses one buffer for every answer.
pub(super) type RunFn = fn(&[u8], &mut Vec<u8>);

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
    pub(super) fn runner(&self, name: &str) -> Option<RunFn> {
        self.tasks.get(name).map(|&(_, run)| run)
    }

    /// The error frame for a task whose name is not registered.
    pub(super) fn unknown(&self, name: &str) -> Vec<u8> {
        let mut known: Vec<_> = self.names().collect();
        known.sort_unstable();
        wire::error_frame(
            wire::FAILED,
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
            return frame.extend_from_slice(&wire::error_frame(wire::SERIALIZE, &message));
        }
    };
    match catch_unwind(AssertUnwindSafe(|| task.run())) {
        Ok(output) => wire::push_output_frame(frame, &output, T::NAME),
        Err(payload) => frame.extend_from_slice(&wire::error_frame(wire::PANICKED, &panic_message(&*payload))),
    }
}

/// Serialises `value` with postcard, turning a failure into a message.
/// `what` names the value in messages; it is only built on failure.
pub(crate) fn encode<V: Serialize>(value: &V, what: impl FnOnce() -> String) -> Result<Vec<u8>, TaskError> {
    let mut bytes = Vec::new();
    encode_into(&mut bytes, value, what)?;
    Ok(bytes)
}

/// Like [`encode`], but appends the bytes to `buf` (serialising many values
/// into one buffer allocates once, not per value). On failure `buf` is left
/// as it was.
pub(crate) fn encode_into<V: Serialize>(
    buf: &mut Vec<u8>,
    value: &V,
    what: impl FnOnce() -> String,
) -> Result<(), TaskError> {
    let start = buf.len();
    let result = match catch_unwind(AssertUnwindSafe(|| postcard::serialize_with_flavor(value, Append(buf)))) {
        Ok(Ok(())) if buf.len() - start <= wire::MAX_VALUE => Ok(()),
        Ok(Ok(())) => Err(TaskError::Serialize(format!(
            "{} is {} bytes, over the {}-byte limit of a value",
            what(),
            buf.len() - start,
            wire::MAX_VALUE
        ))),
        Ok(Err(e)) => {
            Err(TaskError::Serialize(format!("cannot serialise {}: {}", what(), serialize_error_message(value, e))))
        }
        Err(payload) => {
            Err(TaskError::Panicked(format!("serialising {} panicked: {}", what(), panic_message(&*payload))))
        }
    };
    if result.is_err() {
        buf.truncate(start);
    }
    result
}

/// Lets postcard append to a buffer it borrows.
struct Append<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();

    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.push(byte);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Postcard drops the message of a `Serialize` impl's own error (it says
/// only "Serde Serialization Error"); serde_json keeps it, so the value is
/// replayed through serde_json to recover it. Only done on failure.
fn serialize_error_message<V: Serialize>(value: &V, postcard_error: postcard::Error) -> String {
    if postcard_error == postcard::Error::SerdeSerCustom
        && let Ok(Err(e)) = catch_unwind(AssertUnwindSafe(|| serde_json::to_writer(io::sink(), value)))
    {
        return e.to_string();
    }
    postcard_error.to_string()
}

/// Deserialises a task's output in the pool's process.
pub(crate) fn decode<R: DeserializeOwned>(bytes: &[u8], task: &str) -> Result<R, TaskError> {
    postcard::from_bytes(bytes)
        .map_err(|e| TaskError::Serialize(format!("cannot deserialise the output of task {task:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    struct Refuses;

    impl Serialize for Refuses {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("refuses to be serialised"))
        }
    }

    /// The task answer in a reply frame.
    fn answer_of(frame: &[u8]) -> Result<Vec<u8>, TaskError> {
        let body = wire::read_frame(&mut &frame[..]).expect("reads").expect("a frame");
        match wire::answer(&body).expect("an answer") {
            wire::Answer::Task(result) => result.map(<[u8]>::to_vec),
            wire::Answer::Ack => panic!("an acknowledgement, not an answer"),
        }
    }

    #[test]
    fn a_serialize_error_keeps_its_message() {
        assert_eq!(
            encode(&Refuses, || "the thing".to_owned()),
            Err(TaskError::Serialize("cannot serialise the thing: refuses to be serialised".into()))
        );
        let frame = wire::output_frame(&Refuses, "t");
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
