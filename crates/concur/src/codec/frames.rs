//! The frames of the process pool's worker protocol (see the table in
//! [`process_pool`](crate::process_pool)'s docs): how they are built, read
//! and parsed. A task's answer is a frame's body, which is how it travels
//! through a broker too. Nothing here touches a process; both sides call
//! these on their ends of the pipes.
#![cfg_attr(not(unix), allow(dead_code))]

use std::io::{self, Read};

use crate::pool::TaskError;

/// The largest body a frame may have (1 GiB). A length prefix above it is
/// refused as malformed instead of trusted, and a reader allocates only
/// as the bytes of a frame actually arrive, so a garbled or hostile
/// prefix cannot make either side reserve gigabytes. Values are refused
/// at serialisation time if they could not fit ([`MAX_VALUE`]), and the
/// pool splits a chunk whose frame would be larger.
pub(crate) const MAX_FRAME: usize = 1 << 30;

/// The largest serialised task or output: room is left in a frame for
/// its tag, the task name and the length prefixes.
pub(crate) const MAX_VALUE: usize = MAX_FRAME - 64 * 1024;

const HELLO: &[u8] = b"Hconcur/3";
const INIT: u8 = b'I';
const RUN: u8 = b'R';
const READY: u8 = b'r';
const ACK: u8 = b'A';
const SPACE: u8 = b'S';
const OUTPUT: u8 = b'O';
const ERROR: u8 = b'E';

/// What a worker writes on its pipe to wake its manager, blocked waiting
/// for answers in the shared ring: a byte, not a frame.
pub(crate) const WAKE: u8 = b'W';

/// The pool's answer to a worker blocked for room in the ring: there is
/// room now.
pub(crate) const SPACE_FRAME: [u8; 5] = [1, 0, 0, 0, SPACE];

/// A worker's acknowledgement that it has read a whole chunk and is about
/// to run it: a worker that dies before committing it ran none of the
/// chunk.
pub(crate) const ACK_FRAME: [u8; 5] = [1, 0, 0, 0, ACK];

pub(crate) const PANICKED: u8 = 0;
pub(crate) const FAILED: u8 = 1;
pub(crate) const SERIALIZE: u8 = 2;

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

pub(crate) fn hello_frame() -> Vec<u8> {
    let mut frame = start(HELLO[0], HELLO.len());
    frame.extend_from_slice(&HELLO[1..]);
    finish(frame)
}

pub(crate) fn init_frame(name: &str, payload: &[u8]) -> Vec<u8> {
    let mut frame = start(INIT, 4 + name.len() + payload.len());
    put_bytes(&mut frame, name.as_bytes());
    frame.extend_from_slice(payload);
    finish(frame)
}

/// The serialised tasks of one chunk, back to back as they go in a run
/// frame (each with its length before it), in one buffer: one allocation
/// per chunk rather than one per task, and a frame is built with one copy.
#[derive(Debug, Default)]
pub(crate) struct Payloads {
    records: Vec<u8>,
    /// Where each task's record (its length, then its bytes) starts.
    starts: Vec<usize>,
}

impl Payloads {
    /// Serialises `task` as the next payload; on failure nothing is added.
    pub(crate) fn push<V: serde::Serialize>(
        &mut self,
        task: &V,
        what: impl FnOnce() -> String,
    ) -> Result<(), TaskError> {
        let at = self.records.len();
        self.records.extend_from_slice(&[0; 4]);
        if let Err(e) = super::encode_into(&mut self.records, task, what) {
            self.records.truncate(at);
            return Err(e);
        }
        // Values are at most MAX_VALUE, so this fits.
        let len = u32::try_from(self.records.len() - at - 4).unwrap_or(u32::MAX);
        self.records[at..at + 4].copy_from_slice(&len.to_le_bytes());
        self.starts.push(at);
        Ok(())
    }

    /// Adds an already serialised payload.
    #[cfg(test)]
    pub(crate) fn push_bytes(&mut self, bytes: &[u8]) {
        self.starts.push(self.records.len());
        put_bytes(&mut self.records, bytes);
    }

    pub(crate) fn len(&self) -> usize {
        self.starts.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// The byte range of the records of tasks `from..to`.
    fn span(&self, from: usize, to: usize) -> std::ops::Range<usize> {
        let start = |k: usize| self.starts.get(k).copied().unwrap_or(self.records.len());
        start(from)..start(to)
    }
}

/// The size of the frame [`run_frame`] makes of tasks `from..to`.
pub(crate) fn run_frame_len(name: &str, tasks: &Payloads, from: usize, to: usize) -> usize {
    4 + 1 + 4 + name.len() + 4 + tasks.span(from, to).len()
}

/// How many of tasks `from..to`, from the first, fit in one run frame (at
/// least 1: a single task always fits, as values are at most
/// [`MAX_VALUE`]).
pub(crate) fn tasks_that_fit(name: &str, tasks: &Payloads, from: usize, to: usize) -> usize {
    records_that_fit(name, (from..to.min(tasks.len())).map(|k| tasks.span(k, k + 1).len()))
}

/// How many records of these sizes (length prefix included), from the
/// first, fit in one run frame (at least 1).
fn records_that_fit(name: &str, sizes: impl Iterator<Item = usize>) -> usize {
    let mut size = 4 + 1 + 4 + name.len() + 4;
    let mut n = 0;
    for record in sizes {
        size += record;
        if size > 4 + MAX_FRAME && n > 0 {
            break;
        }
        n += 1;
    }
    n
}

/// The frame that asks a worker to run tasks `from..to`.
pub(crate) fn run_frame(name: &str, tasks: &Payloads, from: usize, to: usize) -> Vec<u8> {
    let mut frame = start(RUN, run_frame_len(name, tasks, from, to) - 5);
    put_bytes(&mut frame, name.as_bytes());
    put_u32(&mut frame, to - from);
    frame.extend_from_slice(&tasks.records[tasks.span(from, to)]);
    finish(frame)
}

pub(crate) fn ready_frame() -> Vec<u8> {
    finish(start(READY, 0))
}

#[cfg(test)]
pub(crate) fn ack_frame() -> Vec<u8> {
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
#[cfg(test)]
pub(crate) fn output_frame<O: serde::Serialize>(output: &O, task: &str) -> Vec<u8> {
    let mut frame = Vec::new();
    push_output_frame(&mut frame, output, task);
    frame
}

/// Appends to `buf` the answer for a task that gave `output`: the output,
/// serialised in place, or the error that serialising it gave.
pub(crate) fn push_output_frame<O: serde::Serialize>(buf: &mut Vec<u8>, output: &O, task: &str) {
    let at = buf.len();
    buf.extend_from_slice(&[0, 0, 0, 0, OUTPUT]);
    match super::encode_into(buf, output, || format!("the output of task {task:?}")) {
        Ok(()) => {
            // Values are at most MAX_VALUE, so this fits; saturate anyway.
            let len = u32::try_from(buf.len() - at - 4).unwrap_or(u32::MAX);
            buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
        }
        Err(error) => {
            buf.truncate(at);
            let frame = match error {
                TaskError::Panicked(message) => error_frame(PANICKED, &message),
                other => error_frame(SERIALIZE, &other.to_string()),
            };
            buf.extend_from_slice(&frame);
        }
    }
}

/// Whether a whole frame (length included) is an error answer.
pub(crate) fn is_error(frame: &[u8]) -> bool {
    frame.get(4) == Some(&ERROR)
}

/// The body length announced by the prefix at the start of `bytes`, once
/// the prefix is complete; an error if it is over [`MAX_FRAME`].
pub(crate) fn body_len(bytes: &[u8]) -> io::Result<Option<usize>> {
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
pub(crate) fn read_frame(r: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
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
pub(crate) enum Request<'a> {
    Init {
        name: &'a str,
        payload: &'a [u8],
    },
    Run {
        name: &'a str,
        tasks: Tasks<'a>,
    },
    /// There is room in the ring now.
    Space,
}

impl<'a> Request<'a> {
    pub(crate) fn parse(body: &'a [u8]) -> io::Result<Self> {
        let (&tag, rest) = body.split_first().ok_or_else(|| malformed("empty"))?;
        if tag == SPACE && rest.is_empty() {
            return Ok(Request::Space);
        }
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
pub(crate) struct Tasks<'a> {
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
pub(crate) fn is_ready(body: &[u8]) -> bool {
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

    fn payloads(tasks: &[Vec<u8>]) -> Payloads {
        let mut payloads = Payloads::default();
        for task in tasks {
            payloads.push_bytes(task);
        }
        payloads
    }

    fn task_answer(frame: &[u8]) -> Result<Vec<u8>, TaskError> {
        match answer(&body(frame)).expect("an answer") {
            Answer::Task(result) => result.map(<[u8]>::to_vec),
            Answer::Ack => panic!("an acknowledgement, not an answer"),
        }
    }

    #[test]
    fn frames_round_trip() {
        let tasks = payloads(&[vec![1, 2, 3], vec![], vec![9; 1000]]);
        let frame = run_frame("square", &tasks, 0, 3);
        assert_eq!(frame.len(), run_frame_len("square", &tasks, 0, 3));
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
        assert_eq!(ack_frame(), ACK_FRAME);
        assert!(matches!(Request::parse(&super::tests::body(&SPACE_FRAME)), Ok(Request::Space)));
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
        // Sizes of records (length prefix included) rather than 2 GiB of
        // payloads.
        let big = 4 + MAX_VALUE;
        let tasks = [big, 4 + 1, big];
        assert_eq!(records_that_fit("t", tasks.into_iter()), 2);
        assert_eq!(records_that_fit("t", tasks[2..].iter().copied()), 1);
        assert_eq!(tasks_that_fit("t", &payloads(&[vec![1], vec![2]]), 0, 2), 2);
        // A chunk is sent from where its last frame ended, up to a limit.
        let three = payloads(&[vec![1], vec![2], vec![3]]);
        assert_eq!(tasks_that_fit("t", &three, 1, 3), 2);
        assert_eq!(tasks_that_fit("t", &three, 0, 1), 1);
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
            let payloads = payloads(&tasks);
            let frame = run_frame(&name, &payloads, 0, tasks.len());
            prop_assert_eq!(frame.len(), run_frame_len(&name, &payloads, 0, tasks.len()));
            let body = body(&frame);
            let Ok(Request::Run { name: got_name, tasks: got }) = Request::parse(&body) else {
                panic!("not a run request");
            };
            prop_assert_eq!(got_name, name.as_str());
            let got: Vec<Vec<u8>> = got.map(|t| t.expect("whole").to_vec()).collect();
            prop_assert_eq!(got, tasks);
        }

        /// A frame of part of a chunk (what is sent after a worker died
        /// mid-chunk, or was recycled) holds exactly those tasks.
        #[test]
        fn part_of_a_chunk_round_trips(
            tasks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..32), 1..12),
            cut in any::<(usize, usize)>(),
        ) {
            let from = cut.0 % tasks.len();
            let to = from + 1 + cut.1 % (tasks.len() - from);
            let payloads = payloads(&tasks);
            let frame = run_frame("t", &payloads, from, to);
            prop_assert_eq!(frame.len(), run_frame_len("t", &payloads, from, to));
            prop_assert_eq!(tasks_that_fit("t", &payloads, from, to), to - from);
            let body = body(&frame);
            let Ok(Request::Run { tasks: got, .. }) = Request::parse(&body) else {
                panic!("not a run request");
            };
            let got: Vec<Vec<u8>> = got.map(|t| t.expect("whole").to_vec()).collect();
            prop_assert_eq!(&got[..], &tasks[from..to]);
        }

        /// Error answers keep their kind and message.
        #[test]
        fn error_frames_round_trip(message in ".{0,40}") {
            prop_assert_eq!(task_answer(&error_frame(FAILED, &message)), Err(TaskError::Failed(message)));
        }
    }
}
