//! PostgreSQL going away under the program (issue 16 item 4): stopped, restarted, a connection
//! killed (`pg_terminate_backend`), idle or in the middle of a transaction. What must hold: a
//! clear 503 with one line while the server is away, never a 500; recovery without restarting
//! the program; nothing half-written (no slot recorded by a request that got 503, no file
//! stored by a PUT that got 503).
//!
//! Each test runs its own cluster (tests/common/postgres.rs), so that stopping it disturbs no
//! other test; the program is the real binary serving FastCGI (tests/common/mod.rs).

mod common;

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use common::fcgi::Response;
use common::postgres::{self, Postgres};
use common::{ALLOW_ALL, Env, Put, PutMode, Server, parse_text_slot, standard_config};

/// The one line a client gets while the database is away.
const AWAY: &str = "database unavailable, try again\n";

/// A cluster of the test's own, a test directory, and the program serving on a database in
/// that cluster; `None`: PostgreSQL is missing (skip; a failure under CI=true).
fn start() -> Option<(Postgres, Env, String, Server)> {
    if !postgres::available() {
        return None;
    }
    let cluster = Postgres::start();
    let url = cluster.database("faults");
    let env = Env::new(&standard_config(ALLOW_ALL));
    let server = common::postgres::serve_on(&env, &url, "postgres", &standard_config(ALLOW_ALL));
    Some((cluster, env, url, server))
}

fn slot_query(name: &str) -> String {
    format!("jid=user%40example.org&name={name}&size=5")
}

/// The slot request of `slot_query(name)` to the program at `address`, from any thread.
fn slot_request_at(address: &common::fcgi::Address, name: &str) -> common::fcgi::Response {
    try_slot_request_at(address, name).unwrap()
}

/// `slot_request_at`, with the test client's error (e.g. no answer within its timeout).
fn try_slot_request_at(
    address: &common::fcgi::Address,
    name: &str,
) -> std::io::Result<common::fcgi::Response> {
    let params = common::fcgi::request_params(
        "GET",
        &format!("/http_upload/slot/?{}", slot_query(name)),
        &[],
    );
    common::fcgi::request(
        address,
        common::fcgi::Role::Responder,
        &params,
        common::fcgi::Body::Empty,
    )
}

/// A slot request kept inside its transaction: a cluster of the test's own, the program on it
/// with a quota (a slot request then first takes the JID's advisory lock), that lock held by
/// the test as another host would hold it, and a slot request for `name` sent on a thread of
/// its own and waiting for the lock (checked in `pg_stat_activity`); its answer, or the test
/// client's error, comes on the receiver. `None`: PostgreSQL is missing (as `start`).
struct WaitingRequest {
    cluster: Postgres,
    url: String,
    server: Server,
    lock: common::postgres::HeldJidLock,
    answer: std::sync::mpsc::Receiver<std::io::Result<Response>>,
    /// The test directory (upload root, configuration, socket), kept while the server runs.
    _env: Env,
}

fn a_slot_request_waiting_for_a_lock(name: &'static str) -> Option<WaitingRequest> {
    if !postgres::available() {
        return None;
    }
    let cluster = Postgres::start();
    let url = cluster.database("faults");
    let quota = standard_config("[[rules]]\nmatch = '.*'\nmax_total_size = \"1 GiB\"\n");
    let env = Env::new(&standard_config(ALLOW_ALL));
    let server = common::postgres::serve_on(&env, &url, "limited", &quota);
    let lock = common::postgres::HeldJidLock::take(&url, "user@example.org");
    let address = server.address.clone();
    let (answered, answer) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = answered.send(try_slot_request_at(&address, name));
    });
    let blocked = common::wait_until(Duration::from_secs(10), || {
        !cluster
            .sql(
                "SELECT pid FROM pg_stat_activity
                 WHERE application_name = 'xmpp-http-upload' AND wait_event_type = 'Lock'",
            )
            .is_empty()
    });
    assert!(blocked, "the program never waited for the lock");
    Some(WaitingRequest {
        cluster,
        url,
        server,
        lock,
        answer,
        _env: env,
    })
}

fn assert_away(response: &Response, what: &str) {
    assert_eq!(response.status, 503, "{what}: {response}");
    assert_eq!(response.text(), AWAY, "{what}");
}

/// Slots recorded in the database at `url`.
fn slot_count(cluster: &Postgres, url: &str) -> usize {
    cluster.sql_in(url, "SELECT token FROM slot").len()
}

/// Files under the upload root (not directories).
fn files(env: &Env) -> Vec<PathBuf> {
    env.upload_tree()
        .into_iter()
        .map(|p| env.upload_root.join(p))
        .filter(|p| p.is_file())
        .collect()
}

#[test]
fn stopped_postgres_is_a_503_and_the_program_recovers_when_it_is_back() {
    let Some((cluster, env, url, server)) = start() else {
        return;
    };
    let before = parse_text_slot(&server.slot_request(&slot_query("before.txt")));
    cluster.stop();
    assert_away(
        &server.slot_request(&slot_query("during.txt")),
        "slot while stopped",
    );
    // A PUT needs the database to decide: refused whole, no file.
    let put = server.put(PutMode::SelfWrite, &before.put_path, &Put::of(b"hello"));
    assert_away(&put, "PUT while stopped");
    assert!(files(&env).is_empty(), "{:?}", files(&env));
    assert!(
        server.log().contains("database unavailable") || server.log().contains("connect"),
        "the log says why: {}",
        server.log()
    );
    cluster.resume();
    // Back: the very first requests succeed, without restarting the program.
    let after = parse_text_slot(&server.slot_request(&slot_query("after.txt")));
    server.upload(&env, PutMode::SelfWrite, &before, &Put::of(b"hello"));
    assert_eq!(
        fs::read(env.stored(&before.token, "before.txt")).unwrap(),
        b"hello"
    );
    // The slot asked for while it was away was never recorded.
    assert_eq!(slot_count(&cluster, &url), 2);
    assert_ne!(after.token, before.token);
}

#[test]
fn a_restart_between_requests_costs_no_request() {
    let Some((cluster, _env, _url, server)) = start() else {
        return;
    };
    // Several connections in the pool, all of which the restart kills.
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let address = server.address.clone();
            std::thread::spawn(move || slot_request_at(&address, &format!("t{i}.txt")).status)
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 200);
    }
    cluster.stop();
    cluster.resume();
    for i in 0..6 {
        let response = server.slot_request(&slot_query(&format!("again{i}.txt")));
        assert_eq!(
            response.status, 200,
            "request {i} after the restart: {response}"
        );
    }
}

#[test]
fn a_killed_idle_connection_is_replaced_unnoticed() {
    let Some((cluster, _env, _url, server)) = start() else {
        return;
    };
    parse_text_slot(&server.slot_request(&slot_query("one.txt")));
    let killed = cluster.sql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE application_name = 'xmpp-http-upload'",
    );
    assert!(!killed.is_empty(), "the program's connection was found");
    let response = server.slot_request(&slot_query("two.txt"));
    assert_eq!(response.status, 200, "{response}");
}

#[test]
fn a_connection_killed_mid_transaction_leaves_nothing_and_the_next_request_works() {
    // The program's transaction waits inside, between BEGIN and its INSERT: kill its
    // connection.
    let Some(WaitingRequest {
        cluster,
        url,
        server,
        lock,
        answer,
        _env,
    }) = a_slot_request_waiting_for_a_lock("waits.txt")
    else {
        return;
    };
    cluster.sql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE application_name = 'xmpp-http-upload' AND wait_event_type = 'Lock'",
    );
    let response = answer.recv().unwrap().unwrap();
    assert_away(&response, "slot whose connection was killed");
    lock.release();
    assert_eq!(slot_count(&cluster, &url), 0, "nothing half-written");
    parse_text_slot(&server.slot_request(&slot_query("next.txt")));
    assert_eq!(slot_count(&cluster, &url), 1);
}

#[test]
fn a_program_started_while_postgres_is_down_answers_503_and_migrates_when_it_is_up() {
    if !postgres::available() {
        return;
    }
    let cluster = Postgres::start();
    let url = cluster.database("late");
    cluster.stop();
    let env = Env::new(&standard_config(ALLOW_ALL));
    let server = common::postgres::serve_on(&env, &url, "postgres", &standard_config(ALLOW_ALL));
    assert_away(
        &server.slot_request(&slot_query("early.txt")),
        "slot before PostgreSQL",
    );
    cluster.resume();
    parse_text_slot(&server.slot_request(&slot_query("late.txt")));
    assert_eq!(slot_count(&cluster, &url), 1);
    assert_eq!(
        cluster.sql_in(&url, "SELECT version FROM schema_version"),
        [["2".to_string()]]
    );
}

/// Accepts connections and never answers (a PostgreSQL process that is stopped, a middlebox
/// that swallows the traffic): its port, and the connections it holds.
fn silent_server() -> (
    u16,
    std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let holder = std::sync::Arc::clone(&held);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            holder.lock().unwrap().push(stream);
        }
    });
    (port, held)
}

/// A server that takes the connection and then says nothing costs a request `connect_timeout`
/// (per host, as libpq counts it) and a 503, not a worker for good: the client itself bounds
/// only the TCP connect, and every request waited without end.
#[test]
fn a_server_that_accepts_and_never_answers_is_a_503_within_connect_timeout() {
    if !postgres::available() {
        return;
    }
    let (port, held) = silent_server();
    let url = format!("postgres://xhu@127.0.0.1:{port}/silent?connect_timeout=2");
    let env = Env::new(&standard_config(ALLOW_ALL));
    // The program starts (it answers 503 until the server answers) ...
    let started = std::time::Instant::now();
    let server = common::postgres::serve_on(&env, &url, "silent", &standard_config(ALLOW_ALL));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "start took {:?}",
        started.elapsed()
    );
    // ... and each request gets its 503 after about connect_timeout, several at once too.
    let address = server.address.clone();
    let asked = std::time::Instant::now();
    let requests: Vec<_> = (0..3)
        .map(|n| {
            let address = address.clone();
            std::thread::spawn(move || slot_request_at(&address, &format!("silent-{n}.txt")))
        })
        .collect();
    for request in requests {
        assert_away(&request.join().expect("request thread"), "silent server");
    }
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "three requests took {took:?}"
    );
    assert!(
        !held.lock().unwrap().is_empty(),
        "nothing connected to the silent server"
    );
    assert!(
        server.log().contains("no answer within 2 s of connecting"),
        "{}",
        server.log()
    );
}

/// Every packet to and from a loopback TCP port dropped, as when the machine at that port
/// loses power or the network between is cut: nothing answers, not even the kernel (nftables;
/// the rules are removed on drop). `None`: `nft` is missing or may not be used (skip; a failure
/// under CI=true).
struct Cut {
    table: String,
}

/// Runs `nft` with `args`: its output, or why it failed.
fn nft(args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new("nft")
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

impl Cut {
    fn port(port: u16) -> Option<Cut> {
        // Tables left by test processes that were killed (their ports would stay cut) go first.
        for line in nft(&["list", "tables"]).unwrap_or_default().lines() {
            let Some(name) = line.strip_prefix("table inet ") else {
                continue;
            };
            let pid = name
                .strip_prefix("xhu_test_cut_")
                .and_then(|r| r.split('_').next());
            if pid.is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists()) {
                let _ = nft(&["delete", "table", "inet", name]);
            }
        }
        let table = format!("xhu_test_cut_{}_{port}", std::process::id());
        let hook = "{ type filter hook input priority 0; policy accept; }";
        let port = port.to_string();
        let made = nft(&["add", "table", "inet", &table])
            .and_then(|_| nft(&["add", "chain", "inet", &table, "input", hook]))
            .and_then(|_| {
                nft(&[
                    "add", "rule", "inet", &table, "input", "tcp", "dport", &port, "drop",
                ])
            })
            .and_then(|_| {
                nft(&[
                    "add", "rule", "inet", &table, "input", "tcp", "sport", &port, "drop",
                ])
            });
        match made {
            Ok(_) => Some(Cut { table }),
            Err(e) => {
                let _ = nft(&["delete", "table", "inet", &table]);
                if std::env::var("CI").as_deref() == Ok("true") {
                    panic!("cannot drop packets with nft (apt-get install nftables; root): {e}");
                }
                eprintln!("skipped: cannot drop packets with nft: {e}");
                None
            }
        }
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        let _ = nft(&["delete", "table", "inet", &self.table]);
    }
}

/// The server's machine gone while the program waits for an answer (the query was sent and
/// acknowledged, then nothing: no reply, no reset): the request gets its 503 about 10 s in
/// (TCP keepalive probes from 5 s of silence, unanswered, and the user timeout of 10 s), not
/// after the client's default of two hours before the first probe, and the program serves again
/// once the server is back.
#[test]
fn a_server_that_vanishes_mid_query_is_a_503_not_a_worker_held_for_hours() {
    // The program's query is in flight, acknowledged, its answer not yet sent.
    let Some(WaitingRequest {
        cluster,
        server,
        lock,
        answer,
        url: _,
        _env,
    }) = a_slot_request_waiting_for_a_lock("vanishes.txt")
    else {
        return;
    };
    // The server's kernel acknowledges the query late when it has nothing to send (delayed
    // ACK, at most 200 ms): cut after that, so that nothing the program sent is left
    // unacknowledged (what the user timeout alone would notice).
    std::thread::sleep(Duration::from_millis(500));
    let Some(cut) = Cut::port(cluster.port) else {
        return;
    };
    let cut_at = std::time::Instant::now();
    let response = answer
        .recv_timeout(Duration::from_secs(60))
        .expect("the request's thread")
        .unwrap_or_else(|e| {
            panic!("no answer after the server vanished, the request holds its worker: {e}")
        });
    let took = cut_at.elapsed();
    assert_away(&response, "slot whose server vanished");
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(20),
        "503 after {took:?}: the user timeout of 10 s should end it, after the keepalive probes"
    );
    drop(cut);
    lock.release();
    // Back: the program serves again (another JID: the vanished transaction may still hold
    // this one's lock on the server until the server notices its client is gone).
    let other = "jid=other%40example.org&name=back.txt&size=5";
    parse_text_slot(&server.slot_request(other));
}
