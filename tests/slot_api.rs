//! The slot API over FastCGI (BEHAVIOUR.md §2): answer formats, name sanitising, every status
//! code, `max_size`, URL building, and who may call it (allow-list, secret).

mod common;

use common::fcgi::{self, Body, Role};
use common::*;

fn is_token(token: &str) -> bool {
    token.len() == 40
        && token
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Extracts the value of attribute `attr` of the first `<elem ...>` in an XML text.
fn xml_attr(xml: &str, elem: &str, attr: &str) -> Option<String> {
    let start = xml.find(&format!("<{elem} "))?;
    let tag = &xml[start..start + xml[start..].find('>')?];
    let at = tag.find(&format!("{attr}="))? + attr.len() + 1;
    let quote = tag[at..].chars().next()?;
    let value = &tag[at + 1..];
    let value = &value[..value.find(quote)?];
    Some(
        value
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

#[test]
fn text_answer_is_exactly_put_newline_get() {
    let (_env, server) = start(&standard_config(ALLOW_ALL));
    let response = server.slot_request("jid=bob@example.org&name=report.pdf&size=1234");
    assert_eq!(response.status, 200, "{response}");
    let content_type = response.header("Content-Type").unwrap_or("");
    assert!(content_type.starts_with("text/plain"), "{response}");
    let slot = parse_text_slot(&response);
    assert!(is_token(&slot.token), "token {:?}", slot.token);
    assert_eq!(
        slot.put_url,
        format!("{BASE}/upload/{}/report.pdf", slot.token)
    );
    assert_eq!(
        slot.get_url,
        format!("{BASE}/upload/{}/report.pdf", slot.token)
    );
}

#[test]
fn tokens_are_fresh_for_every_slot() {
    let (_env, server) = start(&standard_config(ALLOW_ALL));
    let mut tokens: Vec<String> = (0..6)
        .map(|_| server.slot("bob@example.org", "same.txt", 10).token)
        .collect();
    assert!(tokens.iter().all(|t| is_token(t)), "{tokens:?}");
    tokens.sort();
    tokens.dedup();
    assert_eq!(tokens.len(), 6, "a token was handed out twice");
}

#[test]
fn json_answer_has_put_and_get_with_encoded_name() {
    let (_env, server) = start(&standard_config(ALLOW_ALL));
    let name = "отчёт 1.txt";
    let response = server.slot_request(&format!(
        "jid=bob%40example.org&name={}&size=5&output=application/json",
        pct(name)
    ));
    assert_eq!(response.status, 200, "{response}");
    assert!(
        response
            .header("Content-Type")
            .unwrap_or("")
            .starts_with("application/json"),
        "{response}"
    );
    let json: serde_json::Value = serde_json::from_slice(&response.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {response}"));
    let put = json["put"]
        .as_str()
        .expect("\"put\" is a string")
        .to_string();
    let get = json["get"]
        .as_str()
        .expect("\"get\" is a string")
        .to_string();
    for url in [&put, &get] {
        assert!(url.starts_with(&format!("{BASE}/upload/")), "{url}");
        assert!(url.is_ascii(), "JSON URL should be percent-encoded: {url}");
        assert!(url.contains("%D0") || url.contains("%d0"), "{url}");
        assert!(pct_decode(url).ends_with("/отчёт_1.txt"), "{url}");
    }
}

#[test]
fn xml_answer_is_the_xep_0363_slot_element() {
    let (_env, server) = start(&standard_config(ALLOW_ALL));
    let response = server.slot_request(&format!(
        "jid=bob@example.org&name={}&size=5&output=application%2Fxml",
        pct("фото.jpg")
    ));
    assert_eq!(response.status, 200, "{response}");
    assert!(
        response
            .header("Content-Type")
            .unwrap_or("")
            .contains("xml"),
        "{response}"
    );
    let xml = response.text();
    assert!(xml.contains("<slot"), "{xml}");
    assert!(xml.contains("urn:xmpp:http:upload:0"), "{xml}");
    let put = xml_attr(&xml, "put", "url").unwrap_or_else(|| panic!("no <put url>: {xml}"));
    let get = xml_attr(&xml, "get", "url").unwrap_or_else(|| panic!("no <get url>: {xml}"));
    for url in [&put, &get] {
        assert!(url.starts_with(&format!("{BASE}/upload/")), "{url}");
        assert!(url.is_ascii(), "XML URL should be percent-encoded: {url}");
        assert!(pct_decode(url).ends_with("/фото.jpg"), "{url}");
    }
}

#[test]
fn text_answer_keeps_the_name_unencoded_for_ejabberd() {
    let (_env, server) = start(&standard_config(ALLOW_ALL));
    let slot = server.slot("bob@example.org", "Отчёт.pdf", 5);
    assert_eq!(slot.name, "Отчёт.pdf", "{}", slot.put_url);
    assert!(!slot.put_url.contains('%'), "{}", slot.put_url);
}

#[test]
fn names_are_sanitised_to_one_safe_component() {
    let (_env, server) = start(&standard_config(ALLOW_ALL));
    let cases = [
        ("photo.jpg", "photo.jpg"),
        ("my holiday-photo_1.jpg", "my_holiday-photo_1.jpg"),
        ("отчёт 2024.pdf", "отчёт_2024.pdf"),
        ("تقرير.pdf", "تقرير.pdf"),
        ("٣.txt", "٣.txt"),
        ("文件.txt", "文件.txt"),
        ("😀 smile.png", "__smile.png"),
        ("a/b\\c:d*e?.txt", "a_b_c_d_e_.txt"),
        ("100%;<x>.txt", "100___x_.txt"),
    ];
    for (input, expected) in cases {
        let slot = server.slot("bob@example.org", input, 3);
        assert_eq!(slot.name, expected, "name {input:?} → {}", slot.put_url);
        assert!(
            slot.get_url.ends_with(&format!("/{expected}")),
            "{}",
            slot.get_url
        );
    }
}

#[test]
fn names_never_start_with_a_dot_or_escape_the_token_dir() {
    let (_env, server) = start(&standard_config(ALLOW_ALL));
    // BEHAVIOUR.md §2 allows either reading for `.` and `..`: refused (400), or made safe (`_.`).
    for input in [".hidden", "../x", "../../etc/passwd", "...", ".", ".."] {
        let response =
            server.slot_request(&format!("jid=bob@example.org&name={}&size=3", pct(input)));
        match response.status {
            400 => {}
            200 => {
                let slot = parse_text_slot(&response);
                assert!(!slot.name.starts_with('.'), "{input:?} → {:?}", slot.name);
                assert!(!slot.name.contains('/'), "{input:?} → {:?}", slot.name);
                assert!(is_token(&slot.token), "{input:?} → {}", slot.put_url);
            }
            _ => panic!("name {input:?}: {response}"),
        }
    }
}

#[test]
fn at_may_be_raw_or_encoded_and_plus_means_space() {
    let rules = "[[rules]]\nmatch = '^bob@example\\.org$'\n";
    let (_env, server) = start(&standard_config(rules));
    for jid in [
        "bob@example.org",
        "bob%40example.org",
        "bob%40example%2Eorg",
    ] {
        let response = server.slot_request(&format!("jid={jid}&name=a.txt&size=1"));
        assert_eq!(response.status, 200, "jid={jid}: {response}");
    }
    let slot = parse_text_slot(&server.slot_request("jid=bob@example.org&name=my+file.txt&size=1"));
    assert_eq!(slot.name, "my_file.txt");
}

#[test]
fn bad_parameters_are_400_with_a_one_line_reason() {
    let (_env, server) = start(&standard_config(ALLOW_ALL));
    let cases = [
        ("name=a.txt&size=1", "jid"),
        ("jid=&name=a.txt&size=1", "jid"),
        ("jid=bob@example.org&size=1", "name"),
        ("jid=bob@example.org&name=&size=1", "name"),
        ("jid=bob@example.org&name=%2F&size=1&output=x", "output"),
        ("jid=bob@example.org&name=a.txt", "size"),
        ("jid=bob@example.org&name=a.txt&size=", "size"),
        ("jid=bob@example.org&name=a.txt&size=abc", "size"),
        ("jid=bob@example.org&name=a.txt&size=-5", "size"),
        ("jid=bob@example.org&name=a.txt&size=0", "size"),
        ("jid=bob@example.org&name=a.txt&size=1.5", "size"),
        ("jid=bob@example.org&name=a.txt&size=%2B5", "size"),
        ("jid=bob@example.org&name=a.txt&size=+5", "size"),
        (
            "jid=bob@example.org&name=a.txt&size=9223372036854775808",
            "size",
        ),
        (
            "jid=bob@example.org&name=a.txt&size=99999999999999999999999",
            "size",
        ),
        (
            "jid=bob@example.org&name=a.txt&size=1&output=text/html",
            "output",
        ),
    ];
    for (query, param) in cases {
        let response = server.slot_request(query);
        assert_eq!(response.status, 400, "{query}: {response}");
        assert!(
            response
                .header("Content-Type")
                .unwrap_or("")
                .starts_with("text/plain"),
            "{query}: {response}"
        );
        let text = response.text();
        assert!(
            !text.trim_end().contains('\n'),
            "{query}: more than one line: {text:?}"
        );
        assert!(
            text.to_lowercase().contains(param),
            "{query}: the reason should name {param:?}: {text:?}"
        );
    }
}

#[test]
fn garbage_input_is_never_a_500() {
    let (_env, server) = start(&standard_config(ALLOW_ALL));
    for query in [
        "%",
        "&&&=&=",
        "jid=%ZZ&name=a&size=1",
        "jid=bob@example.org&name=%C3%28&size=1",
        "jid=bob@example.org&name=a&size=%FF",
        "jid=bob@example.org&jid=eve@example.org&name=a&size=1",
    ] {
        let response = server.slot_request(query);
        assert!(response.status < 500, "{query}: {response}");
    }
    for uri in [
        "/",
        "/http_upload/",
        "/http_upload/nothing/",
        "/elsewhere?x=1",
    ] {
        let response = server.get(uri);
        assert!((400..500).contains(&response.status), "{uri}: {response}");
    }
}

#[test]
fn sizes_beyond_2_gib_up_to_i64_max_are_accepted() {
    let (_env, server) = start(&standard_config(ALLOW_ALL));
    for size in [3_000_000_000u64, i64::MAX as u64] {
        let slot = server.slot("bob@example.org", "big.iso", size);
        assert!(is_token(&slot.token));
    }
}

const STATUS_RULES: &str = r#"
[[rules]]
match = '^denied@example\.org$'
deny = true
[[rules]]
match = '^small@example\.org$'
max_file_size = 12345
[[rules]]
match = '^window@example\.org$'
uploads_per_window = { window = "1h", uploads = 1 }
[[rules]]
match = '^bytes@example\.org$'
bytes_per_window = { window = "1h", bytes = 100 }
[[rules]]
match = '^total@example\.org$'
max_total_size = 100
[[rules]]
match = '^free@example\.org$'
"#;

fn assert_one_line_text(response: &common::fcgi::Response) {
    assert!(
        response
            .header("Content-Type")
            .unwrap_or("")
            .starts_with("text/plain"),
        "{response}"
    );
    assert!(!response.text().trim_end().contains('\n'), "{response}");
    assert!(!response.text().trim().is_empty(), "{response}");
}

#[test]
fn refusals_have_the_status_codes_ejabberd_maps() {
    let (_env, server) = start(&standard_config(STATUS_RULES));
    let ask =
        |jid: &str, size: u64| server.slot_request(&format!("jid={jid}&name=f.bin&size={size}"));

    let r = ask("denied@example.org", 1);
    assert_eq!(r.status, 403, "deny rule: {r}");
    assert_one_line_text(&r);
    let r = ask("nobody@elsewhere.org", 1);
    assert_eq!(r.status, 403, "no rule matches: {r}");

    let r = ask("small@example.org", 12346);
    assert_eq!(r.status, 413, "over max_file_size: {r}");
    assert_one_line_text(&r);
    assert!(r.text().contains("12345"), "413 should name the limit: {r}");
    assert_eq!(ask("small@example.org", 12345).status, 200);

    assert_eq!(ask("window@example.org", 1).status, 200);
    let r = ask("window@example.org", 1);
    assert_eq!(r.status, 402, "uploads_per_window: {r}");
    assert_one_line_text(&r);

    assert_eq!(ask("bytes@example.org", 60).status, 200);
    let r = ask("bytes@example.org", 41);
    assert_eq!(r.status, 402, "bytes_per_window: {r}");
    assert_eq!(ask("bytes@example.org", 40).status, 200, "exactly reached");

    assert_eq!(ask("total@example.org", 100).status, 200);
    let r = ask("total@example.org", 1);
    assert_eq!(r.status, 403, "max_total_size: {r}");
    assert_one_line_text(&r);

    assert_eq!(ask("free@example.org", 1 << 40).status, 200);
}

#[test]
fn max_size_endpoint() {
    let (_env, server) = start(&standard_config(STATUS_RULES));
    let r = server.get("/http_upload/max_size/?jid=small@example.org");
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.text().trim(), "12345");
    let r = server.get("/http_upload/max_size/?jid=free%40example.org");
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.text().trim(), "0", "unlimited is 0");
    let r = server.get("/http_upload/max_size/?jid=small@example.org&output=application/json");
    assert_eq!(r.status, 200, "{r}");
    let json: serde_json::Value =
        serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {r}"));
    assert_eq!(json["max_size"].as_u64(), Some(12345), "{r}");
    let r = server.get("/http_upload/max_size/?jid=denied@example.org");
    assert_eq!(r.status, 403, "{r}");
    let r = server.get("/http_upload/max_size/?jid=nobody@elsewhere.org");
    assert_eq!(r.status, 403, "{r}");
    let r = server.get("/http_upload/max_size/");
    assert_eq!(r.status, 400, "missing jid: {r}");
}

/// A slot request from `remote_addr`, with extra headers.
fn slot_from(
    server: &Server,
    remote_addr: &str,
    query: &str,
    headers: &[(&str, &str)],
) -> common::fcgi::Response {
    let mut params = fcgi::request_params("GET", &format!("/http_upload/slot/?{query}"), headers);
    fcgi::set_param(&mut params, "REMOTE_ADDR", remote_addr);
    server.request(Role::Responder, &params, Body::Empty)
}

/// A config whose `[slot_api]` section is `slot_api`, letting everyone upload.
fn slot_api_config(slot_api: &str) -> String {
    format!(
        "base_url = \"{BASE}\"\nslot_prefix = \"/http_upload\"\nput_prefix = \"/upload\"\n\
         [slot_api]\n{slot_api}\n{ALLOW_ALL}"
    )
}

/// A slot API open to loopback with the secret `s3cr3t-value-0123456789`.
const SECRET_API: &str = "allow_from = [\"127.0.0.1\"]\nsecret = \"s3cr3t-value-0123456789\"";

#[test]
fn slot_api_only_answers_allowed_addresses() {
    let config = slot_api_config(r#"allow_from = ["127.0.0.1", "10.1.0.0/16", "2001:db8::/32"]"#);
    let (_env, server) = start(&config);
    let query = "jid=bob@example.org&name=a.txt&size=1";
    for addr in ["127.0.0.1", "10.1.2.3", "2001:db8::1"] {
        let r = slot_from(&server, addr, query, &[]);
        assert_eq!(r.status, 200, "from {addr}: {r}");
    }
    for addr in [
        "10.2.0.1",
        "127.0.0.2",
        "192.168.1.1",
        "2001:db9::1",
        "",
        "garbage",
    ] {
        let r = slot_from(&server, addr, query, &[]);
        assert_eq!(r.status, 403, "from {addr:?}: {r}");
    }
    let mut params = fcgi::request_params("GET", "/http_upload/max_size/?jid=bob@example.org", &[]);
    fcgi::set_param(&mut params, "REMOTE_ADDR", "192.168.1.1");
    let r = server.request(Role::Responder, &params, Body::Empty);
    assert_eq!(r.status, 403, "max_size from a stranger: {r}");
}

#[test]
fn slot_api_requires_the_secret_when_set() {
    let config = slot_api_config(SECRET_API);
    let (env, server) = start(&config);
    let query = "jid=bob@example.org&name=a.txt&size=1";
    let refused = |r: &common::fcgi::Response, what: &str| {
        assert!(matches!(r.status, 401 | 403), "{what}: {r}");
    };
    refused(&slot_from(&server, "127.0.0.1", query, &[]), "no secret");
    refused(
        &slot_from(&server, "127.0.0.1", &format!("{query}&secret=wrong"), &[]),
        "wrong secret",
    );
    refused(
        &slot_from(
            &server,
            "127.0.0.1",
            query,
            &[("Authorization", "Bearer wrong")],
        ),
        "wrong bearer",
    );
    refused(
        &slot_from(
            &server,
            "10.0.0.1",
            &format!("{query}&secret=s3cr3t-value-0123456789"),
            &[],
        ),
        "right secret, wrong address",
    );

    let r = slot_from(
        &server,
        "127.0.0.1",
        &format!("{query}&secret=s3cr3t-value-0123456789"),
        &[],
    );
    let slot = parse_text_slot(&r);
    assert!(
        !slot.put_url.contains("s3cr3t"),
        "secret leaked: {}",
        slot.put_url
    );
    let r = slot_from(
        &server,
        "127.0.0.1",
        query,
        &[("Authorization", "Bearer s3cr3t-value-0123456789")],
    );
    assert_eq!(r.status, 200, "bearer: {r}");
    drop(server);
    let log = std::fs::read_dir(&env.dir.path)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect::<String>();
    assert!(
        !log.contains("s3cr3t-value-0123456789"),
        "the secret is in the log:\n{log}"
    );
}

#[test]
fn base_url_from_the_request_when_not_configured() {
    let config = format!(
        "put_prefix = \"/upload\"\nslot_prefix = \"/http_upload\"\n\
         [slot_api]\nallow_from = [\"127.0.0.1\"]\n{ALLOW_ALL}"
    );
    let (_env, server) = start(&config);
    let uri = "/http_upload/slot/?jid=bob@example.org&name=a.txt&size=1";
    let params = fcgi::request_params("GET", uri, &[("Host", "files.example.net")]);
    let slot = parse_text_slot(&server.request(Role::Responder, &params, Body::Empty));
    assert!(
        slot.put_url
            .starts_with("https://files.example.net/upload/"),
        "{}",
        slot.put_url
    );

    let mut params = fcgi::request_params("GET", uri, &[("Host", "plain.example.net:8080")]);
    fcgi::remove_param(&mut params, "HTTPS");
    fcgi::set_param(&mut params, "REQUEST_SCHEME", "http");
    fcgi::set_param(&mut params, "SERVER_PORT", "8080");
    let slot = parse_text_slot(&server.request(Role::Responder, &params, Body::Empty));
    assert!(
        slot.put_url
            .starts_with("http://plain.example.net:8080/upload/"),
        "{}",
        slot.put_url
    );
}

#[test]
fn prefixes_with_trailing_slashes_give_no_double_slash() {
    let config = "base_url = \"https://h.example/\"\nslot_prefix = \"/http_upload/\"\n\
         put_prefix = \"/put/\"\nget_prefix = \"/get/\"\n\
         [slot_api]\nallow_from = [\"127.0.0.1\"]\n[[rules]]\nmatch = '.*'\n";
    let (_env, server) = start(config);
    let slot = parse_text_slot(&server.slot_request("jid=bob@example.org&name=a.txt&size=1"));
    assert_eq!(
        slot.put_url,
        format!("https://h.example/put/{}/a.txt", slot.token)
    );
    assert_eq!(
        slot.get_url,
        format!("https://h.example/get/{}/a.txt", slot.token)
    );
}

#[test]
fn names_too_long_for_the_file_system_are_refused() {
    let (_env, server) = start(&standard_config(ALLOW_ALL));
    for (what, name) in [
        ("300 ASCII letters", "a".repeat(300)),
        ("128 Cyrillic letters = 256 bytes", "я".repeat(128)),
    ] {
        let r = server.slot_request(&format!("jid=bob@example.org&name={}&size=1", pct(&name)));
        assert!(matches!(r.status, 400 | 413), "{what}: {r}");
        assert!(r.text().to_lowercase().contains("name"), "{what}: {r}");
    }
    let name = "я".repeat(127);
    let slot = server.slot("bob@example.org", &name, 1);
    assert_eq!(slot.name, name, "254 bytes fit and are kept whole");
}

#[test]
fn non_utf8_params_fail_closed() {
    let (_env, server) = start(&standard_config(ALLOW_ALL));
    // what nginx passes for a client's raw URI byte 0xFF: a param that is not UTF-8
    let uri: &[u8] = b"/http_upload/slot/?jid=bob@example.org&name=a\xff.txt&size=1";
    let query: &[u8] = b"jid=bob@example.org&name=a\xff.txt&size=1";
    let mut params: Vec<(Vec<u8>, Vec<u8>)> =
        fcgi::request_params("GET", "/http_upload/slot/", &[])
            .into_iter()
            .map(|(n, v)| (n.into_bytes(), v.into_bytes()))
            .collect();
    for (name, value) in params.iter_mut() {
        if name == b"REQUEST_URI" {
            *value = uri.to_vec();
        }
        if name == b"QUERY_STRING" {
            *value = query.to_vec();
        }
    }
    let r = server.request(Role::Responder, &params, Body::Empty);
    assert!((400..500).contains(&r.status), "{r}");

    // a junk param first: whatever the FastCGI layer drops after it, nothing is granted
    let mut junk_first: Vec<(Vec<u8>, Vec<u8>)> =
        vec![(b"HTTP_X_JUNK".to_vec(), b"\xfe\xff".to_vec())];
    junk_first.extend(
        fcgi::request_params(
            "GET",
            "/http_upload/slot/?jid=bob@example.org&name=a.txt&size=1",
            &[],
        )
        .into_iter()
        .map(|(n, v)| (n.into_bytes(), v.into_bytes())),
    );
    let r = server.request(Role::Responder, &junk_first, Body::Empty);
    assert!(r.status == 200 || (400..500).contains(&r.status), "{r}");
}

#[test]
fn params_larger_than_one_record_are_read() {
    let (_env, server) = start(&standard_config(ALLOW_ALL));
    let cookie = "c".repeat(100_000);
    let params = fcgi::request_params(
        "GET",
        "/http_upload/slot/?jid=bob@example.org&name=a.txt&size=1",
        &[("Cookie", &cookie), ("X-Many", &"x".repeat(70_000))],
    );
    let slot = parse_text_slot(&server.request(Role::Responder, &params, Body::Empty));
    assert_eq!(slot.name, "a.txt");
}

#[test]
fn invalid_jids_and_content_types_are_400() {
    let (_env, server) = start(&standard_config(ALLOW_ALL));
    for (query, param) in [
        ("jid=bob+smith@example.org&name=a&size=1", "jid"),
        ("jid=@example.org&name=a&size=1", "jid"),
        ("jid=a@b@example.org&name=a&size=1", "jid"),
        (
            "jid=bob@example.org&name=a&size=1&content_type=text",
            "type",
        ),
        (
            "jid=bob@example.org&name=a&size=1&content_type=text%2Fplain%0D%0AX-Evil%3A%201",
            "type",
        ),
    ] {
        let r = server.slot_request(query);
        assert_eq!(r.status, 400, "{query}: {r}");
        assert!(r.text().to_lowercase().contains(param), "{query}: {r}");
    }
}

#[test]
fn a_resource_cannot_dodge_an_anchored_rule() {
    let rules = "[[rules]]\nmatch = '^evil@example\\.org$'\ndeny = true\n\
                 [[rules]]\nmatch = '^(bob|evil)@example\\.org$'\nmax_file_size = 10\n\
                 [[rules]]\nmatch = '.*'\n";
    let (_env, server) = start(&standard_config(rules));
    for jid in [
        "evil@example.org",
        "evil%40example.org%2Fphone",
        "evil@example.org/desk/top",
    ] {
        let r = server.slot_request(&format!("jid={jid}&name=a&size=1"));
        assert!(matches!(r.status, 400 | 403), "{jid}: {r}");
    }
    let r = server.slot_request("jid=bob@example.org/phone&name=a&size=11");
    assert_eq!(
        r.status, 413,
        "the limit of bob's rule applies to bob's full JID: {r}"
    );
}

#[test]
fn the_query_comes_from_query_string_else_from_request_uri() {
    let (_env, server) = start(&standard_config(ALLOW_ALL));
    let uri = "/http_upload/slot/?jid=bob@example.org&name=from-uri.txt&size=1";
    let mut params = fcgi::request_params("GET", uri, &[]);
    fcgi::set_param(&mut params, "QUERY_STRING", "");
    let slot = parse_text_slot(&server.request(Role::Responder, &params, Body::Empty));
    assert_eq!(
        slot.name, "from-uri.txt",
        "empty QUERY_STRING: the query of REQUEST_URI"
    );

    fcgi::set_param(
        &mut params,
        "QUERY_STRING",
        "jid=bob@example.org&name=from-qs.txt&size=1",
    );
    let slot = parse_text_slot(&server.request(Role::Responder, &params, Body::Empty));
    assert_eq!(slot.name, "from-qs.txt", "QUERY_STRING wins when set");
}

#[test]
fn the_bearer_scheme_is_case_insensitive() {
    // RFC 7235 2.1: the auth-scheme is a case-insensitive token, as the JWT protocol reads it.
    let config = slot_api_config(SECRET_API);
    let (_env, server) = start(&config);
    let query = "jid=bob@example.org&name=a.txt&size=1";
    for auth in [
        "bearer s3cr3t-value-0123456789",
        "BEARER s3cr3t-value-0123456789",
    ] {
        let r = slot_from(&server, "127.0.0.1", query, &[("Authorization", auth)]);
        assert_eq!(r.status, 200, "{auth:?}: {r}");
    }
    for auth in [
        "bearer wrong",
        "Basic s3cr3t-value-0123456789",
        "Bearers3cr3t-value-0123456789",
    ] {
        let r = slot_from(&server, "127.0.0.1", query, &[("Authorization", auth)]);
        assert_eq!(r.status, 403, "{auth:?}: {r}");
    }
}
