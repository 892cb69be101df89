//! A bare HTTP server for the clients' unit tests: one connection, the
//! same bytes written back for every request head read on it.

use std::io::{BufRead, BufReader, Write};
use std::sync::mpsc::Receiver;

/// Serves one connection on a loopback port, answering every request with
/// `answer`. Gives the base URL, and a receiver that gets the number of
/// requests read once the client closes the connection.
pub(crate) fn one_connection(answer: Vec<u8>) -> (String, Receiver<usize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let url = format!("http://{}", listener.local_addr().expect("its address"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let Ok((stream, _)) = listener.accept() else { return };
        let mut reader = BufReader::new(stream);
        let mut requests = 0;
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                // The empty line that ends a head.
                Ok(2) => {
                    requests += 1;
                    if reader.get_mut().write_all(&answer).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
            }
        }
        let _ = tx.send(requests);
    });
    (url, rx)
}

/// A good answer for USD, with a header of `padding` bytes to make its
/// head as large as a test needs.
pub(crate) fn usd_answer(padding: usize) -> Vec<u8> {
    let body = r#"{"date":"2018-10-12","base":"USD","rates":{"PLN":3.709694}}"#;
    let pad = "p".repeat(padding);
    format!("HTTP/1.1 200 OK\r\nx-padding: {pad}\r\ncontent-length: {}\r\n\r\n{body}", body.len()).into_bytes()
}

/// The request `usd_answer` answers.
pub(crate) fn usd() -> crate::RateRequest {
    crate::RateRequest { base: "USD".parse().expect("a currency"), symbols: vec![], date: None }
}
