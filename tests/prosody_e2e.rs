//! End to end with a real XMPP server: Prosody 0.12 (Debian's `prosody` + `prosody-modules`)
//! on loopback, an XMPP client (slixmpp) that asks for slots, PUTs through nginx (which asks
//! this program, decide-only) and downloads again. Both external-upload protocols:
//! `mod_http_upload_external` (HMAC, `v` and `v2`) and `mod_http_file_share` (JWT), refusals
//! (tampered signatures, other sizes and types, a user the rules deny), and `cleanup` deleting
//! a file at its token's `expires`.
//!
//! The work is done by `tests/e2e/run.sh` (see there); this test runs it on the binary under
//! test and asserts on its result. Without Prosody, nginx or the Python modules the test is
//! skipped with a message, except under `CI=true`, where the driver installs them with
//! apt-get and a missing one is a failure.

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_xmpp-http-upload");

#[test]
fn prosody_end_to_end() {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/run.sh");
    let out = Command::new("bash")
        .arg(&script)
        .env("XHU_BIN", BIN)
        .output()
        .expect("run bash tests/e2e/run.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);

    if out.status.code() == Some(77) {
        assert!(
            !ci,
            "CI=true but the e2e dependencies are missing:\n{stdout}{stderr}"
        );
        eprintln!("SKIPPED prosody_end_to_end: {}", stdout.trim());
        return;
    }
    assert!(
        out.status.success(),
        "the Prosody end-to-end test failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // Both clients ran to the end and every check passed.
    assert_eq!(
        stdout.matches("E2E RESULT: PASS").count(),
        2,
        "expected two passing client runs:\n{stdout}\n{stderr}"
    );
    assert!(!stdout.contains("E2E RESULT: FAIL"), "{stdout}");
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
