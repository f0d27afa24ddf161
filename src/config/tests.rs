//! Tests of `Config::parse` as a whole: defaults, messages with key and line, warnings.

use super::*;
use crate::rules::Window;

const MINIMAL: &str = "upload_root = \"/srv/up\"\ndatabase = \"/srv/db.sqlite3\"\n";

#[test]
fn shipped_example_is_valid() {
    let c = Config::parse(
        include_str!("../../config.example.toml"),
        "config.example.toml",
    )
    .unwrap();
    assert_eq!(c.rules.len(), 4);
    assert_eq!(c.rules[1].action, Action::Deny);
}

#[test]
fn external_prefixes() {
    let text = format!(
        "{MINIMAL}[[external]]\nprefix = \"/share/\"\nsecret = \"s\"\nmax_file_size = \"1 MiB\"\n"
    );
    let c = Config::parse(&text, "c.toml").unwrap();
    assert_eq!(c.external[0].prefix, "/share");
    assert_eq!(c.external[0].dir, "share");
    assert_eq!(c.external[0].max_file_size, Some(1 << 20));
    assert!(!format!("{:?}", c.external[0]).contains("\"s\""));
    let clash = format!("{MINIMAL}[[external]]\nprefix = \"/upload/x\"\nsecret = \"s\"\n");
    assert!(
        Config::parse(&clash, "c.toml")
            .unwrap_err()
            .to_string()
            .contains("overlaps")
    );
    let empty = format!("{MINIMAL}[[external]]\nprefix = \"/share\"\nsecret = \"\"\n");
    assert!(
        Config::parse(&empty, "c.toml")
            .unwrap_err()
            .to_string()
            .starts_with("c.toml:5: external[0].secret")
    );
}

#[test]
fn defaults() {
    let c = Config::parse(MINIMAL, "c.toml").unwrap();
    assert_eq!(c.put_timeout, 360);
    assert_eq!(c.retention, 30 * 86_400);
    assert_eq!(c.slot_prefix, "/http_upload");
    assert_eq!(c.get_prefix, "/upload");
    assert_eq!(c.slot_api.allow_from.len(), 2);
    assert!(c.rules.is_empty());
}

#[test]
fn unknown_key_names_key_and_line() {
    let e = Config::parse(&format!("{MINIMAL}\nput_timout = 3\n"), "c.toml").unwrap_err();
    assert!(e.to_string().starts_with("c.toml:4:"), "{e}");
    assert!(e.to_string().contains("put_timout"), "{e}");
}

#[test]
fn wrong_type_names_key_and_line() {
    let e = Config::parse(
        &format!("{MINIMAL}webserver_download = \"yes\"\n"),
        "c.toml",
    )
    .unwrap_err();
    assert!(
        e.to_string().starts_with("c.toml:3: webserver_download:"),
        "{e}"
    );
}

#[test]
fn bad_regex_names_rule_and_line() {
    let text = format!("{MINIMAL}[[rules]]\nmatch = \"(\"\n");
    let e = Config::parse(&text, "c.toml").unwrap_err();
    assert!(e.to_string().starts_with("c.toml:4: rules[0].match"), "{e}");
}

#[test]
fn bad_size_and_duration() {
    let text = format!("{MINIMAL}[[rules]]\nmatch = \"x\"\nmax_file_size = \"ten\"\n");
    let e = Config::parse(&text, "c.toml").unwrap_err();
    assert!(
        e.to_string()
            .starts_with("c.toml:5: rules[0].max_file_size"),
        "{e}"
    );
    let e = Config::parse(&format!("{MINIMAL}retention = \"-3d\"\n"), "c.toml").unwrap_err();
    assert!(e.to_string().starts_with("c.toml:3: retention"), "{e}");
}

#[test]
fn windows_and_deny() {
    let text = format!(
        "{MINIMAL}[[rules]]\nmatch = \"a\"\nbytes_per_window = {{ window = \"1h\", bytes = \"1 MiB\" }}\n\
         uploads_per_window = {{ window = \"1h\", uploads = 3 }}\n[[rules]]\nmatch = \".*\"\ndeny = true\n"
    );
    let c = Config::parse(&text, "c.toml").unwrap();
    assert_eq!(
        c.rules[0].action,
        Action::Allow(Limits {
            bytes_per_window: Some(Window {
                seconds: 3600,
                amount: 1 << 20
            }),
            uploads_per_window: Some(Window {
                seconds: 3600,
                amount: 3
            }),
            ..Limits::default()
        })
    );
    assert_eq!(c.rules[1].action, Action::Deny);
    let text = format!("{MINIMAL}[[rules]]\nmatch = \"a\"\ndeny = true\nmax_file_size = 3\n");
    assert!(Config::parse(&text, "c.toml").is_err());
}

#[test]
fn patterns_ignore_case() {
    let text = format!("{MINIMAL}[[rules]]\nmatch = '^Blocked@Example\\.org$'\ndeny = true\n");
    let c = Config::parse(&text, "c.toml").unwrap();
    for jid in [
        "blocked@example.org",
        "BLOCKED@EXAMPLE.ORG",
        "Blocked@example.org",
    ] {
        assert!(c.rules[0].pattern.is_match(jid), "{jid}");
    }
    assert!(c.describe().contains("patterns ignore case"));
}

#[test]
fn a_slot_api_without_secret_is_warned_about() {
    let open = Config::parse(MINIMAL, "c.toml").unwrap();
    assert!(open.warnings().iter().any(|w| w.contains("loopback")));
    let tcp =
        format!("listen = \"127.0.0.1:9000\"\n{MINIMAL}[slot_api]\nallow_from = [\"192.0.2.1\"]\n");
    let tcp = Config::parse(&tcp, "c.toml").unwrap();
    let warnings = tcp.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("TCP"), "{warnings:?}");
    let guarded = format!("{MINIMAL}[slot_api]\nsecret = \"0123456789abcdef0123\"\n");
    assert!(
        Config::parse(&guarded, "c.toml")
            .unwrap()
            .warnings()
            .is_empty()
    );
}

#[test]
fn open_slot_api_is_refused() {
    let text = format!("{MINIMAL}[slot_api]\nallow_from = []\n");
    assert!(Config::parse(&text, "c.toml").is_err());
    let text = format!("{MINIMAL}[slot_api]\nallow_from = []\nsecret = \"0123456789abcdefgh\"\n");
    assert!(Config::parse(&text, "c.toml").is_ok());
}

#[test]
fn prefixes_and_base_url() {
    let text = format!("{MINIMAL}put_prefix = \"/up/\"\nbase_url = \"https://h.example:8443/\"\n");
    let c = Config::parse(&text, "c.toml").unwrap();
    assert_eq!(c.put_prefix, "/up");
    assert_eq!(c.base_url.as_deref(), Some("https://h.example:8443"));
    assert!(Config::parse(&format!("{MINIMAL}put_prefix = \"up\"\n"), "c").is_err());
    assert!(Config::parse(&format!("{MINIMAL}base_url = \"ftp://h\"\n"), "c").is_err());
}

#[test]
fn workers_between_2_and_1024() {
    let c = Config::parse(&format!("{MINIMAL}workers = 16\n"), "c.toml").unwrap();
    assert_eq!(c.workers, Some(16));
    assert_eq!(Config::parse(MINIMAL, "c.toml").unwrap().workers, None);
    let e = Config::parse(&format!("{MINIMAL}workers = 1\n"), "c.toml").unwrap_err();
    assert_eq!(
        e.to_string(),
        "c.toml:3: workers: 1 is not between 2 and 1024"
    );
    assert!(Config::parse(&format!("{MINIMAL}workers = -3\n"), "c.toml").is_err());
}
