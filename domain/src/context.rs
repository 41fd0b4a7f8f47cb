//! What `decide` is handed instead of reading the world: the time, the actor, the schema in force, limits, new numbers.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::ids::NUMBER_LIMIT;
use crate::{DomainError, Email, KindUsage, Principal, RoleSchema, Timestamp};

/// The envelope's `actor` for the admin key acting as nobody. A principal never holds a `/`,
/// so no principal can be taken for the admin, nor the admin for a principal.
pub const ADMIN_ACTOR_LABEL: &str = "roster/admin";

/// What logs written before [`ADMIN_ACTOR_LABEL`] name the admin with. It is also a valid
/// principal, so such a log cannot tell the two apart: a reader takes it for the admin first
/// (see [`Actor::from_label`]), and a check of the rules tries the principal too.
pub const LEGACY_ADMIN_ACTOR_LABEL: &str = "admin";

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

    /// Who an envelope names as the actor: the principal, or [`ADMIN_ACTOR_LABEL`]. The
    /// verified email stays out of the log (DESIGN section 13).
    pub fn label(&self) -> String {
        match self {
            Actor::Admin => ADMIN_ACTOR_LABEL.to_owned(),
            Actor::Principal { principal, .. } => principal.to_string(),
        }
    }

    /// The actor an envelope's label names, without a verified email (the log keeps none).
    /// [`LEGACY_ADMIN_ACTOR_LABEL`] is read as the admin, as the logs that wrote it meant.
    pub fn from_label(label: &str) -> Result<Actor, DomainError> {
        if label == ADMIN_ACTOR_LABEL || label == LEGACY_ADMIN_ACTOR_LABEL {
            return Ok(Actor::Admin);
        }
        Ok(Actor::Principal {
            principal: Principal::parse(label)?,
            email: None,
        })
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

    /// No limit at all: what checking a log decides under, because limits are the server's
    /// configuration at the time, which the log does not record.
    pub const UNBOUNDED: Limits = Limits {
        emails_per_request_max: usize::MAX,
        pending_invitations_max: usize::MAX,
        active_links_max: usize::MAX,
        message_chars_max: usize::MAX,
        key_name_chars_max: usize::MAX,
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

    /// Moves past `number`, handed out elsewhere (by another node on a shared log), so it is
    /// never handed out again.
    pub fn advance_past(&self, number: u64) {
        self.0.fetch_max(number.saturating_add(1), Ordering::SeqCst);
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
