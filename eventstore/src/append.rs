//! What an append asks for and what it gets back.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::envelope::{Envelope, NewEvent, Timestamp};
use crate::error::{ExpectedVersion, Rejection};

/// The stream as the writer sees it when it decides a command: its version, and the events
/// of it already placed earlier in the same group, not yet committed.
#[derive(Debug, Clone, Copy)]
pub struct StreamView<'a> {
    pub stream: &'a str,
    pub version: u64,
    pub uncommitted: &'a [&'a Envelope],
    /// The time the writer gives this append's events: the request's, or the log's latest
    /// when that is later, so times rise with positions. A decision takes it as its "now",
    /// so what it decided and what its events say agree. (A store shared by many nodes takes
    /// it from its own clock, under its lock.)
    pub occurred_at: Timestamp,
}

/// A decision taken inside the writer, against the newest version of the stream.
///
/// This is how a hot stream avoids a storm of conflicts: instead of deciding against a
/// possibly stale state and retrying on conflict, a command hands the writer its decision,
/// and the writer runs it in order, each seeing the effects of the ones before it in the
/// same group. It must be quick and pure: it runs on the writer's thread.
pub trait Decide: Send {
    fn decide(self: Box<Self>, stream: StreamView<'_>) -> Result<Vec<NewEvent>, Rejection>;
}

impl<F> Decide for F
where
    F: FnOnce(StreamView<'_>) -> Result<Vec<NewEvent>, Rejection> + Send,
{
    fn decide(self: Box<Self>, stream: StreamView<'_>) -> Result<Vec<NewEvent>, Rejection> {
        (*self)(stream)
    }
}

/// The events of an append: given, or decided by the writer.
pub enum Proposal {
    Events(Vec<NewEvent>),
    Decide(Box<dyn Decide>),
}

impl fmt::Debug for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Proposal::Events(events) => f.debug_tuple("Events").field(events).finish(),
            Proposal::Decide(_) => f.write_str("Decide(..)"),
        }
    }
}

/// The lease an append was made under, and its fencing token: a store shared by many nodes
/// refuses the append once the lease has been taken over (the token moved on), so work that
/// must run on one node at a time (delivery) cannot record outcomes from a holder that lost it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub lease: String,
    pub token: u64,
}

/// One command's append to one stream.
#[derive(Debug)]
pub struct AppendRequest {
    pub stream: String,
    pub expected: ExpectedVersion,
    /// Idempotency: a command id seen before returns the first outcome and writes nothing.
    pub command_id: String,
    /// What the request was, as an opaque digest kept with the first outcome: the same command
    /// id with another fingerprint is refused (`AppendError::Reused`) instead of answered with
    /// an outcome that belongs to another request. `None` checks nothing.
    pub fingerprint: Option<[u8; 32]>,
    pub correlation_id: String,
    pub actor: String,
    pub occurred_at: Timestamp,
    pub proposal: Proposal,
    /// Made under a lease: refused once it was taken over (see [`Fence`]).
    pub fence: Option<Fence>,
}

impl AppendRequest {
    /// An append of `events` with a fresh command id, by `system`, now.
    pub fn new(
        stream: impl Into<String>,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> AppendRequest {
        AppendRequest::with_proposal(stream, expected, Proposal::Events(events))
    }

    /// An append whose events the writer decides against the stream's newest version.
    pub fn decided(stream: impl Into<String>, decide: impl Decide + 'static) -> AppendRequest {
        AppendRequest::with_proposal(
            stream,
            ExpectedVersion::Any,
            Proposal::Decide(Box::new(decide)),
        )
    }

    fn with_proposal(
        stream: impl Into<String>,
        expected: ExpectedVersion,
        proposal: Proposal,
    ) -> AppendRequest {
        let command_id = ulid::Ulid::new().to_string();
        AppendRequest {
            stream: stream.into(),
            expected,
            correlation_id: command_id.clone(),
            command_id,
            fingerprint: None,
            actor: "system".into(),
            occurred_at: Timestamp::now(),
            proposal,
            fence: None,
        }
    }

    pub fn command_id(mut self, command_id: impl Into<String>) -> AppendRequest {
        self.command_id = command_id.into();
        self
    }

    pub fn fingerprint(mut self, fingerprint: Option<[u8; 32]>) -> AppendRequest {
        self.fingerprint = fingerprint;
        self
    }

    pub fn correlation_id(mut self, correlation_id: impl Into<String>) -> AppendRequest {
        self.correlation_id = correlation_id.into();
        self
    }

    pub fn actor(mut self, actor: impl Into<String>) -> AppendRequest {
        self.actor = actor.into();
        self
    }

    pub fn fence(mut self, fence: Option<Fence>) -> AppendRequest {
        self.fence = fence;
        self
    }

    pub fn occurred_at(mut self, occurred_at: Timestamp) -> AppendRequest {
        self.occurred_at = occurred_at;
        self
    }
}

/// A successful append, acknowledged only once it is as durable as the store promises.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Appended {
    pub stream: String,
    /// The stream's version after the append.
    pub version: u64,
    /// The position of the last event appended; when nothing was appended, the log's head
    /// when the command was decided, so "read at or after this position" still holds.
    pub position: u64,
    /// How many events were appended.
    pub events: u64,
    /// True when the command id had been seen and this is the first outcome, again.
    #[serde(skip)]
    pub duplicate: bool,
}

impl Appended {
    /// The positions written, empty when nothing was.
    pub fn positions(&self) -> std::ops::RangeInclusive<u64> {
        if self.events == 0 {
            #[allow(clippy::reversed_empty_ranges)]
            return 1..=0;
        }
        (self.position + 1 - self.events)..=self.position
    }
}
