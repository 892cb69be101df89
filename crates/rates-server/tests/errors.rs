//! Every error answer carries the API's JSON `{"detail": ...}` body: those
//! of the handlers, axum's own (405 for a wrong method) and hyper's (400 for
//! a head it cannot parse, 431 for one too large), which never reach a
//! handler.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use rates_server::ServerOptions;
use serde_json::json;
use support::{agent, get_json, server};

/// Sends `raw` on a new connection and reads until the server closes it:
/// (status line, lower-cased head, body).
fn raw(server: &rates_server::RunningServer, raw: &[u8]) -> (String, String, String) {
    let mut sock = TcpStream::connect(server.addr()).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The server may answer and close before taking all of a huge head.
    let _ = sock.write_all(raw);
    let mut out = Vec::new();
    let _ = sock.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no answer: {text:?}"));
    (head.lines().next().unwrap_or_default().to_string(), head.to_ascii_lowercase(), body.to_string())
}

#[test]
fn wrong_method_is_405_json_with_allow() {
    // Our own route; the API's answer 404 as vatcomply's (tests/contract.rs).
    let s = server(ServerOptions::default());
    let mut r = agent().post(format!("{}/metrics", s.url())).header("Origin", "https://example.com").send("").unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert!(r.headers().get("allow").is_some_and(|v| v.to_str().unwrap().contains("GET")));
    assert_eq!(r.headers().get("content-type").unwrap(), "application/json");
    assert_eq!(r.headers().get("access-control-allow-origin").unwrap(), "*");
    let body: serde_json::Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(body, json!({"detail": "Method not allowed."}));
}

#[test]
fn unknown_path_is_404_json_for_any_method() {
    let s = server(ServerOptions::default());
    let (status, body) = get_json(&agent(), &s, "/nope");
    assert_eq!((status, body), (404, json!({"detail": "Not Found"})));
    let mut r = agent().post(format!("{}/nope", s.url())).send("").unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(r.body_mut().read_to_string().unwrap(), r#"{"detail":"Not Found"}"#);
}

#[test]
fn oversized_headers_are_431_json() {
    let s = server(ServerOptions::default());
    let big = format!("GET /rates HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n", "a".repeat(200 * 1024));
    let (status, head, body) = raw(&s, big.as_bytes());
    assert_eq!(status, "HTTP/1.1 431 Request Header Fields Too Large");
    assert!(head.contains("content-type: application/json"), "{head}");
    assert_eq!(body, r#"{"detail":"Request header fields too large."}"#);
}

#[test]
fn too_many_headers_are_431_json() {
    let s = server(ServerOptions::default());
    let many: String = (0..200).map(|i| format!("x-h{i}: v\r\n")).collect();
    let (status, _, body) = raw(&s, format!("GET /rates HTTP/1.1\r\nhost: x\r\n{many}\r\n").as_bytes());
    assert_eq!(status, "HTTP/1.1 431 Request Header Fields Too Large");
    assert_eq!(body, r#"{"detail":"Request header fields too large."}"#);
}

#[test]
fn malformed_request_is_400_json() {
    let s = server(ServerOptions::default());
    for bad in [
        &b"GET /rates?base=US D HTTP/1.1\r\nhost: x\r\n\r\n"[..],
        b"GET /rates HTTP/1.1\r\nhost: x\r\nno colon here\r\n\r\n",
        b"GET /rates?base=\x01 HTTP/1.1\r\nhost: x\r\n\r\n",
    ] {
        let (status, head, body) = raw(&s, bad);
        assert_eq!(status, "HTTP/1.1 400 Bad Request", "{:?}", String::from_utf8_lossy(bad));
        assert!(head.contains("content-type: application/json"), "{head}");
        assert!(head.contains("access-control-allow-origin: *"), "every answer allows any origin: {head}");
        assert_eq!(body, r#"{"detail":"Bad request."}"#);
    }
}

#[test]
fn malformed_query_string_is_400_json() {
    let s = server(ServerOptions::default());
    for q in ["base=%ZZ", "base", "base=USD&base=%FF", "date=%FF"] {
        let (status, body) = get_json(&agent(), &s, &format!("/rates?{q}"));
        assert_eq!(status, 400, "{q}: {body}");
        assert!(body["detail"].is_string(), "{q}: {body}");
    }
}
