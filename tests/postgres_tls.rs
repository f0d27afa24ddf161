//! TLS to PostgreSQL (store/pg_tls.rs): libpq's `sslmode` and `sslrootcert` in the `database`
//! URL, against a real PostgreSQL cluster that has TLS on with a certificate of a test CA
//! (made with the `openssl` command) and lets the program's user in over TLS only
//! (`hostssl ... trust`, `host ... reject`): a connection that succeeds is an encrypted one.
//! Each mode checks the server's certificate as libpq's does; what fails is one line of
//! `check-config` and exit status 1.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::postgres::{Postgres, USER, check_config, ok_line, refusal};
use common::{ALLOW_ALL, Env, TempDir, standard_config};

/// The user the program connects as: TLS only.
const TLS_USER: &str = "xhu_tls";

/// A cluster with TLS on, its certificates, and a database for the program.
struct TlsCluster {
    cluster: Postgres,
    /// The CA that signed the server's certificate (made out to `localhost` only).
    ca: PathBuf,
    /// A CA that signed nothing of this server.
    other_ca: PathBuf,
    database: String,
    _certs: TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed CA `name`.{key,pem} in `dir`.
fn make_ca(dir: &Path, name: &str) -> PathBuf {
    let key = format!("{name}.key");
    let pem = format!("{name}.pem");
    openssl(dir, &["genrsa", "-out", &key, "2048"]);
    let subject = format!("/CN=xhu test {name}");
    openssl(
        dir,
        &[
            "req", "-x509", "-new", "-key", &key, "-sha256", "-days", "2", "-subj", &subject,
            "-out", &pem,
        ],
    );
    dir.join(pem)
}

/// The shared TLS cluster of this test process; `None`: PostgreSQL missing (skip; a failure
/// under CI=true).
fn tls_cluster() -> Option<&'static TlsCluster> {
    static CLUSTER: OnceLock<Option<TlsCluster>> = OnceLock::new();
    CLUSTER
        .get_or_init(|| {
            if !common::postgres::available() {
                return None;
            }
            Some(common::postgres::on_lasting_thread(start_tls_cluster))
        })
        .as_ref()
}

fn start_tls_cluster() -> TlsCluster {
    start_tls_cluster_with(
        &format!(
            "local all all trust\nhostssl all {TLS_USER} 127.0.0.1/32 trust\n\
             host all {TLS_USER} 127.0.0.1/32 reject\nhost all all 127.0.0.1/32 trust\n"
        ),
        &[],
    )
}

/// A cluster with TLS on, `hba` as its pg_hba.conf and `settings` (ALTER SYSTEM lines) beside.
fn start_tls_cluster_with(hba: &str, settings: &[&str]) -> TlsCluster {
    let cluster = Postgres::start();
    let certs = TempDir::labelled("pg-tls");
    let ca = make_ca(&certs.path, "ca");
    let other_ca = make_ca(&certs.path, "other");
    // The server's key and certificate, made out to localhost (not 127.0.0.1), signed by `ca`.
    let dir = &certs.path;
    openssl(dir, &["genrsa", "-out", "server.key", "2048"]);
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            "server.key",
            "-subj",
            "/CN=localhost",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName=DNS:localhost\n").expect("write ext");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-sha256",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ],
    );
    // The server reads them as its own user, and wants its key private.
    let data = cluster.dir.join("data");
    for name in ["server.key", "server.pem"] {
        std::fs::copy(dir.join(name), data.join(name)).expect("copy into the cluster");
        if nix::unistd::geteuid().is_root() {
            let nobody = nix::unistd::User::from_name("nobody")
                .ok()
                .flatten()
                .expect("user nobody");
            nix::unistd::chown(&data.join(name), Some(nobody.uid), Some(nobody.gid))
                .expect("chown");
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(data.join(name), std::fs::Permissions::from_mode(0o600))
            .expect("chmod");
    }
    // (By default the test's own superuser keeps plain connections, the helpers use them; the
    // program's user gets in over TLS only.)
    std::fs::write(data.join("pg_hba.conf"), hba).expect("write pg_hba.conf");
    for setting in settings {
        cluster.sql(setting);
    }
    cluster.sql("ALTER SYSTEM SET ssl_cert_file = 'server.pem'");
    cluster.sql("ALTER SYSTEM SET ssl_key_file = 'server.key'");
    cluster.sql("ALTER SYSTEM SET ssl = on");
    cluster.sql("SELECT pg_reload_conf()");
    let on = common::wait_until(std::time::Duration::from_secs(10), || {
        cluster.sql("SHOW ssl") == vec![vec!["on".to_string()]]
    });
    assert!(on, "TLS did not come on: {}", cluster.log());
    cluster.sql(&format!("CREATE ROLE {TLS_USER} LOGIN"));
    cluster.sql(&format!("CREATE DATABASE tls_db OWNER {TLS_USER}"));
    TlsCluster {
        database: "tls_db".to_string(),
        cluster,
        ca,
        other_ca,
        _certs: certs,
    }
}

impl TlsCluster {
    /// The program's URL at `host` with `query` (`sslmode=...&...`, or empty).
    fn url(&self, host: &str, query: &str) -> String {
        let base = format!(
            "postgres://{TLS_USER}@{host}:{}/{}",
            self.cluster.port, self.database
        );
        if query.is_empty() {
            base
        } else {
            format!("{base}?{query}")
        }
    }
}

fn env() -> Env {
    Env::new(&standard_config(ALLOW_ALL))
}

#[test]
fn verify_full_reaches_the_server_by_its_name_and_the_program_works_over_it() {
    let Some(tls) = tls_cluster() else {
        return;
    };
    let url = tls.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", tls.ca.display()),
    );
    let env = env();
    let line = ok_line(&check_config(&env, &url));
    assert!(line.contains(&format!("as user {TLS_USER}")), "{line}");

    // The program itself: a slot granted and stored over the encrypted connection.
    let server = env.serve_with(&common::postgres::config_on(&env, &url));
    let slot = server.slot("tls@example.org", "over-tls.txt", 5);
    assert!(slot.put_path.starts_with("/upload/"), "{}", server.log());
    let encrypted = tls.cluster.sql(&format!(
        "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.usename = '{TLS_USER}' AND a.application_name = 'xmpp-http-upload'"
    ));
    assert_eq!(encrypted, vec![vec!["t".to_string()]], "{}", server.log());
    let rows = tls.cluster.sql_in(
        &tls.cluster.url(&tls.database),
        "SELECT name FROM slot WHERE jid = 'tls@example.org'",
    );
    assert_eq!(rows, vec![vec!["over-tls.txt".to_string()]]);
}

#[test]
fn without_sslmode_a_server_that_offers_tls_is_reached_encrypted() {
    let Some(tls) = tls_cluster() else {
        return;
    };
    // libpq's default, `prefer`: TLS when offered (this server rejects the user without it).
    ok_line(&check_config(&env(), &tls.url("127.0.0.1", "")));
    ok_line(&check_config(
        &env(),
        &tls.url("127.0.0.1", "sslmode=prefer"),
    ));
}

#[test]
fn sslmode_disable_connects_without_tls_and_this_server_refuses_that() {
    let Some(tls) = tls_cluster() else {
        return;
    };
    let line = refusal(&check_config(
        &env(),
        &tls.url("127.0.0.1", "sslmode=disable"),
    ));
    assert!(line.contains("cannot connect to PostgreSQL"), "{line}");
    assert!(line.contains("no encryption"), "{line}");
}

#[test]
fn require_encrypts_without_checking_the_certificate() {
    let Some(tls) = tls_cluster() else {
        return;
    };
    // 127.0.0.1 is not the name in the certificate, and no CA is given: libpq's `require`.
    ok_line(&check_config(
        &env(),
        &tls.url("127.0.0.1", "sslmode=require"),
    ));
    // With a CA file, `require` checks the issuer (libpq's rule): another CA is refused.
    let line = refusal(&check_config(
        &env(),
        &tls.url(
            "127.0.0.1",
            &format!("sslmode=require&sslrootcert={}", tls.other_ca.display()),
        ),
    ));
    assert!(line.contains("UnknownIssuer"), "{line}");
}

#[test]
fn verify_full_checks_the_host_name_and_verify_ca_only_the_issuer() {
    let Some(tls) = tls_cluster() else {
        return;
    };
    let ca = tls.ca.display();
    let line = refusal(&check_config(
        &env(),
        &tls.url(
            "127.0.0.1",
            &format!("sslmode=verify-full&sslrootcert={ca}"),
        ),
    ));
    assert!(line.contains("cannot connect to PostgreSQL"), "{line}");
    assert!(
        line.contains("certificate not valid for name \"127.0.0.1\""),
        "{line}"
    );
    ok_line(&check_config(
        &env(),
        &tls.url("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={ca}")),
    ));
}

#[test]
fn a_certificate_of_another_ca_is_refused() {
    let Some(tls) = tls_cluster() else {
        return;
    };
    for mode in ["verify-ca", "verify-full"] {
        let line = refusal(&check_config(
            &env(),
            &tls.url(
                "localhost",
                &format!("sslmode={mode}&sslrootcert={}", tls.other_ca.display()),
            ),
        ));
        assert!(line.contains("UnknownIssuer"), "{mode}: {line}");
    }
}

#[test]
fn sslrootcert_that_cannot_be_read_or_holds_no_certificate_is_named() {
    let Some(tls) = tls_cluster() else {
        return;
    };
    let env = env();
    let line = refusal(&check_config(
        &env,
        &tls.url(
            "localhost",
            "sslmode=verify-full&sslrootcert=/nonexistent/root.pem",
        ),
    ));
    assert!(
        line.contains("sslrootcert /nonexistent/root.pem: cannot read it"),
        "{line}"
    );
    let empty = env.dir.path.join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").expect("write");
    let line = refusal(&check_config(
        &env,
        &tls.url(
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={}", empty.display()),
        ),
    ));
    assert!(line.contains("no CA certificate in it"), "{line}");
}

#[test]
fn an_unknown_sslmode_or_a_check_without_roots_is_a_configuration_error() {
    if !common::postgres::available() {
        return;
    }
    let env = env();
    let url = format!("postgres://{USER}:hunter2secret@localhost:1/x?sslmode=strict");
    let line = refusal(&check_config(&env, &url));
    assert!(line.contains("sslmode=strict: not one of"), "{line}");
    assert!(!line.contains("hunter2secret"), "{line}");
    let url = format!("postgres://{USER}:hunter2secret@localhost:1/x?sslmode=verify-full");
    let line = refusal(&check_config(&env, &url));
    assert!(line.contains("sslrootcert"), "{line}");
    assert!(!line.contains("hunter2secret"), "{line}");
}

#[test]
fn require_holds_whatever_the_password_holds() {
    // A server without TLS: `require` must be refused there, also when the password holds a
    // `?` (the user part ends at the first `@`, as the client reads it; cut at the first `?`,
    // the URL's own sslmode was lost and the connection went on in plain text).
    let Some(plain) = common::postgres::shared() else {
        return;
    };
    let url = plain.database("tls_password");
    let with_password = url.replacen(&format!("//{USER}@"), &format!("//{USER}:ab?cd@"), 1);
    let line = refusal(&check_config(
        &env(),
        &format!("{with_password}?sslmode=require"),
    ));
    assert!(line.contains("cannot connect to PostgreSQL"), "{line}");
    assert!(line.contains("TLS"), "{line}");
    assert!(!line.contains("ab?cd"), "the password shows: {line}");
    // Without sslmode the same URL connects (libpq's prefer: no TLS offered, none used).
    ok_line(&check_config(&env(), &with_password));
}

#[test]
fn an_address_without_a_name_reaches_the_server_over_tls_unless_the_name_is_to_be_checked() {
    let Some(tls) = tls_cluster() else {
        return;
    };
    let url = format!(
        "postgres://{TLS_USER}@/{}?hostaddr=127.0.0.1&port={}",
        tls.database, tls.cluster.port
    );
    ok_line(&check_config(&env(), &url));
    ok_line(&check_config(&env(), &format!("{url}&sslmode=require")));
    let line = refusal(&check_config(
        &env(),
        &format!("{url}&sslmode=verify-full&sslrootcert={}", tls.ca.display()),
    ));
    assert!(
        line.contains("add host=<the name in the certificate>"),
        "{line}"
    );
    // With the name given beside the address, verify-full checks it.
    ok_line(&check_config(
        &env(),
        &format!(
            "{url}&host=localhost&sslmode=verify-full&sslrootcert={}",
            tls.ca.display()
        ),
    ));
}

#[test]
fn sslrootcert_system_checks_the_host_name_or_is_refused() {
    let Some(tls) = tls_cluster() else {
        return;
    };
    // The test CA is not among the system's: verify-full, the default with `system`, refuses
    // this server's certificate.
    let line = refusal(&check_config(
        &env(),
        &tls.url("localhost", "sslrootcert=system"),
    ));
    assert!(line.contains("UnknownIssuer"), "{line}");
    let line = refusal(&check_config(
        &env(),
        &tls.url("localhost", "sslmode=require&sslrootcert=system"),
    ));
    assert!(line.contains("needs sslmode=verify-full"), "{line}");
}

/// A server whose TLS rustls cannot speak (TLS 1.2 at most, one suite with RSA key exchange
/// and CBC), which lets the program's user in with or without TLS.
fn old_tls_cluster() -> Option<&'static TlsCluster> {
    static CLUSTER: OnceLock<Option<TlsCluster>> = OnceLock::new();
    CLUSTER
        .get_or_init(|| {
            if !common::postgres::available() {
                return None;
            }
            Some(common::postgres::on_lasting_thread(|| {
                start_tls_cluster_with(
                    "local all all trust\nhost all all 127.0.0.1/32 trust\n",
                    &[
                        "ALTER SYSTEM SET ssl_max_protocol_version = 'TLSv1.2'",
                        "ALTER SYSTEM SET ssl_ciphers = 'AES128-SHA'",
                    ],
                )
            }))
        })
        .as_ref()
}

#[test]
fn prefer_falls_back_to_plain_text_when_the_tls_handshake_fails_and_require_does_not() {
    let Some(old) = old_tls_cluster() else {
        return;
    };
    // libpq's prefer: TLS if it works, else without (as the program connected before it
    // spoke TLS).
    let line = ok_line(&check_config(&env(), &old.url("127.0.0.1", "")));
    assert!(line.contains("no tables yet"), "{line}");
    let line = refusal(&check_config(
        &env(),
        &old.url("127.0.0.1", "sslmode=require"),
    ));
    assert!(line.contains("error performing TLS handshake"), "{line}");
}
