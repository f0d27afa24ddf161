//! The normal "no" of a decision, and the `Error` type for what went wrong on our side.
//!
//! A `Refusal` is not a failure: it is an answer (status + one line for the client) that the
//! request path returns when input is bad or a rule says no. `Error` is for I/O and database
//! failures; it carries the operation or path it concerns and becomes a 500 (or 507 when the
//! disk is full, 503 when the database is busy or away) with a generic message, the detail
//! going only to the log. Which database error is which is the store's to say, not this module's.

use std::fmt;

/// Why a request was refused; each kind maps to one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    BadRequest,
    Unauthorized,
    QuotaExceeded,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    Gone,
    LengthRequired,
    TooLarge,
    UnsupportedMediaType,
}

impl RefusalKind {
    /// The HTTP status code and reason phrase for this kind.
    pub fn status(self) -> u16 {
        match self {
            RefusalKind::BadRequest => 400,
            RefusalKind::Unauthorized => 401,
            RefusalKind::QuotaExceeded => 402,
            RefusalKind::Forbidden => 403,
            RefusalKind::NotFound => 404,
            RefusalKind::MethodNotAllowed => 405,
            RefusalKind::Conflict => 409,
            RefusalKind::Gone => 410,
            RefusalKind::LengthRequired => 411,
            RefusalKind::TooLarge => 413,
            RefusalKind::UnsupportedMediaType => 415,
        }
    }

    /// The `reason` label of the refusal counters (`<slot_prefix>/metrics`).
    pub fn label(self) -> &'static str {
        match self {
            RefusalKind::BadRequest => "bad_request",
            RefusalKind::Unauthorized => "unauthorized",
            RefusalKind::QuotaExceeded => "quota_exceeded",
            RefusalKind::Forbidden => "forbidden",
            RefusalKind::NotFound => "not_found",
            RefusalKind::MethodNotAllowed => "method_not_allowed",
            RefusalKind::Conflict => "conflict",
            RefusalKind::Gone => "gone",
            RefusalKind::LengthRequired => "length_required",
            RefusalKind::TooLarge => "too_large",
            RefusalKind::UnsupportedMediaType => "unsupported_media_type",
        }
    }
}

/// A refusal: what kind, and one line saying what is wrong (quoting the bad input).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub kind: RefusalKind,
    pub message: String,
    /// Seconds after which the same request may succeed (a 402's `Retry-After`).
    pub retry_after: Option<u64>,
}

impl Refusal {
    /// A refusal of the given kind with a one-line message.
    pub fn new(kind: RefusalKind, message: impl Into<String>) -> Refusal {
        let mut message = message.into();
        // One line, always: a message may quote client input.
        message.retain(|c| c != '\n' && c != '\r');
        Refusal {
            kind,
            message,
            retry_after: None,
        }
    }
    /// The same refusal, saying when to try again (`Retry-After`, and in the message).
    pub fn with_retry_after(mut self, seconds: u64) -> Refusal {
        self.message = format!("{}; try again in {seconds} s", self.message);
        self.retry_after = Some(seconds);
        self
    }
    /// 400: a parameter is missing or malformed.
    pub fn bad_request(message: impl Into<String>) -> Refusal {
        Refusal::new(RefusalKind::BadRequest, message)
    }
    /// 403: the rules or the slot say no.
    pub fn forbidden(message: impl Into<String>) -> Refusal {
        Refusal::new(RefusalKind::Forbidden, message)
    }
    /// 404: no such slot or file.
    pub fn not_found(message: impl Into<String>) -> Refusal {
        Refusal::new(RefusalKind::NotFound, message)
    }

    /// 404 for a download: the same line whatever the reason (no slot, a name that does not
    /// decode, a path outside the area), so that a probe learns nothing but "not here".
    pub fn no_file_at(url_path: &str) -> Refusal {
        Refusal::not_found(format!("no file at {url_path:?}"))
    }

    /// 409: a file is never overwritten.
    pub fn already_stored(name: &str) -> Refusal {
        Refusal::new(
            RefusalKind::Conflict,
            format!("{name:?} has been uploaded already; files are never overwritten"),
        )
    }

    /// 409: a PUT of this upload was allowed before; its body may still be on its way.
    pub fn already_authorized(name: &str) -> Refusal {
        Refusal::new(
            RefusalKind::Conflict,
            format!(
                "a PUT of {name:?} was allowed already: one body per upload URL, request a new \
                 slot"
            ),
        )
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind.status(), self.message)
    }
}

/// A failure on our side: I/O or database, with the operation it concerns.
#[derive(Debug)]
pub struct Error {
    pub context: String,
    pub source: ErrorSource,
}

/// What failed underneath an `Error`.
#[derive(Debug)]
pub enum ErrorSource {
    Io(std::io::Error),
    /// A database failure, already sorted by the store that met it (each store knows its own
    /// error codes; this module knows none).
    Database {
        failure: DatabaseFailure,
        error: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// What a database failure means for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseFailure {
    /// Locked by others past the wait we allow: 503, try again.
    Busy,
    /// Not reachable (stopped, restarting, the connection lost): 503, try again.
    Unavailable,
    /// The database's disk is full: 507.
    Full,
    /// Anything else: 500.
    Other,
}

impl Error {
    /// An I/O error while doing `context` (e.g. "creating /srv/up/abc").
    pub fn io(context: impl Into<String>, err: std::io::Error) -> Error {
        Error {
            context: context.into(),
            source: ErrorSource::Io(err),
        }
    }
    /// A database error while doing `context`, as the store sorted it.
    pub fn database(
        context: impl Into<String>,
        failure: DatabaseFailure,
        err: impl std::error::Error + Send + Sync + 'static,
    ) -> Error {
        Error {
            context: context.into(),
            source: ErrorSource::Database {
                failure,
                error: Box::new(err),
            },
        }
    }
    /// The same failure (context, kind, message) once more, for another party waiting on it
    /// (`Error` is not `Clone`: its source need not be): a busy database stays a 503, a full
    /// disk a 507.
    pub fn copy(&self) -> Error {
        match &self.source {
            ErrorSource::Io(e) => Error::io(
                self.context.clone(),
                std::io::Error::new(e.kind(), e.to_string()),
            ),
            ErrorSource::Database { failure, error } => Error::database(
                self.context.clone(),
                *failure,
                std::io::Error::other(error.to_string()),
            ),
        }
    }
    /// The database failure, if this is one.
    fn database_failure(&self) -> Option<DatabaseFailure> {
        match &self.source {
            ErrorSource::Database { failure, .. } => Some(*failure),
            ErrorSource::Io(_) => None,
        }
    }
    /// True when the disk (or quota of the file system) is full: the client gets 507, not 500.
    pub fn is_storage_full(&self) -> bool {
        match &self.source {
            ErrorSource::Io(e) => e.kind() == std::io::ErrorKind::StorageFull,
            ErrorSource::Database { failure, .. } => *failure == DatabaseFailure::Full,
        }
    }
    /// True when the database stayed locked past the busy timeout: the client gets 503.
    pub fn is_busy(&self) -> bool {
        self.database_failure() == Some(DatabaseFailure::Busy)
    }
    /// True when the database cannot be reached now: the client gets 503.
    pub fn is_unavailable(&self) -> bool {
        self.database_failure() == Some(DatabaseFailure::Unavailable)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            ErrorSource::Io(e) => write!(f, "{}: {}", self.context, e),
            ErrorSource::Database { error, .. } => write!(f, "{}: {}", self.context, error),
        }
    }
}

impl std::error::Error for Error {}

/// The outcome of a decision: `Ok(T)`, `Err(Outcome::Refused)` for a normal "no", or a failure.
#[derive(Debug)]
pub enum Outcome {
    Refused(Refusal),
    Failed(Error),
}

impl From<Refusal> for Outcome {
    fn from(r: Refusal) -> Outcome {
        Outcome::Refused(r)
    }
}

impl From<Error> for Outcome {
    fn from(e: Error) -> Outcome {
        Outcome::Failed(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copied_error_keeps_its_kind_and_its_line() {
        let busy = Error::database(
            "reserving a slot",
            DatabaseFailure::Busy,
            std::io::Error::other("database is locked"),
        );
        let copy = busy.copy();
        assert!(copy.is_busy() && !copy.is_unavailable());
        assert_eq!(copy.to_string(), "reserving a slot: database is locked");
        let full = Error::io(
            "writing",
            std::io::Error::from(std::io::ErrorKind::StorageFull),
        );
        assert!(full.copy().is_storage_full());
    }
}
