//! The `cleanup` subcommand, run while a server is serving: it removes unused slots past
//! `put_timeout` and files past `retention` with their token directories, keeps everything
//! younger, keeps files the web server wrote, and says what it removed.

mod common;

use std::thread;
use std::time::Duration;

use common::*;

const JID: &str = "bob@example.org";

fn cleanup(env: &Env, config: &std::path::Path) -> String {
    let output = env.run(&["cleanup", "--config", config.to_str().unwrap()]);
    let text = output_text(&output);
    assert!(output.status.success(), "cleanup failed: {text}");
    assert!(!text.contains("panicked"), "{text}");
    text
}

fn config_with(put_timeout: &str, retention: &str) -> String {
    standard_config_with(
        &format!("put_timeout = \"{put_timeout}\"\nretention = \"{retention}\""),
        ALLOW_ALL,
    )
}

#[test]
fn cleanup_removes_exactly_what_is_old() {
    let env = Env::new(&config_with("1h", "30d"));
    let server = env.serve();
    let mid = env.write_config("mid.toml", &config_with("2s", "30d"));
    let short = env.write_config("short.toml", &config_with("2s", "2s"));

    // old: an unused slot, a self-written file, a file the web server wrote after a "yes"
    let old_unused = server.slot(JID, "old unused.txt", 3);
    let old_self = server.slot(JID, "old self.txt", 3);
    server.upload(&env, PutMode::SelfWrite, &old_self, &Put::of(b"old"));
    let old_web = server.slot(JID, "old web.txt", 3);
    server.upload(&env, PutMode::AuthRequest, &old_web, &Put::of(b"old"));

    thread::sleep(Duration::from_millis(3100));

    let new_unused = server.slot(JID, "new unused.txt", 3);
    let new_self = server.slot(JID, "new self.txt", 3);
    server.upload(&env, PutMode::SelfWrite, &new_self, &Put::of(b"new"));
    let new_web = server.slot(JID, "new web.txt", 3);
    server.upload(&env, PutMode::Authorizer, &new_web, &Put::of(b"new"));

    let files = [&old_self, &old_web, &new_self, &new_web];
    let all_tokens = [
        &old_unused,
        &old_self,
        &old_web,
        &new_unused,
        &new_self,
        &new_web,
    ];

    // 1. nothing is old enough under the long config
    let text = cleanup(&env, &env.config);
    for slot in files {
        assert!(
            env.stored(&slot.token, &slot.name).exists(),
            "{} removed: {text}",
            slot.name
        );
    }
    for slot in all_tokens {
        assert!(
            !text.contains(&slot.token),
            "long config removed {}: {text}",
            slot.name
        );
    }

    // 2. short put_timeout, long retention: only the old unused slot goes; files stay,
    //    even the one whose upload only the web server saw
    let text = cleanup(&env, &mid);
    for slot in files {
        assert!(
            env.stored(&slot.token, &slot.name).exists(),
            "{} removed by slot expiry: {text}",
            slot.name
        );
    }
    let r = server.put(PutMode::SelfWrite, &old_unused.put_path, &Put::of(b"abc"));
    assert!(
        (400..500).contains(&r.status),
        "the old unused slot should be gone after cleanup, PUT got {r}; cleanup said: {text}"
    );

    // 3. short retention: the old files and their token directories go, the new stay
    let text = cleanup(&env, &short);
    for slot in [&old_self, &old_web] {
        assert!(
            !env.upload_root.join(&slot.token).exists(),
            "{} (or its token dir) kept: {text}",
            slot.name
        );
        assert!(
            text.contains(&slot.token),
            "cleanup did not say it removed {}: {text}",
            slot.name
        );
    }
    for slot in [&new_self, &new_web] {
        assert_eq!(
            std::fs::read(env.stored(&slot.token, &slot.name)).unwrap(),
            b"new",
            "{}",
            slot.name
        );
        assert!(
            !text.contains(&slot.token),
            "cleanup names a kept file {}: {text}",
            slot.name
        );
    }
    let mut tree = env.upload_tree();
    tree.sort();
    let mut expected = vec![
        new_self.token.clone(),
        format!("{}/{}", new_self.token, new_self.name),
        new_web.token.clone(),
        format!("{}/{}", new_web.token, new_web.name),
    ];
    expected.sort();
    assert_eq!(tree, expected, "upload root after cleanup");

    // the fresh unused slot survived and still works
    server.upload(&env, PutMode::SelfWrite, &new_unused, &Put::of(b"abc"));

    // 4. running it again removes nothing more
    let text = cleanup(&env, &short);
    for slot in [&new_self, &new_web, &new_unused] {
        assert!(env.stored(&slot.token, &slot.name).exists(), "{text}");
    }
}

#[test]
fn cleanup_leaves_foreign_files_and_dot_names_outside_token_dirs_alone() {
    let env = Env::new(&config_with("1s", "1s"));
    let server = env.serve();
    let slot = server.slot(JID, "mine.txt", 3);
    server.upload(&env, PutMode::SelfWrite, &slot, &Put::of(b"old"));
    // something an admin put next to the upload root's token directories
    let outside = env.dir.path.join("keep-me.txt");
    std::fs::write(&outside, b"x").unwrap();
    thread::sleep(Duration::from_millis(2100));
    let text = cleanup(&env, &env.config);
    assert!(!env.upload_root.join(&slot.token).exists(), "{text}");
    assert!(
        env.upload_root.exists(),
        "the upload root itself was removed: {text}"
    );
    assert!(
        outside.exists(),
        "a file outside the upload root was removed: {text}"
    );
    assert!(env.database.exists(), "the database was removed: {text}");
}
