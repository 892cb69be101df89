//! The frames of the worker protocol (see the table in the parent module's
//! docs): how they are built, read and parsed. Nothing here touches a
//! process; both sides call these on their ends of the pipes.

use std::io::{self, Read};

use crate::pool::TaskError;

/// The largest body a frame may have (1 GiB). A length prefix above it is
/// refused as malformed instead of trusted, and a reader allocates only
/// as the bytes of a frame actually arrive, so a garbled or hostile
/// prefix cannot make either side reserve gigabytes. Values are refused
/// at serialisation time if they could not fit ([`MAX_VALUE`]), and the
/// pool splits a chunk whose frame would be larger.
pub(super) const MAX_FRAME: usize = 1 << 30;

/// The largest serialised task or output: room is left in a frame for
/// its tag, the task name and the length prefixes.
pub(super) const MAX_VALUE: usize = MAX_FRAME - 64 * 1024;

const HELLO: &[u8] = b"Hconcur/2";
const INIT: u8 = b'I';
const RUN: u8 = b'R';
const READY: u8 = b'r';
const ACK: u8 = b'A';
const OUTPUT: u8 = b'O';
const ERROR: u8 = b'E';

pub(super) const PANICKED: u8 = 0;
pub(crate) const FAILED: u8 = 1;
pub(super) const SERIALIZE: u8 = 2;

/// A frame under construction: room for the length, then `tag`.
fn start(tag: u8, capacity: usize) -> Vec<u8> {
    let mut frame = Vec::with_capacity(5 + capacity);
    frame.extend_from_slice(&[0, 0, 0, 0, tag]);
    frame
}

/// Writes the length into a frame made by [`start`].
fn finish(mut frame: Vec<u8>) -> Vec<u8> {
    // Callers keep bodies under MAX_FRAME; saturate rather than panic.
    let len = u32::try_from(frame.len() - 4).unwrap_or(u32::MAX);
    frame[..4].copy_from_slice(&len.to_le_bytes());
    frame
}

fn put_bytes(frame: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(frame, bytes.len());
    frame.extend_from_slice(bytes);
}

fn put_u32(frame: &mut Vec<u8>, n: usize) {
    let n = u32::try_from(n).unwrap_or(u32::MAX);
    frame.extend_from_slice(&n.to_le_bytes());
}

pub(super) fn hello_frame() -> Vec<u8> {
    let mut frame = start(HELLO[0], HELLO.len());
    frame.extend_from_slice(&HELLO[1..]);
    finish(frame)
}

pub(super) fn init_frame(name: &str, payload: &[u8]) -> Vec<u8> {
    let mut frame = start(INIT, 4 + name.len() + payload.len());
    put_bytes(&mut frame, name.as_bytes());
    frame.extend_from_slice(payload);
    finish(frame)
}

/// The size of the frame [`run_frame`] makes of `tasks`.
pub(super) fn run_frame_len(name: &str, tasks: &[Vec<u8>]) -> usize {
    4 + 1 + 4 + name.len() + 4 + tasks.iter().map(|t| 4 + t.len()).sum::<usize>()
}

/// How many of `tasks`, from the first, fit in one run frame (at least 1:
/// a single task always fits, as values are at most [`MAX_VALUE`]).
pub(super) fn tasks_that_fit(name: &str, tasks: &[Vec<u8>]) -> usize {
    let mut size = run_frame_len(name, &[]);
    let mut n = 0;
    for task in tasks {
        size += 4 + task.len();
        if size > 4 + MAX_FRAME && n > 0 {
            break;
        }
        n += 1;
    }
    n
}

pub(super) fn run_frame(name: &str, tasks: &[Vec<u8>]) -> Vec<u8> {
    let mut frame = start(RUN, run_frame_len(name, tasks) - 5);
    put_bytes(&mut frame, name.as_bytes());
    put_u32(&mut frame, tasks.len());
    for task in tasks {
        put_bytes(&mut frame, task);
    }
    finish(frame)
}

pub(super) fn ready_frame() -> Vec<u8> {
    finish(start(READY, 0))
}

/// A worker's acknowledgement that it has read a whole chunk and is about
/// to run it: a worker that dies before sending it ran none of the chunk.
pub(super) fn ack_frame() -> Vec<u8> {
    finish(start(ACK, 0))
}

pub(crate) fn error_frame(kind: u8, message: &str) -> Vec<u8> {
    let mut frame = start(ERROR, 1 + message.len());
    frame.push(kind);
    frame.extend_from_slice(message.as_bytes());
    finish(frame)
}

/// The answer for a task that gave `output`: the output, or the error
/// that serialising it gave.
pub(super) fn output_frame<O: serde::Serialize>(output: &O, task: &str) -> Vec<u8> {
    match super::registry::encode(output, || format!("the output of task {task:?}")) {
        Ok(bytes) => {
            let mut frame = start(OUTPUT, bytes.len());
            frame.extend_from_slice(&bytes);
            finish(frame)
        }
        Err(TaskError::Panicked(message)) => error_frame(PANICKED, &message),
        Err(other) => error_frame(SERIALIZE, &other.to_string()),
    }
}

/// Whether a whole frame (length included) is an error answer.
pub(super) fn is_error(frame: &[u8]) -> bool {
    frame.get(4) == Some(&ERROR)
}

/// The body length announced by the prefix at the start of `bytes`, once
/// the prefix is complete; an error if it is over [`MAX_FRAME`].
pub(super) fn body_len(bytes: &[u8]) -> io::Result<Option<usize>> {
    let Some(prefix) = bytes.first_chunk::<4>() else {
        return Ok(None);
    };
    let len = u32::from_le_bytes(*prefix) as usize;
    if len > MAX_FRAME {
        return Err(malformed(&format!("a length of {len} bytes is over the {MAX_FRAME}-byte limit")));
    }
    Ok(Some(len))
}

/// Reads one frame's body (without its length); `None` at end of file
/// between frames. The body's buffer grows as its bytes arrive.
pub(super) fn read_frame(r: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut prefix = [0; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut prefix[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = body_len(&prefix)?.unwrap_or(0);
    let mut body = Vec::with_capacity(len.min(1 << 16));
    r.take(len as u64).read_to_end(&mut body)?;
    if body.len() < len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(Some(body))
}

fn malformed(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("malformed frame: {what}"))
}

/// What the pool asks of a worker.
pub(super) enum Request<'a> {
    Init { name: &'a str, payload: &'a [u8] },
    Run { name: &'a str, tasks: Tasks<'a> },
}

impl<'a> Request<'a> {
    pub(super) fn parse(body: &'a [u8]) -> io::Result<Self> {
        let (&tag, rest) = body.split_first().ok_or_else(|| malformed("empty"))?;
        let mut cursor = Cursor(rest);
        let name = std::str::from_utf8(cursor.bytes()?).map_err(|_| malformed("name"))?;
        match tag {
            INIT => Ok(Request::Init { name, payload: cursor.0 }),
            RUN => {
                let left = cursor.u32()?;
                Ok(Request::Run { name, tasks: Tasks { cursor, left } })
            }
            _ => Err(malformed("unknown request")),
        }
    }
}

/// The payloads of a run request, parsed as they are taken.
pub(super) struct Tasks<'a> {
    cursor: Cursor<'a>,
    left: usize,
}

impl<'a> Iterator for Tasks<'a> {
    type Item = io::Result<&'a [u8]>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        Some(self.cursor.bytes())
    }
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn u32(&mut self) -> io::Result<usize> {
        let (n, rest) = self.0.split_first_chunk::<4>().ok_or_else(|| malformed("short"))?;
        self.0 = rest;
        Ok(u32::from_le_bytes(*n) as usize)
    }

    fn bytes(&mut self) -> io::Result<&'a [u8]> {
        let len = self.u32()?;
        if len > self.0.len() {
            return Err(malformed("short"));
        }
        let (bytes, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(bytes)
    }
}

/// What a worker sent while running a chunk.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Answer<'a> {
    /// The chunk was read and is about to run.
    Ack,
    /// A task's serialised output, or the pool's error for it.
    Task(Result<&'a [u8], TaskError>),
}

/// Parses what a worker sent while running a chunk. `Err` for a frame
/// that is neither an acknowledgement nor an answer.
pub(crate) fn answer(body: &[u8]) -> io::Result<Answer<'_>> {
    match body.split_first() {
        Some((&ACK, [])) => Ok(Answer::Ack),
        Some((&OUTPUT, output)) => Ok(Answer::Task(Ok(output))),
        Some((&ERROR, rest)) => {
            let (&kind, message) = rest.split_first().ok_or_else(|| malformed("error"))?;
            let message = String::from_utf8_lossy(message).into_owned();
            Ok(Answer::Task(Err(match kind {
                PANICKED => TaskError::Panicked(message),
                SERIALIZE => TaskError::Serialize(message),
                _ => TaskError::Failed(message),
            })))
        }
        _ => Err(malformed("not an answer")),
    }
}

/// Whether the answer to an initializer says it ran.
pub(super) fn is_ready(body: &[u8]) -> bool {
    body == [READY]
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The body of a whole frame, checking it is the only frame there.
    fn body(frame: &[u8]) -> Vec<u8> {
        let mut rest = frame;
        let body = read_frame(&mut rest).expect("reads").expect("a frame");
        assert!(rest.is_empty(), "one frame");
        body
    }

    fn task_answer(frame: &[u8]) -> Result<Vec<u8>, TaskError> {
        match answer(&body(frame)).expect("an answer") {
            Answer::Task(result) => result.map(<[u8]>::to_vec),
            Answer::Ack => panic!("an acknowledgement, not an answer"),
        }
    }

    #[test]
    fn frames_round_trip() {
        let tasks = vec![vec![1, 2, 3], vec![], vec![9; 1000]];
        let frame = run_frame("square", &tasks);
        assert_eq!(frame.len(), run_frame_len("square", &tasks));
        let body = body(&frame);
        let Request::Run { name, tasks: got } = Request::parse(&body).expect("parses") else {
            panic!("not a run request");
        };
        assert_eq!(name, "square");
        let got: Vec<&[u8]> = got.map(|t| t.expect("whole")).collect();
        assert_eq!(got, [&[1, 2, 3][..], &[], &[9; 1000]]);

        let body = super::tests::body(&init_frame("setup", b"xyz"));
        let Request::Init { name, payload } = Request::parse(&body).expect("parses") else {
            panic!("not an init request");
        };
        assert_eq!((name, payload), ("setup", &b"xyz"[..]));
        assert_eq!(super::tests::body(&hello_frame()), HELLO);
        assert_eq!(answer(&super::tests::body(&ack_frame())).expect("parses"), Answer::Ack);
        assert!(is_ready(&super::tests::body(&ready_frame())));
    }

    #[test]
    fn end_of_file_between_frames_is_none_and_inside_one_an_error() {
        assert!(matches!(read_frame(&mut &[][..]), Ok(None)));
        assert!(read_frame(&mut &[5, 0][..]).is_err());
        assert!(read_frame(&mut &[5, 0, 0, 0, 1][..]).is_err());
        let body = [b'R', 200, 0, 0, 0];
        assert!(Request::parse(&body).is_err());
    }

    #[test]
    fn a_length_over_the_limit_is_refused_without_allocating_it() {
        let huge = u32::try_from(MAX_FRAME + 1).expect("fits").to_le_bytes();
        let error = read_frame(&mut &huge[..]).expect_err("refused");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert!(body_len(&u32::MAX.to_le_bytes()).is_err());
        // At the limit the prefix is trusted, but only the bytes that
        // arrive are read: a short stream is an error, not 1 GiB reserved.
        let at_limit = u32::try_from(MAX_FRAME).expect("fits").to_le_bytes();
        assert_eq!(body_len(&at_limit).expect("allowed"), Some(MAX_FRAME));
        let mut short = at_limit.to_vec();
        short.extend_from_slice(b"abc");
        assert!(read_frame(&mut &short[..]).is_err());
    }

    #[test]
    fn chunks_are_split_where_their_frame_would_be_too_large() {
        let big = vec![0; MAX_VALUE];
        let tasks = vec![big.clone(), vec![1], big];
        assert_eq!(tasks_that_fit("t", &tasks), 2);
        assert_eq!(tasks_that_fit("t", &tasks[2..]), 1);
        assert_eq!(tasks_that_fit("t", &[vec![1], vec![2]]), 2);
    }

    #[test]
    fn answers_decode_to_outputs_and_errors() {
        let bytes = task_answer(&output_frame(&(7_u32, "seven"), "t")).expect("an output");
        let value: (u32, String) = postcard::from_bytes(&bytes).expect("decodes");
        assert_eq!(value, (7, "seven".to_owned()));

        for (kind, want) in [
            (PANICKED, TaskError::Panicked("m".into())),
            (FAILED, TaskError::Failed("m".into())),
            (SERIALIZE, TaskError::Serialize("m".into())),
        ] {
            assert_eq!(task_answer(&error_frame(kind, "m")), Err(want));
        }
        assert!(answer(b"?").is_err());
        assert!(answer(b"A?").is_err(), "an acknowledgement has no body");
    }

    proptest! {
        /// Whatever a broken or hostile peer sends, parsing gives frames or
        /// an error and never panics.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut rest = &bytes[..];
            while let Ok(Some(body)) = read_frame(&mut rest) {
                if let Ok(Request::Run { tasks, .. }) = Request::parse(&body) {
                    for task in tasks.take(1000) {
                        let _ = task;
                    }
                }
                let _ = answer(&body);
                let _ = is_ready(&body);
            }
            let _ = body_len(&bytes);
        }

        /// Any chunk of tasks read back is the chunk that was written.
        #[test]
        fn run_frames_round_trip(
            name in "[a-z_]{0,20}",
            tasks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16),
        ) {
            let frame = run_frame(&name, &tasks);
            prop_assert_eq!(frame.len(), run_frame_len(&name, &tasks));
            let body = body(&frame);
            let Ok(Request::Run { name: got_name, tasks: got }) = Request::parse(&body) else {
                panic!("not a run request");
            };
            prop_assert_eq!(got_name, name.as_str());
            let got: Vec<Vec<u8>> = got.map(|t| t.expect("whole").to_vec()).collect();
            prop_assert_eq!(got, tasks);
        }

        /// Error answers keep their kind and message.
        #[test]
        fn error_frames_round_trip(message in ".{0,40}") {
            prop_assert_eq!(task_answer(&error_frame(FAILED, &message)), Err(TaskError::Failed(message)));
        }
    }
}
