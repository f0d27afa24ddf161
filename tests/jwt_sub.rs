//! The `sub` of a JWT upload token (Prosody's `mod_http_file_share`, BEHAVIOUR.md §7b) is the
//! JID the access rules, the quotas and the admin commands see, made bare and lower-case by the
//! same function as the slot API's `jid=` (`jid::bare_jid`), through the shipped nginx and
//! Apache (mod_fcgid + mod_dav) sites. Tokens are made by python3's standard library.
//!
//! Before this, `sub` was only lower-cased: a resource (`mallory@example.org/phone`) slipped
//! past a rule anchored at the bare JID, and an upload of `alice@example.org/phone` was filed
//! under a JID that `files --jid alice@example.org` (and `purge`) never find; a `sub` that is no
//! JID at all (`a b@example.org`) was accepted.

mod common;

use std::fs;
use std::time::{SystemTime, UNIX_EPOCH};

use common::signing::hs256_jwt;
use common::web::{Answer, Flavour, JWT_PREFIX, JWT_SECRET, Settings, Stack, available, curl};

/// A deny rule anchored at one bare JID, then an allow rule an admin may well leave unanchored.
const RULES: &str = r#"
[[rules]]
match = '^mallory@example\.org$'
deny = true

[[rules]]
match = '@example\.org'
"#;

/// The claims Prosody puts into an upload token, with `sub` as given.
fn claims(sub: &str, slot: &str, name: &str, size: usize) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    format!(
        r#"{{"sub":"{sub}","iat":{now},"exp":{exp},"slot":"{slot}","expires":{expires},"filename":"{name}","filesize":{size},"filetype":"text/plain"}}"#,
        exp = now + 300,
        expires = now + 7 * 86400,
    )
}

/// PUTs `body` to `<prefix>/<slot>/<name>` with a token for `sub`.
fn put(stack: &Stack, sub: &str, slot: &str, name: &str, body: &[u8]) -> Answer {
    let file = stack.dir.path.join(format!("body-{slot}"));
    fs::write(&file, body).expect("write the body");
    let token = hs256_jwt(JWT_SECRET, &claims(sub, slot, name, body.len()));
    let file = file.display().to_string();
    let url = format!("{}{JWT_PREFIX}/{slot}/{name}", stack.public);
    curl(&[
        "-T",
        &file,
        "-H",
        &format!("Authorization: Bearer {token}"),
        "-H",
        "Content-Type: text/plain",
        &url,
    ])
}

fn sub_is_the_bare_jid(flavour: Flavour) {
    if !available(flavour) {
        return;
    }
    let settings = Settings {
        rules: RULES,
        ..Settings::default()
    };
    let stack = Stack::start_with(flavour, &settings);
    let on_disk = |slot: &str, name: &str| {
        stack
            .upload_root
            .join(JWT_PREFIX.trim_start_matches('/'))
            .join(slot)
            .join(name)
    };

    // A resource does not get past the deny rule of the bare JID; any case of it neither.
    let slot = "bWFsbG9yeS1waG9uZS1zbG90";
    let answer = put(
        &stack,
        "Mallory@Example.org/phone",
        slot,
        "m.txt",
        b"mallory",
    );
    if answer.status != 403 || on_disk(slot, "m.txt").exists() {
        stack.fail(&format!(
            "sub Mallory@Example.org/phone must meet the deny rule of mallory@example.org \
             (403, nothing stored): {answer:?}"
        ));
    }

    // Alice's upload from a resource is Alice's: the admin commands find it by her bare JID.
    let slot = "YWxpY2UtcGhvbmUtc2xvdC0x";
    let answer = put(&stack, "alice@example.org/phone", slot, "a.txt", b"alice");
    if answer.status != 201 || !on_disk(slot, "a.txt").exists() {
        stack.fail(&format!("sub alice@example.org/phone: {answer:?}"));
    }
    let listed = stack.run_program_with(&["files", "--jid", "alice@example.org", "--json"]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    if !listed.contains("a.txt") {
        stack.fail(&format!(
            "files --jid alice@example.org does not list the upload of alice@example.org/phone: \
             {listed}"
        ));
    }

    // A sub that is no JID: the token is unusable, 401 with the Bearer challenge.
    let slot = "bm90LWEtamlkLXNsb3QtMDAw";
    let answer = put(&stack, "a b@example.org", slot, "n.txt", b"nojid");
    let challenge = answer.header("www-authenticate").unwrap_or_default();
    if answer.status != 401 || !challenge.starts_with("Bearer") || on_disk(slot, "n.txt").exists() {
        stack.fail(&format!(
            "sub \"a b@example.org\" must be refused as an unusable token (401, Bearer, \
             nothing stored): {answer:?}"
        ));
    }
}

#[test]
fn nginx_sub_is_the_bare_jid() {
    sub_is_the_bare_jid(Flavour::Nginx);
}

#[test]
fn apache_dav_sub_is_the_bare_jid() {
    sub_is_the_bare_jid(Flavour::ApacheDav);
}
