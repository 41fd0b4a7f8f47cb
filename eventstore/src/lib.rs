//! Roster's event log: the `EventStore` trait, envelopes and their hash chain, group commit,
//! and the sled and in-memory stores. It stores opaque JSON with a type and a schema version
//! and knows nothing of the membership domain.

#![forbid(unsafe_code)]

mod append;
mod backend;
pub mod canonical;
mod envelope;
mod error;
mod import;
mod log;
#[cfg(feature = "postgres")]
pub mod postgres;
mod stored;
mod subscription;
mod verify;
mod writer;

use async_trait::async_trait;

pub use append::{AppendRequest, Appended, Decide, Fence, Proposal, StreamView};
pub use backend::{Backend, Durability, Entry, MemoryBackend, SledBackend, SledOptions};
pub use envelope::{Envelope, Hash, NewEvent, Timestamp, UpcastFn, Upcasters};
pub use error::{AppendError, ExpectedVersion, Rejection, StoreError};
pub use log::{Limits, Log, LogStats, MemoryStore, SledStore};
#[cfg(feature = "postgres")]
pub use postgres::{Identity, PgOptions, PgStore};
pub use stored::RUN_BYTES_MAX;
pub use subscription::{ReadAll, Subscription};
pub use verify::{verify, verify_with_progress, ChainChecker, VerifyError, VerifyReport};

/// An append-only log of events in streams, with a global order and a hash chain.
///
/// No storage engine's types appear here, so a PostgreSQL store can implement it later.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends to a stream if its version is the expected one, or as the writer decides.
    /// Answers only once the events are as durable as the store promises.
    async fn append(&self, request: AppendRequest) -> Result<Appended, AppendError>;

    /// The stream's events from `from_version` (versions start at 1), at most `limit`.
    async fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<Envelope>, StoreError>;

    /// The log's events after `after` (positions start at 1), at most `limit`.
    async fn read_all(&self, after: u64, limit: usize) -> Result<Vec<Envelope>, StoreError>;

    /// `read_all`'s events unparsed: each position with the JSON of its envelope as stored,
    /// for a reader that parses them straight into types of its own in one pass (a rebuild
    /// of the read models). Positions are checked gap-free; the link of each event's
    /// `prev_hash` to the event before is the reader's to check, as `read_all` does.
    async fn read_all_stored(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError>;

    /// The stream's current version, 0 when it has no event.
    async fn stream_version(&self, stream: &str) -> Result<u64, StoreError>;

    /// The position of the last acknowledged event, 0 when the log is empty.
    fn head(&self) -> u64;

    /// Reads what other writers appended, up to the store's head as it is now, and hands it
    /// to the subscribers; returns that head. A store with one writer has nothing to read.
    async fn catch_up(&self) -> Result<u64, StoreError> {
        Ok(self.head())
    }

    /// Why the store could not be reached at the last attempt, while it cannot: a shared
    /// store's server restarting, the network cut. A local store is never cut off.
    fn cut_off(&self) -> Option<String> {
        None
    }

    /// Takes or renews the lease `name` for `holder`, for `ttl` by the store's clock; its
    /// fencing token while `holder` holds it, `None` while another does. A token changes only
    /// when the lease changes hands (or its holder let it run out). A store with one process
    /// has no other holder: it always grants token 1.
    async fn lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<Option<u64>, StoreError> {
        let _ = (name, holder, ttl);
        Ok(Some(1))
    }

    /// Every event after `after`, then the live tail.
    fn subscribe(&self, after: u64) -> Subscription;

    /// Stops taking appends after the ones already queued, and makes the log durable.
    /// Appends after this are refused; reads go on.
    fn close(&self);

    /// Hands `catchup` what other writers append: a store shared by many nodes calls it with
    /// every event another node appended, in position order, at the latest under its lock
    /// before it decides a group, and with the streams of a group that did not commit. A store
    /// with one writer never calls it: every event is one of its own decisions.
    fn set_catchup(&self, catchup: std::sync::Arc<dyn Catchup>) {
        let _ = catchup;
    }
}

/// What the host of decisions (the engine's cache of stream states, its number sequence) is
/// told by a store shared with other writers, so that a decision reads what any node decided.
pub trait Catchup: Send + Sync {
    /// Events appended by others, contiguous and in position order; any of them may have been
    /// handed over before (a subscriber's copy and the writer's catch-up overlap).
    fn appended(&self, events: &[Envelope]);

    /// The streams of a group whose decisions were made but whose transaction did not
    /// commit: what those decisions folded into any state is to be forgotten.
    fn rolled_back(&self, streams: &[String]);
}
