//! A quota refusal (402) says when to retry: `Retry-After` with the seconds until the window has
//! room for this size, and the same in its one line; none when waiting cannot help.

mod common;

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
