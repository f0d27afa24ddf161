//! What `check-config` checks on disk: whether the user running it can reach the upload root,
//! the database and its directory. Reads file metadata only; changes nothing.

use std::path::Path;

use super::Config;

impl Config {
    /// What the user running this cannot reach of what the program needs, one line each: the
    /// upload root (read, write, enter: the program makes token directories and deletes old
    /// files there), the database's directory (write, enter: SQLite makes its `-wal`/`-shm`
    /// files beside it), the database itself if it exists, and the directories of signed
    /// prefixes that exist. `check-config` run as the program's user tells whether the program
    /// will work; run as root it proves little (root reaches everything).
    pub fn unreachable(&self) -> Vec<String> {
        use nix::unistd::{AccessFlags, access};
        let all = AccessFlags::R_OK | AccessFlags::W_OK | AccessFlags::X_OK;
        let enter_write = AccessFlags::W_OK | AccessFlags::X_OK;
        let mut problems = Vec::new();
        let mut check = |what: &str,
                         path: &Path,
                         dir: bool,
                         needs: AccessFlags,
                         must_exist: bool| {
            let shown = path.display();
            match std::fs::metadata(path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if must_exist {
                        problems.push(format!("{what} {shown} does not exist"));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => problems.push(
                    format!("{what} {shown}: this user cannot reach it (a directory above is closed to it)"),
                ),
                Err(e) => problems.push(format!("{what} {shown}: {e}")),
                Ok(meta) if meta.is_dir() != dir => problems.push(format!(
                    "{what} {shown} is not a {}",
                    if dir { "directory" } else { "file" }
                )),
                Ok(_) => {
                    if let Err(e) = access(path, needs) {
                        let wanted = if needs.contains(AccessFlags::R_OK | AccessFlags::X_OK) {
                            "read, write and enter"
                        } else if needs.contains(AccessFlags::X_OK) {
                            "write and enter"
                        } else {
                            "read and write"
                        };
                        problems.push(format!(
                            "{what} {shown}: this user cannot {wanted} it ({})",
                            e.desc()
                        ));
                    }
                }
            }
        };
        check("upload_root", &self.upload_root, true, all, true);
        // PostgreSQL: nothing on this host to reach (connecting and reading is `Store::check`'s).
        if let Some(database) = self.database.sqlite_path() {
            let db_dir = match database.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => parent,
                _ => Path::new("."),
            };
            check("the database's directory", db_dir, true, enter_write, true);
            check(
                "database",
                database,
                false,
                AccessFlags::R_OK | AccessFlags::W_OK,
                false,
            );
        }
        for signed in self.external.iter().chain(&self.file_share) {
            let dir = self.upload_root.join(&signed.dir);
            check(
                &format!("the directory of {}", signed.prefix),
                &dir,
                true,
                all,
                false,
            );
        }
        problems
    }
}
