//! Per-rule `retention` through the real binary: cleanup deletes each upload after the retention
//! of the rule that allowed it (recorded with the slot at upload), a later change of the rules
//! neither extends nor cuts that until `cleanup --reapply-rules`, and a JWT upload goes at the
//! earlier of its rule's retention and the token's `expires`.

mod common;

use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::signing::hs256_jwt;
use common::*;

const JWT_SECRET: &str = "retention jwt secret";

fn config(guest_retention: &str, staff_retention: &str) -> String {
    let rules = format!(
        "[[rules]]\nmatch = '^guest'\nretention = \"{guest_retention}\"\n\
         [[rules]]\nmatch = '^staff'\nretention = \"{staff_retention}\"\n\
         [[rules]]\nmatch = '.*'\n"
    );
    format!(
        "{}\n[[file_share]]\nprefix = \"/file_share\"\nsecret = \"{JWT_SECRET}\"\n",
        standard_config(&rules)
    )
}

fn cleanup(env: &Env, config: &std::path::Path, extra: &[&str]) -> String {
    let mut args = vec!["cleanup", "--config", config.to_str().unwrap()];
    args.extend(extra);
    let output = env.run(&args);
    let text = output_text(&output);
    assert!(output.status.success(), "cleanup failed: {text}");
    text
}

fn upload(env: &Env, server: &Server, mode: PutMode, jid: &str, name: &str) -> Slot {
    let slot = server.slot(jid, name, 4);
    server.upload(env, mode, &slot, &Put::of(b"data"));
    slot
}

#[test]
fn each_upload_is_kept_as_long_as_the_rule_that_allowed_it_says() {
    let env = Env::new(&config("2s", "30d"));
    let server = env.serve();
    let guest_self = upload(
        &env,
        &server,
        PutMode::SelfWrite,
        "guest1@example.org",
        "g1.txt",
    );
    let guest_web = upload(
        &env,
        &server,
        PutMode::AuthRequest,
        "guest2@example.org",
        "g2.txt",
    );
    let staff = upload(
        &env,
        &server,
        PutMode::SelfWrite,
        "staff@example.org",
        "s.txt",
    );
    // no rule retention: the global one (30 days by default)
    let other = upload(
        &env,
        &server,
        PutMode::SelfWrite,
        "other@example.org",
        "o.txt",
    );
    // the web server's upload is confirmed (its time is that of the "yes")
    cleanup(&env, &env.config, &[]);

    thread::sleep(Duration::from_millis(3100));
    let text = cleanup(&env, &env.config, &[]);
    for slot in [&guest_self, &guest_web] {
        assert!(
            !env.upload_root.join(&slot.token).exists(),
            "{} kept past its rule's 2 s: {text}",
            slot.name
        );
    }
    for slot in [&staff, &other] {
        assert!(
            env.stored(&slot.token, &slot.name).exists(),
            "{} removed: {text}",
            slot.name
        );
    }
}

#[test]
fn a_changed_rule_moves_no_deletion_until_the_admin_reapplies_the_rules() {
    let env = Env::new(&config("2s", "30d"));
    let server = env.serve();
    let guest = upload(
        &env,
        &server,
        PutMode::SelfWrite,
        "guest@example.org",
        "g.txt",
    );
    let staff = upload(
        &env,
        &server,
        PutMode::SelfWrite,
        "staff@example.org",
        "s.txt",
    );
    // the rules swap: guests would now keep 30 days, staff 2 s
    let swapped = env.write_config("swapped.toml", &config("30d", "2s"));

    thread::sleep(Duration::from_millis(3100));
    let text = cleanup(&env, &swapped, &[]);
    // the promise made at upload holds both ways: no extension, no cut
    assert!(
        !env.upload_root.join(&guest.token).exists(),
        "the guest upload was extended by a config change: {text}"
    );
    assert!(
        env.stored(&staff.token, &staff.name).exists(),
        "the staff upload was cut by a config change: {text}"
    );
    let files = String::from_utf8_lossy(
        &env.run(&[
            "files",
            "--jid",
            "staff@example.org",
            "--json",
            "--config",
            swapped.to_str().unwrap(),
        ])
        .stdout,
    )
    .into_owned();
    let json: serde_json::Value = serde_json::from_str(&files).unwrap();
    let entry = &json["files"][0];
    assert_eq!(
        entry["expires"].as_i64().unwrap(),
        entry["uploaded"].as_i64().unwrap() + 30 * 86_400,
        "{json}"
    );

    // the admin asks: today's rules apply
    let text = cleanup(&env, &swapped, &["--reapply-rules"]);
    assert!(text.contains("retention of 1 slots changed"), "{text}");
    assert!(
        !env.upload_root.join(&staff.token).exists(),
        "--reapply-rules kept the staff upload: {text}"
    );
}

#[test]
fn a_jwt_upload_goes_at_the_earlier_of_its_rules_retention_and_the_tokens_expires() {
    let env = Env::new(&config("2s", "30d"));
    let server = env.serve();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut paths = Vec::new();
    for (sub, slot, expires) in [
        // the rule's 2 s come first
        (
            "guest@example.org",
            "guestslotAAAAAAAAAAAAAAA",
            now + 7 * 86_400,
        ),
        // the token's expires comes first
        ("staff@example.org", "staffslotAAAAAAAAAAAAAAA", now + 2),
        // neither: kept
        (
            "staff@example.org",
            "keptslotAAAAAAAAAAAAAAAA",
            now + 7 * 86_400,
        ),
    ] {
        let claims = format!(
            "{{\"sub\":\"{sub}\",\"iat\":{now},\"exp\":{},\"slot\":\"{slot}\",\"expires\":{expires},\
             \"filename\":\"f.txt\",\"filesize\":4,\"filetype\":\"text/plain\"}}",
            now + 300
        );
        let token = hs256_jwt(JWT_SECRET, &claims);
        let uri = format!("/file_share/{slot}/f.txt");
        let r = server.put_with_headers(
            PutMode::SelfWrite,
            &uri,
            &Put::of(b"data").typed("text/plain"),
            &[("Authorization", &format!("Bearer {token}"))],
        );
        assert_eq!(r.status, 201, "{sub}: {r}");
        paths.push(env.upload_root.join("file_share").join(slot).join("f.txt"));
    }
    thread::sleep(Duration::from_millis(3100));
    let text = cleanup(&env, &env.config, &[]);
    assert!(!paths[0].exists(), "rule retention ignored: {text}");
    assert!(!paths[1].exists(), "token expires ignored: {text}");
    assert!(paths[2].exists(), "kept file removed: {text}");
}

#[test]
fn a_denying_rule_cannot_carry_a_retention_and_a_bad_one_names_its_line() {
    let env = Env::new(&standard_config(
        "[[rules]]\nmatch = 'x'\ndeny = true\nretention = \"1d\"\n",
    ));
    let output = env.run(&["check-config", "--config", env.config.to_str().unwrap()]);
    assert!(!output.status.success());
    assert!(
        output_text(&output).contains("rules[0].deny"),
        "{}",
        output_text(&output)
    );
    let env = Env::new(&standard_config(
        "[[rules]]\nmatch = 'x'\nretention = \"soon\"\n",
    ));
    let output = env.run(&["check-config", "--config", env.config.to_str().unwrap()]);
    let text = output_text(&output);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("rules[0].retention"), "{text}");
    let env = Env::new(&standard_config(
        "[[rules]]\nmatch = 'x'\nretention = \"7d\"\n",
    ));
    let output = env.run(&["check-config", "--config", env.config.to_str().unwrap()]);
    let text = output_text(&output);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("retention 604800 s"), "{text}");
}
