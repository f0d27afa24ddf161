//! Access rules and quotas (BEHAVIOUR.md §4) through the slot API: every rule kind, first-match
//! order, no-match denial, limits reached exactly, windows that roll, expired unused slots not
//! counted, and processes and threads racing for the last bytes of a quota.

mod common;

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use common::*;

fn status(server: &Server, jid: &str, size: u64) -> u16 {
    let r = server.slot_request(&format!("jid={}&name=f.bin&size={size}", form_encode(jid)));
    assert!(r.status < 500, "{jid} {size}: {r}");
    r.status
}

#[test]
fn every_rule_kind_and_exact_limits() {
    let rules = r#"
[[rules]]
match = '^denied@example\.org$'
deny = true
[[rules]]
match = '^open@example\.org$'
[[rules]]
match = '^size@example\.org$'
max_file_size = "1 KiB"
[[rules]]
match = '^total@example\.org$'
max_total_size = 1000
[[rules]]
match = '^bytes@example\.org$'
bytes_per_window = { window = "1h", bytes = "1 KiB" }
[[rules]]
match = '^count@example\.org$'
uploads_per_window = { window = "1h", uploads = 3 }
"#;
    let (env, server) = start(&standard_config(rules));

    assert_eq!(status(&server, "denied@example.org", 1), 403);
    for _ in 0..5 {
        assert_eq!(status(&server, "open@example.org", 1 << 40), 200);
    }

    assert_eq!(
        status(&server, "size@example.org", 1024),
        200,
        "size == max_file_size"
    );
    assert_eq!(
        status(&server, "size@example.org", 1025),
        413,
        "max_file_size + 1"
    );

    // total: stored files count, exact total allowed, one byte more refused
    let slot = server.slot("total@example.org", "a.bin", 600);
    server.upload(&env, PutMode::SelfWrite, &slot, &Put::of(&body_of(600, 1)));
    assert_eq!(
        status(&server, "total@example.org", 401),
        403,
        "600 + 401 > 1000"
    );
    let slot = server.slot("total@example.org", "b.bin", 400);
    server.upload(&env, PutMode::SelfWrite, &slot, &Put::of(&body_of(400, 2)));
    assert_eq!(
        status(&server, "total@example.org", 1),
        403,
        "total reached"
    );

    assert_eq!(status(&server, "bytes@example.org", 1000), 200);
    assert_eq!(
        status(&server, "bytes@example.org", 25),
        402,
        "1025 > 1 KiB"
    );
    assert_eq!(
        status(&server, "bytes@example.org", 24),
        200,
        "exactly 1 KiB"
    );
    assert_eq!(status(&server, "bytes@example.org", 1), 402);

    for i in 0..3 {
        assert_eq!(status(&server, "count@example.org", 1), 200, "upload {i}");
    }
    assert_eq!(
        status(&server, "count@example.org", 1),
        402,
        "fourth upload"
    );
}

#[test]
fn the_first_matching_rule_decides() {
    let rules = r#"
[[rules]]
match = '^vip@example\.org$'
[[rules]]
match = '^evil@'
deny = true
[[rules]]
match = '@example\.org$'
max_file_size = 100
[[rules]]
match = '.*'
deny = true
"#;
    let (_env, server) = start(&standard_config(rules));
    assert_eq!(
        status(&server, "vip@example.org", 1000),
        200,
        "vip rule comes first"
    );
    assert_eq!(
        status(&server, "bob@example.org", 1000),
        413,
        "general rule"
    );
    assert_eq!(status(&server, "bob@example.org", 100), 200);
    assert_eq!(
        status(&server, "evil@example.org", 1),
        403,
        "deny before allow"
    );
    assert_eq!(status(&server, "bob@other.org", 1), 403, "catch-all deny");
}

#[test]
fn no_matching_rule_means_denied_and_patterns_search() {
    let rules = r#"
[[rules]]
match = 'example'
[[rules]]
match = '^anchored@example\.net$'
"#;
    let (_env, server) = start(&standard_config(rules));
    // unanchored: matches anywhere in the JID
    assert_eq!(status(&server, "bob@example.org", 1), 200);
    assert_eq!(status(&server, "example@other.org", 1), 200);
    assert_eq!(status(&server, "anchored@example.net", 1), 200);
    // nothing matches
    assert_eq!(status(&server, "bob@other.org", 1), 403);
    assert_eq!(status(&server, "x-anchored@exampl.net", 1), 403);
    let r = server.get("/http_upload/max_size/?jid=bob@other.org");
    assert_eq!(r.status, 403, "{r}");
}

#[test]
fn quotas_are_per_jid() {
    let rules = r#"
[[rules]]
match = '@example\.org$'
uploads_per_window = { window = "1h", uploads = 1 }
max_total_size = 10
"#;
    let (_env, server) = start(&standard_config(rules));
    assert_eq!(status(&server, "alice@example.org", 5), 200);
    assert_eq!(
        status(&server, "alice@example.org", 1),
        402,
        "second upload in the window"
    );
    assert_eq!(
        status(&server, "bob@example.org", 5),
        200,
        "bob has his own quota"
    );
    assert_eq!(status(&server, "bob@example.org", 1), 402);
}

#[test]
fn windows_roll_and_expired_unused_slots_do_not_count() {
    let rules = r#"
[[rules]]
match = '^roll@'
uploads_per_window = { window = "2s", uploads = 1 }
[[rules]]
match = '^unused@'
max_total_size = 100
uploads_per_window = { window = "1h", uploads = 1 }
[[rules]]
match = '^stored@'
max_total_size = 100
[[rules]]
match = '^storedcount@'
uploads_per_window = { window = "1h", uploads = 1 }
"#;
    let config = standard_config_with("put_timeout = \"1s\"", rules);
    let (env, server) = start(&config);

    assert_eq!(status(&server, "roll@example.org", 5), 200);
    assert_eq!(status(&server, "roll@example.org", 5), 402);

    // an unused slot counts while it may still be used ...
    assert_eq!(status(&server, "unused@example.org", 100), 200);
    let second = status(&server, "unused@example.org", 1);
    assert!(
        matches!(second, 402 | 403),
        "unexpired unused slot must count: {second}"
    );

    // ... and a stored file counts for good
    let slot = server.slot("stored@example.org", "s.bin", 100);
    server.upload(&env, PutMode::SelfWrite, &slot, &Put::of(&body_of(100, 5)));
    let slot = server.slot("storedcount@example.org", "s.bin", 1);
    server.upload(&env, PutMode::SelfWrite, &slot, &Put::of(b"x"));

    // 3 s: a 2 s window has passed even if the program counts whole seconds inclusively
    thread::sleep(Duration::from_millis(3100));

    assert_eq!(
        status(&server, "roll@example.org", 5),
        200,
        "the window rolled"
    );
    assert_eq!(
        status(&server, "unused@example.org", 100),
        200,
        "a slot that expired unused must not count"
    );
    assert_eq!(
        status(&server, "stored@example.org", 1),
        403,
        "stored bytes still count"
    );
    assert_eq!(
        status(&server, "storedcount@example.org", 1),
        402,
        "an upload still counts"
    );
}

/// `threads` threads spread over `servers` ask for a slot of `size` for `jid` at the same moment;
/// returns how many got 200, asserting every loser got `loser_status`.
fn race(servers: &[Server], jid: &str, size: u64, threads: usize, loser_status: u16) -> usize {
    let barrier = Arc::new(Barrier::new(threads));
    let statuses: Vec<u16> = thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let server = &servers[i % servers.len()];
                let barrier = Arc::clone(&barrier);
                scope.spawn(move || {
                    barrier.wait();
                    let r = server.slot_request(&format!("jid={jid}&name=race{i}.bin&size={size}"));
                    assert!(
                        r.status == 200 || r.status == loser_status,
                        "{jid} thread {i}: {r}"
                    );
                    r.status
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    statuses.iter().filter(|&&s| s == 200).count()
}

#[test]
fn racing_processes_and_threads_cannot_exceed_a_quota() {
    let rules = r#"
[[rules]]
match = '^count\d@'
uploads_per_window = { window = "1h", uploads = 5 }
[[rules]]
match = '^bytes\d@'
bytes_per_window = { window = "1h", bytes = 1000 }
[[rules]]
match = '^total\d@'
max_total_size = 700
"#;
    let env = Env::new(&standard_config(rules));
    let servers: Vec<Server> = (0..3).map(|_| env.serve()).collect();
    for round in 0..2 {
        let suffix = format!("{round}@example.org");
        let won = race(&servers, &format!("count{suffix}"), 1, 24, 402);
        assert_eq!(won, 5, "uploads_per_window = 5, round {round}");
        let won = race(&servers, &format!("bytes{suffix}"), 100, 24, 402);
        assert_eq!(
            won, 10,
            "bytes_per_window = 1000 with 100-byte slots, round {round}"
        );
        let won = race(&servers, &format!("total{suffix}"), 100, 24, 403);
        assert_eq!(
            won, 7,
            "max_total_size = 700 with 100-byte slots, round {round}"
        );
    }
    // and afterwards the quotas stay exhausted on every process
    for server in &servers {
        assert_eq!(status(server, "count0@example.org", 1), 402);
        assert_eq!(status(server, "bytes0@example.org", 1), 402);
        assert_eq!(status(server, "total0@example.org", 1), 403);
    }
}

#[test]
fn sizes_near_i64_max_do_not_overflow_quotas() {
    let rules = r#"
[[rules]]
match = '^total@'
max_total_size = 9223372036854775807
[[rules]]
match = '^window@'
bytes_per_window = { window = "1h", bytes = 9223372036854775807 }
[[rules]]
match = '^file@'
max_file_size = 9223372036854775807
"#;
    let (_env, server) = start(&standard_config(rules));
    let max = i64::MAX as u64;
    assert_eq!(status(&server, "total@example.org", max), 200);
    assert_eq!(
        status(&server, "total@example.org", max),
        403,
        "max + max wrapped?"
    );
    assert_eq!(status(&server, "total@example.org", 1), 403);
    assert_eq!(status(&server, "window@example.org", max - 1), 200);
    assert_eq!(
        status(&server, "window@example.org", 1),
        200,
        "exactly i64::MAX"
    );
    assert_eq!(
        status(&server, "window@example.org", max),
        402,
        "max + max wrapped?"
    );
    assert_eq!(status(&server, "file@example.org", max), 200);
}
