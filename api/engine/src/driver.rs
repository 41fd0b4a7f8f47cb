//! Drives an engine with the domain's generated `Step`s (feature `proptest`), so a host's own
//! property tests, and ours, can run random sessions against a real engine.

use std::sync::Arc;

use roster_domain::strategies::{ActorPick, Step};
use roster_domain::{
    Actor, Command, DomainError, Email, EmailList, Principal, ResourceCommand, ResourceId, RoleName,
};

use super::{Engine, EngineError, ManualClock, Request};

/// A session: some resources, some principals (each with a verified email), a clock to move.
pub struct Driver {
    pub engine: Engine,
    pub clock: Arc<ManualClock>,
    pub resources: Vec<ResourceId>,
    pub principals: Vec<Principal>,
}

impl Driver {
    /// Registers `resources` spaces, the i-th owned by principal `i % principals`.
    pub async fn new(
        engine: Engine,
        clock: Arc<ManualClock>,
        resources: usize,
        principals: usize,
    ) -> Result<Driver, EngineError> {
        let principals: Vec<Principal> = (0..principals.max(1))
            .map(|i| Principal::parse(&format!("p{i}")))
            .collect::<Result<_, _>>()?;
        let mut registered = Vec::new();
        for i in 0..resources.max(1) {
            let resource = ResourceId::parse(&format!("space/s{i}"))?;
            let owner = principals[i % principals.len()].clone();
            let command = ResourceCommand::RegisterResource {
                resource: resource.clone(),
                owner,
                parent: None,
            };
            engine
                .execute(Request::new(Actor::Admin, Command::Resource(command)))
                .await?;
            registered.push(resource);
        }
        Ok(Driver {
            engine,
            clock,
            resources: registered,
            principals,
        })
    }

    fn email(&self, index: usize) -> Result<Email, EngineError> {
        let name = self
            .principals
            .get(index)
            .map_or_else(|| "stranger".to_string(), |p| p.to_string());
        Email::parse(&format!("{name}@example.com"))
            .map_err(|e| DomainError::InvalidRequest(format!("{}: {}", e.email, e.error)).into())
    }

    fn actor(&self, pick: ActorPick) -> Result<Actor, EngineError> {
        Ok(match pick {
            ActorPick::Admin => Actor::Admin,
            ActorPick::Principal(i) => {
                let index = i % self.principals.len();
                Actor::Principal {
                    principal: self.principals[index].clone(),
                    email: Some(self.email(index)?),
                }
            }
        })
    }

    fn resource(&self, index: usize) -> ResourceId {
        self.resources[index % self.resources.len()].clone()
    }

    async fn role(&self, resource: &ResourceId, index: usize) -> Result<RoleName, EngineError> {
        let schema = self.engine.schema(resource.kind().as_str()).await?;
        Ok(schema.roles()[index % schema.roles().len()].name.clone())
    }

    /// The number of the resource's `index`-th link (by number), or 0, which names nothing.
    fn link(&self, resource: &ResourceId, index: usize) -> Result<(u64, u32), EngineError> {
        let links = self.engine.links(resource)?;
        Ok(if links.is_empty() {
            (0, 0)
        } else {
            let l = &links[index % links.len()];
            (l.number, l.generation)
        })
    }

    fn invitation(
        &self,
        resource: &ResourceId,
        index: usize,
    ) -> Result<Option<(u64, u32, Email)>, EngineError> {
        let invitations = self.engine.invitations(resource)?;
        Ok((!invitations.is_empty()).then(|| {
            let i = &invitations[index % invitations.len()];
            (i.number, i.generation, i.email.clone())
        }))
    }

    /// Runs one step. A refusal by the domain is an outcome, not a failure: `Ok(Err(..))`.
    pub async fn run(&self, step: &Step) -> Result<Result<(), DomainError>, EngineError> {
        let outcome = match step {
            Step::AdvanceTime { ms } => {
                self.clock.advance_ms(*ms);
                return Ok(Ok(()));
            }
            Step::SetMemberRole {
                resource,
                actor,
                member,
                role,
            } => {
                let resource = self.resource(*resource);
                let role = self.role(&resource, *role).await?;
                let principal = self.principals[member % self.principals.len()].clone();
                self.command(
                    *actor,
                    ResourceCommand::SetMemberRole {
                        resource,
                        principal,
                        role,
                    },
                )
                .await
            }
            Step::RemoveMember {
                resource,
                actor,
                member,
            } => {
                let principal = self.principals[member % self.principals.len()].clone();
                self.command(
                    *actor,
                    ResourceCommand::RemoveMember {
                        resource: self.resource(*resource),
                        principal,
                    },
                )
                .await
            }
            Step::CreateInviteLink {
                resource,
                actor,
                role,
                max_uses,
                expires_in_ms,
            } => {
                let resource = self.resource(*resource);
                let role = Some(self.role(&resource, *role).await?);
                let expires_at = expires_in_ms.map(|ms| self.engine.now().saturating_add_ms(ms));
                self.command(
                    *actor,
                    ResourceCommand::CreateInviteLink {
                        resource,
                        role,
                        expires_at,
                        max_uses: *max_uses,
                    },
                )
                .await
            }
            Step::ChangeInviteLink {
                resource,
                actor,
                link,
                role,
                max_uses,
            } => {
                let resource = self.resource(*resource);
                let (link, _) = self.link(&resource, *link)?;
                let role = match role {
                    Some(index) => Some(self.role(&resource, *index).await?),
                    None => None,
                };
                self.command(
                    *actor,
                    ResourceCommand::ChangeInviteLink {
                        resource,
                        link,
                        role,
                        expires_at: None,
                        max_uses: *max_uses,
                    },
                )
                .await
            }
            Step::RotateInviteLink {
                resource,
                actor,
                link,
            } => {
                let resource = self.resource(*resource);
                let (link, _) = self.link(&resource, *link)?;
                self.command(*actor, ResourceCommand::RotateInviteLink { resource, link })
                    .await
            }
            Step::RevokeInviteLink {
                resource,
                actor,
                link,
            } => {
                let resource = self.resource(*resource);
                let (link, _) = self.link(&resource, *link)?;
                self.command(*actor, ResourceCommand::RevokeInviteLink { resource, link })
                    .await
            }
            Step::UseInviteLink {
                resource,
                actor,
                link,
                generations_back,
            } => {
                let (number, generation) = self.link(&self.resource(*resource), *link)?;
                let code = self
                    .engine
                    .code(number, generation.saturating_sub(*generations_back))
                    .encode_base64();
                self.engine
                    .accept(self.actor(*actor)?, &code, None)
                    .await
                    .map(|_| ())
            }
            Step::CreateInvitation {
                resource,
                actor,
                email,
                role,
            } => {
                let resource = self.resource(*resource);
                let role = Some(self.role(&resource, *role).await?);
                let emails = EmailList::Items(vec![self.email(*email)?.to_string()]);
                let command = ResourceCommand::CreateInvitations {
                    resource,
                    emails,
                    role,
                    expires_at: None,
                    message: None,
                };
                self.command(*actor, command).await
            }
            Step::AcceptInvitation {
                resource,
                actor,
                invitation,
                generations_back,
                as_invitee,
            } => {
                let Some((number, generation, email)) =
                    self.invitation(&self.resource(*resource), *invitation)?
                else {
                    return Ok(Err(DomainError::InvitationNotFound));
                };
                let invitee = self
                    .principals
                    .iter()
                    .position(|p| format!("{p}@example.com") == email.normal());
                let actor = match (as_invitee, invitee) {
                    (true, Some(index)) => self.actor(ActorPick::Principal(index))?,
                    _ => self.actor(*actor)?,
                };
                let code = self
                    .engine
                    .code(number, generation.saturating_sub(*generations_back))
                    .encode_base64();
                self.engine.accept(actor, &code, None).await.map(|_| ())
            }
            Step::DeclineInvitation {
                resource,
                actor,
                invitation,
            } => {
                let Some((number, generation, _)) =
                    self.invitation(&self.resource(*resource), *invitation)?
                else {
                    return Ok(Err(DomainError::InvitationNotFound));
                };
                let code = self.engine.code(number, generation).encode_base64();
                self.engine
                    .decline(self.actor(*actor)?, &code, None)
                    .await
                    .map(|_| ())
            }
            Step::ResendInvitation {
                resource,
                actor,
                invitation,
            } => {
                let resource = self.resource(*resource);
                let number = self.invitation(&resource, *invitation)?.map_or(0, |i| i.0);
                self.command(
                    *actor,
                    ResourceCommand::ResendInvitation {
                        resource,
                        invitation: number,
                    },
                )
                .await
            }
            Step::RevokeInvitation {
                resource,
                actor,
                invitation,
            } => {
                let resource = self.resource(*resource);
                let number = self.invitation(&resource, *invitation)?.map_or(0, |i| i.0);
                self.command(
                    *actor,
                    ResourceCommand::RevokeInvitation {
                        resource,
                        invitation: number,
                    },
                )
                .await
            }
        };
        match outcome {
            Ok(()) => Ok(Ok(())),
            Err(EngineError::Domain(refused)) => Ok(Err(refused)),
            Err(other) => Err(other),
        }
    }

    async fn command(&self, actor: ActorPick, command: ResourceCommand) -> Result<(), EngineError> {
        self.engine
            .execute(Request::new(self.actor(actor)?, Command::Resource(command)))
            .await
            .map(|_| ())
    }
}
