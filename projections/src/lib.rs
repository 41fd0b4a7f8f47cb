//! Roster's read models over the event log: the rolemap, invitations and links, histories and
//! identities, each in its own tree with its own checkpoint; the projector that keeps them up
//! to date; rebuilds; and past rolemaps rebuilt from a resource's stream.

#![forbid(unsafe_code)]

mod as_of;
mod codec;
mod kv;
mod models;
mod projector;
mod read_models;
mod records;
mod snapshots;
mod summary;

pub use as_of::{rolemap_as_of, state_as_of, AsOf};
pub use kv::{Change, MemoryTree, Row, Tree};
pub use projector::run_projector;
pub use read_models::{Page, ReadModels};
pub use records::{
    ApiKeyRow, Closure, DeliveryRecord, HistoryEntry, InvitationRecord, InviteRecord, LinkRecord,
    MemberRecord, MembershipRecord, ResourceRecord, WebhookDeliveryRow, WebhookRow,
};
pub use snapshots::{IndexEntry as SnapshotName, Snapshot, SnapshotCheck, Snapshots};
pub use summary::summarize;

/// Why a read model could not be read or written.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProjectionError {
    #[error("read model storage failed: {0}")]
    Io(String),
    #[error("read model is inconsistent with the log: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Store(#[from] roster_eventstore::StoreError),
}

impl From<sled::Error> for ProjectionError {
    fn from(error: sled::Error) -> ProjectionError {
        ProjectionError::Io(error.to_string())
    }
}
