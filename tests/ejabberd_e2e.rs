//! End to end with a real ejabberd on loopback, so that INSTALL.md's "ejabberd" and "ejabberd
//! with external_secret" examples are tested: an XMPP client (slixmpp) asks ejabberd's
//! `mod_http_upload` for slots, PUTs through the nginx site we ship (nginx/xmpp-http-upload.conf,
//! templated only for ports, paths and socket; it asks this program, decide-only) and
//! downloads again, comparing bytes. Once per generation of Debian 12's ejabberd
//! (tests/e2e/generations.sh), with the same driver: `stable` (23.01, the host's package) and
//! `backports` (24.12, in a root of its own run through chroot); the client checks that the
//! running server reports the pinned version.
//!
//! - `localhost`: `service_url` — ejabberd asks the program's slot API (behind nginx, loopback
//!   only) for every slot; a Cyrillic name must come back to the client encoded exactly once;
//!   over-limit (the program's 413 → `not-acceptable`) and a JID the rules deny (403 →
//!   `not-allowed`).
//! - `ext.localhost`: `external_secret` + `put_url` — ejabberd signs the URLs itself (`?v=`),
//!   the program checks the HMAC; tampered MAC, other size and re-upload are refused.
//!
//! The work is done by `tests/e2e/ejabberd/run.sh` (see there); this test runs it on the binary
//! under test and asserts on its result. Without ejabberd (or the backports root), nginx or the
//! Python modules the test is skipped with a message, except under `CI=true`, where the driver
//! installs them (apt-get, tests/e2e/server-root.sh) and a missing one is a failure.

mod common;

use common::{E2eRun, run_e2e_driver};

/// Debian 12's own ejabberd 23.01.
#[test]
fn ejabberd_stable_end_to_end() {
    ejabberd_end_to_end("stable", "23.01");
}

/// bookworm-backports' ejabberd 24.12.
#[test]
fn ejabberd_backports_end_to_end() {
    ejabberd_end_to_end("backports", "24.12");
}

/// Runs the driver for `generation`, whose ejabberd must report `version` (the pin of
/// tests/e2e/generations.sh), and asserts on what it printed.
fn ejabberd_end_to_end(generation: &str, version: &str) {
    let Some(E2eRun { stdout, stderr }) =
        run_e2e_driver("tests/e2e/ejabberd/run.sh", "ejabberd", generation)
    else {
        return;
    };
    // nginx ran the site we ship, with its keep-alive FastCGI connections to the program.
    assert!(
        stdout.contains(
            "e2e-ejabberd: nginx: the shipped site (nginx/xmpp-http-upload.conf), fastcgi_keep_conn on, upstream keepalive"
        ),
        "not the shipped nginx site:\n{stdout}"
    );
    // The three clients talked to the generation's pinned ejabberd (and no other).
    assert_eq!(
        stdout
            .matches(&format!(
                "ok    the server is ejabberd {version} (XEP-0092 software version, pinned for {generation})"
            ))
            .count(),
        3,
        "not the {generation} ejabberd:\n{stdout}"
    );
    // The three clients (service_url, external_secret, denied user) ran to the end, all passed.
    assert_eq!(
        stdout.matches("E2E RESULT: PASS").count(),
        3,
        "expected three passing client runs:\n{stdout}\n{stderr}"
    );
    assert!(!stdout.contains("E2E RESULT: FAIL"), "{stdout}");
    assert!(
        stdout.contains("e2e-ejabberd: ok    all ejabberd end-to-end checks passed"),
        "{stdout}"
    );
    for mode in ["service_url", "external_secret"] {
        for name in ["hello.txt", "Тест файл №1.txt"] {
            assert!(
                stdout.contains(&format!("ok    {mode} {name}: GET returns the same bytes")),
                "no successful download of {name:?} with {mode}:\n{stdout}"
            );
        }
        assert!(
            stdout.contains(&format!(
                "ok    {mode}: GET of the 1.5 MB file returns the same bytes"
            )),
            "no successful slixmpp upload_file() with {mode}:\n{stdout}"
        );
        assert!(
            stdout.contains(&format!(
                "ok    {mode}: 20 MiB slot request -> not-acceptable"
            )),
            "over-limit slot request with {mode}:\n{stdout}"
        );
    }
    // The Cyrillic name reached the client percent-encoded once, not twice.
    assert!(
        stdout.contains("ok    service_url: PUT URL is not double-encoded (no %25)"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "ok    external_secret: v = HMAC-SHA256(secret, '<path> <size>') verified here"
        ),
        "{stdout}"
    );
    // ejabberd's slot request had the shape INSTALL.md describes (from 127.0.0.1, ?jid=...).
    assert!(
        stdout.contains(
            "SLOT-REQUEST 127.0.0.1 \"GET /http_upload/slot/?jid=alice%40localhost&name=hello.txt&size=34&content_type=text/plain HTTP/1.1\" status=200"
        ),
        "{stdout}"
    );
}
