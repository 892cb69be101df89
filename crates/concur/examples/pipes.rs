//! Listing 13, "pipes": values cross a process boundary only by being
//! serialised.
//!
//! The parent writes five values into a pipe — the integer 42, a string, a
//! map `{"one": 1}`, an instance of a custom struct, and finally `None`, the
//! end marker — then starts a child process reading from that pipe. The
//! child prints each value it receives until the end marker. Each value is
//! a serde value, sent as a length-prefixed postcard frame (the same
//! framing `concur::ProcessPool` uses); what arrives is a new value built
//! from bytes, not the parent's object.
//!
//! Run it with:
//!
//! ```text
//! cargo run -p concur --example pipes
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

/// Python's `CustomClass`: any type of ours that can be serialised.
#[derive(Debug, Serialize, Deserialize)]
struct CustomClass {
    name: String,
}

/// The kinds of value the listing sends down one pipe.
#[derive(Serialize, Deserialize)]
enum Value {
    Int(i64),
    Str(String),
    Map(BTreeMap<String, i64>),
    Custom(CustomClass),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(n) => write!(f, "{n}"),
            Value::Str(s) => write!(f, "{s}"),
            Value::Map(m) => write!(f, "{m:?}"),
            Value::Custom(c) => write!(f, "{c:?}"),
        }
    }
}

fn show(item: Option<&Value>) -> String {
    item.map_or_else(|| "None".to_owned(), Value::to_string)
}

fn send(connection: &mut impl Write, item: &Option<Value>) -> io::Result<()> {
    let bytes = postcard::to_allocvec(item).map_err(io::Error::other)?;
    let len = u32::try_from(bytes.len()).map_err(io::Error::other)?;
    connection.write_all(&len.to_le_bytes())?;
    connection.write_all(&bytes)
}

fn recv(connection: &mut impl Read) -> io::Result<Option<Value>> {
    let mut len = [0; 4];
    connection.read_exact(&mut len)?;
    let mut bytes = vec![0; u32::from_le_bytes(len) as usize];
    connection.read_exact(&mut bytes)?;
    postcard::from_bytes(&bytes).map_err(io::Error::other)
}

/// The child: print what arrives until the end marker.
fn work(connection: &mut impl Read) -> io::Result<()> {
    while let Some(instance) = recv(connection)? {
        println!("CHLD: received: {instance}");
    }
    Ok(())
}

fn main() -> io::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("child") {
        return work(&mut io::stdin().lock());
    }

    let (child_conn, mut parent_conn) = io::pipe()?;
    let items = [
        Some(Value::Int(42)),
        Some(Value::Str("some string".to_owned())),
        Some(Value::Map(BTreeMap::from([("one".to_owned(), 1)]))),
        Some(Value::Custom(CustomClass { name: "custom".to_owned() })),
        None,
    ];
    // As in the listing, everything is sent before the child starts: the
    // pipe holds it until then.
    for item in &items {
        println!("PRNT: send: {}", show(item.as_ref()));
        send(&mut parent_conn, item)?;
    }
    let program = std::env::current_exe()?;
    let mut child = Command::new(program).arg("child").stdin(Stdio::from(child_conn)).spawn()?;
    drop(parent_conn);
    child.wait()?;
    Ok(())
}
