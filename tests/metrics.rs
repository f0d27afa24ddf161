//! `<slot_prefix>/metrics` over FastCGI: the counts after a known sequence of slot requests,
//! PUTs and a cleanup; two server processes on one database adding to the same counters; a
//! restart keeping them; and the slot API's access control in front of them. Then once through
//! nginx with the shipped configuration, on its loopback slot-API listener.

mod common;

use common::fcgi::{self, Body, Response, Role};
use common::signing::hmac_sha256_hex;
use common::web;
use common::*;

const HMAC_SECRET: &str = "metrics hmac secret";
const UUID: &str = "3f2504e0-4f89-11d3-9a0c-0305e82c3301";

fn config() -> String {
    format!(
        "{}\n[[external]]\nprefix = \"/share\"\nsecret = \"{HMAC_SECRET}\"\nmax_file_size = 1000\n",
        standard_config(ALLOW_ALL)
    )
}

/// `GET /http_upload/metrics` from `remote_addr` with `headers`.
fn metrics_from(
    server: &Server,
    remote_addr: &str,
    query: &str,
    headers: &[(&str, &str)],
) -> Response {
    let mut params = fcgi::request_params("GET", &format!("/http_upload/metrics{query}"), headers);
    fcgi::set_param(&mut params, "REMOTE_ADDR", remote_addr);
    server.request(Role::Responder, &params, Body::Empty)
}

/// The metrics text, asserting a 200 in the exposition format's media type.
fn scrape(server: &Server) -> String {
    let response = metrics_from(server, "127.0.0.1", "", &[]);
    assert_eq!(response.status, 200, "{response}");
    let content_type = response.header("Content-Type").unwrap_or("");
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{response}"
    );
    response.text()
}

/// The value of the sample `series` (name with its `{labels}`, as printed), 0 when absent.
fn value(text: &str, series: &str) -> u64 {
    let full = format!("xmpp_http_upload_{series} ");
    let found: Vec<u64> = text
        .lines()
        .filter_map(|line| line.strip_prefix(&full))
        .map(|v| v.parse().unwrap_or_else(|_| panic!("not a number: {v:?}")))
        .collect();
    assert!(found.len() <= 1, "{series} twice in:\n{text}");
    found.first().copied().unwrap_or(0)
}

#[test]
fn counts_follow_a_known_sequence() {
    let (env, server) = start(&config());
    let text = scrape(&server);
    assert_eq!(value(&text, "slots_granted_total"), 0, "{text}");
    for name in [
        "slots_granted_total",
        "slots_refused_total",
        "puts_allowed_total",
        "puts_refused_total",
        "cleanup_runs_total",
    ] {
        assert!(
            text.contains(&format!("# TYPE xmpp_http_upload_{name} counter\n")),
            "{name}:\n{text}"
        );
        assert!(
            text.contains(&format!("# HELP xmpp_http_upload_{name} ")),
            "{text}"
        );
    }
    assert!(
        text.contains("# TYPE xmpp_http_upload_files_stored gauge\n"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE xmpp_http_upload_bytes_stored gauge\n"),
        "{text}"
    );

    // Three slots granted; one refused for a missing size, one for the caller's address.
    let first = server.slot("bob@example.org", "a.txt", 5);
    let second = server.slot("bob@example.org", "b.txt", 7);
    let _unused = server.slot("bob@example.org", "c.txt", 9);
    assert_eq!(
        server.slot_request("jid=bob@example.org&name=x").status,
        400
    );
    let mut params = fcgi::request_params(
        "GET",
        "/http_upload/slot/?jid=bob@example.org&name=x&size=1",
        &[],
    );
    fcgi::set_param(&mut params, "REMOTE_ADDR", "192.168.1.1");
    assert_eq!(
        server.request(Role::Responder, &params, Body::Empty).status,
        403
    );

    // Slot PUTs: one decided for nginx, its repetition refused (409), one received, one to an
    // unknown token (404).
    server.upload(&env, PutMode::AuthRequest, &first, &Put::of(b"hello"));
    let again = server.put(PutMode::AuthRequest, &first.put_path, &Put::of(b"hello"));
    assert_refused(PutMode::AuthRequest, &again, "second PUT");
    server.upload(&env, PutMode::SelfWrite, &second, &Put::of(b"1234567"));
    let unknown = server.put(
        PutMode::SelfWrite,
        "/upload/0123456789abcdef0123456789abcdef01234567/a.txt",
        &Put::of(b"x"),
    );
    assert_eq!(unknown.status, 404, "{unknown}");

    // HMAC: one allowed, one with a wrong MAC.
    let path = format!("{UUID}/n.txt");
    let mac = hmac_sha256_hex(HMAC_SECRET, format!("{path} 3").as_bytes());
    let put = server.put(
        PutMode::SelfWrite,
        &format!("/share/{path}?v={mac}"),
        &Put::of(b"abc"),
    );
    assert_eq!(put.status, 201, "{put}");
    let bad = server.put(
        PutMode::SelfWrite,
        &format!("/share/{UUID}/m.txt?v={}", "0".repeat(64)),
        &Put::of(b"abc"),
    );
    assert_eq!(bad.status, 403, "{bad}");

    // Downloads and other refusals are not counted.
    assert_eq!(server.get("/nothing/here").status, 404);

    let cleanup = env.run(&["cleanup", "--config", env.config.to_str().unwrap()]);
    assert!(cleanup.status.success(), "{}", output_text(&cleanup));

    let text = scrape(&server);
    let expect = [
        ("slots_granted_total", 3),
        (r#"slots_refused_total{reason="bad_request"}"#, 1),
        (r#"slots_refused_total{reason="forbidden"}"#, 1),
        (r#"puts_allowed_total{protocol="slot"}"#, 2),
        (r#"puts_allowed_total{protocol="hmac"}"#, 1),
        (r#"puts_allowed_total{protocol="jwt"}"#, 0),
        (
            r#"puts_refused_total{protocol="slot",reason="conflict"}"#,
            1,
        ),
        (
            r#"puts_refused_total{protocol="slot",reason="not_found"}"#,
            1,
        ),
        (
            r#"puts_refused_total{protocol="hmac",reason="forbidden"}"#,
            1,
        ),
        (r#"cleanup_runs_total{result="ok"}"#, 1),
        (r#"files_stored{protocol="slot"}"#, 2),
        (r#"bytes_stored{protocol="slot"}"#, 12),
        (r#"files_stored{protocol="hmac"}"#, 1),
        (r#"bytes_stored{protocol="hmac"}"#, 3),
        (r#"files_stored{protocol="jwt"}"#, 0),
    ];
    for (series, expected) in expect {
        assert_eq!(value(&text, series), expected, "{series} in:\n{text}");
    }
    let refused_total: u64 = text
        .lines()
        .filter(|l| l.starts_with("xmpp_http_upload_puts_refused_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(refused_total, 3, "only the three refused PUTs:\n{text}");

    // `usage` shows the same counters without a scraper.
    let usage = env.run(&["usage", "--config", env.config.to_str().unwrap()]);
    let said = output_text(&usage);
    assert!(usage.status.success(), "{said}");
    for line in [
        "3  slots_granted_total",
        "2  puts_allowed_total{protocol=\"slot\"}",
        "1  puts_refused_total{protocol=\"hmac\",reason=\"forbidden\"}",
        "1  cleanup_runs_total{result=\"ok\"}",
    ] {
        assert!(said.contains(line), "{line:?} not in usage:\n{said}");
    }
}

#[test]
fn two_processes_add_to_the_same_counters_and_a_restart_keeps_them() {
    let env = Env::new(&config());
    let servers = [env.serve(), env.serve()];
    std::thread::scope(|scope| {
        for (i, server) in servers.iter().enumerate() {
            scope.spawn(move || {
                for n in 0..20 {
                    server.slot("bob@example.org", &format!("p{i}-{n}.txt"), 1);
                    assert_eq!(server.slot_request("jid=bob@example.org").status, 400);
                }
            });
        }
    });
    for server in &servers {
        let text = scrape(server);
        assert_eq!(value(&text, "slots_granted_total"), 40, "{text}");
        assert_eq!(
            value(&text, r#"slots_refused_total{reason="bad_request"}"#),
            40,
            "{text}"
        );
    }
    drop(servers);
    let server = env.serve();
    let text = scrape(&server);
    assert_eq!(
        value(&text, "slots_granted_total"),
        40,
        "after a restart:\n{text}"
    );
    server.slot("bob@example.org", "after.txt", 1);
    assert_eq!(value(&scrape(&server), "slots_granted_total"), 41);
}

#[test]
fn only_the_slot_api_callers_may_read_them() {
    let secret = "metrics-secret-0123456789";
    let config = standard_config(ALLOW_ALL).replace(
        "allow_from = [\"127.0.0.1\", \"::1\"]",
        &format!("allow_from = [\"127.0.0.1\", \"::1\"]\nsecret = \"{secret}\""),
    );
    let (_env, server) = start(&config);
    let bearer = format!("Bearer {secret}");
    let stranger = metrics_from(&server, "192.168.1.1", "", &[("Authorization", &bearer)]);
    assert_eq!(
        stranger.status, 403,
        "right secret, wrong address: {stranger}"
    );
    assert!(!stranger.text().contains("xmpp_http_upload_"), "{stranger}");
    let no_secret = metrics_from(&server, "127.0.0.1", "", &[]);
    assert_eq!(no_secret.status, 403, "no secret: {no_secret}");
    let wrong = metrics_from(
        &server,
        "127.0.0.1",
        "",
        &[("Authorization", "Bearer wrong")],
    );
    assert_eq!(wrong.status, 403, "wrong secret: {wrong}");
    for (query, headers) in [
        ("", vec![("Authorization", bearer.as_str())]),
        (&*format!("/?secret={secret}"), vec![]),
    ] {
        let ok = metrics_from(&server, "127.0.0.1", query, &headers);
        assert_eq!(ok.status, 200, "{query:?}: {ok}");
        assert!(
            ok.text().contains("xmpp_http_upload_slots_granted_total 0"),
            "{ok}"
        );
    }
    let post = server.call(
        "POST",
        "/http_upload/metrics",
        &[("Authorization", &bearer)],
    );
    assert_eq!(post.status, 405, "{post}");
}

#[test]
fn nginx_serves_them_on_the_slot_api_listener_with_the_secret() {
    let Some(stack) =
        web::Stack::start_if_available(web::Flavour::Nginx, &web::Settings::default())
    else {
        return;
    };
    let slot = stack.slot("alice@example.org", "m.txt", 5, "text/plain");
    let body = stack.scratch_file("m.txt", b"hello");
    let put = web::put_file_raw(&slot.put_url, &body, &["-H", "Content-Type: text/plain"]);
    if put.status != 201 {
        stack.fail(&format!("PUT: {put:?}"));
    }
    let url = format!("{}/http_upload/metrics", stack.slot_api);
    let answer = web::curl(&[
        "-H",
        &format!("Authorization: Bearer {}", web::SECRET),
        &url,
    ]);
    let text = String::from_utf8_lossy(&answer.body).to_string();
    if answer.status != 200 {
        stack.fail(&format!("metrics: {answer:?}"));
    }
    assert_eq!(value(&text, "slots_granted_total"), 1, "{text}");
    assert_eq!(
        value(&text, r#"puts_allowed_total{protocol="slot"}"#),
        1,
        "{text}"
    );
    assert_eq!(
        value(&text, r#"files_stored{protocol="slot"}"#),
        1,
        "{text}"
    );
    assert_eq!(
        value(&text, r#"bytes_stored{protocol="slot"}"#),
        5,
        "{text}"
    );
    let without = web::curl(&[&url]);
    assert_eq!(without.status, 403, "no secret through nginx: {without:?}");
}
