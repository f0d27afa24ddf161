//! The upload directory: the only module that touches files under `upload_root`.
//!
//! Every path is a `SafePath`: either a slot's `<token>/<name>` (a 40-hex token and a name that
//! passed `name::is_safe_name`) or the path of an external-protocol upload under its prefix
//! directory, checked segment by segment. Neither can leave the root or name a dot-file.
//! Uploads the program receives itself are streamed into a temporary dot-file in the target
//! directory, checked for their exact length, fsynced, and hard-linked into place: `link`
//! fails if the name exists, so a file is never overwritten and a half-written file never
//! appears under its real name.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::name::{MAX_NAME_BYTES, is_safe_name};
use crate::refusal::{Error, Outcome, Refusal, RefusalKind};
use crate::store::Slot;

/// Most directory levels an external-protocol path may have below its prefix.
pub const MAX_EXTERNAL_DEPTH: usize = 8;

/// A relative path under the upload root that is known to stay inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafePath {
    segments: Vec<String>,
}

impl std::fmt::Display for SafePath {
    /// The path relative to the upload root.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.segments.join("/"))
    }
}

impl SafePath {
    /// `<token>/<name>` of a slot, or a refusal when either is not of the safe shape.
    pub fn slot(token: &str, name: &str) -> Result<SafePath, Refusal> {
        if !is_token(token) {
            return Err(Refusal::not_found(format!("no such slot {token:?}")));
        }
        if !is_safe_name(name) {
            return Err(Refusal::bad_request(format!("invalid file name {name:?}")));
        }
        Ok(SafePath {
            segments: vec![token.to_string(), name.to_string()],
        })
    }

    /// `<dir>/<segments...>` of an external-protocol upload. `dir` comes from the configuration;
    /// each decoded segment must be a plain name: not empty, no `/` or NUL, not starting with
    /// `.` (no `..`, no hidden or temporary files), at most 255 bytes.
    pub fn external(dir: &str, segments: &[String]) -> Result<SafePath, Refusal> {
        if segments.len() < 2 || segments.len() > MAX_EXTERNAL_DEPTH {
            return Err(Refusal::forbidden(format!(
                "upload path must have 2 to {MAX_EXTERNAL_DEPTH} segments"
            )));
        }
        for segment in segments {
            let bad = segment.is_empty()
                || segment.starts_with('.')
                || segment.contains(['/', '\0'])
                || segment.len() > MAX_NAME_BYTES;
            if bad {
                return Err(Refusal::forbidden(format!(
                    "invalid path segment {segment:?}"
                )));
            }
        }
        let mut all: Vec<String> = dir.split('/').map(str::to_string).collect();
        all.extend(segments.iter().cloned());
        Ok(SafePath { segments: all })
    }

    /// A path as `Display` wrote it (relative to the upload root, as the database records the
    /// uploads of the HMAC protocol), below the configured prefix directory `dir`; `None` when it
    /// is not below `dir` or a segment is not a plain name.
    pub fn stored_under(dir: &str, text: &str) -> Option<SafePath> {
        let rest = text.strip_prefix(dir)?.strip_prefix('/')?;
        let segments: Vec<String> = rest.split('/').map(str::to_string).collect();
        SafePath::external(dir, &segments).ok()
    }

    /// Where the file of a stored slot lives: `<token>/<name>` for the slot API, or
    /// `<area>/<token>/<name>` for the JWT protocol.
    pub fn for_slot(slot: &Slot) -> Result<SafePath, Refusal> {
        SafePath::in_area(slot.area.as_deref(), &slot.token, &slot.name)
    }

    /// `<token>/<name>` (no area: the slot API) or `<area>/<token>/<name>` (the JWT protocol).
    pub fn in_area(area: Option<&str>, token: &str, name: &str) -> Result<SafePath, Refusal> {
        match area {
            None => SafePath::slot(token, name),
            Some(area) => SafePath::external(area, &[token.to_string(), name.to_string()]),
        }
    }

    /// The last segment: the file name.
    pub fn file_name(&self) -> &str {
        self.segments.last().map(String::as_str).unwrap_or("")
    }

    fn under(&self, root: &Path) -> PathBuf {
        let mut path = root.to_path_buf();
        path.extend(&self.segments);
        path
    }

    fn parent_under(&self, root: &Path) -> PathBuf {
        let mut path = root.to_path_buf();
        path.extend(&self.segments[..self.segments.len() - 1]);
        path
    }
}

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

    /// `path` (found under the root) relative to the root, `/`-separated, as `SafePath`'s
    /// `Display` writes it and the database records it.
    pub fn relative(&self, path: &Path) -> String {
        path.strip_prefix(&self.root)
            .unwrap_or(path)
            .display()
            .to_string()
    }

    /// 409 when the file exists (or anything else stands at its path).
    pub fn check_absent(&self, path: &SafePath) -> Result<(), Refusal> {
        if self.exists(path) {
            return Err(already_stored(path.file_name()));
        }
        Ok(())
    }

    /// True when the file exists (or anything else stands at its path).
    pub fn exists(&self, path: &SafePath) -> bool {
        fs::symlink_metadata(path.under(&self.root)).is_ok()
    }

    /// Creates the directory that will hold `path`, for a web server that writes the file but
    /// does not create directories (Apache mod_dav).
    pub fn create_parent(&self, path: &SafePath) -> Result<(), Outcome> {
        self.real_parent_dir(path, true).map(|_| ())
    }

    /// The directory holding `path`, each level of it checked to be a real directory, not a
    /// symbolic link (which could lead out of the root); missing levels are created when
    /// `create` is set. A symlink or file in the way is refused (403).
    fn real_parent_dir(&self, path: &SafePath, create: bool) -> Result<PathBuf, Outcome> {
        let mut dir = self.root.clone();
        for segment in &path.segments[..path.segments.len() - 1] {
            dir.push(segment);
            match fs::symlink_metadata(&dir) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    return Err(Refusal::forbidden(format!(
                        "{segment:?} in the upload directory is not a plain directory"
                    ))
                    .into());
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    match fs::create_dir(&dir) {
                        Ok(()) => {}
                        // Another request made it in the meantime.
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                        Err(e) => {
                            return Err(Error::io(format!("creating {}", dir.display()), e).into());
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(
                        Refusal::not_found(format!("no file {:?}", path.file_name())).into(),
                    );
                }
                Err(e) => return Err(Error::io(format!("reading {}", dir.display()), e).into()),
            }
        }
        Ok(dir)
    }

    /// Streams exactly `expected_len` bytes of `body` into `path`.
    /// A body that is shorter or longer, an existing file, or any I/O failure leaves nothing
    /// behind: the temporary file is removed and the real name is never half-written.
    pub fn receive(
        &self,
        path: &SafePath,
        expected_len: u64,
        body: &mut dyn Read,
    ) -> Result<(), Outcome> {
        let dir = self.real_parent_dir(path, true)?;
        let final_path = dir.join(path.file_name());
        if fs::symlink_metadata(&final_path).is_ok() {
            return Err(already_stored(path.file_name()).into());
        }
        let mut temp = TempFile::create(&dir)?;
        copy_exact(body, &mut temp.file, expected_len, &temp.path)?;
        temp.file
            .sync_all()
            .map_err(|e| Error::io(format!("syncing {}", temp.path.display()), e))?;
        link_no_overwrite(&temp.path, &final_path, path.file_name())?;
        // `temp` goes out of scope here: its name is removed, the data lives on under the real name.
        drop(temp);
        sync_dir(&dir);
        Ok(())
    }

    /// Opens a stored file for reading, or 404.
    pub fn open_stored(&self, path: &SafePath) -> Result<StoredFile, Outcome> {
        let full = self.real_parent_dir(path, false)?.join(path.file_name());
        let not_found = || Refusal::not_found(format!("no file {:?}", path.file_name()));
        let meta = match fs::symlink_metadata(&full) {
            Ok(meta) if meta.is_file() => meta,
            Ok(_) => return Err(not_found().into()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(not_found().into()),
            Err(e) => return Err(Error::io(format!("reading {}", full.display()), e).into()),
        };
        let file =
            File::open(&full).map_err(|e| Error::io(format!("opening {}", full.display()), e))?;
        Ok(StoredFile {
            file,
            len: meta.len(),
        })
    }

    /// Removes the directory that holds (or would hold) `path` if it is empty; anything else stays.
    pub fn remove_parent_if_empty(&self, path: &SafePath) -> bool {
        fs::remove_dir(path.parent_under(&self.root)).is_ok()
    }

    /// Removes the file at `path` (if there) and its directory when that is left empty; true
    /// when a file was removed.
    pub fn remove(&self, path: &SafePath) -> Result<bool, Error> {
        let full = path.under(&self.root);
        let removed = match fs::remove_file(&full) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(Error::io(format!("removing {}", full.display()), e)),
        };
        self.remove_parent_if_empty(path);
        Ok(removed)
    }

    /// Every file in the token directories (the slot API's uploads), for cleanup.
    /// Top-level directories that are not token-shaped are not ours and are skipped.
    pub fn slot_files(&self) -> Result<Vec<Entry>, Error> {
        let mut found = Vec::new();
        for entry in read_dir(&self.root)? {
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if is_dir && entry.file_name().to_str().is_some_and(is_token) {
                collect_files(&entry.path(), 0, &mut found)?;
            }
        }
        Ok(found)
    }

    /// Every file below `<root>/<dir>` (an external protocol's uploads), for cleanup.
    pub fn tree_files(&self, dir: &str) -> Result<Vec<Entry>, Error> {
        let top = self.root.join(dir);
        let mut found = Vec::new();
        if top.is_dir() {
            collect_files(&top, MAX_EXTERNAL_DEPTH, &mut found)?;
        }
        Ok(found)
    }

    /// Removes a file found by `slot_files`/`tree_files`, then its parent directories as long
    /// as they are empty, up to (not including) `<root>/<stop_at>` (`""`: the root).
    pub fn remove_entry(&self, entry: &Entry, stop_at: &str) -> Result<(), Error> {
        match fs::remove_file(&entry.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("removing {}", entry.path.display()), e)),
        }
        self.remove_empty_parents(&entry.path, stop_at);
        Ok(())
    }

    /// Removes the file at `path` (if there), then its parent directories as long as they are
    /// empty, up to (not including) `<root>/<stop_at>`; true when a file was removed.
    pub fn remove_in(&self, path: &SafePath, stop_at: &str) -> Result<bool, Error> {
        let full = path.under(&self.root);
        let removed = match fs::remove_file(&full) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(Error::io(format!("removing {}", full.display()), e)),
        };
        self.remove_empty_parents(&full, stop_at);
        Ok(removed)
    }

    fn remove_empty_parents(&self, file: &Path, stop_at: &str) {
        let stop = self.root.join(stop_at);
        let mut dir = file.parent();
        while let Some(current) = dir {
            if current == stop
                || !current.starts_with(&self.root)
                || fs::remove_dir(current).is_err()
            {
                break;
            }
            dir = current.parent();
        }
    }
}

/// A file found under the upload root by cleanup's walks.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Full path (under the root; found by walking it, symlinks not followed).
    pub path: PathBuf,
    /// When the inode last changed (ctime, unix seconds): set by the kernel when the file was
    /// created, written or renamed into place. Unlike mtime, no client can choose it (nginx's
    /// `dav_methods PUT` copies the request's `Date` header into mtime).
    pub changed: i64,
    /// Its length in bytes.
    pub len: u64,
}

impl Entry {
    /// The file name.
    pub fn name(&self) -> &str {
        self.path.file_name().and_then(|n| n.to_str()).unwrap_or("")
    }

    /// The name of the directory holding the file (the token, for slot uploads).
    pub fn parent_name(&self) -> &str {
        self.path
            .parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .unwrap_or("")
    }

    /// True for the temporary file of an upload in progress (or interrupted).
    pub fn is_partial(&self) -> bool {
        let name = self.name();
        name.starts_with('.') && name.ends_with(PART_SUFFIX)
    }
}

fn read_dir(dir: &Path) -> Result<Vec<fs::DirEntry>, Error> {
    let entries =
        fs::read_dir(dir).map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
    Ok(entries.flatten().collect())
}

/// Files below `dir`, descending at most `depth` more levels; symlinks are neither followed
/// nor listed.
fn collect_files(dir: &Path, depth: usize, found: &mut Vec<Entry>) -> Result<(), Error> {
    for entry in read_dir(dir)? {
        let Ok(file_type) = entry.file_type() else {
            continue;
        };
        if file_type.is_dir() {
            if depth > 0 {
                collect_files(&entry.path(), depth - 1, found)?;
            }
        } else if file_type.is_file()
            && let Ok(meta) = entry.metadata()
        {
            found.push(Entry {
                path: entry.path(),
                changed: meta.ctime(),
                len: meta.len(),
            });
        }
    }
    Ok(())
}

/// 409: a file is never overwritten.
pub fn already_stored(name: &str) -> Refusal {
    Refusal::new(
        RefusalKind::Conflict,
        format!("{name:?} has been uploaded already; files are never overwritten"),
    )
}

/// The temporary file of an upload in progress: a dot-file in the target directory, removed
/// when dropped — on success after it was linked into place, on a refusal or error, and also
/// when the FastCGI crate panics mid-body (the request runs under `catch_unwind`, so drops run).
struct TempFile {
    path: PathBuf,
    file: File,
}

impl TempFile {
    fn create(dir: &Path) -> Result<TempFile, Error> {
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
        Ok(TempFile { path, file })
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
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
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(already_stored(name).into()),
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
    fn symlinked_directories_are_refused() {
        let up = temp_root("symlink");
        let outside = up.root().with_extension("outside");
        fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, up.root().join(TOKEN)).unwrap();
        let refused = up.receive(&slot("a.txt"), 2, &mut &b"hi"[..]);
        assert!(matches!(refused, Err(Outcome::Refused(r)) if r.kind == RefusalKind::Forbidden));
        assert!(fs::read_dir(&outside).unwrap().next().is_none());
        fs::write(outside.join("b.txt"), b"secret").unwrap();
        assert!(up.open_stored(&slot("b.txt")).is_err());
    }

    #[test]
    fn a_panicking_body_leaves_no_temporary_file() {
        struct Exploding;
        impl Read for Exploding {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                panic!("the FastCGI crate gave up mid-body");
            }
        }
        let up = temp_root("panic");
        let path = slot("p.txt");
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = up.receive(&path, 5, &mut Exploding);
        }));
        assert!(result.is_err());
        assert!(
            fs::read_dir(up.root().join(TOKEN))
                .unwrap()
                .next()
                .is_none()
        );
    }

    #[test]
    fn tokens() {
        assert!(is_token(TOKEN));
        assert!(!is_token(&TOKEN.to_uppercase()));
        assert!(!is_token("../../../../../../../../../../../../../.."));
        assert!(!is_token(&TOKEN[1..]));
    }

    fn slot(name: &str) -> SafePath {
        SafePath::slot(TOKEN, name).unwrap()
    }

    #[test]
    fn receives_exact_length_and_never_overwrites() {
        let up = temp_root("exact");
        up.receive(&slot("a.txt"), 5, &mut &b"hello"[..]).unwrap();
        assert_eq!(
            fs::read(up.root().join(TOKEN).join("a.txt")).unwrap(),
            b"hello"
        );
        let again = up.receive(&slot("a.txt"), 5, &mut &b"HELLO"[..]);
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
        let short = up.receive(&slot("s.txt"), 10, &mut &b"hello"[..]);
        assert!(matches!(short, Err(Outcome::Refused(r)) if r.kind == RefusalKind::BadRequest));
        let long = up.receive(&slot("l.txt"), 3, &mut &b"hello"[..]);
        assert!(matches!(long, Err(Outcome::Refused(r)) if r.kind == RefusalKind::BadRequest));
        assert!(entries(&up.root().join(TOKEN)).is_empty());
    }

    #[test]
    fn refuses_unsafe_paths() {
        assert!(SafePath::slot(TOKEN, "../x").is_err());
        assert!(SafePath::slot(TOKEN, ".x.part").is_err());
        assert!(SafePath::slot("..", "x").is_err());
        let ext = |segments: &[&str]| {
            let owned: Vec<String> = segments.iter().map(|s| s.to_string()).collect();
            SafePath::external("share", &owned)
        };
        assert!(ext(&["uuid", "my file (1).jpg"]).is_ok());
        assert!(ext(&["abc", "def", "Отчёт.pdf"]).is_ok());
        assert!(ext(&["..", "x"]).is_err());
        assert!(ext(&["a", ".x"]).is_err());
        assert!(ext(&["a", "b/c"]).is_err());
        assert!(ext(&["a", "b\0c"]).is_err());
        assert!(ext(&["a", ""]).is_err());
        assert!(ext(&["x"]).is_err());
    }

    #[test]
    fn external_uploads_nest() {
        let up = temp_root("external");
        let path = SafePath::external("share", &["u1".into(), "a b.txt".into()]).unwrap();
        up.receive(&path, 2, &mut &b"hi"[..]).unwrap();
        assert_eq!(fs::read(up.root().join("share/u1/a b.txt")).unwrap(), b"hi");
        assert!(up.exists(&path));
    }
}
