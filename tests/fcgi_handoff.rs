//! The epoll hand-off of our FastCGI layer (`src/fcgi/server.rs`): a kept connection whose next
//! requests are already buffered when a worker finishes one (the socket will not signal them
//! again) is served to the end, in order, by the worker that holds it; and many kept
//! connections doing so at once with a pool of two workers all get every answer.
//!
//! What it does not cover: the rest of the layer (`tests/fcgi_layer.rs`), timing (the benchmark).

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::fcgi::{
    self, Address, BEGIN_REQUEST, END_REQUEST, GET_VALUES, GET_VALUES_RESULT, PARAMS, STDIN,
    STDOUT, unpadded_record,
};
use common::{ALLOW_ALL, Env, Server, standard_config};

const JID: &str = "handoff@example.org";

/// A whole kept slot request: BEGIN_REQUEST, its params, the empty PARAMS and STDIN records.
fn slot_request(id: u16, name: &str) -> Vec<u8> {
    let mut out = unpadded_record(BEGIN_REQUEST, id, &[0, 1, 1, 0, 0, 0, 0, 0]);
    let params = fcgi::request_params(
        "GET",
        &format!("/http_upload/slot/?jid={JID}&name={name}&size=4"),
        &[],
    );
    out.extend(unpadded_record(PARAMS, id, &fcgi::encode_params(&params)));
    out.extend(unpadded_record(PARAMS, id, &[]));
    out.extend(unpadded_record(STDIN, id, &[]));
    out
}

fn socket(server: &Server) -> UnixStream {
    let Address::Unix(path) = server.address.clone() else {
        unreachable!()
    };
    let stream = UnixStream::connect(path).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
}

/// Reads records until `ends` END_REQUESTs and `values` GET_VALUES_RESULTs have come; returns
/// each request's STDOUT and the order the END_REQUESTs came in.
fn read_answers(
    stream: &mut UnixStream,
    ends: usize,
    values: usize,
) -> (BTreeMap<u16, Vec<u8>>, Vec<u16>) {
    let (mut stdout, mut order, mut seen_values) = (BTreeMap::new(), Vec::new(), 0);
    while order.len() < ends || seen_values < values {
        let mut header = [0u8; 8];
        stream
            .read_exact(&mut header)
            .unwrap_or_else(|e| panic!("after {order:?} ended, {seen_values} values: {e}"));
        let id = u16::from_be_bytes([header[2], header[3]]);
        let len = usize::from(u16::from_be_bytes([header[4], header[5]]));
        let mut content = vec![0u8; len + usize::from(header[6])];
        stream.read_exact(&mut content).unwrap();
        content.truncate(len);
        match header[1] {
            STDOUT => stdout.entry(id).or_insert_with(Vec::new).extend(content),
            END_REQUEST => order.push(id),
            GET_VALUES_RESULT => seen_values += 1,
            other => panic!("unexpected record type {other}"),
        }
    }
    (stdout, order)
}

fn status(stdout: &[u8]) -> String {
    String::from_utf8_lossy(stdout)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

#[test]
fn requests_buffered_behind_a_request_are_all_answered_in_order() {
    let env = Env::new(&format!("workers = 2\n{}", standard_config(ALLOW_ALL)));
    let server = env.serve();
    let mut stream = socket(&server);
    // Three requests and a management record in one write: after the first, the rest is
    // in the connection's buffer, not in the socket.
    let mut bytes = slot_request(1, "a.txt");
    bytes.extend(unpadded_record(GET_VALUES, 0, &[]));
    bytes.extend(slot_request(2, "b.txt"));
    bytes.extend(slot_request(3, "c.txt"));
    stream.write_all(&bytes).unwrap();
    let (stdout, order) = read_answers(&mut stream, 3, 1);
    assert_eq!(order, [1, 2, 3]);
    for id in 1..=3 {
        assert_eq!(status(&stdout[&id]), "Status: 200 OK", "request {id}");
    }
    // The connection is still kept and idle, and armed: a later request on it is answered.
    std::thread::sleep(Duration::from_millis(200));
    stream.write_all(&slot_request(4, "d.txt")).unwrap();
    let (stdout, order) = read_answers(&mut stream, 1, 0);
    assert_eq!(
        (order, status(&stdout[&4])),
        (vec![4], "Status: 200 OK".to_owned())
    );
    let log = server.log();
    assert!(!log.to_lowercase().contains("panic"), "{log}");
}

#[test]
fn many_connections_with_buffered_requests_and_two_workers_all_get_their_answers() {
    let env = Env::new(&format!("workers = 2\n{}", standard_config(ALLOW_ALL)));
    let server = env.serve();
    let mut streams: Vec<UnixStream> = (0..12).map(|_| socket(&server)).collect();
    for (c, stream) in streams.iter_mut().enumerate() {
        let mut bytes = Vec::new();
        for id in 1..=5u16 {
            bytes.extend(slot_request(id, &format!("c{c}-{id}.txt")));
        }
        stream.write_all(&bytes).unwrap();
    }
    for (c, stream) in streams.iter_mut().enumerate() {
        let (stdout, order) = read_answers(stream, 5, 0);
        assert_eq!(order, [1, 2, 3, 4, 5], "connection {c}");
        for (id, out) in &stdout {
            assert_eq!(
                status(out),
                "Status: 200 OK",
                "connection {c}, request {id}"
            );
        }
    }
}
