//! The admin commands through the real binary, next to a serving process: `files` and `purge`
//! of one JID (also while its uploads are in flight), `usage`, `check` and `--repair`, and the
//! command line's answer to a bad argument or an unusable config (one line, non-zero, nothing
//! deleted).

mod common;

use std::fs;
use std::path::Path;

use common::fcgi::{self, Connection, Role};
use common::*;
use serde_json::Value;

const BOB: &str = "bob@example.org";
const ALICE: &str = "alice@example.org";

fn config() -> String {
    format!(
        "{}\n[[external]]\nprefix = \"/share\"\nsecret = \"admin-test-secret\"\n",
        standard_config(ALLOW_ALL)
    )
}

/// Runs `xmpp-http-upload <args> --config <env.config>` and returns (success, stdout, stderr).
fn admin(env: &Env, args: &[&str]) -> (bool, String, String) {
    let mut all: Vec<&str> = args.to_vec();
    let config = env.config.to_str().unwrap().to_string();
    all.extend(["--config", &config]);
    let output = env.run(&all);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    );
    assert!(
        !stdout.contains("panicked") && !stderr.contains("panicked"),
        "{args:?}: {stdout}{stderr}"
    );
    (output.status.success(), stdout, stderr)
}

fn admin_json(env: &Env, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let (ok, stdout, stderr) = admin(env, &all);
    assert!(ok, "{args:?} failed: {stdout}{stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {stdout}"))
}

fn upload(env: &Env, server: &Server, jid: &str, name: &str, body: &[u8]) -> Slot {
    let slot = server.slot(jid, name, body.len() as u64);
    server.upload(env, PutMode::SelfWrite, &slot, &Put::of(body));
    slot
}

#[test]
fn files_lists_one_jids_uploads_in_text_and_json() {
    let (env, server) = start(&config());
    let a = upload(&env, &server, BOB, "é.txt", b"hello");
    let b = upload(&env, &server, BOB, "b.png", b"0123456789");
    let waiting = server.slot(BOB, "later.txt", 3);
    upload(&env, &server, ALICE, "alice.txt", b"alice");

    // any case, any resource: the same bare JID
    let json = admin_json(&env, &["files", "--jid", "Bob@Example.ORG/phone"]);
    assert_eq!(json["jid"], BOB);
    let files = json["files"].as_array().unwrap();
    assert_eq!(files.len(), 3, "{json}");
    assert_eq!(json["bytes"], 18);
    let by_name = |name: &str| {
        files
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("{name} not listed: {json}"))
    };
    let first = by_name("é.txt");
    assert_eq!(
        first["url"],
        format!("{BASE}/upload/{}/%C3%A9.txt", a.token),
        "{json}"
    );
    assert_eq!(first["state"], "stored");
    assert_eq!(first["size"], 5);
    let uploaded = first["uploaded"].as_i64().unwrap();
    // default retention: 30 days after the upload
    assert_eq!(first["expires"].as_i64().unwrap(), uploaded + 30 * 86_400);
    assert_eq!(by_name("b.png")["path"], format!("{}/b.png", b.token));
    assert_eq!(by_name("later.txt")["state"], "waiting");
    assert!(by_name("later.txt")["uploaded"].is_null());
    assert!(!json.to_string().contains("alice"), "{json}");

    let (ok, text, _) = admin(&env, &["files", "--jid", BOB]);
    assert!(ok, "{text}");
    assert!(text.contains(&waiting.token), "{text}");
    assert!(text.contains("é.txt") && text.contains("b.png"), "{text}");
    assert!(
        text.ends_with(&format!("{BOB}: 3 files, 18 bytes\n")),
        "{text}"
    );

    let json = admin_json(&env, &["files", "--jid", "nobody@example.org"]);
    assert_eq!(json["files"].as_array().unwrap().len(), 0);
}

#[test]
fn purge_removes_files_directories_and_records_and_a_dry_run_removes_nothing() {
    let (env, server) = start(&config());
    let a = upload(&env, &server, BOB, "a.txt", b"aaa");
    let b = upload(&env, &server, BOB, "b.txt", b"bbbb");
    let waiting = server.slot(BOB, "w.txt", 3);
    let alice = upload(&env, &server, ALICE, "keep.txt", b"keep");
    let before = env.upload_tree();

    let json = admin_json(&env, &["purge", "--jid", BOB, "--dry-run"]);
    assert_eq!(json["dry_run"], true);
    assert_eq!(json["slots"], 3, "{json}");
    assert_eq!(json["removed_files"].as_array().unwrap().len(), 2, "{json}");
    assert_eq!(env.upload_tree(), before, "a dry run removed something");
    assert_eq!(
        admin_json(&env, &["files", "--jid", BOB])["files"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    let (ok, text, stderr) = admin(&env, &["purge", "--jid", BOB]);
    assert!(ok, "{text}{stderr}");
    for slot in [&a, &b] {
        assert!(
            text.contains(&format!("removed {}/{}", slot.token, slot.name)),
            "{text}"
        );
        assert!(!env.upload_root.join(&slot.token).exists(), "{text}");
    }
    assert!(
        text.contains("removed 3 slots, 2 files, 7 bytes; 0 uploads in flight"),
        "{text}"
    );
    assert_eq!(
        env.upload_tree(),
        vec![alice.token.clone(), format!("{}/keep.txt", alice.token)]
    );
    assert_eq!(
        admin_json(&env, &["files", "--jid", BOB])["files"],
        Value::Array(vec![])
    );
    // downloads and the unused slot are gone too
    assert_eq!(server.get(&a.get_path).status, 404);
    let r = server.put(PutMode::SelfWrite, &waiting.put_path, &Put::of(b"www"));
    assert_eq!(r.status, 404, "{r}");
    // the quota no longer counts them, and purging again finds nothing
    let json = admin_json(&env, &["purge", "--jid", BOB]);
    assert_eq!(json["slots"], 0);
    // cleanup finds nothing of Bob's left
    let output = env.run(&["cleanup", "--config", env.config.to_str().unwrap()]);
    let text = output_text(&output);
    assert!(
        output.status.success() && !text.contains("purged account"),
        "{text}"
    );
}

#[test]
fn purge_while_uploads_of_the_jid_are_in_flight_leaves_none_of_its_files() {
    let (env, server) = start(&config());
    let body = body_of(300_000, 7);

    // 1. the program receives the body: half of it is sent when the purge runs
    let receiving = server.slot(BOB, "receiving.bin", body.len() as u64);
    let length = body.len().to_string();
    let params = fcgi::request_params(
        "PUT",
        &receiving.put_path,
        &[("Content-Length", length.as_str())],
    );
    let mut connection = Connection::open(&server.address, Role::Responder, &params).unwrap();
    assert!(connection.send_stdin(&body[..150_000]).unwrap());
    // 2. the web server writes the body: the program said yes, the file is not there yet
    let web = server.slot(BOB, "web.bin", 3);
    let r = server.put(PutMode::AuthRequest, &web.put_path, &Put::of(b"web"));
    assert_allowed(PutMode::AuthRequest, &r, "auth_request PUT");
    // 3. a stored file
    let stored = upload(&env, &server, BOB, "stored.txt", b"stored");
    // wait until the program is receiving: its token directory exists (the body goes to an
    // unnamed O_TMPFILE file in it, linked into place only when complete)
    assert!(wait_until(std::time::Duration::from_secs(10), || {
        env.upload_root.join(&receiving.token).is_dir()
    }));

    let (ok, text, stderr) = admin(&env, &["purge", "--jid", BOB]);
    assert!(ok, "{text}{stderr}");
    assert!(
        text.contains(&format!("removed {}/stored.txt", stored.token)),
        "{text}"
    );
    assert!(
        text.contains(&format!("upload in flight: {}/web.bin", web.token)),
        "{text}"
    );

    // the received upload completes after the purge: it does not stay
    assert!(connection.send_stdin(&body[150_000..]).unwrap());
    let r = connection.finish().unwrap();
    assert_eq!(r.status, 410, "{r}");
    assert!(!env.stored(&receiving.token, "receiving.bin").exists());
    // the web server's file lands after the purge: the next cleanup removes it
    fs::create_dir_all(env.upload_root.join(&web.token)).unwrap();
    fs::write(env.stored(&web.token, "web.bin"), b"web").unwrap();
    let output = env.run(&["cleanup", "--config", env.config.to_str().unwrap()]);
    let text = output_text(&output);
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "removed file {}/web.bin of a purged account",
            web.token
        )),
        "{text}"
    );
    assert_eq!(env.upload_tree(), Vec::<String>::new(), "{text}");
    assert_eq!(
        admin_json(&env, &["files", "--jid", BOB])["files"],
        Value::Array(vec![])
    );
    // a second PUT of the purged slots is refused
    let r = server.put(PutMode::AuthRequest, &web.put_path, &Put::of(b"web"));
    assert_refused(PutMode::AuthRequest, &r, "PUT of a purged slot");
}

#[test]
fn a_bad_argument_or_an_unusable_config_is_one_line_non_zero_and_deletes_nothing() {
    let (env, server) = start(&config());
    upload(&env, &server, BOB, "a.txt", b"aaa");
    let before = env.upload_tree();
    let config = env.config.to_str().unwrap().to_string();
    let bad = env.write_config("bad.toml", "retention = \"forever\"\n");
    let bad = bad.to_str().unwrap().to_string();
    let dir = env.dir.path.to_str().unwrap().to_string();
    let cases: Vec<Vec<&str>> = vec![
        vec!["purge"],
        vec!["purge", "--jid"],
        vec!["purge", "--jid", "", "--config", &config],
        vec!["purge", "--jid", "a@b@c", "--config", &config],
        vec!["purge", "--jid", BOB, "--force", "--config", &config],
        vec!["purge", "--jid", BOB, "--config", "/nonexistent/xhu.toml"],
        vec!["purge", "--jid", BOB, "--config", &dir],
        vec!["purge", "--jid", BOB, "--config", &bad],
        vec!["check", "--repair", "--config", &bad],
        vec!["files", "--jid", BOB, "--config", "/nonexistent/xhu.toml"],
        vec!["usage", "--top", "many", "--config", &config],
        vec!["usage", "--config", &bad],
        vec!["cleanup", "extra", "--config", &config],
        vec!["no-such-command"],
    ];
    for args in cases {
        let output = run(&args);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(!output.status.success(), "{args:?} succeeded: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "{args:?}: not one line: {stderr:?}"
        );
        assert!(
            stderr.starts_with("xmpp-http-upload: "),
            "{args:?}: {stderr}"
        );
        assert_eq!(env.upload_tree(), before, "{args:?} deleted something");
    }
    // the config error names the key and line
    let stderr = String::from_utf8_lossy(&run(&["purge", "--jid", BOB, "--config", &bad]).stderr)
        .into_owned();
    assert!(
        stderr.contains("retention") && stderr.contains(":3"),
        "{stderr}"
    );
    // --help and --version are no errors
    for args in [vec!["--help"], vec!["purge", "--help"], vec!["--version"]] {
        let output = run(&args);
        assert!(
            output.status.success(),
            "{args:?}: {}",
            output_text(&output)
        );
        assert!(!output.stdout.is_empty(), "{args:?}");
    }
    let help = String::from_utf8_lossy(&run(&["--help"]).stdout).into_owned();
    for command in [
        "serve",
        "runserver",
        "cleanup",
        "check-config",
        "files",
        "purge",
        "usage",
        "check",
    ] {
        assert!(help.contains(command), "--help lacks {command}: {help}");
    }
}

#[test]
fn usage_counts_files_bytes_waiting_slots_and_the_top_jids() {
    let (env, server) = start(&config());
    upload(&env, &server, BOB, "1.txt", b"1234567890");
    upload(&env, &server, BOB, "2.txt", b"12345");
    upload(&env, &server, ALICE, "a.txt", b"123");
    upload(&env, &server, "carol@example.org", "c.txt", b"12345678");
    server.slot(ALICE, "waiting.txt", 100);
    let web = server.slot(ALICE, "web.txt", 4);
    let r = server.put(PutMode::AuthRequest, &web.put_path, &Put::of(b"webb"));
    assert_allowed(PutMode::AuthRequest, &r, "auth_request PUT");

    let json = admin_json(&env, &["usage", "--top", "2"]);
    assert_eq!(json["files"], 4, "{json}");
    assert_eq!(json["bytes"], 26, "{json}");
    assert_eq!(json["uploading"], 1, "{json}");
    assert_eq!(json["uploading_bytes"], 4, "{json}");
    assert_eq!(json["slots_waiting"], 1, "{json}");
    assert_eq!(json["jids"], 3, "{json}");
    let top = json["top"].as_array().unwrap();
    assert_eq!(top.len(), 2, "{json}");
    assert_eq!(top[0]["jid"], BOB);
    assert_eq!(top[0]["bytes"], 15);
    assert_eq!(top[0]["files"], 2);
    assert_eq!(top[1]["jid"], "carol@example.org");

    let (ok, text, _) = admin(&env, &["usage"]);
    assert!(ok, "{text}");
    assert!(text.contains("top 3 JIDs by bytes"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("files") && l.contains(" 4 ") && l.contains(" 26 bytes")),
        "{text}"
    );
}

fn finding<'a>(json: &'a Value, kind: &str, path: &str) -> Option<&'a Value> {
    json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == kind && f["path"] == path)
}

#[test]
fn check_compares_both_ways_and_repair_fixes_what_loses_no_upload() {
    let (env, server) = start(&config());
    let fine = upload(&env, &server, BOB, "fine.txt", b"fine");
    let lost = upload(&env, &server, BOB, "lost.txt", b"lost");
    fs::remove_file(env.stored(&lost.token, "lost.txt")).unwrap();
    let grown = upload(&env, &server, BOB, "grown.txt", b"grown");
    fs::write(env.stored(&grown.token, "grown.txt"), b"grown bigger").unwrap();
    // the web server wrote it, nobody confirmed it yet
    let web = server.slot(BOB, "web.txt", 3);
    server.upload(&env, PutMode::AuthRequest, &web, &Put::of(b"web"));
    // a file nobody recorded, in a token directory and under the HMAC prefix
    let stray_token = "0123456789abcdef0123456789abcdef01234567";
    fs::create_dir_all(env.upload_root.join(stray_token)).unwrap();
    fs::write(env.stored(stray_token, "stray.txt"), b"stray").unwrap();
    fs::create_dir_all(env.upload_root.join("share/x")).unwrap();
    fs::write(env.upload_root.join("share/x/signed.txt"), b"signed").unwrap();
    // an upload in progress: its temporary file is no finding
    fs::write(
        env.upload_root
            .join(&fine.token)
            .join(".0011223344556677.part"),
        b"p",
    )
    .unwrap();

    let (ok, text, stderr) = admin(&env, &["check"]);
    assert!(!ok, "differences but success: {text}");
    assert!(stderr.contains("check --repair"), "{stderr}");
    let json = admin_json_status(&env, &["check"]);
    let lost_path = format!("{}/lost.txt", lost.token);
    let grown_path = format!("{}/grown.txt", grown.token);
    let web_path = format!("{}/web.txt", web.token);
    let stray_path = format!("{stray_token}/stray.txt");
    assert!(
        finding(&json, "record_without_file", &lost_path).is_some(),
        "{json}"
    );
    let size = finding(&json, "size_differs", &grown_path).expect("size finding");
    assert!(
        size["detail"]
            .as_str()
            .unwrap()
            .contains("12 bytes on disk, 5 recorded")
    );
    assert!(
        finding(&json, "unconfirmed_upload", &web_path).is_some(),
        "{json}"
    );
    assert!(
        finding(&json, "file_without_record", &stray_path).is_some(),
        "{json}"
    );
    assert!(
        finding(&json, "file_without_record", "share/x/signed.txt").is_some(),
        "{json}"
    );
    assert_eq!(json["findings"].as_array().unwrap().len(), 5, "{json}");

    // --repair --dry-run changes nothing
    let before = env.upload_tree();
    let again = admin_json_status(&env, &["check", "--repair", "--dry-run"]);
    assert_eq!(again["findings"], json["findings"]);
    assert_eq!(env.upload_tree(), before);

    let repaired = admin_json_status(&env, &["check", "--repair"]);
    let repaired_count = repaired["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["repaired"] == true)
        .count();
    assert_eq!(repaired_count, 4, "{repaired}");
    // no upload lost: every file is still there
    assert_eq!(env.upload_tree(), before);
    // what is left: the stray slot file, which only cleanup removes (after retention)
    let (ok, text, stderr) = admin(&env, &["check"]);
    assert!(!ok, "{text}");
    assert!(
        text.contains(&stray_path) && !text.contains(&lost_path),
        "{text}"
    );
    assert!(stderr.contains("cannot be repaired"), "{stderr}");
    let files = admin_json(&env, &["files", "--jid", BOB]);
    let grown_entry = files["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "grown.txt")
        .unwrap();
    assert_eq!(grown_entry["size"], 12);
    assert!(!files.to_string().contains("lost.txt"), "{files}");
}

/// `--json` output of a command that may exit non-zero (check with differences).
fn admin_json_status(env: &Env, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let (_, stdout, _) = admin(env, &all);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {stdout}"))
}

#[test]
fn the_database_and_files_of_a_fresh_install_check_clean() {
    let env = Env::new(&config());
    let (ok, text, stderr) = admin(&env, &["check"]);
    assert!(ok, "{text}{stderr}");
    assert!(text.contains("0 differences"), "{text}");
    let json = admin_json(&env, &["usage"]);
    assert_eq!(json["files"], 0);
    assert!(Path::new(&env.database).exists());
}

/// `args` run with a stdout whose reader went away before the command started (its first
/// write fails): the exit status and stderr.
fn with_output_cut(args: &[&str]) -> (Option<i32>, String) {
    let (read_end, write_end) = nix::unistd::pipe().unwrap();
    drop(read_end);
    let output = std::process::Command::new(BIN)
        .args(args)
        .stdout(std::process::Stdio::from(write_end))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!stderr.contains("panic"), "{args:?}: {stderr}");
    (output.status.code(), stderr)
}

/// An admin command whose reader went away (`check-config | head -n 1`, `files … | grep -q`)
/// ends quietly with 141, as SIGPIPE ends `ls` — no panic in the log — unless it failed,
/// which still says so (1, its line on stderr): `check` finding what it cannot repair.
#[test]
fn an_output_whose_reader_went_away_ends_the_command_quietly() {
    let (env, server) = start(&config());
    upload(&env, &server, BOB, "1.txt", b"1234567890");
    let config = env.config.to_str().unwrap().to_string();
    for args in [
        vec!["check-config", "--config", &config],
        vec!["files", "--jid", BOB, "--config", &config],
        vec!["usage", "--json", "--config", &config],
        vec!["check", "--config", &config],
    ] {
        let (status, stderr) = with_output_cut(&args);
        assert_eq!(status, Some(141), "{args:?}: {stderr}");
    }
    // A file without a record: `check` cannot repair it (the same as without the pipe).
    let stray = env.upload_root.join("a".repeat(40));
    fs::create_dir_all(&stray).unwrap();
    fs::write(stray.join("stray.txt"), b"?").unwrap();
    let (ok, _, said) = admin(&env, &["check"]);
    assert!(!ok, "check with a stray file: {said}");
    let (status, stderr) = with_output_cut(&["check", "--config", &config]);
    assert_eq!(status, Some(1), "{stderr}");
    assert!(stderr.contains("remain"), "{stderr}");
}
