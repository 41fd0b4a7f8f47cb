//! The store's errors: a refused append (a version conflict, a rejection) is kept apart from
//! a failure of the store itself (I/O, corruption), because callers handle them differently.

use std::fmt;

/// The store itself failed: the caller cannot know more than that, and must not guess.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The disk or the database engine failed (full disk, read-only directory, lock held).
    #[error("storage failed: {0}")]
    Io(String),
    /// What was read back breaks an invariant of the log; the position names the first bad event.
    #[error("the log is corrupt at position {position}: {reason}")]
    Corrupt { position: u64, reason: String },
    /// The request itself can never be stored (a bad stream name, an oversized event).
    #[error("invalid append: {0}")]
    Invalid(String),
    /// The writer has stopped; the store was closed.
    #[error("the store is closed")]
    Closed,
    /// A shared store cannot be reached now (its server restarting, the network cut, every
    /// connection busy): nothing was written, or what was is answered again to a retry with
    /// the same command id. Unlike `Io`, this store recovers by itself.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// A shared store was made for another configuration than this node's (another secret,
    /// other decision settings, a newer format): the node must not run on it.
    #[error("this node does not fit the store: {0}")]
    Incompatible(String),
}

impl StoreError {
    pub(crate) fn corrupt(position: u64, reason: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            position,
            reason: reason.into(),
        }
    }
}

impl From<sled::Error> for StoreError {
    fn from(error: sled::Error) -> StoreError {
        match error {
            sled::Error::Corruption { .. } => StoreError::corrupt(0, error.to_string()),
            other => StoreError::Io(other.to_string()),
        }
    }
}

impl From<std::io::Error> for StoreError {
    fn from(error: std::io::Error) -> StoreError {
        StoreError::Io(error.to_string())
    }
}

/// What an append expects the stream's version to be before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// Whatever it is.
    Any,
    /// The stream has no event yet.
    NoStream,
    /// The stream is at exactly this version.
    Exactly(u64),
}

impl ExpectedVersion {
    pub fn admits(self, current: u64) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => current == 0,
            ExpectedVersion::Exactly(version) => current == version,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any version"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::Exactly(version) => write!(f, "version {version}"),
        }
    }
}

/// Why a command's own decision refused to produce events (a domain error, carried opaquely:
/// the store knows no domain types, the caller downcasts).
pub type Rejection = Box<dyn std::error::Error + Send + Sync>;

/// Why an append did not happen.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("version conflict on {stream}: expected {expected}, found version {actual}")]
    Conflict {
        stream: String,
        expected: ExpectedVersion,
        actual: u64,
    },
    #[error("rejected: {0}")]
    Rejected(Rejection),
    /// The command id was first used by a request with another fingerprint.
    #[error("command id {command_id} was first used for another request")]
    Reused { command_id: String },
    /// Made under a lease that has been taken over since: this holder may not record.
    #[error("the lease {lease} was taken over: its former holder's append is refused")]
    Fenced { lease: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}
