//! Several web hosts on one PostgreSQL (issue 16 item 3): two nginx + program pairs, started
//! from the shipped nginx site as tests/common/web.rs templates it, share one database and one
//! upload directory (standing in for a shared file system). A slot from host A is uploaded
//! through host B and downloaded from A; a quota holds across both; cleanup run on one host
//! removes what both stored.

mod common;

use std::time::Duration;

use common::web::{self, Flavour, Settings, Stack, curl, put_file_raw};

/// A JID with a total quota of 600 bytes; everybody else at example.org has none.
const QUOTA_RULES: &str = "[[rules]]\nmatch = '^quota@example\\.org$'\nmax_total_size = 600\n";
const ALICE: &str = "alice@example.org";

/// Host A and host B on one new database of the shared cluster and one upload directory;
/// `None`: nginx or PostgreSQL missing (skip; a failure under CI=true).
fn two_hosts(retention: &'static str) -> Option<(Stack, Stack, common::TempDir)> {
    if !web::available(Flavour::Nginx) {
        return None;
    }
    let cluster = common::postgres::shared()?;
    let files = common::TempDir::new();
    let settings = Settings {
        rules: QUOTA_RULES,
        retention,
        database: Some(cluster.database("hosts")),
        upload_root: Some(files.path.clone()),
        ..Settings::default()
    };
    let a = Stack::start_with(Flavour::Nginx, &settings);
    let b = Stack::start_with(Flavour::Nginx, &settings);
    Some((a, b, files))
}

/// The same URL on `to` (a URL that `from` handed out).
fn through(url: &str, from: &Stack, to: &Stack) -> String {
    url.replacen(&from.public, &to.public, 1)
}

#[test]
fn a_slot_from_host_a_is_uploaded_through_host_b_and_served_by_both() {
    let Some((a, b, _files)) = two_hosts("30d") else {
        return;
    };
    let body = b"written through host B\n";
    let slot = a.slot(ALICE, "report.txt", body.len() as u64, "text/plain");
    let file = b.scratch_file("report.txt", body);
    let put = put_file_raw(
        &through(&slot.put_url, &a, &b),
        &file,
        &["-H", "Content-Type: text/plain"],
    );
    assert_eq!(put.status, 201, "PUT through B: {put:?}\n{}", b.logs());
    assert_eq!(
        std::fs::read(a.stored(&slot.token, &slot.name)).unwrap(),
        body
    );
    for host in [&a, &b] {
        let got = curl(&[&through(&slot.get_url, &a, host)]);
        assert_eq!(
            (got.status, got.body.as_slice()),
            (200, &body[..]),
            "GET from {}",
            host.public
        );
    }
    // The slot's one PUT was spent on B: A refuses a second body.
    let again = put_file_raw(&slot.put_url, &file, &["-H", "Content-Type: text/plain"]);
    assert_eq!(again.status, 409, "second PUT through A: {again:?}");
}

#[test]
fn a_quota_holds_across_both_hosts() {
    let Some((a, b, _files)) = two_hosts("30d") else {
        return;
    };
    let (status, text) = a.ask_slot("quota@example.org", "one.bin", 400);
    assert_eq!(status, 200, "{text}");
    // 400 held on A's slot: 300 more through B would pass B's limit on B's own count.
    let (status, text) = b.ask_slot("quota@example.org", "two.bin", 300);
    assert_eq!(status, 403, "B must count A's slot: {text}");
    assert!(text.contains("400 of 600 bytes"), "{text}");
    let (status, text) = b.ask_slot("quota@example.org", "three.bin", 200);
    assert_eq!(status, 200, "exactly the limit: {text}");
    let (status, _) = a.ask_slot("quota@example.org", "four.bin", 1);
    assert_eq!(status, 403, "full, seen from A");
}

#[test]
fn cleanup_on_one_host_removes_what_both_stored() {
    let Some((a, b, files)) = two_hosts("1s") else {
        return;
    };
    let mut stored = Vec::new();
    for (host, name) in [(&a, "from-a.txt"), (&b, "from-b.txt")] {
        let slot = host.slot(ALICE, name, 5, "text/plain");
        let file = host.scratch_file(name, b"hello");
        let put = put_file_raw(&slot.put_url, &file, &["-H", "Content-Type: text/plain"]);
        assert_eq!(put.status, 201, "{put:?}");
        stored.push(host.stored(&slot.token, &slot.name));
    }
    assert!(stored.iter().all(|p| p.exists()));
    // Run on A only: the first run confirms both uploads, a later one finds them past their
    // retention of one second and removes both files and their directories.
    let gone = common::wait_until(Duration::from_secs(20), || {
        a.cleanup();
        std::thread::sleep(Duration::from_millis(300));
        stored.iter().all(|p| !p.exists())
    });
    assert!(gone, "left: {:?}\n{}", stored, a.logs());
    let left: Vec<_> = std::fs::read_dir(&files.path).unwrap().flatten().collect();
    assert!(left.is_empty(), "left in the shared directory: {left:?}");
}
