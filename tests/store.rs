//! The store's behaviour, the same tests on both stores: SQLite (a file) and PostgreSQL (a
//! real server, tests/common/postgres.rs). Each test runs once per store (`sqlite::NAME`,
//! `postgres::NAME`); the quota race runs in two processes standing in for two hosts.

mod common;

use std::process::Command;
use std::time::Duration;

use xmpp_http_upload::refusal::{Outcome, Refusal, RefusalKind};
use xmpp_http_upload::rules::{Limits, Window};
use xmpp_http_upload::store::{Location, Slot, Store};

/// A fresh database of either kind for one test; `None`: PostgreSQL is missing (skip).
fn location(postgres: bool, tag: &str) -> Option<(Location, Option<common::TempDir>)> {
    if postgres {
        let cluster = common::postgres::shared()?;
        Some((Location::Postgres(cluster.database(tag)), None))
    } else {
        let dir = common::TempDir::new();
        let path = dir.path.join("db.sqlite3");
        Some((Location::Sqlite(path), Some(dir)))
    }
}

fn slot(token: &str, size: u64, created: i64) -> xmpp_http_upload::store::Slot {
    xmpp_http_upload::store::Slot {
        token: token.into(),
        jid: "a@b".into(),
        name: "f".into(),
        size,
        content_type: None,
        created,
        authorized: None,
        uploaded: None,
        area: None,
        expires: None,
        retention: None,
    }
}

fn refused_as(result: Result<(), Outcome>, kind: RefusalKind) -> bool {
    matches!(result, Err(Outcome::Refused(r)) if r.kind == kind)
}

/// Every test, once per store.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test] fn $name() {
                let (location, _dir) = super::location(false, stringify!($name)).unwrap();
                super::$name(&location);
            })*
        }
        mod postgres {
            $(#[test] fn $name() {
                let Some((location, _)) = super::location(true, stringify!($name)) else { return };
                super::$name(&location);
            })*
        }
    };
}

on_both_stores!(
    quota_counts_uploads_and_fresh_slots_only,
    file_size_limit_alone_is_checked,
    sizes_beyond_i64_are_refused_not_wrapped,
    only_the_first_web_server_put_of_a_slot_is_allowed,
    racing_authorizations_of_one_slot_have_one_winner,
    a_signed_path_is_claimed_once_when_the_web_server_writes,
    a_slot_recorded_twice_is_a_conflict_not_an_error,
    window_quota_says_when_to_retry,
    cleanup_queries_find_what_is_due,
    purge_remembers_what_may_still_land,
    counters_and_totals,
    quota_holds_across_two_processes,
);

fn quota_counts_uploads_and_fresh_slots_only(at: &Location) {
    let store = Store::open(at).unwrap();
    let limits = Limits {
        max_total_size: Some(10),
        ..Limits::default()
    };
    store
        .reserve_slot(&slot("t1", 6, 1000), &limits, 360)
        .unwrap();
    // 6 + 5 > 10 while t1 is fresh.
    let refused = store.reserve_slot(&slot("t2", 5, 1100), &limits, 360);
    assert!(refused_as(refused, RefusalKind::Forbidden));
    // t1 expired unused: it no longer counts.
    store
        .reserve_slot(&slot("t3", 10, 2000), &limits, 360)
        .unwrap();
    store.mark_authorized("t3", 2001).unwrap();
    let refused = store.reserve_slot(&slot("t4", 1, 9000), &limits, 360);
    assert!(refused_as(refused, RefusalKind::Forbidden));
    // Reopening migrates nothing twice.
    drop(store);
    let store = Store::open(at).unwrap();
    assert_eq!(store.slot("t3").unwrap().unwrap().authorized, Some(2001));
    assert!(store.slot("t2").unwrap().is_none());
}

fn file_size_limit_alone_is_checked(at: &Location) {
    let store = Store::open(at).unwrap();
    let limits = Limits {
        max_file_size: Some(5),
        ..Limits::default()
    };
    store
        .reserve_slot(&slot("s1", 5, 1000), &limits, 360)
        .unwrap();
    let refused = store.reserve_slot(&slot("s2", 6, 1000), &limits, 360);
    assert!(refused_as(refused, RefusalKind::TooLarge));
    assert!(store.slot("s2").unwrap().is_none());
}

fn sizes_beyond_i64_are_refused_not_wrapped(at: &Location) {
    let store = Store::open(at).unwrap();
    let refused = store.reserve_slot(&slot("h", u64::MAX, 1000), &Limits::default(), 360);
    assert!(refused_as(refused, RefusalKind::TooLarge));
    assert!(store.slot("h").unwrap().is_none());
    // The largest size either store holds is stored as it is.
    let top = i64::MAX as u64;
    store
        .reserve_slot(&slot("top", top, 1000), &Limits::default(), 360)
        .unwrap();
    assert_eq!(store.slot("top").unwrap().unwrap().size, top);
}

/// `authorize_first_put` with checks that allow everything.
fn first_put(store: &Store, token: &str, now: i64) -> Result<Option<Slot>, Outcome> {
    store.authorize_first_put(token, now, Box::new(|_| Ok(())))
}

fn only_the_first_web_server_put_of_a_slot_is_allowed(at: &Location) {
    let store = Store::open(at).unwrap();
    store
        .reserve_slot(&slot("o1", 3, 1000), &Limits::default(), 360)
        .unwrap();
    let first = first_put(&store, "o1", 1001).unwrap().unwrap();
    assert_eq!((first.token.as_str(), first.size), ("o1", 3));
    let second = first_put(&store, "o1", 1002).map(|_| ());
    assert!(refused_as(second, RefusalKind::Conflict), "second PUT");
    assert_eq!(store.slot("o1").unwrap().unwrap().authorized, Some(1001));
    assert!(matches!(first_put(&store, "unknown", 1003), Ok(None)));
    // The checks see the slot as it stands; their refusal writes nothing.
    store
        .reserve_slot(&slot("o2", 3, 1000), &Limits::default(), 360)
        .unwrap();
    let refused = store.authorize_first_put(
        "o2",
        1004,
        Box::new(|slot| {
            assert_eq!((slot.size, slot.authorized), (3, None));
            Err(Refusal::bad_request("no"))
        }),
    );
    assert!(refused_as(refused.map(|_| ()), RefusalKind::BadRequest));
    assert_eq!(store.slot("o2").unwrap().unwrap().authorized, None);
    assert!(first_put(&store, "o2", 1005).unwrap().is_some());
}

fn racing_authorizations_of_one_slot_have_one_winner(at: &Location) {
    let store = std::sync::Arc::new(Store::open(at).unwrap());
    store
        .reserve_slot(&slot("r1", 3, 1000), &Limits::default(), 360)
        .unwrap();
    let answers: Vec<Result<Option<Slot>, Outcome>> = (0..8)
        .map(|i| {
            let store = store.clone();
            std::thread::spawn(move || first_put(&store, "r1", 1000 + i))
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let winners = answers.iter().filter(|a| matches!(a, Ok(Some(_)))).count();
    let conflicts = answers
        .into_iter()
        .filter(|a| matches!(a, Err(Outcome::Refused(r)) if r.kind == RefusalKind::Conflict))
        .count();
    assert_eq!((winners, conflicts), (1, 7));
}

fn a_signed_path_is_claimed_once_when_the_web_server_writes(at: &Location) {
    let store = Store::open(at).unwrap();
    let path = "share/u/a.txt";
    assert!(store.claim_signed_path(path, 5, 100, true, None).unwrap());
    assert!(!store.claim_signed_path(path, 5, 200, true, None).unwrap());
    // the program writes (and never overwrites): a retry is fine, the first time stays
    assert!(store.claim_signed_path(path, 5, 300, false, None).unwrap());
    assert_eq!(store.signed_upload_authorized(path).unwrap(), Some(100));
    assert_eq!(
        store.signed_uploads_before(150).unwrap(),
        vec![(path.to_string(), 100)]
    );
    assert_eq!(
        store.signed_uploads().unwrap(),
        vec![(path.to_string(), 5, 100)]
    );
    // gone at retention: refused from now on, even for the program's own retry
    store.mark_signed_removed(path, 500).unwrap();
    assert!(!store.claim_signed_path(path, 5, 600, false, None).unwrap());
    assert_eq!(store.signed_upload_authorized(path).unwrap(), None);
    assert_eq!(store.forget_signed_tombstones(499).unwrap(), 0);
    assert_eq!(store.forget_signed_tombstones(500).unwrap(), 1);
    assert!(store.claim_signed_path(path, 5, 700, true, None).unwrap());
    store.set_signed_upload_size(path, 9).unwrap();
    assert_eq!(store.signed_uploads().unwrap()[0].1, 9);
    store.delete_signed_upload(path).unwrap();
    assert!(store.claim_signed_path(path, 5, 800, true, None).unwrap());
}

fn a_slot_recorded_twice_is_a_conflict_not_an_error(at: &Location) {
    let store = Store::open(at).unwrap();
    let limits = Limits::default();
    store
        .reserve_slot(&slot("d1", 3, 1000), &limits, 360)
        .unwrap();
    let again = store.reserve_slot(&slot("d1", 3, 1000), &limits, 360);
    assert!(refused_as(again, RefusalKind::Conflict));
}

fn window_quota_says_when_to_retry(at: &Location) {
    let store = Store::open(at).unwrap();
    let limits = Limits {
        uploads_per_window: Some(Window {
            seconds: 100,
            amount: 2,
        }),
        ..Limits::default()
    };
    store
        .reserve_slot(&slot("w1", 1, 1000), &limits, 360)
        .unwrap();
    store
        .reserve_slot(&slot("w2", 1, 1010), &limits, 360)
        .unwrap();
    match store.reserve_slot(&slot("w3", 1, 1020), &limits, 360) {
        // w1 leaves the window at 1100: 80 s from 1020
        Err(Outcome::Refused(r)) => {
            assert_eq!(
                (r.kind, r.retry_after),
                (RefusalKind::QuotaExceeded, Some(80))
            )
        }
        other => panic!("expected a 402, got {other:?}"),
    }
    store
        .reserve_slot(&slot("w4", 1, 1101), &limits, 360)
        .unwrap();
}

fn cleanup_queries_find_what_is_due(at: &Location) {
    let store = Store::open(at).unwrap();
    let limits = Limits::default();
    let unused = slot("unused", 1, 1000);
    let landing = slot("landing", 1, 1000);
    let done = slot("done", 1, 1000);
    let kept_long = xmpp_http_upload::store::Slot {
        retention: Some(10_000),
        ..slot("kept", 1, 1000)
    };
    let expiring = xmpp_http_upload::store::Slot {
        area: Some("share".into()),
        expires: Some(1500),
        authorized: Some(1000),
        ..slot("expiring", 1, 1000)
    };
    for s in [&unused, &landing, &done, &kept_long, &expiring] {
        store.reserve_slot(s, &limits, 360).unwrap();
    }
    store.mark_authorized("landing", 1001).unwrap();
    assert!(store.mark_uploaded("done", 1002).unwrap());
    assert!(store.mark_uploaded("kept", 1002).unwrap());
    assert!(!store.mark_uploaded("nonesuch", 1002).unwrap());
    let tokens = |slots: Vec<xmpp_http_upload::store::Slot>| {
        let mut t: Vec<String> = slots.into_iter().map(|s| s.token).collect();
        t.sort();
        t
    };
    assert_eq!(
        tokens(store.unconfirmed(1000).unwrap()),
        ["expiring", "landing", "unused"]
    );
    assert_eq!(
        tokens(store.unconfirmed(999).unwrap()),
        ["expiring", "landing"]
    );
    assert_eq!(tokens(store.expiring_before(1500).unwrap()), ["expiring"]);
    assert!(store.expiring_before(1499).unwrap().is_empty());
    // the global retention of 100 s: "done" is due at 1102, "kept" keeps its own 10 000 s
    assert_eq!(tokens(store.past_retention(1102, 100).unwrap()), ["done"]);
    assert!(store.past_retention(1101, 100).unwrap().is_empty());
    store.set_retentions(&[("kept".to_string(), None)]).unwrap();
    assert_eq!(
        tokens(store.past_retention(1102, 100).unwrap()),
        ["done", "kept"]
    );
    store.set_slot_size("done", 42).unwrap();
    let mut all = Vec::new();
    store
        .for_each_slot(|s| all.push((s.token, s.size)))
        .unwrap();
    all.sort();
    assert_eq!(all.len(), 5);
    assert!(all.contains(&("done".to_string(), 42)));
    store.delete_slot("done").unwrap();
    assert!(store.slot("done").unwrap().is_none());
}

fn purge_remembers_what_may_still_land(at: &Location) {
    let store = Store::open(at).unwrap();
    let limits = Limits::default();
    store
        .reserve_slot(&slot("p1", 1, 1000), &limits, 360)
        .unwrap();
    store
        .reserve_slot(&slot("p2", 1, 1001), &limits, 360)
        .unwrap();
    let other = xmpp_http_upload::store::Slot {
        jid: "c@d".into(),
        ..slot("q1", 1, 1000)
    };
    store.reserve_slot(&other, &limits, 360).unwrap();
    let of = |jid: &str| -> Vec<String> {
        store
            .slots_of(jid)
            .unwrap()
            .into_iter()
            .map(|s| s.token)
            .collect()
    };
    assert_eq!(of("a@b"), ["p1", "p2"]);
    let purged = store.purge_jid("a@b", 2000).unwrap();
    assert_eq!(purged.len(), 2);
    assert!(of("a@b").is_empty());
    assert_eq!(of("c@d"), ["q1"]);
    let mut remembered: Vec<(String, i64)> = store
        .purged()
        .unwrap()
        .into_iter()
        .map(|p| (p.token, p.purged))
        .collect();
    remembered.sort();
    assert_eq!(
        remembered,
        [("p1".to_string(), 2000), ("p2".to_string(), 2000)]
    );
    store.forget_purged("p1").unwrap();
    assert_eq!(store.purged().unwrap().len(), 1);
}

fn counters_and_totals(at: &Location) {
    let store = Store::open(at).unwrap();
    let limits = Limits::default();
    store
        .reserve_slot(&slot("c1", 10, 1000), &limits, 360)
        .unwrap();
    store
        .reserve_slot(&slot("c2", 20, 1000), &limits, 360)
        .unwrap();
    assert!(first_put(&store, "c1", 1001).unwrap().is_some());
    let jwt = xmpp_http_upload::store::Slot {
        area: Some("share".into()),
        authorized: Some(1000),
        ..slot("j1", 7, 1000)
    };
    store.reserve_slot(&jwt, &limits, 360).unwrap();
    assert!(
        store
            .claim_signed_path(
                "h/x",
                3,
                1000,
                true,
                Some(xmpp_http_upload::store::PUT_ALLOWED_HMAC)
            )
            .unwrap()
    );
    store.count("refusals_total", "reason=\"gone\"").unwrap();
    store.count("refusals_total", "reason=\"gone\"").unwrap();
    assert_eq!(store.stored().unwrap(), [(1, 10), (1, 7), (1, 3)]);
    let counters = store.counters().unwrap();
    let value = |name: &str, labels: &str| {
        counters
            .iter()
            .find(|(n, l, _)| n == name && l == labels)
            .map(|c| c.2)
    };
    assert_eq!(value("slots_granted_total", ""), Some(2));
    assert_eq!(value("puts_allowed_total", "protocol=\"slot\""), Some(1));
    assert_eq!(value("puts_allowed_total", "protocol=\"jwt\""), Some(1));
    assert_eq!(value("puts_allowed_total", "protocol=\"hmac\""), Some(1));
    assert_eq!(value("refusals_total", "reason=\"gone\""), Some(2));
}

/// How many slots each racing process tries, and the JID's total limit (in 1-byte slots).
const RACE_TRIES: usize = 120;
const RACE_LIMIT: u64 = 50;

/// Two processes (two hosts) reserve slots of one JID as fast as they can, four threads each;
/// together they must be granted exactly the limit, never one more.
fn quota_holds_across_two_processes(at: &Location) {
    let location = match at {
        Location::Sqlite(path) => path.display().to_string(),
        Location::Postgres(url) => url.clone(),
    };
    // Migrated before the race, so that both processes start on the same footing.
    drop(Store::open(at).unwrap());
    let start = xmpp_http_upload::unix_now() + 2;
    let hosts: Vec<_> = ["a", "b"]
        .iter()
        .map(|host| {
            Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "race_child", "--nocapture", "--test-threads=1"])
                .env("XHU_RACE_LOCATION", &location)
                .env("XHU_RACE_HOST", host)
                .env("XHU_RACE_START", start.to_string())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut granted = 0;
    for host in hosts {
        let output = host.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let line = text
            .lines()
            .find_map(|l| l.split("granted ").nth(1))
            .unwrap_or_else(|| panic!("no count in {text}"));
        granted += line.trim().parse::<u64>().unwrap();
    }
    assert_eq!(granted, RACE_LIMIT, "granted across both hosts");
    let store = Store::open(at).unwrap();
    assert_eq!(store.slots_of("race@x").unwrap().len() as u64, RACE_LIMIT);
}

/// One "host" of `quota_holds_across_two_processes` (does nothing unless started by it).
#[test]
fn race_child() {
    let Ok(location) = std::env::var("XHU_RACE_LOCATION") else {
        return;
    };
    let host = std::env::var("XHU_RACE_HOST").unwrap();
    let start: i64 = std::env::var("XHU_RACE_START").unwrap().parse().unwrap();
    let store = std::sync::Arc::new(Store::open(&Location::parse(&location).unwrap()).unwrap());
    while xmpp_http_upload::unix_now() < start {
        std::thread::sleep(Duration::from_millis(5));
    }
    let limits = Limits {
        max_total_size: Some(RACE_LIMIT),
        ..Limits::default()
    };
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (store, host, limits) = (store.clone(), host.clone(), limits.clone());
            std::thread::spawn(move || {
                let mut granted = 0;
                for i in 0..RACE_TRIES / 4 {
                    let slot = xmpp_http_upload::store::Slot {
                        jid: "race@x".into(),
                        ..slot(&format!("{host}-{t}-{i}"), 1, start)
                    };
                    match store.reserve_slot(&slot, &limits, 360) {
                        Ok(()) => granted += 1,
                        Err(Outcome::Refused(r)) => assert_eq!(r.kind, RefusalKind::Forbidden),
                        Err(Outcome::Failed(e)) => panic!("{e}"),
                    }
                }
                granted
            })
        })
        .collect();
    let granted: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    println!("granted {granted}");
}

/// PostgreSQL only: a schema newer than the program is refused at open, with a clear line.
#[test]
fn postgres_schema_newer_than_the_program_is_refused() {
    let Some(cluster) = common::postgres::shared() else {
        return;
    };
    let url = cluster.database("newer");
    drop(Store::open(&Location::Postgres(url.clone())).unwrap());
    cluster.sql_in(&url, "UPDATE schema_version SET version = 999");
    let error = Store::open(&Location::Postgres(url))
        .err()
        .expect("refused")
        .to_string();
    assert!(error.contains("newer than this program knows"), "{error}");
}
