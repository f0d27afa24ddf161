//! `runserver`, the development mode of the README's first command: plain HTTP on a loopback
//! port, no config, slot → PUT → GET through the same code paths as FastCGI.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;

/// One HTTP/1.1 request with `Connection: close`; returns status, headers, body (read up to
/// Content-Length, or to the end).
fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "PUT" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let _ = stream.write_all(body);

    let mut received = Vec::new();
    let mut buf = [0u8; 8192];
    let header_end = loop {
        if let Some(i) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut buf).expect("read response");
        assert!(n > 0, "connection closed before the response head");
        received.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&received[..header_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = received[header_end + 4..].to_vec();
    let length = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("Content-Length"))
        .and_then(|(_, v)| v.parse::<usize>().ok());
    let length = if method == "HEAD" { Some(0) } else { length };
    loop {
        if length.is_some_and(|l| body.len() >= l) {
            break;
        }
        let n = stream.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buf[..n]);
    }
    (status, headers, body)
}

#[test]
fn the_readme_flow_works_without_a_web_server() {
    let dir = TempDir::new();
    let server = start_dev(&dir.path.join("data"));
    let port = server.port;
    let content = b"hello, world";
    let (status, _, body) = http(
        port,
        "GET",
        &format!(
            "/http_upload/slot/?jid=user@example.com&name={}&size={}&content_type=text/plain",
            pct("привет мир.txt"),
            content.len()
        ),
        &[],
        b"",
    );
    let text = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(status, 200, "{text}");
    let (put_url, get_url) = text.split_once('\n').expect("two lines");
    let local = format!("http://127.0.0.1:{port}/");
    assert!(put_url.starts_with(&local), "{put_url}");
    assert!(get_url.starts_with(&local), "{get_url}");
    assert!(put_url.ends_with("/привет_мир.txt"), "{put_url}");

    // a client sends the URL percent-encoded
    let encode_last = |url: &str| {
        let (dir, name) = url_path(url)
            .rsplit_once('/')
            .map(|(d, n)| (d.to_string(), n.to_string()))
            .unwrap();
        format!("{dir}/{}", pct(&name))
    };
    let put_path = encode_last(put_url);
    let (status, _, body) = http(
        port,
        "PUT",
        &put_path,
        &[("Content-Type", "text/plain")],
        b"wrong size!",
    );
    assert!(
        (400..500).contains(&status),
        "wrong size: {}",
        String::from_utf8_lossy(&body)
    );
    let (status, _, body) = http(
        port,
        "PUT",
        &put_path,
        &[("Content-Type", "text/plain")],
        content,
    );
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let (status, _, body) = http(
        port,
        "PUT",
        &put_path,
        &[("Content-Type", "text/plain")],
        content,
    );
    assert!(
        (400..500).contains(&status),
        "second PUT: {}",
        String::from_utf8_lossy(&body)
    );

    let (status, headers, body) = http(port, "GET", &encode_last(get_url), &[], b"");
    assert_eq!(status, 200);
    assert_eq!(body, content);
    assert!(
        headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("X-Content-Type-Options") && v == "nosniff"),
        "{headers:?}"
    );
}

/// A request line with raw UTF-8 (as `curl --path-as-is` may send it, and nginx accepts) is
/// answered like its percent-encoded form — tiny_http, used before, dropped the connection
/// without a word — and a head that is not even UTF-8 gets a 400 with one line.
#[test]
fn raw_utf8_in_the_request_line_is_answered() {
    let dir = TempDir::new();
    let server = start_dev(&dir.path.join("data"));
    let port = server.port;
    let content = b"raw!";
    let (status, _, body) = http(
        port,
        "GET",
        &format!(
            "/http_upload/slot/?jid=user@example.com&name={}&size={}",
            pct("сырой.txt"),
            content.len()
        ),
        &[],
        b"",
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let text = String::from_utf8_lossy(&body).into_owned();
    let put_url = text.lines().next().expect("PUT URL");
    let raw_path = url_path(put_url);
    assert!(raw_path.ends_with("/сырой.txt"), "{raw_path}");
    let (status, _, body) = http(port, "PUT", &raw_path, &[], content);
    assert_eq!(
        status,
        201,
        "raw UTF-8 PUT: {}",
        String::from_utf8_lossy(&body)
    );
    let (status, _, body) = http(port, "GET", &raw_path, &[], b"");
    assert_eq!((status, body.as_slice()), (200, &content[..]));

    // Not UTF-8 at all, in the path and in a header value.
    for head in [
        &b"GET /http_upload/upload/x/\xff\xfe HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        &b"GET /http_upload/slot/ HTTP/1.1\r\nHost: a\r\nX-Name: \xff\r\n\r\n"[..],
    ] {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream.write_all(head).unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer);
        let status = answer.split_whitespace().nth(1).unwrap_or("");
        assert!(
            status.starts_with('4'),
            "{:?}: {answer:?}",
            String::from_utf8_lossy(head)
        );
    }
}
