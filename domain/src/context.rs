//! What `decide` is handed instead of reading the world: the time, the actor, the schema in force, limits, new numbers.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::ids::NUMBER_LIMIT;
use crate::{DomainError, Email, KindUsage, Principal, RoleSchema, Timestamp};

/// Who issued the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// The admin key without `X-Roster-Actor`: outside the rolemap, bound only by invariants.
    Admin,
    /// A principal (a user key's own, or one a service key or the admin names), with its verified
    /// email when one is known: an acceptance of an email invitation needs it.
    Principal {
        principal: Principal,
        email: Option<Email>,
    },
}

impl Actor {
    pub fn principal(&self) -> Option<&Principal> {
        match self {
            Actor::Admin => None,
            Actor::Principal { principal, .. } => Some(principal),
        }
    }

    pub fn email(&self) -> Option<&Email> {
        match self {
            Actor::Admin => None,
            Actor::Principal { email, .. } => email.as_ref(),
        }
    }
}

/// The configurable limits of DESIGN section 5 that the domain enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub emails_per_request_max: usize,
    pub pending_invitations_max: usize,
    pub active_links_max: usize,
    /// An invitation's personal message is copied into the log and into mails.
    pub message_chars_max: usize,
    /// An API key's display name.
    pub key_name_chars_max: usize,
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        emails_per_request_max: 100,
        pending_invitations_max: 1_000,
        active_links_max: 100,
        message_chars_max: 2_000,
        key_name_chars_max: 128,
    };
}

impl Default for Limits {
    fn default() -> Limits {
        Limits::DEFAULT
    }
}

/// Hands out new numbers for links and invitations: unique, and below 2^53.
///
/// `&self` so that `decide` can take `&Context`; implementations use interior mutability.
pub trait NumberSource {
    fn next_number(&self) -> Result<u64, DomainError>;
}

/// Numbers counted up from a start, e.g. one past the highest number in the log.
#[derive(Debug)]
pub struct NumberSequence(AtomicU64);

impl NumberSequence {
    pub fn starting_at(first: u64) -> NumberSequence {
        NumberSequence(AtomicU64::new(first))
    }

    /// The number the next call will hand out.
    pub fn peek(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl NumberSource for NumberSequence {
    fn next_number(&self) -> Result<u64, DomainError> {
        let number = self.0.fetch_add(1, Ordering::SeqCst);
        if (1..NUMBER_LIMIT).contains(&number) {
            Ok(number)
        } else {
            Err(DomainError::LimitReached(
                "no link or invitation number below 2^53 is left".into(),
            ))
        }
    }
}

/// A source for commands that need no new number.
struct NoNumbers;

impl NumberSource for NoNumbers {
    fn next_number(&self) -> Result<u64, DomainError> {
        Err(DomainError::LimitReached(
            "no number source was given for this command".into(),
        ))
    }
}

/// Roster's memory of which principal verified which email, across streams (API keys, acceptances).
pub trait KnownEmails {
    fn principal_of(&self, email: &Email) -> Option<Principal>;
}

impl KnownEmails for BTreeMap<Email, Principal> {
    fn principal_of(&self, email: &Email) -> Option<Principal> {
        self.get(email).cloned()
    }
}

struct NoKnownEmails;

impl KnownEmails for NoKnownEmails {
    fn principal_of(&self, _: &Email) -> Option<Principal> {
        None
    }
}

static NO_NUMBERS: NoNumbers = NoNumbers;
static NO_KNOWN_EMAILS: NoKnownEmails = NoKnownEmails;
static UNUSED_KIND: KindUsage = KindUsage::UNUSED;
static DEFAULT_LIMITS: Limits = Limits::DEFAULT;

/// Everything `decide` may know beyond the stream's state.
pub struct Context<'a> {
    pub now: Timestamp,
    pub actor: Actor,
    /// The role schema in force for the resource's kind (see `SchemaState::in_force`).
    /// Resource commands check it names the resource's kind; other streams ignore it.
    pub schema: &'a RoleSchema,
    pub limits: &'a Limits,
    pub numbers: &'a dyn NumberSource,
    /// Consulted for `already_members` beyond the emails the resource itself learnt.
    pub known_emails: &'a dyn KnownEmails,
    /// Consulted by role schema changes only.
    pub kind_usage: &'a KindUsage,
}

impl<'a> Context<'a> {
    /// A context with default limits, no number source, no known emails and an unused kind.
    pub fn new(now: Timestamp, actor: Actor, schema: &'a RoleSchema) -> Context<'a> {
        Context {
            now,
            actor,
            schema,
            limits: &DEFAULT_LIMITS,
            numbers: &NO_NUMBERS,
            known_emails: &NO_KNOWN_EMAILS,
            kind_usage: &UNUSED_KIND,
        }
    }

    pub fn with_numbers(mut self, numbers: &'a dyn NumberSource) -> Context<'a> {
        self.numbers = numbers;
        self
    }

    pub fn with_limits(mut self, limits: &'a Limits) -> Context<'a> {
        self.limits = limits;
        self
    }

    pub fn with_known_emails(mut self, known_emails: &'a dyn KnownEmails) -> Context<'a> {
        self.known_emails = known_emails;
        self
    }

    pub fn with_kind_usage(mut self, kind_usage: &'a KindUsage) -> Context<'a> {
        self.kind_usage = kind_usage;
        self
    }
}
