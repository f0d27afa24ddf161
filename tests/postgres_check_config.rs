//! `check-config` with `database = "postgres://..."` connects as the program would and reads
//! whether the program can start there, changing nothing: what it found is one line of its
//! OK; what would stop the program (no server, no such database, a user that may not create
//! the tables, a schema newer than the program, tables it may not write) is its one-line
//! error and exit status 1. Against a real PostgreSQL cluster (`common::postgres`).

mod common;

use std::net::TcpListener;

use common::postgres::{Postgres, USER, check_config, config_on, ok_line, refusal};
use common::{ALLOW_ALL, Env, standard_config};

fn tables(cluster: &Postgres, url: &str) -> Vec<Vec<String>> {
    cluster.sql_in(
        url,
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
    )
}

#[test]
fn a_new_database_is_reported_ready_and_left_untouched_and_then_current() {
    let Some(cluster) = common::postgres::shared() else {
        return;
    };
    let url = cluster.database("check_new");
    let env = Env::new(&standard_config(ALLOW_ALL));
    let line = ok_line(&check_config(&env, &url));
    assert!(line.contains("PostgreSQL "), "{line}");
    assert!(line.contains(&format!("as user {USER}")), "{line}");
    assert!(
        line.contains("no tables yet; the program creates them when it starts"),
        "{line}"
    );
    assert!(tables(cluster, &url).is_empty(), "check-config made tables");

    // Once the program has started there, the same check finds its tables current.
    let config = config_on(&env, &url);
    let server = env.serve_with(&config);
    drop(server);
    let line = ok_line(&check_config(&env, &url));
    assert!(line.contains("tables current (schema version"), "{line}");
}

#[test]
fn no_server_at_the_address_is_an_error_that_hides_the_password() {
    if common::postgres::shared().is_none() {
        return;
    }
    // A port nothing listens on: taken, then freed.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let env = Env::new(&standard_config(ALLOW_ALL));
    let url = format!("postgres://{USER}:hunter2secret@127.0.0.1:{port}/nothing?connect_timeout=3");
    let line = refusal(&check_config(&env, &url));
    // Where, with the password starred out, and why.
    assert!(
        line.contains(&format!(
            "cannot connect to PostgreSQL at postgres://{USER}:***@127.0.0.1:{port}/nothing"
        )),
        "{line}"
    );
    assert!(line.contains("Connection refused"), "{line}");
    assert!(
        !line.contains("hunter2secret"),
        "the password shows: {line}"
    );
}

#[test]
fn a_database_that_does_not_exist_is_named() {
    let Some(cluster) = common::postgres::shared() else {
        return;
    };
    let env = Env::new(&standard_config(ALLOW_ALL));
    let line = refusal(&check_config(&env, &cluster.url("no_such_database_here")));
    assert!(line.contains("cannot connect to PostgreSQL"), "{line}");
    assert!(line.contains("no_such_database_here"), "{line}");
}

#[test]
fn a_user_that_may_not_create_the_tables_is_told_what_to_grant() {
    let Some(cluster) = common::postgres::shared() else {
        return;
    };
    let url = cluster.database("check_grant");
    // As since PostgreSQL 15 (said here, so that an older server tests the same): only the
    // database's owner may create tables in `public`.
    cluster.sql_in(&url, "REVOKE CREATE ON SCHEMA public FROM PUBLIC");
    cluster.sql("DO $$ BEGIN CREATE ROLE xhu_limited LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$");
    let limited = url.replacen(&format!("//{USER}@"), "//xhu_limited@", 1);
    let env = Env::new(&standard_config(ALLOW_ALL));
    let line = refusal(&check_config(&env, &limited));
    assert!(
        line.contains("as user xhu_limited: this user may not create tables in schema public"),
        "{line}"
    );
    assert!(
        line.contains("GRANT CREATE ON SCHEMA public TO xhu_limited"),
        "{line}"
    );

    // Tables made by another user, which this one may not write, are refused too.
    let env_owner = Env::new(&standard_config(ALLOW_ALL));
    drop(env_owner.serve_with(&config_on(&env_owner, &url)));
    let line = refusal(&check_config(&env, &limited));
    assert!(
        line.contains("this user may not read and write the program's tables"),
        "{line}"
    );
    // Granted, it is fine.
    cluster.sql_in(
        &url,
        "GRANT SELECT, INSERT, UPDATE, DELETE ON schema_version, slot, signed_upload, purged, counter TO xhu_limited",
    );
    let line = ok_line(&check_config(&env, &limited));
    assert!(line.contains("tables current"), "{line}");

    // Tables of an older schema need their owner to migrate them: not this user.
    cluster.sql_in(&url, "UPDATE schema_version SET version = 1");
    let line = refusal(&check_config(&env, &limited));
    assert!(
        line.contains("need migrating to") && line.contains("which only their owner may do"),
        "{line}"
    );
    let line = ok_line(&check_config(&env_owner, &url));
    assert!(
        line.contains("tables at schema version 1; the program brings them to"),
        "{line}"
    );
}

#[test]
fn a_schema_newer_than_the_program_says_upgrade() {
    let Some(cluster) = common::postgres::shared() else {
        return;
    };
    let url = cluster.database("check_newer");
    let env = Env::new(&standard_config(ALLOW_ALL));
    drop(env.serve_with(&config_on(&env, &url)));
    cluster.sql_in(&url, "UPDATE schema_version SET version = 999");
    let line = refusal(&check_config(&env, &url));
    assert!(
        line.contains("its schema version 999 is newer than this program knows"),
        "{line}"
    );
    assert!(line.contains("upgrade the program"), "{line}");
}

#[test]
fn a_unix_socket_url_is_reached_without_tls() {
    let Some(cluster) = common::postgres::shared() else {
        return;
    };
    let url = cluster.database("check_socket");
    // libpq's default `sslmode=prefer` asks for TLS, which the server never offers on a Unix
    // socket: the connection goes on without it.
    let name = url.rsplit('/').next().expect("a database name");
    let socket = format!(
        "postgres://{USER}@/{name}?host={}&port={}",
        cluster.dir.display(),
        cluster.port
    );
    let env = Env::new(&standard_config(ALLOW_ALL));
    let line = ok_line(&check_config(&env, &socket));
    assert!(line.contains("no tables yet"), "{line}");
}

#[test]
fn a_server_that_never_answers_is_an_error_after_connect_timeout() {
    if common::postgres::shared().is_none() {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    // Accepted by the kernel (the backlog), never answered.
    let env = Env::new(&standard_config(ALLOW_ALL));
    let started = std::time::Instant::now();
    let line = refusal(&check_config(
        &env,
        &format!("postgres://{USER}@127.0.0.1:{port}/x?connect_timeout=1"),
    ));
    assert!(
        line.contains("no answer within 1 s of connecting"),
        "{line}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    drop(listener);
}
