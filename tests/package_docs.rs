//! The Debian package's documentation against the program: the hand-written config page
//! `debian/man/xmpp-http-upload.toml.5` names every key the parser accepts (asked of the
//! parser itself, through the list serde gives for an unknown key), and the binary answers
//! `--version` and `--help` for every command. (The section-8 pages are rendered from the
//! clap definition and compared in src/main.rs.)

mod common;

use common::{TempDir, run};

/// The keys the parser expects where `zzz_not_a_key` stands in `config`.
fn accepted_keys(config: &str) -> Vec<String> {
    let dir = TempDir::new();
    let path = dir.path.join("config.toml");
    std::fs::write(&path, config).unwrap();
    let output = run(&["check-config", "--config", path.to_str().unwrap()]);
    let message = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "an unknown key was accepted");
    let expected = message
        .split_once("expected")
        .unwrap_or_else(|| panic!("no list of keys in {message:?}"))
        .1;
    let keys: Vec<String> = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    assert!(keys.len() >= 2, "no keys in {message:?}");
    keys
}

#[test]
fn the_config_man_page_names_every_key() {
    let page = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("debian/man/xmpp-http-upload.toml.5"),
    )
    .unwrap();
    let base = "upload_root = \"/nonexistent\"\ndatabase = \"/nonexistent/db\"\n";
    let places = [
        ("top level", format!("{base}zzz_not_a_key = 1\n")),
        (
            "[slot_api]",
            format!("{base}[slot_api]\nzzz_not_a_key = 1\n"),
        ),
        (
            "[[rules]]",
            format!("{base}[[rules]]\nmatch = 'x'\nzzz_not_a_key = 1\n"),
        ),
        (
            "a window",
            format!("{base}[[rules]]\nmatch = 'x'\nuploads_per_window = {{ zzz_not_a_key = 1 }}\n"),
        ),
        (
            "[[external]]",
            format!("{base}[[external]]\nzzz_not_a_key = 1\n"),
        ),
        (
            "[[file_share]]",
            format!("{base}[[file_share]]\nzzz_not_a_key = 1\n"),
        ),
    ];
    for (place, config) in places {
        for key in accepted_keys(&config) {
            assert!(
                // A key in bold, or a table as its section's name.
                page.contains(&format!("\\fB{key}\\fR")) || page.contains(&format!("[{key}]")),
                "debian/man/xmpp-http-upload.toml.5 does not describe {key} ({place})"
            );
        }
    }
}

#[test]
fn version_and_help_for_every_command() {
    let output = run(&["--version"]);
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("xmpp-http-upload {}", env!("CARGO_PKG_VERSION"))
    );
    let commands = [
        "serve",
        "runserver",
        "cleanup",
        "check-config",
        "files",
        "purge",
        "usage",
        "check",
    ];
    let help = run(&["--help"]);
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(help.status.success(), "{text}");
    for command in commands {
        assert!(
            text.contains(command),
            "--help does not list {command}:\n{text}"
        );
        let output = run(&[command, "--help"]);
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{command} --help: {text}");
        assert!(
            text.contains(&format!("Usage: xmpp-http-upload {command}")),
            "{command} --help:\n{text}"
        );
        let output = run(&[command, "--version"]);
        assert!(output.status.success(), "{command} --version");
    }
}
