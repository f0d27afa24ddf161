//! The upload directory: the only module that touches files under `upload_root`.
//!
//! Every path is a `SafePath`: either a slot's `<token>/<name>` (a 40-hex token and a name that
//! passed `name::is_safe_name`) or the path of a signed-protocol upload (HMAC, JWT) under its
//! prefix directory, checked segment by segment. Neither can leave the root or name a dot-file.
//!
//! Below the root nothing is looked up by path: each level is opened from the one above with
//! `openat(O_DIRECTORY | O_NOFOLLOW)` and files with `O_NOFOLLOW`, so a symbolic link planted
//! anywhere below the root (or swapped in between a check and a use) is never followed — not by
//! a download, an upload, nor cleanup's walks and removals.
//!
//! Uploads the program receives itself are streamed into an unnamed file (`O_TMPFILE`) in the
//! target directory, checked for their exact length, fsynced, and linked into place: `linkat`
//! fails if the name exists, so a file is never overwritten and a half-written file never
//! appears under its real name; a process killed mid-upload (mod_cgid sends SIGTERM when the
//! client goes away) leaves nothing behind. Where `O_TMPFILE` or `/proc` is missing the
//! temporary file is a named dot-file (`.<random>.part`), removed on every way out but a kill;
//! cleanup removes the ones a kill left.
//!
//! Not here: which file may be written or served (each protocol's `allow_put` and `serve`,
//! and `cleanup`), nor the database: a path is built from names, never from a record.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, linkat, unlinkat};

use crate::crypto::random_hex;
use crate::name::{MAX_NAME_BYTES, is_safe_name};
use crate::refusal::{Error, Outcome, Refusal, RefusalKind};

/// Most directory levels the path of a signed-protocol upload (HMAC, JWT) may have below its
/// prefix directory.
pub const MAX_SIGNED_DEPTH: usize = 8;

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

    /// `<dir>/<segments...>` of a signed-protocol upload (HMAC, JWT). `dir` comes from the
    /// configuration; each decoded segment must be a plain name: not empty, no `/` or NUL, not
    /// starting with `.` (no `..`, no hidden or temporary files), at most 255 bytes.
    pub fn under(dir: &str, segments: &[String]) -> Result<SafePath, Refusal> {
        if segments.len() < 2 || segments.len() > MAX_SIGNED_DEPTH {
            return Err(Refusal::forbidden(format!(
                "upload path must have 2 to {MAX_SIGNED_DEPTH} segments"
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
        SafePath::under(dir, &segments).ok()
    }

    /// Where the file of a stored slot lives: `<token>/<name>` (no area: the slot API) or
    /// `<area>/<token>/<name>` (the JWT protocol), from the slot's recorded `area`, `token`
    /// and `name`.
    pub fn in_area(area: Option<&str>, token: &str, name: &str) -> Result<SafePath, Refusal> {
        match area {
            None => SafePath::slot(token, name),
            Some(area) => SafePath::under(area, &[token.to_string(), name.to_string()]),
        }
    }

    /// The last segment: the file name.
    pub fn file_name(&self) -> &str {
        self.segments.last().map(String::as_str).unwrap_or("")
    }

    /// The directories above the file, from the root down.
    fn parents(&self) -> &[String] {
        &self.segments[..self.segments.len() - 1]
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
    /// Last modification, in seconds since the epoch: what `ETag` and `Last-Modified` are
    /// made of, as nginx makes them.
    pub modified: i64,
}

/// Why a directory below the root could not be opened.
enum DirError {
    /// A level is missing (and was not to be created).
    Missing,
    /// A level is a symbolic link, a file or anything else but a plain directory.
    NotPlain(String),
    /// The file system said no.
    Failed(Error),
}

impl DirError {
    /// The answer to a request: a missing level means the file is not there (404).
    fn into_outcome(self, file_name: &str) -> Outcome {
        match self {
            DirError::Missing => Refusal::not_found(format!("no file {file_name:?}")).into(),
            DirError::NotPlain(segment) => Refusal::forbidden(format!(
                "{segment:?} in the upload directory is not a plain directory"
            ))
            .into(),
            DirError::Failed(error) => error.into(),
        }
    }
}

/// Flags of every directory opened below the root: never through a symbolic link.
fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

/// The entry `name` of `dir` as it is, a symbolic link not followed.
fn stat_at(dir: &OwnedFd, name: &str) -> nix::Result<FileStat> {
    fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
}

fn is_kind(stat: &FileStat, kind: SFlag) -> bool {
    SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == kind
}

impl UploadDir {
    /// The upload directory at `root`; created (with parents) if missing.
    pub fn open(root: &Path) -> Result<UploadDir, Error> {
        std::fs::create_dir_all(root)
            .map_err(|e| Error::io(format!("creating {}", root.display()), e))?;
        Ok(UploadDir {
            root: root.to_path_buf(),
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// 409 when the file exists (or anything else stands at its path).
    pub fn check_absent(&self, path: &SafePath) -> Result<(), Refusal> {
        if self.exists(path) {
            return Err(Refusal::already_stored(path.file_name()));
        }
        Ok(())
    }

    /// True when the file exists, or anything else stands at its path — also when a directory
    /// above it is not a plain directory (a web server writing there would follow the link).
    pub fn exists(&self, path: &SafePath) -> bool {
        match self.open_dir(path.parents(), false) {
            Ok(dir) => stat_at(&dir, path.file_name()) != Err(Errno::ENOENT),
            Err(DirError::Missing) => false,
            Err(_) => true,
        }
    }

    /// Creates the directory that will hold `path`, for a web server that writes the file but
    /// does not create directories (Apache mod_dav).
    pub fn create_parent(&self, path: &SafePath) -> Result<(), Outcome> {
        self.make_parent(path.parents())
            .map_err(|e| e.into_outcome(path.file_name()))
    }

    /// `open_dir(segments, true)` without opening the last level: the caller needs it made,
    /// not opened. A new slot's directory costs one `mkdirat` instead of a failed `openat`, the
    /// `mkdirat`, another `openat` and its `close` (every PUT the web server writes makes one).
    fn make_parent(&self, segments: &[String]) -> Result<(), DirError> {
        let Some((last, above)) = segments.split_last() else {
            return Ok(()); // the root itself: it exists (`open`)
        };
        let dir = self.open_dir(above, true)?;
        let made = mkdirat(&dir, last.as_str(), Mode::from_bits_truncate(0o777));
        match made {
            Ok(()) => Ok(()),
            // There already (an earlier PUT, another request meanwhile): it must be a plain
            // directory, as `open_dir` would find it (O_NOFOLLOW | O_DIRECTORY).
            Err(Errno::EEXIST) => match stat_at(&dir, last) {
                Ok(stat) if is_kind(&stat, SFlag::S_IFDIR) => Ok(()),
                Ok(_) => Err(DirError::NotPlain(last.clone())),
                Err(e) => Err(self.dir_failure("opening", segments, e)),
            },
            Err(e) => Err(self.dir_failure("creating", segments, e)),
        }
    }

    /// The failure to `act` on `<root>/<segments...>`.
    fn dir_failure(&self, act: &str, segments: &[String], errno: Errno) -> DirError {
        let shown: PathBuf = segments.iter().fold(self.root.clone(), |p, s| p.join(s));
        DirError::Failed(Error::io(
            format!("{act} {}", shown.display()),
            errno.into(),
        ))
    }

    /// The root, opened as a directory (the root itself may be reached through a link: the
    /// administrator chose it).
    fn open_root(&self) -> Result<OwnedFd, Error> {
        openat(
            AT_FDCWD,
            &self.root,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io(format!("opening {}", self.root.display()), e.into()))
    }

    /// The directory `<root>/<segments...>`, each level opened from the one above without
    /// following a symbolic link; missing levels are created when `create` is set.
    fn open_dir(&self, segments: &[String], create: bool) -> Result<OwnedFd, DirError> {
        let mut dir = self.open_root().map_err(DirError::Failed)?;
        for (level, segment) in segments.iter().enumerate() {
            let opened = match openat(&dir, segment.as_str(), dir_flags(), Mode::empty()) {
                Err(Errno::ENOENT) if create => {
                    // The usual 0777 less the umask, as `mkdir` does: the web server must be
                    // able to walk in and serve the files.
                    match mkdirat(&dir, segment.as_str(), Mode::from_bits_truncate(0o777)) {
                        // EEXIST: another request made it in the meantime.
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => {
                            return Err(self.dir_failure("creating", &segments[..=level], e));
                        }
                    }
                    openat(&dir, segment.as_str(), dir_flags(), Mode::empty())
                }
                other => other,
            };
            dir = match opened {
                Ok(next) => next,
                Err(Errno::ENOENT) => return Err(DirError::Missing),
                // ELOOP: a symbolic link (O_NOFOLLOW); ENOTDIR: a file or a link to one.
                Err(Errno::ELOOP | Errno::ENOTDIR) => {
                    return Err(DirError::NotPlain(segment.clone()));
                }
                Err(e) => return Err(self.dir_failure("opening", &segments[..=level], e)),
            };
        }
        Ok(dir)
    }

    /// Streams exactly `expected_len` bytes of `body` into `path`.
    /// A body that is shorter or longer, an existing file, or any I/O failure leaves nothing
    /// behind: the temporary file is unnamed (or removed) and the real name never half-written.
    pub fn receive(
        &self,
        path: &SafePath,
        expected_len: u64,
        body: &mut dyn Read,
    ) -> Result<(), Outcome> {
        let name = path.file_name();
        let dir = self
            .open_dir(path.parents(), true)
            .map_err(|e| e.into_outcome(name))?;
        if stat_at(&dir, name) != Err(Errno::ENOENT) {
            return Err(Refusal::already_stored(name).into());
        }
        let shown = self.root.join(path.to_string());
        let mut temp = TempFile::create(&dir, &shown)?;
        copy_exact(body, &mut temp.file, expected_len, &shown)?;
        temp.file
            .sync_all()
            .map_err(|e| Error::io(format!("syncing {}", shown.display()), e))?;
        temp.link_as(name, &shown)?;
        // `temp` goes out of scope here: a named temporary file loses its name, the data lives
        // on under the real name.
        drop(temp);
        // Makes the new directory entry durable; a failure here is not worth failing for.
        let _ = File::from(dir).sync_all();
        Ok(())
    }

    /// Opens a stored file for reading, or 404 (also for a symbolic link or anything else
    /// that is not a regular file).
    pub fn open_stored(&self, path: &SafePath) -> Result<StoredFile, Outcome> {
        let name = path.file_name();
        let not_found = || Outcome::from(Refusal::not_found(format!("no file {name:?}")));
        let dir = self
            .open_dir(path.parents(), false)
            .map_err(|e| e.into_outcome(name))?;
        // O_NONBLOCK: opening a FIFO someone planted must not wait for a writer.
        let flags = OFlag::O_RDONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_CLOEXEC
            | OFlag::O_NOCTTY
            | OFlag::O_NONBLOCK;
        let fd = match openat(&dir, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT | Errno::ELOOP | Errno::ENXIO | Errno::ENOTDIR) => {
                return Err(not_found());
            }
            Err(e) => {
                let context = format!("opening {}", self.root.join(path.to_string()).display());
                return Err(Error::io(context, e.into()).into());
            }
        };
        let stat = fstat(&fd).map_err(|e| Error::io(format!("reading {name:?}"), e.into()))?;
        if !is_kind(&stat, SFlag::S_IFREG) {
            return Err(not_found());
        }
        Ok(StoredFile {
            file: File::from(fd),
            len: u64::try_from(stat.st_size).unwrap_or(0),
            modified: stat.st_mtime,
        })
    }

    /// `path` (found under the root) relative to the root, `/`-separated, as `SafePath`'s
    /// `Display` writes it and the database records it.
    pub fn relative(&self, path: &Path) -> String {
        path.strip_prefix(&self.root)
            .unwrap_or(path)
            .display()
            .to_string()
    }

    /// Removes the file at `path` (if there), then its parent directories as long as they are
    /// empty, up to (not including) `<root>/<stop_at>`; true when a file was removed.
    pub fn remove_in(&self, path: &SafePath, stop_at: &str) -> Result<bool, Error> {
        let dir = match self.open_dir(path.parents(), false) {
            Ok(dir) => dir,
            Err(DirError::Failed(error)) => return Err(error),
            Err(_) => return Ok(false),
        };
        let removed = match unlinkat(&dir, path.file_name(), UnlinkatFlags::NoRemoveDir) {
            Ok(()) => true,
            Err(Errno::ENOENT) => false,
            Err(e) => {
                let context = format!("removing {}", self.root.join(path.to_string()).display());
                return Err(Error::io(context, e.into()));
            }
        };
        self.remove_empty_parents(path.parents(), stop_at);
        Ok(removed)
    }

    /// Removes the directories `parents` (a path below the root, level by level) from the
    /// deepest up as long as they are empty, stopping at `<root>/<stop_at>` (`""`: the root).
    fn remove_empty_parents(&self, parents: &[String], stop_at: &str) {
        let stop = if stop_at.is_empty() {
            0
        } else {
            stop_at.split('/').count()
        };
        for level in (stop..parents.len()).rev() {
            let removed = self.open_dir(&parents[..level], false).is_ok_and(|above| {
                unlinkat(&above, parents[level].as_str(), UnlinkatFlags::RemoveDir).is_ok()
            });
            if !removed {
                break;
            }
        }
    }

    /// Removes the directory that holds (or would hold) `path` if it is empty; anything else stays.
    pub fn remove_parent_if_empty(&self, path: &SafePath) -> bool {
        let parents = path.parents();
        let Some((last, above)) = parents.split_last() else {
            return false;
        };
        self.open_dir(above, false)
            .is_ok_and(|dir| unlinkat(&dir, last.as_str(), UnlinkatFlags::RemoveDir).is_ok())
    }

    /// Removes the file at `path` (if there) and its directory when that is left empty; true
    /// when a file was removed.
    pub fn remove(&self, path: &SafePath) -> Result<bool, Error> {
        let parents = path.parents();
        let above = parents[..parents.len().saturating_sub(1)].join("/");
        self.remove_in(path, &above)
    }

    /// Every file in the token directories (the slot API's uploads), for cleanup.
    /// Top-level directories that are not token-shaped are not ours and are skipped.
    pub fn slot_files(&self) -> Result<Vec<Entry>, Error> {
        let root = self.open_root()?;
        let mut found = Vec::new();
        for name in list(&root, &self.root)? {
            if !is_token(&name) {
                continue;
            }
            match openat(&root, name.as_str(), dir_flags(), Mode::empty()) {
                Ok(dir) => collect_files(&dir, &self.root.join(&name), 0, &mut found)?,
                // A link or a file with a token's name: not ours to walk.
                Err(_) => continue,
            }
        }
        Ok(found)
    }

    /// Every file below `<root>/<dir>` (a signed protocol's uploads), for cleanup.
    pub fn tree_files(&self, dir: &str) -> Result<Vec<Entry>, Error> {
        let segments: Vec<String> = dir.split('/').map(str::to_string).collect();
        let mut found = Vec::new();
        match self.open_dir(&segments, false) {
            Ok(top) => collect_files(&top, &self.root.join(dir), MAX_SIGNED_DEPTH, &mut found)?,
            Err(DirError::Failed(error)) => return Err(error),
            Err(_) => {}
        }
        Ok(found)
    }

    /// Removes a file found by `slot_files`/`tree_files`, then its parent directories as long
    /// as they are empty, up to (not including) `<root>/<stop_at>` (`""`: the root). The path
    /// is opened level by level again: a directory swapped for a link since the walk stops it.
    pub fn remove_entry(&self, entry: &Entry, stop_at: &str) -> Result<(), Error> {
        let Ok(relative) = entry.path.strip_prefix(&self.root) else {
            return Ok(());
        };
        let segments: Vec<String> = relative
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        let Some((file, parents)) = segments.split_last() else {
            return Ok(());
        };
        let dir = match self.open_dir(parents, false) {
            Ok(dir) => dir,
            Err(DirError::Failed(error)) => return Err(error),
            Err(_) => return Ok(()),
        };
        match unlinkat(&dir, file.as_str(), UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => {
                let context = format!("removing {}", entry.path.display());
                return Err(Error::io(context, e.into()));
            }
        }
        self.remove_empty_parents(parents, stop_at);
        Ok(())
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

/// The names in `dir` (not `.` and `..`; names that are not UTF-8 are not ours and skipped).
fn list(dir: &OwnedFd, shown: &Path) -> Result<Vec<String>, Error> {
    let context = || format!("listing {}", shown.display());
    let handle = dir.try_clone().map_err(|e| Error::io(context(), e))?;
    let listing = nix::dir::Dir::from_fd(handle).map_err(|e| Error::io(context(), e.into()))?;
    let mut names = Vec::new();
    for entry in listing.into_iter().flatten() {
        let bytes = entry.file_name().to_bytes();
        if bytes == b"." || bytes == b".." {
            continue;
        }
        if let Ok(name) = std::str::from_utf8(bytes) {
            names.push(name.to_string());
        }
    }
    Ok(names)
}

/// Files below `dir` (shown as `shown`), descending at most `depth` more levels; symlinks are
/// neither followed nor listed.
fn collect_files(
    dir: &OwnedFd,
    shown: &Path,
    depth: usize,
    found: &mut Vec<Entry>,
) -> Result<(), Error> {
    for name in list(dir, shown)? {
        let Ok(stat) = stat_at(dir, &name) else {
            continue;
        };
        if is_kind(&stat, SFlag::S_IFDIR) {
            if depth > 0
                && let Ok(sub) = openat(dir, name.as_str(), dir_flags(), Mode::empty())
            {
                collect_files(&sub, &shown.join(&name), depth - 1, found)?;
            }
        } else if is_kind(&stat, SFlag::S_IFREG) {
            found.push(Entry {
                path: shown.join(&name),
                changed: stat.st_ctime,
                len: u64::try_from(stat.st_size).unwrap_or(0),
            });
        }
    }
    Ok(())
}

/// The temporary file of an upload in progress, in the target directory.
///
/// Preferably unnamed (`O_TMPFILE`): it has no name until `link_as` gives it its real one, so
/// nothing is left however the process ends. Linking it needs its `/proc/self/fd` path
/// (`AT_EMPTY_PATH` would need a capability). Where either is missing it is a named dot-file,
/// removed when dropped — after the link, on a refusal or error, and when the FastCGI crate
/// panics mid-body (requests run under `catch_unwind`, so drops run) — only a kill leaves it,
/// for cleanup.
struct TempFile<'dir> {
    dir: BorrowedFd<'dir>,
    /// The dot-name of a named temporary file; `None` for an unnamed one.
    name: Option<String>,
    file: File,
}

impl<'dir> TempFile<'dir> {
    fn create(dir: &'dir OwnedFd, shown: &Path) -> Result<TempFile<'dir>, Error> {
        // Same mode as any created file: 0666 less the umask (the web server serves it).
        let mode = Mode::from_bits_truncate(0o666);
        if Path::new("/proc/self/fd").is_dir() {
            let flags = OFlag::O_TMPFILE | OFlag::O_WRONLY | OFlag::O_CLOEXEC;
            match openat(dir, ".", flags, mode) {
                Ok(fd) => {
                    return Ok(TempFile {
                        dir: dir.as_fd(),
                        name: None,
                        file: File::from(fd),
                    });
                }
                // The file system (or kernel) has no O_TMPFILE: fall back to a named file.
                Err(Errno::EOPNOTSUPP | Errno::EISDIR | Errno::EINVAL) => {}
                Err(e) => {
                    let context = format!("creating a temporary file for {}", shown.display());
                    return Err(Error::io(context, e.into()));
                }
            }
        }
        TempFile::named(dir, shown)
    }

    /// The fallback: a named dot-file.
    fn named(dir: &'dir OwnedFd, shown: &Path) -> Result<TempFile<'dir>, Error> {
        let mode = Mode::from_bits_truncate(0o666);
        let name = format!(".{}{PART_SUFFIX}", random_hex(16)?);
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(dir, name.as_str(), flags, mode)
            .map_err(|e| Error::io(format!("creating {name} for {}", shown.display()), e.into()))?;
        Ok(TempFile {
            dir: dir.as_fd(),
            name: Some(name),
            file: File::from(fd),
        })
    }

    /// Gives the finished file its real name; 409 if that name was taken in the meantime.
    fn link_as(&self, final_name: &str, shown: &Path) -> Result<(), Outcome> {
        let linked = match &self.name {
            Some(temp) => linkat(
                self.dir,
                temp.as_str(),
                self.dir,
                final_name,
                AtFlags::empty(),
            ),
            None => {
                let proc_path = format!("/proc/self/fd/{}", self.file.as_raw_fd());
                linkat(
                    AT_FDCWD,
                    OsStr::from_bytes(proc_path.as_bytes()),
                    self.dir,
                    final_name,
                    AtFlags::AT_SYMLINK_FOLLOW,
                )
            }
        };
        match linked {
            Ok(()) => Ok(()),
            Err(Errno::EEXIST) => Err(Refusal::already_stored(final_name).into()),
            // The directory was removed while the body was on its way (the slot was purged or
            // given up; an unnamed temporary file does not keep a directory from looking empty).
            Err(Errno::ENOENT) => Err(Refusal::new(
                RefusalKind::Gone,
                format!("the place of {final_name:?} was removed while it was being sent"),
            )
            .into()),
            Err(e) => Err(Error::io(format!("storing {}", shown.display()), e.into()).into()),
        }
    }
}

impl Drop for TempFile<'_> {
    fn drop(&mut self) {
        if let Some(name) = &self.name {
            let _ = unlinkat(self.dir, name.as_str(), UnlinkatFlags::NoRemoveDir);
        }
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

#[cfg(test)]
mod tests {
    use std::fs;

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
    fn create_parent_makes_a_plain_directory_or_finds_one_and_refuses_anything_else() {
        let up = temp_root("parent");
        let forbidden = |r: Result<(), Outcome>| matches!(r, Err(Outcome::Refused(r)) if r.kind == RefusalKind::Forbidden);
        // Made, then found made (a second PUT of the slot, another request meanwhile).
        up.create_parent(&slot("a.txt")).unwrap();
        assert!(up.root().join(TOKEN).is_dir());
        up.create_parent(&slot("a.txt")).unwrap();
        // Levels above are made too (the HMAC protocol's paths).
        let deep = SafePath::under("share", &["x".into(), "y".into(), "f.txt".into()]).unwrap();
        up.create_parent(&deep).unwrap();
        assert!(up.root().join("share/x/y").is_dir());
        // A link or a file where the directory should be: refused, nothing made through it.
        let outside = up.root().with_extension("outside-parent");
        fs::create_dir_all(&outside).unwrap();
        let other = "b".repeat(TOKEN_LEN);
        std::os::unix::fs::symlink(&outside, up.root().join(&other)).unwrap();
        assert!(forbidden(
            up.create_parent(&SafePath::slot(&other, "c.txt").unwrap())
        ));
        let third = "c".repeat(TOKEN_LEN);
        fs::write(up.root().join(&third), b"").unwrap();
        assert!(forbidden(
            up.create_parent(&SafePath::slot(&third, "d.txt").unwrap())
        ));
        std::os::unix::fs::symlink(&outside, up.root().join("share/x/link")).unwrap();
        let linked = SafePath::under(
            "share",
            &["x".into(), "link".into(), "e".into(), "f".into()],
        );
        assert!(forbidden(up.create_parent(&linked.unwrap())));
        assert!(fs::read_dir(&outside).unwrap().next().is_none());
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
            SafePath::under("share", &owned)
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
        let path = SafePath::under("share", &["u1".into(), "a b.txt".into()]).unwrap();
        up.receive(&path, 2, &mut &b"hi"[..]).unwrap();
        assert_eq!(fs::read(up.root().join("share/u1/a b.txt")).unwrap(), b"hi");
        assert!(up.exists(&path));
    }

    #[test]
    fn a_symlinked_file_is_not_served() {
        let up = temp_root("symfile");
        let outside = up.root().with_extension("outside-file");
        fs::write(&outside, b"secret").unwrap();
        fs::create_dir_all(up.root().join(TOKEN)).unwrap();
        std::os::unix::fs::symlink(&outside, up.root().join(TOKEN).join("l.txt")).unwrap();
        let refused = up.open_stored(&slot("l.txt"));
        assert!(matches!(refused, Err(Outcome::Refused(r)) if r.kind == RefusalKind::NotFound));
        // ...nor counted as absent (a web server writing there would follow it).
        assert!(up.exists(&slot("l.txt")));
    }

    #[test]
    fn a_fifo_is_not_served_and_does_not_block() {
        let up = temp_root("fifo");
        fs::create_dir_all(up.root().join(TOKEN)).unwrap();
        let fifo = up.root().join(TOKEN).join("f.txt");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o644)).unwrap();
        assert!(up.open_stored(&slot("f.txt")).is_err());
    }

    #[test]
    fn an_upload_in_progress_has_no_name() {
        // Reading the body, the directory holds nothing yet (with O_TMPFILE): a killed
        // process leaves nothing behind.
        struct Watch<'a>(&'a Path, Vec<Vec<String>>, &'a [u8]);
        impl Read for Watch<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.1.push(entries(self.0));
                let n = self.2.len().min(buf.len()).min(1);
                buf[..n].copy_from_slice(&self.2[..n]);
                self.2 = &self.2[n..];
                Ok(n)
            }
        }
        let up = temp_root("unnamed");
        let dir = up.root().join(TOKEN);
        let mut watch = Watch(&dir, Vec::new(), b"abc");
        up.receive(&slot("u.txt"), 3, &mut watch).unwrap();
        assert!(watch.1.iter().all(|seen| seen.is_empty()), "{:?}", watch.1);
        assert_eq!(entries(&dir), vec!["u.txt"]);
        assert_eq!(fs::read(dir.join("u.txt")).unwrap(), b"abc");
    }

    #[test]
    fn cleanup_walks_do_not_follow_links() {
        let up = temp_root("walks");
        let outside = up.root().with_extension("outside-walk");
        fs::create_dir_all(outside.join("sub")).unwrap();
        fs::write(outside.join("sub/old.txt"), b"not ours").unwrap();
        // A token-shaped link, and an external area that is a link.
        std::os::unix::fs::symlink(outside.join("sub"), up.root().join(TOKEN)).unwrap();
        std::os::unix::fs::symlink(&outside, up.root().join("share")).unwrap();
        assert!(up.slot_files().unwrap().is_empty());
        assert!(up.tree_files("share").unwrap().is_empty());
        // An entry whose directory was swapped for a link after the walk is not removed.
        let entry = Entry {
            path: up.root().join(TOKEN).join("old.txt"),
            changed: 0,
            len: 0,
        };
        up.remove_entry(&entry, "").unwrap();
        assert!(up.remove(&slot("old.txt")).is_ok_and(|removed| !removed));
        assert!(outside.join("sub/old.txt").exists());
    }

    #[test]
    fn cleanup_removes_files_and_empty_directories() {
        let up = temp_root("remove");
        let path = SafePath::under("share", &["a".into(), "b".into(), "c.txt".into()]).unwrap();
        up.receive(&path, 2, &mut &b"hi"[..]).unwrap();
        let found = up.tree_files("share").unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].path, up.root().join("share/a/b/c.txt"));
        up.remove_entry(&found[0], "share").unwrap();
        assert!(!up.root().join("share/a").exists());
        assert!(up.root().join("share").is_dir());
    }

    #[test]
    fn the_named_fallback_leaves_only_the_real_name() {
        let up = temp_root("named");
        let dir = up.open_dir(&[TOKEN.to_string()], true).ok().unwrap();
        let shown = up.root().join(TOKEN);
        let mut temp = TempFile::named(&dir, &shown).unwrap();
        temp.file.write_all(b"hi").unwrap();
        assert!(entries(&shown)[0].ends_with(PART_SUFFIX));
        temp.link_as("n.txt", &shown).unwrap();
        drop(temp);
        assert_eq!(entries(&shown), vec!["n.txt"]);
        let refused = TempFile::named(&dir, &shown).unwrap();
        assert!(
            matches!(refused.link_as("n.txt", &shown), Err(Outcome::Refused(r)) if r.kind == RefusalKind::Conflict)
        );
        drop(refused);
        assert_eq!(entries(&shown), vec!["n.txt"]);
    }
}
