//! The core's error: a kind that maps one to one onto `eas_status`, and a sentence.

use std::fmt;

/// What went wrong, in the C ABI's terms (`eas_status` has the same values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A required pointer was NULL (only the C ABI produces this).
    NullParameter = 1,
    /// A bad target, option key or value, or a string that is not UTF-8.
    InvalidArgument = 2,
    /// Nothing is selectable: no list known yet, or everything excluded.
    NoInstance = 3,
    /// A wait ran out of time.
    Timeout = 4,
    /// A discovery fetch failed.
    DiscoveryFailed = 5,
    /// The caller's buffer is too small.
    BufferTooSmall = 6,
    /// The id names no instance of the current list.
    UnknownInstance = 7,
    /// The client was closed.
    Closed = 8,
}

/// An error with a message that names the key, value, URL or HTTP status at fault, and never a
/// secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::InvalidArgument, message)
    }
}

impl From<ErrorKind> for Error {
    fn from(kind: ErrorKind) -> Error {
        let message = match kind {
            ErrorKind::NullParameter => "a required pointer was NULL",
            ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::NoInstance => "no instance is selectable",
            ErrorKind::Timeout => "timed out",
            ErrorKind::DiscoveryFailed => "discovery failed",
            ErrorKind::BufferTooSmall => "buffer too small",
            ErrorKind::UnknownInstance => "the id names no instance of the current list",
            ErrorKind::Closed => "the client was closed",
        };
        Error::new(kind, message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}
