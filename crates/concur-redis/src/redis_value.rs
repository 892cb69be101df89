//! Reading the replies of the stream commands (`XREAD`, `XREADGROUP`,
//! `XAUTOCLAIM`, `XPENDING`, `XINFO`) out of `redis::Value`s, in RESP2 or
//! RESP3 shape alike.

use redis::Value;

/// One stream entry: its id and its fields.
#[derive(Debug, Clone, Default)]
pub(crate) struct Entry {
    pub(crate) id: String,
    pub(crate) fields: Vec<(String, Vec<u8>)>,
}

impl Entry {
    /// The bytes of field `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&[u8]> {
        self.fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_slice())
    }

    /// Field `name` as text.
    pub(crate) fn text(&self, name: &str) -> Option<&str> {
        std::str::from_utf8(self.get(name)?).ok()
    }

    /// Field `name` as a number.
    pub(crate) fn number<N: std::str::FromStr>(&self, name: &str) -> Option<N> {
        self.text(name)?.parse().ok()
    }
}

/// The bytes of a string reply.
pub(crate) fn bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        Value::VerbatimString { text, .. } => Some(text.as_bytes()),
        _ => None,
    }
}

/// A string reply as text.
pub(crate) fn text(v: &Value) -> Option<String> {
    bytes(v).map(|b| String::from_utf8_lossy(b).into_owned())
}

/// An integer reply (or a string holding one).
pub(crate) fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        other => text(other)?.parse().ok(),
    }
}

/// The items of an array (or set) reply; nothing for nil.
pub(crate) fn items(v: &Value) -> &[Value] {
    match v {
        Value::Array(a) | Value::Set(a) => a,
        _ => &[],
    }
}

/// Key/value pairs of a map reply (RESP3) or of a flat array of
/// alternating keys and values (RESP2).
pub(crate) fn pairs(v: &Value) -> Vec<(&Value, &Value)> {
    match v {
        Value::Map(m) => m.iter().map(|(k, v)| (k, v)).collect(),
        other => items(other).chunks_exact(2).map(|kv| (&kv[0], &kv[1])).collect(),
    }
}

/// A list of entries: `[[id, [field, value, ...]], ...]`. Entries deleted
/// from the stream come as `[id, nil]` and are left out.
pub(crate) fn entries(v: &Value) -> Vec<Entry> {
    items(v)
        .iter()
        .filter_map(|e| {
            let [id, fields] = items(e) else { return None };
            if matches!(fields, Value::Nil) {
                return None;
            }
            let fields = pairs(fields).into_iter().filter_map(|(k, v)| Some((text(k)?, bytes(v)?.to_vec()))).collect();
            Some(Entry { id: text(id)?, fields })
        })
        .collect()
}

/// The entries of an `XREAD`/`XREADGROUP` reply, all streams together.
pub(crate) fn read_reply(v: &Value) -> Vec<Entry> {
    pairs_or_streams(v).into_iter().flat_map(entries).collect()
}

/// `XREAD` answers `[[stream, entries], ...]` in RESP2 and a map in RESP3.
fn pairs_or_streams(v: &Value) -> Vec<&Value> {
    match v {
        Value::Map(m) => m.iter().map(|(_, e)| e).collect(),
        other => items(other).iter().filter_map(|s| items(s).get(1)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn reads_stream_replies_in_both_shapes() {
        let entry = Value::Array(vec![bulk("1-0"), Value::Array(vec![bulk("id"), bulk("7"), bulk("name"), bulk("t")])]);
        let gone = Value::Array(vec![bulk("2-0"), Value::Nil]);
        let list = Value::Array(vec![entry, gone]);
        let resp2 = Value::Array(vec![Value::Array(vec![bulk("s"), list.clone()])]);
        let resp3 = Value::Map(vec![(bulk("s"), list)]);
        for reply in [resp2, resp3] {
            let got = read_reply(&reply);
            assert_eq!(got.len(), 1, "the deleted entry is left out");
            assert_eq!(got[0].id, "1-0");
            assert_eq!(got[0].number::<u64>("id"), Some(7));
            assert_eq!(got[0].text("name"), Some("t"));
            assert_eq!(got[0].get("missing"), None);
        }
        assert!(read_reply(&Value::Nil).is_empty());
        assert_eq!(int(&bulk("12")), Some(12));
    }
}
