//! A quota refusal (402) says when to retry: `Retry-After` with the seconds until the window has
//! room for this size, and the same in its one line; none when waiting cannot help.

mod common;

use common::web;
use common::*;

const RULES: &str = r#"
[[rules]]
match = '^bytes@'
bytes_per_window = { window = "1h", bytes = 10 }
[[rules]]
match = '^count@'
uploads_per_window = { window = "2h", uploads = 1 }
"#;

fn retry_seconds(response: &common::fcgi::Response) -> u64 {
    let value = response
        .header("Retry-After")
        .unwrap_or_else(|| panic!("no Retry-After: {response}"));
    value
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After {value:?}"))
}

#[test]
fn a_402_says_when_the_window_has_room() {
    let (_env, server) = start(&standard_config(RULES));
    server.slot("bytes@example.org", "a.txt", 6);
    let refused = server.slot_request("jid=bytes@example.org&name=b.txt&size=6");
    assert_eq!(refused.status, 402, "{refused}");
    let seconds = retry_seconds(&refused);
    assert!((3590..=3600).contains(&seconds), "{seconds}");
    assert!(
        refused
            .text()
            .contains(&format!("try again in {seconds} s")),
        "{}",
        refused.text()
    );
    // 4 bytes still fit now
    server.slot("bytes@example.org", "c.txt", 4);

    server.slot("count@example.org", "a.txt", 1);
    let refused = server.slot_request("jid=count@example.org&name=b.txt&size=1");
    assert_eq!(refused.status, 402, "{refused}");
    assert!(
        (7190..=7200).contains(&retry_seconds(&refused)),
        "{refused}"
    );
}

#[test]
fn no_retry_after_when_waiting_cannot_help() {
    let (_env, server) = start(&standard_config(RULES));
    let refused = server.slot_request("jid=bytes@example.org&name=big.txt&size=11");
    assert_eq!(refused.status, 402, "{refused}");
    assert!(refused.header("Retry-After").is_none(), "{refused}");
    assert!(!refused.text().contains("try again"), "{}", refused.text());
}

/// A JWT PUT (Prosody's mod_http_file_share) over a quota window, through the shipped site: the
/// web server answers the client, with the program's 402, its one line and its `Retry-After`.
/// Before, the decide-only answer dropped `Retry-After`, and the client could not tell when.
fn a_refused_put_through_the_web_server_says_when(flavour: web::Flavour) {
    if !web::available(flavour) {
        return;
    }
    let settings = web::Settings {
        rules: RULES,
        ..web::Settings::default()
    };
    let stack = web::Stack::start_with(flavour, &settings);
    let put = |slot: &str, name: &str, body: &[u8]| {
        let file = stack.dir.path.join(format!("body-{slot}"));
        std::fs::write(&file, body).expect("write the body");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs();
        let claims = format!(
            r#"{{"sub":"bytes@example.org","iat":{now},"exp":{exp},"slot":"{slot}","expires":{expires},"filename":"{name}","filesize":{size},"filetype":"text/plain"}}"#,
            exp = now + 300,
            expires = now + 86400,
            size = body.len(),
        );
        let token = common::signing::hs256_jwt(web::JWT_SECRET, &claims);
        web::curl(&[
            "-T",
            &file.display().to_string(),
            "-H",
            &format!("Authorization: Bearer {token}"),
            "-H",
            "Content-Type: text/plain",
            &format!("{}{}/{slot}/{name}", stack.public, web::JWT_PREFIX),
        ])
    };
    let first = put("cmV0cnktYWZ0ZXItc2xvdC0x", "a.txt", b"123456");
    if first.status != 201 {
        stack.fail(&format!("the first PUT fits the window: {first:?}"));
    }
    let refused = put("cmV0cnktYWZ0ZXItc2xvdC0y", "b.txt", b"123456");
    let seconds = refused
        .header("retry-after")
        .and_then(|value| value.parse::<u64>().ok());
    let body = String::from_utf8_lossy(&refused.body);
    match seconds {
        Some(seconds)
            if refused.status == 402
                && (3590..=3600).contains(&seconds)
                && body.contains(&format!("try again in {seconds} s")) => {}
        _ => stack.fail(&format!(
            "a PUT over the window: 402 with Retry-After and the same seconds in its line: \
             {refused:?}"
        )),
    }
}

#[test]
fn nginx_a_refused_put_says_when() {
    a_refused_put_through_the_web_server_says_when(web::Flavour::Nginx);
}

#[test]
fn apache_a_refused_put_says_when() {
    a_refused_put_through_the_web_server_says_when(web::Flavour::ApacheDav);
}
