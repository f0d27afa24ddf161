//! The upload directory: the only module that touches files under `upload_root`.
//!
//! Paths are built only from a token (40 lower-case hex digits) and a name that passed
//! `name::is_safe_name`, so they cannot leave the root. Uploads the program receives itself are
//! streamed into a temporary dot-file in the token directory, checked for their exact length,
//! fsynced, and hard-linked into place: `link` fails if the name exists, so a file is never
//! overwritten and a half-written file never appears under its real name.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::name::is_safe_name;
use crate::refusal::{Error, Outcome, Refusal, RefusalKind};

/// Length of a slot token in hex digits.
pub const TOKEN_LEN: usize = 40;
/// Suffix of the temporary files of uploads in progress (always dot-files).
pub const PART_SUFFIX: &str = ".part";
/// Copy buffer: large enough to keep system calls few, small enough that memory stays flat.
const COPY_BUFFER: usize = 256 * 1024;

/// True when `token` has the shape of a slot token (so it is safe as a directory name).
pub fn is_token(token: &str) -> bool {
    token.len() == TOKEN_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The upload root and the operations on it.
#[derive(Debug, Clone)]
pub struct UploadDir {
    root: PathBuf,
}

/// A file opened for download.
pub struct StoredFile {
    pub file: File,
    pub len: u64,
}

impl UploadDir {
    /// The upload directory at `root`; created (with parents) if missing.
    pub fn open(root: &Path) -> Result<UploadDir, Error> {
        fs::create_dir_all(root)
            .map_err(|e| Error::io(format!("creating {}", root.display()), e))?;
        Ok(UploadDir {
            root: root.to_path_buf(),
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/<token>/<name>`, or a refusal when the token or name is not of the safe shape.
    pub fn path_of(&self, token: &str, name: &str) -> Result<PathBuf, Refusal> {
        if !is_token(token) {
            return Err(Refusal::not_found(format!("no such slot {token:?}")));
        }
        if !is_safe_name(name) {
            return Err(Refusal::bad_request(format!("invalid file name {name:?}")));
        }
        Ok(self.root.join(token).join(name))
    }

    /// True when the file of this slot exists (or anything else stands at its path).
    pub fn exists(&self, token: &str, name: &str) -> bool {
        self.path_of(token, name)
            .map(|p| fs::symlink_metadata(p).is_ok())
            .unwrap_or(false)
    }

    /// Streams exactly `expected_len` bytes of `body` into `<root>/<token>/<name>`.
    /// A body that is shorter or longer, an existing file, or any I/O failure leaves nothing
    /// behind: the temporary file is removed and the real name is never half-written.
    pub fn receive(
        &self,
        token: &str,
        name: &str,
        expected_len: u64,
        body: &mut dyn Read,
    ) -> Result<(), Outcome> {
        let final_path = self.path_of(token, name)?;
        let dir = self.root.join(token);
        fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        if fs::symlink_metadata(&final_path).is_ok() {
            return Err(exists_refusal(name).into());
        }
        let (temp_path, mut temp) = create_temp_file(&dir)?;
        let result = copy_exact(body, &mut temp, expected_len, &temp_path)
            .and_then(|()| {
                temp.sync_all()
                    .map_err(|e| Error::io(format!("syncing {}", temp_path.display()), e).into())
            })
            .and_then(|()| link_no_overwrite(&temp_path, &final_path, name));
        // The temporary name goes in every case: on success the data lives on under its real name.
        let _ = fs::remove_file(&temp_path);
        result?;
        sync_dir(&dir);
        Ok(())
    }

    /// Opens the file of this slot for reading, or 404.
    pub fn open_stored(&self, token: &str, name: &str) -> Result<StoredFile, Outcome> {
        let path = self.path_of(token, name)?;
        let not_found = || Refusal::not_found(format!("no file {name:?}"));
        let meta = match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() => meta,
            Ok(_) => return Err(not_found().into()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(not_found().into()),
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), e).into()),
        };
        let file =
            File::open(&path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        Ok(StoredFile {
            file,
            len: meta.len(),
        })
    }

    /// Removes the file of a slot (if there) and its token directory when that is left empty.
    pub fn remove(&self, token: &str, name: &str) -> Result<bool, Error> {
        let Ok(path) = self.path_of(token, name) else {
            return Ok(false);
        };
        let removed = match fs::remove_file(&path) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(Error::io(format!("removing {}", path.display()), e)),
        };
        self.remove_dir_if_empty(token);
        Ok(removed)
    }

    /// Removes `<root>/<token>` if it is an empty directory; anything else stays.
    pub fn remove_dir_if_empty(&self, token: &str) -> bool {
        is_token(token) && fs::remove_dir(self.root.join(token)).is_ok()
    }

    /// Modification time of the slot's file, if it exists.
    pub fn modified(&self, token: &str, name: &str) -> Option<SystemTime> {
        let path = self.path_of(token, name).ok()?;
        fs::symlink_metadata(path).ok()?.modified().ok()
    }

    /// Every entry `(token, file name, modification time)` in the token directories, for
    /// cleanup. Directories that are not token-shaped are not ours and are skipped.
    pub fn list(&self) -> Result<Vec<(String, String, SystemTime)>, Error> {
        let read = |dir: &Path| {
            fs::read_dir(dir).map_err(|e| Error::io(format!("listing {}", dir.display()), e))
        };
        let mut found = Vec::new();
        for entry in read(&self.root)?.flatten() {
            let Some(token) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if !is_token(&token) || !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            for file in read(&entry.path())?.flatten() {
                let Some(name) = file.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                if let Ok(modified) = file.metadata().and_then(|m| m.modified()) {
                    found.push((token.clone(), name, modified));
                }
            }
        }
        Ok(found)
    }

    /// Removes one entry found by `list` (a stored file or a stale temporary file).
    pub fn remove_listed(&self, token: &str, name: &str) -> Result<(), Error> {
        if !is_token(token) || name.contains('/') || name == "." || name == ".." {
            return Ok(());
        }
        let path = self.root.join(token).join(name);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("removing {}", path.display()), e)),
        }
    }
}

fn exists_refusal(name: &str) -> Refusal {
    Refusal::new(
        RefusalKind::Conflict,
        format!("{name:?} has been uploaded already; files are never overwritten"),
    )
}

fn create_temp_file(dir: &Path) -> Result<(PathBuf, File), Error> {
    let mut random = [0u8; 8];
    getrandom::fill(&mut random)
        .map_err(|e| Error::io("reading random bytes", io::Error::other(e.to_string())))?;
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let path = dir.join(format!(".{hex}{PART_SUFFIX}"));
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
    Ok((path, file))
}

/// Copies exactly `expected` bytes; one byte more or less is a refusal, not a failure.
fn copy_exact(
    body: &mut dyn Read,
    out: &mut File,
    expected: u64,
    path: &Path,
) -> Result<(), Outcome> {
    let mut reader = BufReader::with_capacity(COPY_BUFFER, body);
    let mut limited = (&mut reader).take(expected);
    let copied = io::copy(&mut limited, out).map_err(|e| {
        if e.kind() == io::ErrorKind::StorageFull {
            Outcome::Failed(Error::io(format!("writing {}", path.display()), e))
        } else {
            // The client went away or the web server aborted the request.
            Outcome::Refused(Refusal::bad_request(format!("upload interrupted: {e}")))
        }
    })?;
    if copied < expected {
        return Err(Refusal::bad_request(format!(
            "body has {copied} bytes, Content-Length said {expected}"
        ))
        .into());
    }
    let mut probe = [0u8; 1];
    match reader.read(&mut probe) {
        Ok(0) => {}
        Ok(_) => {
            return Err(Refusal::bad_request(format!(
                "body is longer than Content-Length {expected}"
            ))
            .into());
        }
        Err(e) => return Err(Refusal::bad_request(format!("upload interrupted: {e}")).into()),
    }
    out.flush()
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    Ok(())
}

fn link_no_overwrite(temp: &Path, final_path: &Path, name: &str) -> Result<(), Outcome> {
    match fs::hard_link(temp, final_path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(exists_refusal(name).into()),
        Err(e) => Err(Error::io(format!("storing {}", final_path.display()), e).into()),
    }
}

/// Makes the new directory entry durable; a failure here is not worth failing the upload for.
fn sync_dir(dir: &Path) {
    if let Ok(handle) = File::open(dir) {
        let _ = handle.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef01234567";

    fn temp_root(tag: &str) -> UploadDir {
        let dir = std::env::temp_dir().join(format!("xhu-files-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        UploadDir::open(&dir).unwrap()
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .map(|r| {
                r.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    #[test]
    fn tokens() {
        assert!(is_token(TOKEN));
        assert!(!is_token(&TOKEN.to_uppercase()));
        assert!(!is_token("../../../../../../../../../../../../../.."));
        assert!(!is_token(&TOKEN[1..]));
    }

    #[test]
    fn receives_exact_length_and_never_overwrites() {
        let up = temp_root("exact");
        up.receive(TOKEN, "a.txt", 5, &mut &b"hello"[..]).unwrap();
        assert_eq!(
            fs::read(up.root().join(TOKEN).join("a.txt")).unwrap(),
            b"hello"
        );
        let again = up.receive(TOKEN, "a.txt", 5, &mut &b"HELLO"[..]);
        assert!(matches!(again, Err(Outcome::Refused(r)) if r.kind == RefusalKind::Conflict));
        assert_eq!(
            fs::read(up.root().join(TOKEN).join("a.txt")).unwrap(),
            b"hello"
        );
        assert_eq!(entries(&up.root().join(TOKEN)), vec!["a.txt"]);
    }

    #[test]
    fn wrong_length_leaves_nothing() {
        let up = temp_root("wrong");
        let short = up.receive(TOKEN, "s.txt", 10, &mut &b"hello"[..]);
        assert!(matches!(short, Err(Outcome::Refused(r)) if r.kind == RefusalKind::BadRequest));
        let long = up.receive(TOKEN, "l.txt", 3, &mut &b"hello"[..]);
        assert!(matches!(long, Err(Outcome::Refused(r)) if r.kind == RefusalKind::BadRequest));
        assert!(entries(&up.root().join(TOKEN)).is_empty());
    }

    #[test]
    fn refuses_unsafe_paths() {
        let up = temp_root("unsafe");
        assert!(up.path_of(TOKEN, "../x").is_err());
        assert!(up.path_of(TOKEN, ".x.part").is_err());
        assert!(up.path_of("..", "x").is_err());
    }
}
