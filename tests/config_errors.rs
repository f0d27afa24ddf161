//! Configuration problems give a message naming the key and the line, never a panic:
//! `check-config`, `serve` and `cleanup` all refuse a bad file; a good file is accepted and
//! `check-config` prints what it understood.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// A complete, valid configuration; `{root}` and `{db}` are filled in per test.
const GOOD: &str = r#"# xmpp-http-upload test configuration
upload_root = "{root}"
database = "{db}"
base_url = "https://upload.example.org"
slot_prefix = "/http_upload"
put_prefix = "/upload"
get_prefix = "/download"
put_timeout = "5m"
retention = "7d"
webserver_download = true

[slot_api]
allow_from = ["127.0.0.1", "10.0.0.0/8", "::1"]
secret = "do-not-print-me-0123456789"

[[rules]]
match = '^admin@example\.org$'

[[rules]]
match = '@example\.org$'
max_file_size = "10 MiB"
max_total_size = "1 GiB"
bytes_per_window = { window = "1h", bytes = "100 MiB" }
uploads_per_window = { window = "2h", uploads = 30 }

[[rules]]
match = '.*'
deny = true
"#;

fn good(dir: &Path) -> String {
    // check-config also checks that the upload root can be reached: it must exist.
    std::fs::create_dir_all(dir.join("files")).unwrap();
    GOOD.replace("{root}", dir.join("files").to_str().unwrap())
        .replace("{db}", dir.join("db.sqlite3").to_str().unwrap())
}

/// True when `text` points at line `n` ("line 7", "config.toml:7:", ...).
fn mentions_line(text: &str, n: usize) -> bool {
    let lower = text.to_lowercase();
    lower.contains(&format!("line {n}"))
        || lower.contains(&format!(":{n}:"))
        || lower.contains(&format!("line: {n}"))
        || lower.contains(&format!("line={n}"))
}

fn assert_no_panic(text: &str) {
    assert!(!text.contains("panicked"), "panic: {text}");
    assert!(!text.contains("RUST_BACKTRACE"), "panic: {text}");
}

/// Replaces the line starting with `old_start` (or, if `old_start` is empty, appends) by
/// `new_line`; returns the text and the 1-based line number of `new_line`.
fn edit(text: &str, old_start: &str, new_line: &str) -> (String, usize) {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let index = if old_start.is_empty() {
        lines.push(String::new());
        lines.len() - 1
    } else {
        lines
            .iter()
            .position(|l| l.starts_with(old_start))
            .unwrap_or_else(|| panic!("no line starting with {old_start:?}"))
    };
    lines[index] = new_line.to_string();
    (lines.join("\n") + "\n", index + 1)
}

#[test]
fn a_good_config_is_accepted_and_explained() {
    let dir = TempDir::new();
    let path = dir.path.join("config.toml");
    std::fs::write(&path, good(&dir.path)).unwrap();
    let output = run(&["check-config", "--config", path.to_str().unwrap()]);
    let text = output_text(&output);
    assert!(output.status.success(), "{text}");
    assert_no_panic(&text);
    let stdout = String::from_utf8_lossy(&output.stdout);
    for understood in [
        dir.path.join("files").to_str().unwrap(),
        "https://upload.example.org",
        "/download",
        r"^admin@example\.org$",
        r"@example\.org$",
    ] {
        assert!(
            stdout.contains(understood),
            "check-config should print {understood:?}:\n{stdout}"
        );
    }
    assert!(
        stdout.contains("10485760") || stdout.contains("10 MiB"),
        "max_file_size not shown:\n{stdout}"
    );
    assert!(
        !text.contains("do-not-print-me-0123456789"),
        "the secret is printed:\n{text}"
    );
}

#[test]
fn the_config_may_come_from_the_environment() {
    let dir = TempDir::new();
    let path = dir.path.join("env.toml");
    std::fs::write(&path, good(&dir.path)).unwrap();
    let output = Command::new(BIN)
        .arg("check-config")
        .env("XMPP_HTTP_UPLOAD_CONFIG", &path)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", output_text(&output));

    let (bad, _) = edit(&good(&dir.path), "retention", "retention = \"forever\"");
    std::fs::write(&path, bad).unwrap();
    let output = Command::new(BIN)
        .arg("check-config")
        .env("XMPP_HTTP_UPLOAD_CONFIG", &path)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = output_text(&output);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("retention"), "{text}");
}

#[test]
fn each_bad_value_is_named_with_its_line() {
    let dir = TempDir::new();
    let base = good(&dir.path);
    // (what, line to replace, new line, key the message must name)
    let cases = [
        (
            "unknown top-level key",
            "webserver_download",
            "webserver_downlaod = true",
            "webserver_downlaod",
        ),
        (
            "unknown rule key",
            "max_total_size",
            "max_totalsize = \"1 GiB\"",
            "max_totalsize",
        ),
        (
            "unknown slot_api key",
            "secret",
            "secrets = \"x\"",
            "secrets",
        ),
        (
            "bad regex",
            "match = '^admin",
            "match = '(unclosed'",
            "match",
        ),
        (
            "bad size unit",
            "max_file_size",
            "max_file_size = \"10 XB\"",
            "max_file_size",
        ),
        (
            "negative size",
            "max_file_size",
            "max_file_size = -1",
            "max_file_size",
        ),
        (
            "size is not a number",
            "max_total_size",
            "max_total_size = \"lots\"",
            "max_total_size",
        ),
        (
            "bad duration",
            "put_timeout",
            "put_timeout = \"5 fortnights\"",
            "put_timeout",
        ),
        (
            "negative duration",
            "retention",
            "retention = -30",
            "retention",
        ),
        (
            "bad window duration",
            "bytes_per_window",
            "bytes_per_window = { window = \"soon\", bytes = \"1 MiB\" }",
            "window",
        ),
        (
            "bad window bytes",
            "bytes_per_window",
            "bytes_per_window = { window = \"1h\", bytes = \"many\" }",
            "bytes",
        ),
        (
            "uploads not a count",
            "uploads_per_window",
            "uploads_per_window = { window = \"1h\", uploads = \"thirty\" }",
            "uploads",
        ),
        (
            "bad address",
            "allow_from",
            "allow_from = [\"127.0.0.1\", \"not-an-ip\"]",
            "allow_from",
        ),
        (
            "bad CIDR",
            "allow_from",
            "allow_from = [\"10.0.0.0/99\"]",
            "allow_from",
        ),
    ];
    for (what, old, new, key) in cases {
        let (text, line) = edit(&base, old, new);
        let path = dir.path.join("bad.toml");
        std::fs::write(&path, &text).unwrap();
        let output = run(&["check-config", "--config", path.to_str().unwrap()]);
        let message = output_text(&output);
        assert!(
            !output.status.success(),
            "{what}: accepted:\n{text}\n{message}"
        );
        assert_no_panic(&message);
        assert!(
            message.contains(key),
            "{what}: message does not name {key:?}: {message}"
        );
        assert!(
            mentions_line(&message, line),
            "{what}: message does not name line {line}: {message}"
        );
    }
}

#[test]
fn syntax_errors_and_missing_keys() {
    let dir = TempDir::new();
    let base = good(&dir.path);
    let path = dir.path.join("bad.toml");

    let (text, line) = edit(&base, "put_timeout", "put_timeout = ");
    std::fs::write(&path, &text).unwrap();
    let output = run(&["check-config", "--config", path.to_str().unwrap()]);
    let message = output_text(&output);
    assert!(!output.status.success(), "{message}");
    assert_no_panic(&message);
    assert!(
        mentions_line(&message, line),
        "syntax error: no line {line}: {message}"
    );

    for key in ["upload_root", "database"] {
        let (text, _) = edit(&base, key, "# removed");
        std::fs::write(&path, &text).unwrap();
        let output = run(&["check-config", "--config", path.to_str().unwrap()]);
        let message = output_text(&output);
        assert!(
            !output.status.success(),
            "missing {key} accepted: {message}"
        );
        assert_no_panic(&message);
        assert!(message.contains(key), "missing {key}: {message}");
    }

    let output = run(&["check-config", "--config", "/nonexistent/xhu/config.toml"]);
    let message = output_text(&output);
    assert!(!output.status.success(), "{message}");
    assert_no_panic(&message);
    assert!(
        message.contains("/nonexistent/xhu/config.toml"),
        "{message}"
    );
}

#[test]
fn serve_and_cleanup_refuse_a_bad_config() {
    let dir = TempDir::new();
    let (text, line) = edit(&good(&dir.path), "max_file_size", "max_file_size = \"ten\"");
    let path = dir.path.join("bad.toml");
    std::fs::write(&path, text).unwrap();

    let output = run(&["cleanup", "--config", path.to_str().unwrap()]);
    let message = output_text(&output);
    assert!(!output.status.success(), "cleanup: {message}");
    assert_no_panic(&message);
    assert!(
        message.contains("max_file_size") && mentions_line(&message, line),
        "{message}"
    );

    let socket = dir.path.join("fcgi.sock");
    let mut child = Command::new(BIN)
        .args(["serve", "--config", path.to_str().unwrap(), "--listen"])
        .arg(format!("unix:{}", socket.display()))
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let Some(status) = wait_for_exit(&mut child, Duration::from_secs(10)) else {
        let _ = child.kill();
        panic!("serve kept running with a bad config");
    };
    let output = child.wait_with_output().unwrap();
    let message = output_text(&output);
    assert!(!status.success(), "serve: {message}");
    assert_no_panic(&message);
    assert!(
        message.contains("max_file_size") && mentions_line(&message, line),
        "{message}"
    );
}

#[test]
fn a_value_of_the_wrong_type_is_named_with_its_line() {
    let dir = TempDir::new();
    let path = dir.path.join("bad.toml");
    for (old, new, key) in [
        (
            "webserver_download",
            "webserver_download = \"yes\"",
            "webserver_download",
        ),
        ("base_url", "base_url = 443", "base_url"),
        ("allow_from", "allow_from = \"127.0.0.1\"", "allow_from"),
    ] {
        let (text, line) = edit(&good(&dir.path), old, new);
        std::fs::write(&path, &text).unwrap();
        let output = run(&["check-config", "--config", path.to_str().unwrap()]);
        let message = output_text(&output);
        assert!(!output.status.success(), "{new}: accepted");
        assert_no_panic(&message);
        assert!(
            message.contains(key),
            "{new}: message does not name {key:?}: {message}"
        );
        assert!(
            mentions_line(&message, line),
            "{new}: no line {line}: {message}"
        );
    }
}
