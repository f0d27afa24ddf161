//! End to end with a real XMPP server: Prosody on loopback, an XMPP client (slixmpp) that asks
//! for slots, PUTs through nginx — the site we ship, nginx/xmpp-http-upload.conf, templated only
//! for ports, paths and socket — (which asks this program, decide-only) and downloads again.
//! Both external-upload protocols: `mod_http_upload_external` (HMAC, `v` and `v2`) and
//! `mod_http_file_share` (JWT), refusals (tampered signatures, other sizes and types, a user
//! the rules deny), a token without `expires` (files that never expire), and `cleanup`
//! deleting a file at its token's `expires`.
//!
//! Once per generation of Debian 12's Prosody (tests/e2e/generations.sh), with the same driver:
//! `stable` (0.12.3 and prosody-modules of 2023-02, the host's packages) and `backports`
//! (13.0.1 and prosody-modules of 2025-04, in a root of their own run through chroot). The
//! client checks that the running server reports the pinned version.
//!
//! The work is done by `tests/e2e/run.sh` (see there); this test runs it on the binary under
//! test and asserts on its result. Without Prosody (or the backports root), nginx or the Python
//! modules the test is skipped with a message, except under `CI=true`, where the driver
//! installs them (apt-get, tests/e2e/server-root.sh) and a missing one is a failure.

mod common;

use common::{E2eRun, run_e2e_driver};

/// Debian 12's own Prosody 0.12.3.
#[test]
fn prosody_stable_end_to_end() {
    prosody_end_to_end("stable", "0.12.3", 300);
}

/// bookworm-backports' Prosody 13.0.1.
#[test]
fn prosody_backports_end_to_end() {
    prosody_end_to_end("backports", "13.0.1", 600);
}

/// Runs the driver for `generation`, whose Prosody must report `version` and sign upload
/// tokens valid for `token_ttl` seconds (`exp - iat`) — the pins of tests/e2e/generations.sh,
/// repeated here so that a driver running another Prosody cannot pass — and asserts on what
/// it printed.
fn prosody_end_to_end(generation: &str, version: &str, token_ttl: u32) {
    let Some(E2eRun { stdout, stderr }) = run_e2e_driver("tests/e2e/run.sh", "Prosody", generation)
    else {
        return;
    };
    // nginx ran the site we ship, with its keep-alive FastCGI connections to the program.
    assert!(
        stdout.contains(
            "e2e: nginx: the shipped site (nginx/xmpp-http-upload.conf), fastcgi_keep_conn on, upstream keepalive"
        ),
        "not the shipped nginx site:\n{stdout}"
    );
    // Both clients talked to the generation's pinned Prosody (and no other), ran to the end,
    // and every check passed.
    assert_eq!(
        stdout
            .matches(&format!(
                "ok    the server is Prosody {version} (XEP-0092 software version, pinned for {generation})"
            ))
            .count(),
        2,
        "not the {generation} Prosody:\n{stdout}"
    );
    // Its tokens live as long as that version makes them (0.12: 300 s, 13: 600 s).
    assert!(
        stdout.contains(&format!("ok    share.localhost: exp = iat + {token_ttl}")),
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("E2E RESULT: PASS").count(),
        2,
        "expected two passing client runs:\n{stdout}\n{stderr}"
    );
    assert!(!stdout.contains("E2E RESULT: FAIL"), "{stdout}");
    // Prosody 13 left `expires` out of the token of a file that never expires, as 0.12 did,
    // and the program took that upload.
    assert!(
        stdout.contains("ok    share-never.localhost: no `expires` claim when files never expire")
            && stdout.contains("ok    share-never.localhost: GET returns the same bytes"),
        "{stdout}"
    );
    // `cleanup` deleted the file whose token `expires` had passed, and only that one.
    assert!(
        stdout.contains("e2e: ok    cleanup deleted the expired"),
        "no cleanup at the token's expires:\n{stdout}"
    );
    // The three upload services were exercised, each with a download of the same bytes.
    for service in ["upload.localhost", "upload2.localhost", "share.localhost"] {
        assert!(
            stdout.contains(&format!("ok    {service}: GET returns the same bytes")),
            "no successful download through {service}:\n{stdout}"
        );
        assert!(
            stdout.contains(&format!(
                "ok    {service}: GET of the 1.5 MB file returns the same bytes"
            )),
            "no successful slixmpp upload_file() through {service}:\n{stdout}"
        );
    }
}
