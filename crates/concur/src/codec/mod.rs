//! The task codec both kinds of pool share: the [`Registry`] of task
//! kinds a worker runs by name, the encoding of a task and of its output
//! ([`encode`], [`decode`]), and the answer a worker gives for one task
//! (the output, or the error that took its place).
//!
//! A [`ProcessPool`](crate::ProcessPool) sends tasks to its workers in
//! the frames of its protocol; a pool on a broker (the `concur-redis`
//! crate) sends the same encoded tasks and answers through the broker.
//! Either way a task is its [`Task::NAME`](crate::Task::NAME) and its
//! [`encode`]d bytes, and a worker answers it with
//! [`Registry::answer`], which the caller reads with [`read_answer`] and
//! [`decode`]:
//!
//! ```
//! use concur::codec::{Registry, decode, encode, read_answer};
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Serialize, Deserialize)]
//! # struct Square(u64);
//! # impl concur::Task for Square {
//! #     type Output = u64;
//! #     const NAME: &'static str = "square";
//! #     fn run(self) -> u64 { self.0 * self.0 }
//! # }
//! let payload = encode(&Square(7), || "a square".into())?;
//! // In the worker:
//! let answer = Registry::new().register::<Square>().answer("square", &payload);
//! // Back with the caller:
//! let output = read_answer(&answer).expect("an answer")?;
//! assert_eq!(decode::<u64>(output, "square")?, 49);
//! # Ok::<(), concur::TaskError>(())
//! ```
//!
//! Values are [`postcard`]'s encoding, at most 1 GiB less 64 KiB each.

use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::pool::{TaskError, panic_message};

pub(crate) mod frames;
mod registry;

pub use registry::Registry;

/// Serialises `value` with postcard, turning a failure into a message.
/// `what` names the value in messages; it is only built on failure.
pub fn encode<V: Serialize>(value: &V, what: impl FnOnce() -> String) -> Result<Vec<u8>, TaskError> {
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
        Ok(Ok(())) if buf.len() - start <= frames::MAX_VALUE => Ok(()),
        Ok(Ok(())) => Err(TaskError::Serialize(format!(
            "{} is {} bytes, over the {}-byte limit of a value",
            what(),
            buf.len() - start,
            frames::MAX_VALUE
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
pub fn decode<R: DeserializeOwned>(bytes: &[u8], task: &str) -> Result<R, TaskError> {
    postcard::from_bytes(bytes)
        .map_err(|e| TaskError::Serialize(format!("cannot deserialise the output of task {task:?}: {e}")))
}

/// The task's output (still encoded) or its error, out of an answer that
/// [`Registry::answer`] gave, or [`failed_answer`]; `None` if `answer` is
/// not one (a broken or hostile peer's bytes).
pub fn read_answer(answer: &[u8]) -> Option<Result<&[u8], TaskError>> {
    match frames::answer(answer) {
        Ok(frames::Answer::Task(result)) => Some(result),
        _ => None,
    }
}

/// The answer for a task that could not be run, which [`read_answer`]
/// reads as [`TaskError::Failed`] with `message`.
pub fn failed_answer(message: &str) -> Vec<u8> {
    let mut frame = frames::error_frame(frames::FAILED, message);
    frame.drain(..4);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_answer_reads_as_its_message_and_garbage_as_none() {
        assert_eq!(read_answer(&failed_answer("no")), Some(Err(TaskError::Failed("no".into()))));
        assert_eq!(read_answer(b"?"), None);
        assert_eq!(read_answer(b""), None);
    }
}
