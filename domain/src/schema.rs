//! Role schemas: per resource kind, the roles highest first with their privileges, and the rule for changing them.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{DomainError, Kind};

named_enum! {
    /// What a role allows on a resource (DESIGN section 2, Privileges). Its name (`manage_members`,
    /// never the variant's) is what the API and every message use.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
    pub enum Privilege {
        ViewMembers => "view_members",
        Invite => "invite",
        ManageInvitations => "manage_invitations",
        ManageMembers => "manage_members",
        ViewHistory => "view_history",
    }
}

impl std::fmt::Display for Privilege {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A role's name: matched case-insensitively, so kept lowercase; `[a-z][a-z0-9_-]{0,31}` once lowered.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RoleName(String);

impl RoleName {
    pub fn parse(text: &str) -> Result<RoleName, DomainError> {
        let lower = text.trim().to_ascii_lowercase();
        let mut chars = lower.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
        let rest_ok =
            chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if first_ok && rest_ok && lower.len() <= 32 {
            Ok(RoleName(lower))
        } else {
            Err(DomainError::UnknownRole(text.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for RoleName {
    type Error = DomainError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        RoleName::parse(&text)
    }
}

impl From<RoleName> for String {
    fn from(role: RoleName) -> String {
        role.0
    }
}

/// One role of a schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleDef {
    pub name: RoleName,
    pub privileges: BTreeSet<Privilege>,
}

/// What the schema-change rule needs to know about a kind, gathered by the caller across resources.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KindUsage {
    /// Whether any resource of the kind is registered.
    pub has_resources: bool,
    /// Every role some member of some resource of the kind holds now.
    pub roles_held: BTreeSet<RoleName>,
}

impl KindUsage {
    /// A kind nobody uses yet.
    pub const UNUSED: KindUsage = KindUsage {
        has_resources: false,
        roles_held: BTreeSet::new(),
    };
}

/// Most roles one schema may list; a limit on everything that grows with input.
pub const ROLES_PER_SCHEMA_MAX: usize = 32;

/// For one resource kind: the roles highest first, each with its privileges, and the default role.
///
/// Ranks are positions in `roles`: 0 is the highest. "Ranks at or above" means a smaller or equal position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RoleSchemaFields")]
pub struct RoleSchema {
    kind: Kind,
    roles: Vec<RoleDef>,
    default_role: RoleName,
}

/// A schema as written, checked by [`RoleSchema::new`] before it becomes one.
#[derive(Deserialize)]
struct RoleSchemaFields {
    kind: Kind,
    roles: Vec<RoleDef>,
    default_role: RoleName,
}

impl TryFrom<RoleSchemaFields> for RoleSchema {
    type Error = DomainError;
    fn try_from(fields: RoleSchemaFields) -> Result<Self, Self::Error> {
        RoleSchema::new(fields.kind, fields.roles, fields.default_role)
    }
}

impl RoleSchema {
    /// Builds a schema, checking it has 1 to 32 distinct roles and that the default is one of them.
    pub fn new(
        kind: Kind,
        roles: Vec<RoleDef>,
        default_role: RoleName,
    ) -> Result<RoleSchema, DomainError> {
        if roles.is_empty() || roles.len() > ROLES_PER_SCHEMA_MAX {
            return Err(DomainError::InvalidRequest(format!(
                "a role schema lists 1 to {ROLES_PER_SCHEMA_MAX} roles"
            )));
        }
        let names: BTreeSet<&RoleName> = roles.iter().map(|r| &r.name).collect();
        if names.len() != roles.len() {
            return Err(DomainError::InvalidRequest(
                "role names must be distinct".into(),
            ));
        }
        if !names.contains(&default_role) {
            return Err(DomainError::UnknownRole(default_role.to_string()));
        }
        Ok(RoleSchema {
            kind,
            roles,
            default_role,
        })
    }

    /// The schema in force for a kind nobody has defined a schema for (DESIGN section 2, Built-in role schemas).
    ///
    /// "Creator all but granting owner" is read as: the creator holds every privilege, and rule 1
    /// alone keeps it from granting the highest role, since only a holder of the highest role may
    /// grant it. The same reading applies to the team's admin and Onehub's moderator.
    pub fn builtin(kind: &Kind) -> RoleSchema {
        use Privilege::*;
        let all: &[Privilege] = Privilege::ALL;
        let view: &[Privilege] = &[ViewMembers];
        let table: (&[(&str, &[Privilege])], &str) = match kind.as_str() {
            "team" => (
                &[("owner", all), ("admin", all), ("member", view)],
                "member",
            ),
            "workspace" | "folder" | "file" => (
                &[
                    ("administrator", all),
                    ("moderator", all),
                    ("collaborator", view),
                    ("creator", view),
                    ("downloader", view),
                    ("printer", view),
                    ("viewer", view),
                ],
                "downloader",
            ),
            _ => (
                &[
                    ("owner", all),
                    ("creator", all),
                    ("editor", &[ViewMembers, Invite]),
                    ("commenter", view),
                    ("viewer", view),
                ],
                "viewer",
            ),
        };
        let (rows, default_role) = table;
        RoleSchema {
            kind: kind.clone(),
            roles: rows
                .iter()
                .map(|(name, privileges)| RoleDef {
                    name: RoleName((*name).to_owned()),
                    privileges: privileges.iter().copied().collect(),
                })
                .collect(),
            default_role: RoleName(default_role.to_owned()),
        }
    }

    pub fn kind(&self) -> &Kind {
        &self.kind
    }

    /// The roles, highest first.
    pub fn roles(&self) -> &[RoleDef] {
        &self.roles
    }

    pub fn default_role(&self) -> &RoleName {
        &self.default_role
    }

    /// The highest role, the one rule 3 keeps at least one holder of.
    pub fn highest(&self) -> &RoleName {
        // `new` and `builtin` never build a schema without roles.
        &self.roles[0].name
    }

    /// The rank of a role (0 is the highest), or `None` if the schema has no such role.
    pub fn rank(&self, role: &RoleName) -> Option<usize> {
        self.roles.iter().position(|r| &r.name == role)
    }

    /// The rank of a role, or `unknown_role`.
    pub fn rank_of(&self, role: &RoleName) -> Result<usize, DomainError> {
        self.rank(role)
            .ok_or_else(|| DomainError::UnknownRole(role.to_string()))
    }

    /// Whether `role` carries `privilege`; a role the schema no longer lists carries none.
    pub fn allows(&self, role: &RoleName, privilege: Privilege) -> bool {
        self.roles
            .iter()
            .any(|r| &r.name == role && r.privileges.contains(&privilege))
    }

    /// The role a command asked for, or the default role when it named none.
    pub fn resolve(&self, role: Option<&RoleName>) -> Result<RoleName, DomainError> {
        let role = role.unwrap_or(&self.default_role);
        self.rank_of(role)?;
        Ok(role.clone())
    }

    /// The schema-change rule of DESIGN section 2: a change may add roles and change privileges, but
    /// may not remove a role somebody holds, nor change the highest role of a kind that has resources.
    pub fn check_change_to(&self, next: &RoleSchema, usage: &KindUsage) -> Result<(), DomainError> {
        if usage.has_resources && self.highest() != next.highest() {
            return Err(DomainError::Conflict(format!(
                "kind {} has resources, so its highest role must stay {}",
                self.kind,
                self.highest()
            )));
        }
        if let Some(held) = self
            .roles
            .iter()
            .map(|r| &r.name)
            .find(|name| next.rank(name).is_none() && usage.roles_held.contains(*name))
        {
            return Err(DomainError::Conflict(format!(
                "the role {held} is held by a member of a {} resource",
                self.kind
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(k: &str) -> Kind {
        Kind::parse(k).unwrap()
    }

    #[test]
    fn builtins_match_the_design_table() {
        let space = RoleSchema::builtin(&kind("space"));
        let names: Vec<&str> = space.roles().iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["owner", "creator", "editor", "commenter", "viewer"]);
        assert_eq!(space.default_role().as_str(), "viewer");
        assert!(space.allows(&RoleName::parse("editor").unwrap(), Privilege::Invite));
        assert!(!space.allows(
            &RoleName::parse("editor").unwrap(),
            Privilege::ManageMembers
        ));

        assert_eq!(
            RoleSchema::builtin(&kind("anything")).roles(),
            space.roles()
        );
        assert_eq!(
            RoleSchema::builtin(&kind("team")).default_role().as_str(),
            "member"
        );
        let folder = RoleSchema::builtin(&kind("folder"));
        assert_eq!(folder.highest().as_str(), "administrator");
        assert_eq!(folder.default_role().as_str(), "downloader");
    }

    #[test]
    fn a_schema_read_from_json_is_checked() {
        let empty = r#"{"kind":"k","roles":[],"default_role":"a"}"#;
        assert!(serde_json::from_str::<RoleSchema>(empty).is_err());
        let team = RoleSchema::builtin(&kind("team"));
        let json = serde_json::to_string(&team).unwrap();
        assert_eq!(serde_json::from_str::<RoleSchema>(&json).unwrap(), team);
    }

    #[test]
    fn role_names_are_case_insensitive() {
        let team = RoleSchema::builtin(&kind("team"));
        assert_eq!(team.rank(&RoleName::parse("ADMIN").unwrap()), Some(1));
        assert_eq!(
            RoleName::parse("no spaces").unwrap_err().code(),
            "unknown_role"
        );
    }

    #[test]
    fn a_schema_needs_distinct_roles_and_a_listed_default() {
        let role = |n: &str| RoleDef {
            name: RoleName::parse(n).unwrap(),
            privileges: BTreeSet::new(),
        };
        let def = RoleName::parse("a").unwrap();
        assert!(RoleSchema::new(kind("k"), vec![], def.clone()).is_err());
        assert!(RoleSchema::new(kind("k"), vec![role("a"), role("A")], def.clone()).is_err());
        assert!(RoleSchema::new(kind("k"), vec![role("b")], def.clone()).is_err());
        assert!(RoleSchema::new(kind("k"), vec![role("a")], def).is_ok());
    }
}
