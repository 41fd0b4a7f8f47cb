//! Queries: the read models, the log, and past states folded from it, as a host asks for them.

use roster_domain::{
    preview, Actor, DomainError, Email, InviteCode, KeyDigest, Preview, Principal, Privilege,
    ResourceId, RoleName, RoleSchema, StreamId,
};
use roster_eventstore::{Envelope, Subscription};
use roster_projections::{
    rolemap_as_of, ApiKeyRow, AsOf, HistoryEntry, InvitationRecord, InviteRecord, LinkRecord,
    MemberRecord, MembershipRecord, Page, ResourceRecord,
};
use roster_projections::{WebhookDeliveryRow, WebhookRow};

use crate::cache::{lock, StreamState};
use crate::{CodeAccess, Engine, EngineError};

impl Engine {
    /// The role schema in force for a kind.
    pub async fn schema(&self, kind: &str) -> Result<RoleSchema, EngineError> {
        let kind = roster_domain::Kind::parse(kind)?;
        let entry = self.entry(&StreamId::RoleSchema(kind.clone())).await?;
        let cached = lock(&entry);
        match &cached.state {
            StreamState::Schema(state) => Ok(state.in_force(&kind)),
            _ => Err(EngineError::Unavailable(
                "a schema stream holds another state".into(),
            )),
        }
    }

    /// What a code is for, without using it.
    pub async fn preview(&self, code: &str) -> Result<Preview, EngineError> {
        let (resource, verified) = self.resolve(code).await?;
        let entry = self.entry(&resource.stream()).await?;
        let cached = lock(&entry);
        match &cached.state {
            StreamState::Resource(state) => Ok(preview(state, &verified, self.now())?),
            _ => Err(DomainError::InvitationNotFound.into()),
        }
    }

    /// Who `actor` is on `resource` when it looks at links and invitations, for deciding which
    /// codes it is shown ([`CodeAccess::shows`]). `may_act` is false for a caller that only
    /// reads (no `write` scope): it is shown no code at all.
    pub async fn code_access(
        &self,
        actor: &Actor,
        resource: &ResourceId,
        may_act: bool,
    ) -> Result<CodeAccess, EngineError> {
        let role = match actor.principal() {
            Some(principal) => self
                .inner
                .models
                .member(resource, principal)?
                .map(|m| m.role),
            None => None,
        };
        Ok(CodeAccess {
            viewer: roster_domain::CodeViewer {
                principal: actor.principal().cloned(),
                role,
                may_act,
            },
            schema: self.schema(resource.kind().as_str()).await?,
        })
    }

    /// The code of a link or invitation number at a generation, in the native encoding.
    pub fn code(&self, number: u64, generation: u32) -> InviteCode {
        InviteCode::derive(&self.inner.config.secret, number, generation)
    }

    // Queries.

    pub fn resource(&self, resource: &ResourceId) -> Result<Option<ResourceRecord>, EngineError> {
        Ok(self.inner.models.resource(resource)?)
    }

    /// The holders of the resource's highest role now, in principal order, at most `limit`.
    pub fn owners(
        &self,
        resource: &ResourceId,
        limit: usize,
    ) -> Result<Vec<Principal>, EngineError> {
        Ok(self.inner.models.owners(resource, limit)?)
    }

    pub fn members(
        &self,
        resource: &ResourceId,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<MemberRecord>, EngineError> {
        Ok(self.inner.models.members(resource, after, limit)?)
    }

    pub fn member(
        &self,
        resource: &ResourceId,
        principal: &Principal,
    ) -> Result<Option<MemberRecord>, EngineError> {
        Ok(self.inner.models.member(resource, principal)?)
    }

    /// The rolemap at a past position or time, rebuilt from the resource's stream.
    pub async fn members_as_of(
        &self,
        resource: &ResourceId,
        as_of: AsOf,
    ) -> Result<Option<(Vec<MemberRecord>, u64)>, EngineError> {
        let snapshots = Some(self.inner.snapshots.as_ref());
        Ok(rolemap_as_of(self.inner.store.as_ref(), snapshots, resource, as_of).await?)
    }

    pub fn memberships(&self, principal: &Principal) -> Result<Vec<MembershipRecord>, EngineError> {
        Ok(self.inner.models.memberships(principal)?)
    }

    /// A resource's links in number order after `after`, at most `limit`; more to come?
    pub fn links_page(
        &self,
        resource: &ResourceId,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<LinkRecord>, bool), EngineError> {
        Ok(self.inner.models.links_page(resource, after, limit)?)
    }

    /// A resource's email invitations that `keep` wants, in number order after `after`, at
    /// most `limit`; more to come?
    pub fn invitations_page(
        &self,
        resource: &ResourceId,
        after: u64,
        limit: usize,
        keep: impl FnMut(&InvitationRecord) -> bool,
    ) -> Result<(Vec<InvitationRecord>, bool), EngineError> {
        Ok(self
            .inner
            .models
            .invitations_page(resource, after, limit, keep)?)
    }

    /// A principal's memberships in resource order after `after`, at most `limit`.
    pub fn memberships_page(
        &self,
        principal: &Principal,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<MembershipRecord>, bool), EngineError> {
        Ok(self
            .inner
            .models
            .memberships_page(principal, after, limit)?)
    }

    /// Registered resources in name order, of a kind and under a parent when given.
    pub fn resources_page(
        &self,
        kind: Option<&str>,
        parent: Option<&ResourceId>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<ResourceRecord>, bool), EngineError> {
        Ok(self
            .inner
            .models
            .resources_page(kind, parent, after, limit)?)
    }

    /// API keys in id order after `after`, at most `limit` (digests only, never keys).
    pub fn api_keys_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<ApiKeyRow>, bool), EngineError> {
        Ok(self.inner.models.api_keys_page(after, limit)?)
    }

    /// Webhook subscriptions in id order after `after`, at most `limit`.
    pub fn webhooks_page(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<roster_projections::WebhookRow>, bool), EngineError> {
        Ok(self.inner.models.webhooks_page(after, limit)?)
    }

    pub fn links(&self, resource: &ResourceId) -> Result<Vec<LinkRecord>, EngineError> {
        Ok(self.inner.models.links(resource)?)
    }

    pub fn invitations(&self, resource: &ResourceId) -> Result<Vec<InvitationRecord>, EngineError> {
        Ok(self.inner.models.invitations(resource)?)
    }

    pub fn invite(&self, number: u64) -> Result<Option<InviteRecord>, EngineError> {
        Ok(self.inner.models.invite(number)?)
    }

    /// Pending invitations for an email, for sign-up flows.
    pub fn pending_invitations(&self, email: &Email) -> Result<Vec<InvitationRecord>, EngineError> {
        let now = self.now();
        Ok(self
            .inner
            .models
            .open_invitations_for(email)?
            .into_iter()
            .filter(|i| i.status(now) == roster_domain::InvitationStatus::Pending)
            .collect())
    }

    pub fn history(
        &self,
        resource: &ResourceId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, EngineError> {
        Ok(self.inner.models.history(resource, after, limit)?)
    }

    pub fn principal_history(
        &self,
        principal: &Principal,
        after: u64,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, EngineError> {
        Ok(self
            .inner
            .models
            .principal_history(principal, after, limit)?)
    }

    /// Whether the principal holds the privilege on the resource, and its role.
    pub async fn check(
        &self,
        principal: &Principal,
        resource: &ResourceId,
        privilege: Privilege,
    ) -> Result<(bool, Option<RoleName>), EngineError> {
        let Some(member) = self.inner.models.member(resource, principal)? else {
            return Ok((false, None));
        };
        let schema = self.schema(resource.kind().as_str()).await?;
        Ok((schema.allows(&member.role, privilege), Some(member.role)))
    }

    pub fn api_key_by_digest(&self, digest: &KeyDigest) -> Result<Option<ApiKeyRow>, EngineError> {
        Ok(self.inner.models.api_key_by_digest(&digest.to_hex())?)
    }

    pub fn api_keys(&self) -> Result<Vec<ApiKeyRow>, EngineError> {
        Ok(self.inner.models.api_keys()?)
    }

    /// The position the read models have applied: every answer reflects at least this.
    pub fn applied(&self) -> u64 {
        self.inner.models.checkpoint()
    }

    /// The global log after `after`, at most `limit` envelopes, as stored (for audit and
    /// replication, `GET /v1/events`).
    pub async fn events(&self, after: u64, limit: usize) -> Result<Vec<Envelope>, EngineError> {
        Ok(self.inner.store.read_all(after, limit).await?)
    }

    /// Every event after `after`, then the live tail: for process managers (the mail and
    /// webhook workers) that follow the log as projectors do.
    pub fn subscribe(&self, after: u64) -> Subscription {
        self.inner.store.subscribe(after)
    }

    /// Every email invitation, in number order (the mail worker's start).
    pub fn all_invitations(&self) -> Result<Vec<InvitationRecord>, EngineError> {
        Ok(self.inner.models.all_invitations()?)
    }

    pub fn webhook(&self, webhook: u64) -> Result<Option<WebhookRow>, EngineError> {
        Ok(self.inner.models.webhook(webhook)?)
    }

    pub fn webhooks(&self) -> Result<Vec<WebhookRow>, EngineError> {
        Ok(self.inner.models.webhooks()?)
    }

    /// A webhook's delivery attempts, oldest first, after a position, at most `limit`.
    pub fn webhook_deliveries(
        &self,
        webhook: u64,
        after: u64,
        limit: usize,
    ) -> Result<Vec<WebhookDeliveryRow>, EngineError> {
        Ok(self
            .inner
            .models
            .webhook_deliveries(webhook, after, limit)?)
    }
}
