//! `check-config` warns when a `max_file_size` (or none: any size) is above the largest PUT the
//! web server in front lets through — slots it would grant and the web server then refuses with
//! 413. The limits come from the shipped files where they are installed (here: the
//! shared-hosting `.htaccess` beside `upload_root`, copied from apache/shared-hosting/), else
//! the shipped values (nginx `client_max_body_size 1g`, Apache `LimitRequestBody 1073741824`).
//! The warning names both numbers and the file to change; a limit within the web server's gets
//! none. (On a machine with the Debian package installed, the installed snippet and site are
//! read instead of the assumed values; as shipped they say the same.)

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{TempDir, output_text, run};

const GIB: u64 = 1 << 30;

/// A config with `upload_root` at `<dir>/public_html/upload` and `rules` (plus `extra` tables).
fn write_config(dir: &Path, rules: &str, extra: &str) -> PathBuf {
    let root = dir.join("public_html/upload");
    fs::create_dir_all(&root).expect("upload root");
    let config = dir.join("config.toml");
    let text = format!(
        "upload_root = \"{}\"\ndatabase = \"{}\"\n\n[slot_api]\nsecret = \"limits-test-secret-0123456789\"\n\n\
         {rules}\n[[rules]]\nmatch = '.*'\ndeny = true\n{extra}",
        root.display(),
        dir.join("db.sqlite3").display()
    );
    fs::write(&config, text).expect("write config");
    config
}

/// check-config's lines that are about the web server's body limit; it must succeed (warnings
/// are not errors).
fn limit_warnings(config: &Path) -> Vec<String> {
    let output = run(&[
        "check-config",
        "--config",
        config.to_str().expect("utf-8 path"),
    ]);
    let text = output_text(&output);
    assert!(output.status.success(), "check-config failed:\n{text}");
    assert!(!text.contains("panicked"), "{text}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| l.starts_with("warning: ") && l.contains("refuses larger ones with 413"))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_rule_above_the_shipped_web_server_limit_is_warned_about_with_both_numbers_and_the_files() {
    let dir = TempDir::new();
    let config = write_config(
        &dir.path,
        "[[rules]]\nmatch = '^big@example\\.org$'\nmax_file_size = \"2 GiB\"\n",
        "",
    );
    let warnings = limit_warnings(&config);
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    let w = &warnings[0];
    for expected in [
        "rules[0]",
        &(2 * GIB).to_string(),
        &GIB.to_string(),
        "client_max_body_size",
        "/etc/nginx/snippets/xmpp-http-upload-files.conf",
        "LimitRequestBody",
        "/etc/apache2/sites-available/xmpp-http-upload.conf",
    ] {
        assert!(w.contains(expected), "{expected:?} not in {w}");
    }
}

#[test]
fn no_max_file_size_and_an_unlimited_external_prefix_are_warned_about_too() {
    let dir = TempDir::new();
    let config = write_config(
        &dir.path,
        "[[rules]]\nmatch = '^admin@example\\.org$'\n",
        "\n[[external]]\nprefix = \"/share\"\nsecret = \"hmac-secret\"\n\n\
         [[file_share]]\nprefix = \"/file_share\"\nsecret = \"jwt-secret\"\n",
    );
    let warnings = limit_warnings(&config);
    // The rule and the HMAC prefix; the JWT prefix without a size of its own falls under the
    // rules, which are warned about already.
    assert_eq!(warnings.len(), 2, "{warnings:#?}");
    assert!(
        warnings[0].contains("rules[0]") && warnings[0].contains("no max_file_size (any size)"),
        "{}",
        warnings[0]
    );
    assert!(
        warnings[1].contains("external[0] (/share)")
            && warnings[1].contains("no max_file_size (any size)"),
        "{}",
        warnings[1]
    );
}

#[test]
fn limits_within_the_web_server_limit_get_no_warning() {
    let dir = TempDir::new();
    let config = write_config(
        &dir.path,
        "[[rules]]\nmatch = '^a@example\\.org$'\nmax_file_size = \"1 GiB\"\n\
         [[rules]]\nmatch = '^b@example\\.org$'\nmax_file_size = \"100 MiB\"\n",
        "\n[[external]]\nprefix = \"/share\"\nsecret = \"s\"\nmax_file_size = \"10 MiB\"\n",
    );
    assert_eq!(limit_warnings(&config), Vec::<String>::new());
}

#[test]
fn on_shared_hosting_the_htaccess_beside_the_upload_root_is_read_and_named() {
    let dir = TempDir::new();
    let config = write_config(
        &dir.path,
        "[[rules]]\nmatch = '@example\\.org$'\nmax_file_size = \"2 GiB\"\n",
        "",
    );
    let public_html = dir.path.join("public_html");
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("apache/shared-hosting/.htaccess");
    let htaccess = public_html.join(".htaccess");
    fs::copy(&shipped, &htaccess).expect("copy the shipped .htaccess");

    // As shipped it sets no LimitRequestBody: Apache's default (1 GiB) holds, and the file to
    // change is the customer's own .htaccess, not the server's.
    let warnings = limit_warnings(&config);
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(
        warnings[0].contains(&htaccess.display().to_string())
            && warnings[0].contains("Apache's default, 1073741824")
            && warnings[0].contains(&(2 * GIB).to_string()),
        "{}",
        warnings[0]
    );

    // The line INSTALL.md gives: with it, the warning is gone.
    let mut text = fs::read_to_string(&htaccess).expect("read .htaccess");
    text.push_str("\nLimitRequestBody 3221225472\n");
    fs::write(&htaccess, text).expect("write .htaccess");
    assert_eq!(limit_warnings(&config), Vec::<String>::new());

    // A lower one in the program's own directory wins (Apache merges it later).
    fs::create_dir_all(public_html.join("xmpp-http-upload")).expect("cgi dir");
    fs::write(
        public_html.join("xmpp-http-upload/.htaccess"),
        "LimitRequestBody 1048576\n",
    )
    .expect("write cgi .htaccess");
    let warnings = limit_warnings(&config);
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(
        warnings[0].contains("LimitRequestBody 1048576")
            && warnings[0].contains("xmpp-http-upload/.htaccess"),
        "{}",
        warnings[0]
    );
}
