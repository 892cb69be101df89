//! Reading a trace back: a whole file, or the prefix a killed run left.

use serde_json::Value;

/// A trace that is not one this module writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// It does not start with `[`.
    #[error("not a trace: it does not start with '['")]
    NotATrace,
    /// An event other than the last one is not a JSON object.
    #[error("line {line} of the trace is not an event: {why}")]
    BadEvent {
        /// 1-based.
        line: usize,
        /// What is wrong with it.
        why: String,
    },
}

/// The events of a trace: a finished one, or the prefix of one whose
/// run was killed (its last line perhaps cut short, which is then left
/// out, and no `]`).
///
/// # Errors
///
/// The text is not a trace in the form [`Trace`](super::Trace) writes:
/// `[`, then one event per line.
pub fn read_events(text: &str) -> Result<Vec<Value>, ReadError> {
    let body = text.trim_start().strip_prefix('[').ok_or(ReadError::NotATrace)?;
    let lines: Vec<(usize, &str)> =
        body.lines().enumerate().map(|(i, l)| (i + 1, l.trim())).filter(|(_, l)| !l.is_empty() && *l != "]").collect();
    let mut events = Vec::with_capacity(lines.len());
    for (at, &(line, text)) in lines.iter().enumerate() {
        let text = text.strip_suffix(']').unwrap_or(text).trim_end();
        let text = text.strip_suffix(',').unwrap_or(text);
        match serde_json::from_str::<Value>(text) {
            Ok(v) if v.is_object() => events.push(v),
            // The last line of a killed run may be cut short.
            _ if at + 1 == lines.len() => {}
            Ok(_) => return Err(ReadError::BadEvent { line, why: "not an object".into() }),
            Err(e) => return Err(ReadError::BadEvent { line, why: e.to_string() }),
        }
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_trace_and_a_killed_prefix_are_read() {
        let whole = "[\n{\"ph\":\"M\"},\n{\"ph\":\"X\"}\n]\n";
        assert_eq!(read_events(whole).map(|v| v.len()), Ok(2));
        assert!(serde_json::from_str::<Value>(whole).is_ok());
        assert_eq!(read_events("[\n{\"ph\":\"M\"},\n{\"ph\":\"X\"},\n").map(|v| v.len()), Ok(2));
        // Cut in the middle of its last line.
        assert_eq!(read_events("[\n{\"ph\":\"M\"},\n{\"ph\":\"X\",\"ts\":1").map(|v| v.len()), Ok(1));
        assert_eq!(read_events("[\n").map(|v| v.len()), Ok(0));
    }

    #[test]
    fn what_is_not_a_trace_is_an_error() {
        assert_eq!(read_events("{}"), Err(ReadError::NotATrace));
        assert!(matches!(read_events("[\nnope,\n{\"ph\":\"X\"}\n]"), Err(ReadError::BadEvent { line: 2, .. })));
        assert!(matches!(read_events("[\n1,\n{}\n]"), Err(ReadError::BadEvent { line: 2, .. })));
    }
}
