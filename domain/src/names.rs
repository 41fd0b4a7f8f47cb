//! Enums whose values are names (scopes, privileges, statuses): one list gives each variant its
//! serde name and its `name()`, so the log, the API and every message spell it one way.

/// Declares an enum of named values: each variant's name is its serde name (`#[serde(rename)]`
/// from the same literal) and what `name()` answers, so no caller needs a hand-written match
/// that could spell a value otherwise. Also `ALL`, every variant in declaration order, and
/// `parse`, the variant of a name.
macro_rules! named_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $($(#[$variant_meta:meta])* $variant:ident => $text:literal,)*
        }
    ) => {
        $(#[$meta])*
        #[derive(serde::Serialize, serde::Deserialize)]
        pub enum $name {
            $($(#[$variant_meta])* #[serde(rename = $text)] $variant,)*
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            /// The name the log, the API and every message use: the serde name.
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }

            /// The variant of that name, if any.
            pub fn parse(name: &str) -> Option<$name> {
                $name::ALL.iter().copied().find(|v| v.name() == name)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use crate::{CodeKind, CodeStatus, InvitationStatus, LinkStatus, Privilege, Scope};

    /// Each name is what serde writes and reads, for every variant of every named enum.
    fn agrees<T>(all: &[T], name: fn(T) -> &'static str, parse: fn(&str) -> Option<T>)
    where
        T: Copy + PartialEq + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
    {
        for value in all {
            let text = name(*value);
            assert_eq!(serde_json::to_value(value).ok(), Some(text.into()));
            assert_eq!(serde_json::from_value::<T>(text.into()).ok(), Some(*value));
            assert_eq!(parse(text), Some(*value));
        }
        assert_eq!(parse("no such name"), None);
    }

    #[test]
    fn every_name_is_the_serde_name() {
        agrees(Scope::ALL, Scope::name, Scope::parse);
        agrees(Privilege::ALL, Privilege::name, Privilege::parse);
        agrees(LinkStatus::ALL, LinkStatus::name, LinkStatus::parse);
        agrees(
            InvitationStatus::ALL,
            InvitationStatus::name,
            InvitationStatus::parse,
        );
        agrees(CodeKind::ALL, CodeKind::name, CodeKind::parse);
        agrees(CodeStatus::ALL, CodeStatus::name, CodeStatus::parse);
        // The spellings the API has always used.
        assert_eq!(Scope::Audit.name(), "audit");
        assert_eq!(Privilege::ManageInvitations.name(), "manage_invitations");
        assert_eq!(InvitationStatus::Expired.name(), "expired");
        assert_eq!(CodeStatus::Exhausted.name(), "exhausted");
    }
}
