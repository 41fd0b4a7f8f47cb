//! A command id seen before: its first outcome rebuilt from the log, which keeps no response
//! (DESIGN section 5: the same key and body return the first response).

use std::sync::Arc;

use roster_domain::{
    create_invitations, Actor, Email, Event, InvitationBatch, NumberSequence, ResourceCommand,
    ResourceId, Timestamp,
};
use roster_projections::{state_as_of, AsOf};

use crate::commands::ModelEmails;
use crate::{decode, Engine, EngineError};

impl Engine {
    /// A command's events as the log holds them, and when the first occurred (Unix ms; `None`
    /// when it appended nothing).
    pub(crate) async fn events_at(
        &self,
        appended: &roster_eventstore::Appended,
    ) -> Result<(Vec<Event>, Option<i64>), EngineError> {
        if appended.events == 0 {
            return Ok((Vec::new(), None));
        }
        let first = *appended.positions().start();
        let envelopes = self
            .inner
            .store
            .read_all(
                first - 1,
                usize::try_from(appended.events).unwrap_or(usize::MAX),
            )
            .await?;
        let occurred_ms = envelopes.first().map(|e| e.occurred_at.0);
        let events = envelopes.iter().map(decode).collect::<Result<_, _>>()?;
        Ok((events, occurred_ms))
    }

    /// The batch a `CreateInvitations` answered when it was first decided, for the same command
    /// again (DESIGN section 5: the same key and body return the first response): the
    /// invitations it created, from its logged `events`, and the addresses it did not invite
    /// (members, pending, invalid), decided again against the resource as it stood just
    /// before the first of them, at the time it occurred (`first`: its position and Unix ms).
    /// The log keeps no response.
    pub(crate) async fn first_invitation_batch(
        &self,
        actor: &Actor,
        resource: &ResourceId,
        command: &ResourceCommand,
        (first_position, occurred_ms): (u64, i64),
        events: Vec<Event>,
    ) -> Result<InvitationBatch, EngineError> {
        // The resource just before the command's first event.
        let before = AsOf::Position(first_position - 1);
        let store = self.inner.store.as_ref();
        let (state, _) = state_as_of(store, Some(&self.inner.snapshots), resource, before).await?;
        let schema = self.schema(resource.kind().as_str()).await?;
        let now = Timestamp::from_unix_ms(occurred_ms)?;
        let invited: Vec<(Email, u64)> = events
            .iter()
            .filter_map(|e| match e {
                Event::InvitationCreated { number, email, .. } => Some((email.clone(), *number)),
                _ => None,
            })
            .collect();
        // The numbers drawn the first time, unused in the state before: none are kept.
        let first_number = invited.iter().map(|(_, n)| *n).min().unwrap_or(1);
        let numbers = NumberSequence::starting_at(first_number);
        let emails = ModelEmails(Arc::clone(&self.inner.models));
        let ctx = roster_domain::Context::new(now, actor.clone(), &schema)
            .with_limits(&self.inner.config.limits)
            .with_numbers(&numbers)
            .with_known_emails(&emails);
        let decided = create_invitations(&state, command, &ctx)?;
        Ok(InvitationBatch {
            events,
            invited,
            ..decided
        })
    }
}
