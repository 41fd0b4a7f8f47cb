//! A property test of the finding that opened issue 15 (a viewer copied a creator's code from
//! a list and accepted it): an attacker holding a low role, who may use only what the API's
//! answers gave it, on the native routes and the four seed families, never reaches a higher
//! role. Only a code handed to it by someone entitled to see that code raises it.
//!
//! Each case sets up a space (and a Cal.com team and an Onehub workspace) with an owner, a
//! creator and an editor who make links and invitations at every role they may grant, then
//! lets `mallory` (a viewer or a commenter) run a generated sequence of reads and attempts.
//! Every string in every answer mallory gets is harvested, and each that could be a code (or
//! an invite URL carrying one) is tried on every route that takes a code. Afterwards
//! mallory's role is what it was, or the role of the code it was handed, never more.

use std::collections::BTreeSet;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

/// The space's roles, highest first (the built-in schema).
const ROLES: [&str; 5] = ["owner", "creator", "editor", "commenter", "viewer"];

/// What mallory tries, in order.
#[derive(Debug, Clone)]
enum Attempt {
    ListLinks,
    GetLink(usize),
    ListTeableLinks,
    ListInvitations,
    GetInvitation(usize),
    ReadHistory,
    ReadMembers,
    ReadResource,
    PreviewEverything,
    AcceptEverything,
    AcceptEverythingAsTeable,
    JoinEverythingAsOnedata,
    AcceptInvitationsById,
    DeclineEverything,
    CreateLink(usize),
    ChangeLinks(usize),
    RotateLinks,
    SetOwnRole(usize),
    InviteOwnAddress(usize),
    CalcomInvite,
    OnedataToken,
    OnehubInvite,
    ReplayAlicesIdempotencyKey,
}

fn attempt() -> impl Strategy<Value = Attempt> {
    prop_oneof![
        Just(Attempt::ListLinks),
        (0..8usize).prop_map(Attempt::GetLink),
        Just(Attempt::ListTeableLinks),
        Just(Attempt::ListInvitations),
        (0..8usize).prop_map(Attempt::GetInvitation),
        Just(Attempt::ReadHistory),
        Just(Attempt::ReadMembers),
        Just(Attempt::ReadResource),
        Just(Attempt::PreviewEverything),
        Just(Attempt::AcceptEverything),
        Just(Attempt::AcceptEverythingAsTeable),
        Just(Attempt::JoinEverythingAsOnedata),
        Just(Attempt::AcceptInvitationsById),
        Just(Attempt::DeclineEverything),
        (0..ROLES.len()).prop_map(Attempt::CreateLink),
        (0..ROLES.len()).prop_map(Attempt::ChangeLinks),
        Just(Attempt::RotateLinks),
        (0..ROLES.len()).prop_map(Attempt::SetOwnRole),
        (0..ROLES.len()).prop_map(Attempt::InviteOwnAddress),
        Just(Attempt::CalcomInvite),
        Just(Attempt::OnedataToken),
        Just(Attempt::OnehubInvite),
        Just(Attempt::ReplayAlicesIdempotencyKey),
    ]
}

/// One case: mallory's starting role, the links the others make (who, which role, through
/// Teable's route or the native one), whether alice hands mallory a code and of which role,
/// and what mallory tries.
#[derive(Debug, Clone)]
struct Plan {
    mallory_rank: usize,
    links: Vec<(usize, usize, bool)>,
    handed: Option<usize>,
    attempts: Vec<Attempt>,
}

fn plan() -> impl Strategy<Value = Plan> {
    (
        3..ROLES.len(),
        proptest::collection::vec((0..3usize, 0..ROLES.len(), any::<bool>()), 1..6),
        proptest::option::of(0..ROLES.len()),
        proptest::collection::vec(attempt(), 1..10),
    )
        .prop_map(|(mallory_rank, links, handed, attempts)| Plan {
            mallory_rank,
            links,
            handed,
            attempts,
        })
}

/// What mallory has learnt from the API's answers.
#[derive(Default)]
struct Loot {
    texts: BTreeSet<String>,
    link_ids: BTreeSet<u64>,
    invitation_ids: BTreeSet<u64>,
}

impl Loot {
    /// Takes every string of an answer, and the ids of links and invitations in it.
    fn harvest(&mut self, value: &Value) {
        match value {
            Value::String(text) => {
                self.texts.insert(text.clone());
            }
            Value::Array(items) => items.iter().for_each(|v| self.harvest(v)),
            Value::Object(fields) => {
                for (name, v) in fields {
                    if let (Some(n), true) = (v.as_u64(), name == "id" || name == "invitation_id") {
                        // Ids of both kinds: trying each as the other costs nothing.
                        self.link_ids.insert(n);
                        self.invitation_ids.insert(n);
                    }
                    if let (Some(n), "invitationId") = (v.as_str(), name.as_str()) {
                        if let Ok(n) = n.parse() {
                            self.link_ids.insert(n);
                        }
                    }
                    self.harvest(v);
                }
            }
            _ => {}
        }
    }

    /// The strings that could be a code, or carry one.
    fn codes(&self) -> Vec<String> {
        self.texts
            .iter()
            .filter(|t| {
                let code_like = (t.len() == 43 || t.len() == 64)
                    && t.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
                code_like || t.contains("/invite") || t.contains("token=")
            })
            .cloned()
            .collect()
    }
}

struct Case<'a> {
    app: &'a TestApp,
    space: String,
    team: String,
    workspace: String,
    mallory: As,
    loot: Loot,
}

impl Case<'_> {
    /// Mallory's request; its answer is harvested. A 5xx fails the case.
    async fn ask(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), TestCaseError> {
        let response = self
            .app
            .send(method.clone(), path, &self.mallory, body)
            .await;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        prop_assert!(status < 500, "{method} {path}: {status} {text}");
        self.loot.harvest(&value);
        Ok((status, value))
    }

    fn nth(set: &BTreeSet<u64>, index: usize) -> Option<u64> {
        (!set.is_empty()).then(|| *set.iter().nth(index % set.len()).expect("in range"))
    }

    async fn attempt(&mut self, attempt: &Attempt) -> Result<(), TestCaseError> {
        let space = self.space.clone();
        let space_id = space.trim_start_matches("space/").to_string();
        match attempt {
            Attempt::ListLinks => {
                self.ask(
                    Method::GET,
                    &format!("/v1/resources/{space}/invite-links"),
                    None,
                )
                .await?;
            }
            Attempt::GetLink(index) => {
                if let Some(id) = Self::nth(&self.loot.link_ids, *index) {
                    let path = format!("/v1/resources/{space}/invite-links/{id}");
                    self.ask(Method::GET, &path, None).await?;
                }
            }
            Attempt::ListTeableLinks => {
                let path = format!("/api/space/{space_id}/invitation/link");
                self.ask(Method::GET, &path, None).await?;
            }
            Attempt::ListInvitations => {
                self.ask(
                    Method::GET,
                    &format!("/v1/resources/{space}/invitations"),
                    None,
                )
                .await?;
            }
            Attempt::GetInvitation(index) => {
                if let Some(id) = Self::nth(&self.loot.invitation_ids, *index) {
                    let path = format!("/v1/resources/{space}/invitations/{id}");
                    self.ask(Method::GET, &path, None).await?;
                }
            }
            Attempt::ReadHistory => {
                self.ask(Method::GET, &format!("/v1/resources/{space}/history"), None)
                    .await?;
                self.ask(Method::GET, "/v1/principals/mallory/history", None)
                    .await?;
            }
            Attempt::ReadMembers => {
                self.ask(Method::GET, &format!("/v1/resources/{space}/members"), None)
                    .await?;
                self.ask(Method::GET, "/v1/principals/mallory/memberships", None)
                    .await?;
                self.ask(
                    Method::GET,
                    "/v1/invitations?email=mallory@example.com",
                    None,
                )
                .await?;
            }
            Attempt::ReadResource => {
                self.ask(Method::GET, &format!("/v1/resources/{space}"), None)
                    .await?;
            }
            Attempt::PreviewEverything => {
                for code in self.loot.codes() {
                    let body = json!({ "code": code });
                    self.ask(Method::POST, "/v1/invitations/preview", Some(body))
                        .await?;
                }
            }
            Attempt::AcceptEverything => {
                for code in self.loot.codes() {
                    let body = json!({ "code": code });
                    self.ask(Method::POST, "/v1/invitations/accept", Some(body))
                        .await?;
                }
            }
            Attempt::AcceptEverythingAsTeable => {
                let ids: Vec<u64> = self.loot.link_ids.iter().copied().collect();
                for code in self.loot.codes() {
                    for id in &ids {
                        let body =
                            json!({ "invitationId": id.to_string(), "invitationCode": code });
                        self.ask(Method::POST, "/api/invitation/link/accept", Some(body))
                            .await?;
                    }
                }
            }
            Attempt::JoinEverythingAsOnedata => {
                for code in self.loot.codes() {
                    let body = json!({ "token": code });
                    self.ask(Method::POST, "/api/v3/onezone/user/spaces/join", Some(body))
                        .await?;
                }
            }
            Attempt::AcceptInvitationsById => {
                let ids: Vec<u64> = self.loot.invitation_ids.iter().copied().collect();
                for id in ids {
                    let path = format!("/v1/invitations/{id}/accept");
                    self.ask(Method::POST, &path, Some(json!({}))).await?;
                }
            }
            Attempt::DeclineEverything => {
                for code in self.loot.codes() {
                    let body = json!({ "code": code });
                    self.ask(Method::POST, "/v1/invitations/decline", Some(body))
                        .await?;
                }
            }
            Attempt::CreateLink(role) => {
                let path = format!("/v1/resources/{space}/invite-links");
                self.ask(Method::POST, &path, Some(json!({ "role": ROLES[*role] })))
                    .await?;
                let teable = format!("/api/space/{space_id}/invitation/link");
                self.ask(Method::POST, &teable, Some(json!({ "role": ROLES[*role] })))
                    .await?;
            }
            Attempt::ChangeLinks(role) => {
                let ids: Vec<u64> = self.loot.link_ids.iter().copied().collect();
                for id in ids {
                    let path = format!("/v1/resources/{space}/invite-links/{id}");
                    let body = json!({ "role": ROLES[*role], "max_uses": null });
                    self.ask(Method::PATCH, &path, Some(body)).await?;
                    let teable = format!("/api/space/{space_id}/invitation/link/{id}");
                    self.ask(
                        Method::PATCH,
                        &teable,
                        Some(json!({ "role": ROLES[*role] })),
                    )
                    .await?;
                }
            }
            Attempt::RotateLinks => {
                let ids: Vec<u64> = self.loot.link_ids.iter().copied().collect();
                for id in ids {
                    let path = format!("/v1/resources/{space}/invite-links/{id}/rotate");
                    self.ask(Method::POST, &path, Some(json!({}))).await?;
                    let resend = format!("/v1/resources/{space}/invitations/{id}/resend");
                    self.ask(Method::POST, &resend, Some(json!({}))).await?;
                }
            }
            Attempt::SetOwnRole(role) => {
                let path = format!("/v1/resources/{space}/members/mallory");
                self.ask(Method::PUT, &path, Some(json!({ "role": ROLES[*role] })))
                    .await?;
            }
            Attempt::InviteOwnAddress(role) => {
                let path = format!("/v1/resources/{space}/invitations");
                let body = json!({ "emails": ["mallory@example.com"], "role": ROLES[*role] });
                self.ask(Method::POST, &path, Some(body)).await?;
                let teable = format!("/api/space/{space_id}/invitation/email");
                let body = json!({ "emails": ["mallory@example.com"], "role": ROLES[*role] });
                self.ask(Method::POST, &teable, Some(body)).await?;
            }
            Attempt::CalcomInvite => {
                let team_id = self.team.trim_start_matches("team/").to_string();
                let path = format!("/v2/teams/{team_id}/invite");
                self.ask(Method::POST, &path, Some(json!({}))).await?;
            }
            Attempt::OnedataToken => {
                let path = format!("/api/v3/onezone/spaces/{space_id}/users/token");
                self.ask(Method::POST, &path, Some(json!({}))).await?;
            }
            Attempt::OnehubInvite => {
                let workspace_id = self.workspace.trim_start_matches("workspace/").to_string();
                let path = format!("/workspaces/{workspace_id}/invitations");
                let body = json!({ "invitation": { "emails": "mallory@example.com", "role_name": "administrator" } });
                self.ask(Method::POST, &path, Some(body)).await?;
            }
            Attempt::ReplayAlicesIdempotencyKey => {
                // Alice made a link under this key; the same key from mallory is mallory's.
                let response = self
                    .app
                    .client
                    .post(self.app.url(&format!("/v1/resources/{space}/invite-links")))
                    .bearer_auth(match &self.mallory {
                        As::KeyFor(key, _, _) => key.clone(),
                        _ => unreachable!("mallory acts through the host's key"),
                    })
                    .header("X-Roster-Actor", "mallory")
                    .header("Idempotency-Key", "alices-key")
                    .json(&json!({ "role": "owner" }))
                    .send()
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let status = response.status().as_u16();
                let value: Value = response.json().await.unwrap_or(Value::Null);
                // Mallory's own command, refused for want of `invite`: never alice's answer.
                prop_assert_eq!(status, 403, "{}", value);
                self.loot.harvest(&value);
            }
        }
        Ok(())
    }
}

/// The rank `principal` holds on `resource` (lower is higher), if a member.
async fn rank_of(app: &TestApp, resource: &str, principal: &str, roles: &[&str]) -> Option<usize> {
    let members = app.members(resource).await;
    members
        .iter()
        .find(|(p, _)| p == principal)
        .and_then(|(_, role)| roles.iter().position(|r| r == role))
}

async fn run_case(app: &TestApp, host: &str, n: u64, plan: &Plan) -> Result<(), TestCaseError> {
    let space = format!("space/atk{n}");
    let team = format!("team/{}", 7000 + n);
    let workspace = format!("workspace/{}", 9000 + n);
    for resource in [&space, &team, &workspace] {
        app.register(resource, "alice").await;
    }
    let set = |resource: &str, who: &str, role: &str| {
        let path = format!("/v1/resources/{resource}/members/{who}");
        let body = json!({ "role": role });
        async move {
            let response = app.put(&path, &As::Admin, body).await;
            assert_eq!(response.status().as_u16(), 200, "{path}");
        }
    };
    set(&space, "carol", "creator").await;
    set(&space, "erin", "editor").await;
    set(&space, "mallory", ROLES[plan.mallory_rank]).await;
    set(&team, "mallory", "member").await;
    set(&workspace, "mallory", "downloader").await;

    // The others make links at roles they may grant, and invitations to other addresses.
    let makers = ["alice", "carol", "erin"];
    for (maker, role, teable) in &plan.links {
        // Each may grant only at or below its own rank (rule 1): alice any, carol from
        // creator down, erin from editor down.
        let role = (*role).max(*maker);
        let who = As::AdminFor(makers[*maker].into());
        let response = if *teable {
            let space_id = space.trim_start_matches("space/");
            app.post(
                &format!("/api/space/{space_id}/invitation/link"),
                &who,
                json!({ "role": ROLES[role] }),
            )
            .await
        } else {
            app.post(
                &format!("/v1/resources/{space}/invite-links"),
                &who,
                json!({ "role": ROLES[role] }),
            )
            .await
        };
        assert_eq!(
            response.status().as_u16(),
            201,
            "{} making a {} link",
            makers[*maker],
            ROLES[role]
        );
    }
    app.invite(
        &space,
        &As::AdminFor("alice".into()),
        json!({ "emails": ["zoe@example.com", "yan@example.com"], "role": "creator" }),
    )
    .await;
    let alice_keyed = app
        .client
        .post(app.url(&format!("/v1/resources/{space}/invite-links")))
        .bearer_auth(ADMIN_TOKEN)
        .header("X-Roster-Actor", "alice")
        .header("Idempotency-Key", "alices-key")
        .json(&json!({ "role": "owner" }))
        .send()
        .await
        .expect("sent");
    assert_eq!(alice_keyed.status().as_u16(), 201);

    let mut case = Case {
        app,
        space: space.clone(),
        team: team.clone(),
        workspace: workspace.clone(),
        mallory: As::KeyFor(
            host.to_string(),
            "mallory".into(),
            Some("mallory@example.com".into()),
        ),
        loot: Loot::default(),
    };
    for attempt in &plan.attempts {
        case.attempt(attempt).await?;
    }

    // Handed a code by alice, who may see it: accepting it is mallory's right.
    let mut expected = plan.mallory_rank;
    if let Some(role) = plan.handed {
        let link = app
            .link(
                &space,
                &As::AdminFor("alice".into()),
                json!({ "role": ROLES[role] }),
            )
            .await;
        let code = text(&link, "/code");
        let response = app.accept(&code, &case.mallory).await;
        prop_assert_eq!(response.status().as_u16(), 200);
        expected = expected.min(role);
    }
    let on_space = rank_of(app, &space, "mallory", &ROLES).await;
    prop_assert_eq!(
        on_space,
        Some(expected),
        "mallory went from {} to {:?} on {}",
        ROLES[plan.mallory_rank],
        on_space.map(|r| ROLES[r]),
        space
    );
    let on_team = rank_of(app, &team, "mallory", &["owner", "admin", "member"]).await;
    prop_assert_eq!(on_team, Some(2), "the team: {:?}", on_team);
    let workspace_roles = [
        "administrator",
        "moderator",
        "collaborator",
        "creator",
        "downloader",
        "printer",
        "viewer",
    ];
    let on_workspace = rank_of(app, &workspace, "mallory", &workspace_roles).await;
    prop_assert_eq!(on_workspace, Some(4), "the workspace: {:?}", on_workspace);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_role_using_only_what_the_api_answered_never_rises_above_itself() {
    let app = Arc::new(spawn_app().await);
    let host = app.key("host", &["read", "write"], true, None).await;
    let handle = tokio::runtime::Handle::current();
    let counter = std::sync::atomic::AtomicU64::new(0);
    let mut runner = TestRunner::new(Config {
        cases: 24,
        source_file: Some(file!()),
        failure_persistence: Some(Box::new(FileFailurePersistence::SourceParallel(
            "proptest-regressions",
        ))),
        ..Config::default()
    });
    let outcome = tokio::task::block_in_place(|| {
        runner.run(&plan(), |plan| {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            handle.block_on(run_case(&app, &host, n, &plan))
        })
    });
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
}
