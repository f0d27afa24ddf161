//! Shared hosting as a host really runs it: Apache with mod_cgid, the shipped
//! `apache/shared-hosting/` files, and the program as plain CGI (`Flavour::ApacheCgi`). What a
//! web request must not be able to do there: start or steer the program through its command
//! line (RFC 3875 §4.4 hands a query without `=` to a CGI program as argv).
//!
//! Without apache2 these tests are skipped with a message; with `CI=true` they fail.

#[path = "common/web.rs"]
mod web;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use web::{Answer, Flavour, SECRET, Stack, available, curl, port_is_open, unused_port};

/// A directory nothing creates unless a request manages to start a development server.
fn untouched_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("xhu-argv-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

/// Ends every program process the web server left behind (only ours: their binary lies in the
/// stack's directory), so that a failing run of this test cleans up after itself.
fn stop_leftover_programs(stack: &Stack) -> Vec<u32> {
    let pids = stack.program_pids();
    for pid in &pids {
        let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    }
    pids
}

/// A GET of the slot API with `query`, as the XMPP server (its secret in the header, so the
/// query can do without any `=`). curl gives up after 15 s: an old program that starts a
/// server never answers.
fn slot_get(stack: &Stack, query: &str) -> Answer {
    curl(&[
        "--max-time",
        "15",
        "-H",
        &format!("Authorization: Bearer {SECRET}"),
        &format!("{}/http_upload/slot/?{query}", stack.slot_api),
    ])
}

fn try_slot_get(stack: &Stack, query: &str) -> Option<Answer> {
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "15", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(["-H", &format!("Authorization: Bearer {SECRET}")])
        .arg(format!("{}/http_upload/slot/?{query}", stack.slot_api))
        .output()
        .expect("run curl");
    let code: u16 = String::from_utf8_lossy(&output.stdout).trim().parse().unwrap_or(0);
    (code != 0).then(|| slot_get(stack, query))
}

/// Waits a moment for a port that an escaped server would open, and says if it opened.
fn opens_within(port: u16, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if port_is_open(port) {
            return true;
        }
        thread::sleep(Duration::from_millis(50));
    }
    port_is_open(port)
}

fn apache_error_log(stack: &Stack) -> String {
    fs::read_to_string(stack.dir.path.join("logs/error.log")).unwrap_or_default()
}

#[test]
fn a_query_is_never_a_command_line() {
    if !available(Flavour::ApacheCgi) {
        return;
    }
    let stack = Stack::start(Flavour::ApacheCgi);
    // What the slot API says to a query with no `jid`: the answer every query below must get.
    let ordinary = slot_get(&stack, "name=x");
    assert_eq!(ordinary.status, 400, "control request: {ordinary:?}");

    let port = unused_port();
    let data = untouched_dir("runserver");
    let runserver = format!(
        "runserver+--listen+127.0.0.1:{port}+--data+{}",
        data.display()
    );
    let mut escaped = Vec::new();
    for query in [
        runserver.as_str(),
        "serve+--listen+127.0.0.1:1",
        "cleanup",
        "check-config",
        "--config+/etc/passwd",
        "--help",
        "--version",
    ] {
        let answer = try_slot_get(&stack, query);
        let listening = query.starts_with("runserver") && opens_within(port, Duration::from_secs(2));
        let same = answer
            .as_ref()
            .is_some_and(|a| a.status == ordinary.status && a.body == ordinary.body);
        if !same || listening {
            escaped.push(format!(
                "?{query}: answer {answer:?}, port {port} listening: {listening}"
            ));
        }
    }
    let leftovers = stop_leftover_programs(&stack);
    let created = data.exists();
    let _ = fs::remove_dir_all(&data);
    if !escaped.is_empty() || created || !leftovers.is_empty() {
        stack.fail(&format!(
            "a query reached the command line:\n{}\n{} created: {created}; program processes \
             still running after the requests: {leftovers:?}",
            escaped.join("\n"),
            data.display()
        ));
    }

    // The same through the PUT route: an unknown slot is a 404 from the program, whatever the
    // query says.
    let put = curl(&[
        "--max-time",
        "15",
        "-X",
        "PUT",
        "--data-binary",
        "hello",
        &format!(
            "{}/upload/{}/a.txt?check-config",
            stack.public,
            "0".repeat(40)
        ),
    ]);
    assert_eq!(put.status, 404, "PUT ?check-config: {put:?}\n{}", stack.logs());
}

#[test]
fn listen_in_the_config_does_not_turn_cgi_into_a_server() {
    if !available(Flavour::ApacheCgi) {
        return;
    }
    let stack = Stack::start(Flavour::ApacheCgi);
    let port = unused_port();
    let config = fs::read_to_string(&stack.config).expect("read config");
    fs::write(
        &stack.config,
        format!("listen = \"127.0.0.1:{port}\"\n{config}"),
    )
    .expect("write config");
    let answer = try_slot_get(&stack, "name=x");
    let listening = opens_within(port, Duration::from_secs(2));
    let leftovers = stop_leftover_programs(&stack);
    if answer.as_ref().map(|a| a.status) != Some(400) || listening || !leftovers.is_empty() {
        stack.fail(&format!(
            "`listen` in the config changed a CGI request: answer {answer:?}, port listening: \
             {listening}, processes left: {leftovers:?}"
        ));
    }
    let log = apache_error_log(&stack);
    assert!(
        log.contains("listen") && log.contains("ignored"),
        "no warning that `listen` is ignored under CGI:\n{}",
        stack.logs()
    );
}

/// Reads a file as the test sees it (helper for later tests).
#[allow(dead_code)]
fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_default()
}
