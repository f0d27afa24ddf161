//! `webserver_download` (the Django app's `WEBSERVER_DOWNLOAD`) decides who serves GET URLs.
//! `false`: the program serves the file. `true`, the default: the web server serves it, and a
//! GET or HEAD that reaches the program anyway gets 404 with one line naming the setting,
//! whether the file exists or not (a probe learns nothing), for slot, HMAC and JWT files alike.
//!
//! Through the shipped web servers (nginx; Apache with `.htaccess` and CGI) the GET is
//! answered by the web server and never reaches the program: that is why the default is
//! `true` and why the stacks' configs say so. The behaviour differs only where a GET reaches
//! the program (FastCGI responder, CGI, `runserver`), which the first tests show.

mod common;

use std::fs;
use std::process::{Command, Stdio};

use common::fcgi::{self, Address, Body, Role};
use common::signing::hmac_sha256_hex;
use common::web::{Flavour, Settings, Stack, curl, put_file_raw};
use common::*;

const JID: &str = "user@example.org";
const HMAC_SECRET: &str = "webserver-download-hmac-secret";
/// What the refusal says (and the log shows).
const REFUSAL: &str = "is for the web server to serve (webserver_download = true)";

/// A config with `webserver_download` set as given (`None`: not set at all), every JID
/// allowed and an HMAC prefix `/share`.
fn config(webserver_download: Option<bool>) -> String {
    let setting = webserver_download
        .map(|on| format!("webserver_download = {on}\n"))
        .unwrap_or_default();
    format!(
        "base_url = \"{BASE}\"\n{setting}\n[[external]]\nprefix = \"/share\"\nsecret = \"{HMAC_SECRET}\"\n\n{ALLOW_ALL}"
    )
}

/// A server with one slot upload and one HMAC upload, received by the program itself.
fn with_uploads(webserver_download: Option<bool>) -> (Env, Server, Slot, String, Vec<u8>) {
    let (env, server) = start(&config(webserver_download));
    let body = body_of(300, 3);
    let slot = server.slot(JID, "notes.txt", body.len() as u64);
    server.upload(&env, PutMode::SelfWrite, &slot, &Put::of(&body));
    let path = "3f2504e0-4f89-11d3-9a0c-0305e82c3301/photo.png";
    let mac = hmac_sha256_hex(HMAC_SECRET, format!("{path} {}", body.len()).as_bytes());
    let put = server.put(
        PutMode::SelfWrite,
        &format!("/share/{path}?v={mac}"),
        &Put::of(&body),
    );
    assert_eq!(put.status, 201, "HMAC PUT: {put}");
    (env, server, slot, format!("/share/{path}"), body)
}

#[test]
fn false_the_program_serves_get_and_head() {
    let (_env, server, slot, hmac_path, body) = with_uploads(Some(false));
    assert_download(&server, &slot.get_path, &body, "text/plain", true);
    assert_download(&server, &hmac_path, &body, "image/png", true);
    assert!(!server.log().contains(REFUSAL), "{}", server.log());
}

#[test]
fn true_the_program_refuses_get_and_head_with_404_naming_the_setting() {
    for setting in [Some(true), None] {
        let (env, server, slot, hmac_path, body) = with_uploads(setting);
        let unknown = format!("/upload/{}/none.txt", "0".repeat(40));
        for uri in [slot.get_path.as_str(), hmac_path.as_str(), unknown.as_str()] {
            for method in ["GET", "HEAD"] {
                let answer = server.call(method, uri, &[]);
                assert_eq!(answer.status, 404, "{setting:?} {method} {uri}: {answer}");
                if method == "GET" {
                    let text = answer.text();
                    assert!(text.contains(REFUSAL), "{method} {uri}: {text:?}");
                    assert!(text.contains(uri), "{method} {uri}: {text:?}");
                    assert_eq!(text.trim_end().lines().count(), 1, "one line: {text:?}");
                }
                assert!(answer.body.len() < 200, "{method} {uri}: a file was sent");
            }
        }
        // Refused, not lost: the files are as they were uploaded.
        assert_eq!(fs::read(env.stored(&slot.token, &slot.name)).unwrap(), body);
        let log = server.log();
        assert!(log.contains(REFUSAL), "the admin sees it in the log: {log}");
        // The other methods are not affected: a preflight still answers, the slot API works.
        assert_eq!(server.call("OPTIONS", &slot.get_path, &[]).status, 204);
        assert_eq!(server.slot(JID, "more.txt", 3).name, "more.txt");
    }
}

#[test]
fn cgi_refuses_a_get_by_default() {
    // Shared hosting: the program runs as CGI, the config example leaves the key at `true`,
    // and Apache serves the downloads; a GET sent to the program is refused.
    let env = Env::new(&config(None));
    let output = Command::new(BIN)
        .env("XMPP_HTTP_UPLOAD_CONFIG", &env.config)
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("REQUEST_METHOD", "GET")
        .env("REQUEST_URI", format!("/upload/{}/a.txt", "a".repeat(40)))
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::null())
        .output()
        .expect("run the binary as CGI");
    let answer = fcgi::parse_cgi_output(&output.stdout).expect("a CGI answer");
    assert_eq!(answer.status, 404, "{}", output_text(&output));
    assert!(answer.text().contains(REFUSAL), "{}", answer.text());
}

#[test]
fn runserver_serves_downloads_itself() {
    let dir = TempDir::new();
    let dev = start_dev(&dir.path.join("data"));
    let base = format!("http://127.0.0.1:{}", dev.port);
    let slot = curl(&[&format!(
        "{base}/http_upload/slot/?jid={JID}&name=dev.txt&size=5"
    )]);
    assert_eq!(slot.status, 200, "{slot:?}");
    let text = String::from_utf8_lossy(&slot.body).to_string();
    let (put_url, get_url) = text.split_once('\n').expect("PUT\\nGET");
    let body = dir.path.join("body");
    fs::write(&body, b"hello").unwrap();
    assert_eq!(put_file_raw(put_url, &body, &[]).status, 201);
    let get = curl(&[get_url]);
    assert_eq!(get.status, 200, "{get:?}");
    assert_eq!(get.body, b"hello");
}

/// Through the shipped site of `flavour` (config: `webserver_download = true`): the GET is
/// answered by the web server with the file, and the program is never asked.
fn the_web_server_serves_downloads(flavour: Flavour) -> Option<(Stack, Slot)> {
    let stack = Stack::start_if_available(flavour, &Settings::default())?;
    let config = fs::read_to_string(&stack.config).expect("read the stack's config");
    assert!(config.contains("webserver_download = true"), "{config}");
    let body = b"served by the web server\n";
    let slot = stack.slot(JID, "static.txt", body.len() as u64, "text/plain");
    let file = stack.scratch_file("static.txt", body);
    let put = put_file_raw(&slot.put_url, &file, &["-H", "Content-Type: text/plain"]);
    if put.status != 201 {
        stack.fail(&format!("PUT: {put:?}"));
    }
    let head = curl(&["-I", &slot.get_url]);
    if head.status != 200 {
        stack.fail(&format!("HEAD through {flavour:?}: {head:?}"));
    }
    let get = curl(&[&slot.get_url]);
    if get.status != 200 || get.body != body {
        stack.fail(&format!("GET through {flavour:?}: {get:?}"));
    }
    if stack.logs().contains(REFUSAL) {
        stack.fail("the web server passed a GET on to the program");
    }
    Some((stack, slot))
}

#[test]
fn nginx_serves_downloads_and_the_program_would_refuse_them() {
    let Some((stack, slot)) = the_web_server_serves_downloads(Flavour::Nginx) else {
        return;
    };
    // The same GET sent straight to the program behind nginx: refused, naming the setting.
    let socket = Address::Unix(stack.dir.path.join("fcgi.sock"));
    let params = fcgi::request_params("GET", &slot.get_path, &[]);
    let answer = fcgi::request(&socket, Role::Responder, &params, Body::Empty)
        .expect("FastCGI GET to the program");
    assert_eq!(answer.status, 404, "{answer}");
    assert!(answer.text().contains(REFUSAL), "{answer}");
}

#[test]
fn apache_cgi_serves_downloads_statically() {
    let _ = the_web_server_serves_downloads(Flavour::ApacheCgi);
}

#[test]
fn apache_dav_serves_downloads_statically() {
    let _ = the_web_server_serves_downloads(Flavour::ApacheDav);
}
