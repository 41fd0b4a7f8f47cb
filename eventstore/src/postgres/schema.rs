//! The PostgreSQL store's tables, created and upgraded by numbered migrations under an
//! advisory lock, so that nodes starting together migrate once.

use tokio_postgres::Client;

use crate::error::StoreError;

use super::db_error;

/// The event-format level this build writes and reads. A store stamped with a higher one was
/// written by a newer Roster: this node refuses it rather than misread it.
pub const FORMAT_LEVEL: i32 = 1;

/// Each migration once, in order; never edit one that has shipped, add the next.
/// `{schema}` is the store's schema name (checked to be a plain identifier).
const MIGRATIONS: &[(i32, &str)] = &[(
    1,
    r"
CREATE TABLE {schema}.events (
    position    bigint PRIMARY KEY,
    stream      text NOT NULL,
    version     bigint NOT NULL,
    event_type  text NOT NULL,
    occurred_at timestamptz NOT NULL,
    actor       text NOT NULL,
    command_id  text NOT NULL,
    -- For SQL readers; the hash covers `envelope`, the exact bytes written.
    data        jsonb NOT NULL,
    envelope    bytea NOT NULL,
    UNIQUE (stream, version)
);
CREATE TABLE {schema}.commands (
    command_id  text PRIMARY KEY,
    stream      text NOT NULL,
    position    bigint NOT NULL,
    version     bigint NOT NULL,
    events      bigint NOT NULL,
    fingerprint bytea
);
-- The chain's head: one row, locked by every group commit.
CREATE TABLE {schema}.head (
    id        integer PRIMARY KEY CHECK (id = 1),
    position  bigint NOT NULL,
    hash      bytea NOT NULL,
    latest_ms bigint NOT NULL
);
INSERT INTO {schema}.head VALUES (1, 0, '\x0000000000000000000000000000000000000000000000000000000000000000', -9223372036854775808);
-- What every node must agree on: see `Identity`.
CREATE TABLE {schema}.identity (
    id                 integer PRIMARY KEY CHECK (id = 1),
    store_id           text NOT NULL,
    format_level       integer NOT NULL,
    secret_fingerprint text,
    settings           jsonb
);
-- Workers that must run on one node at a time (delivery, webhooks).
CREATE TABLE {schema}.leases (
    name       text PRIMARY KEY,
    holder     text NOT NULL,
    token      bigint NOT NULL,
    expires_at timestamptz NOT NULL
);
",
)];

/// A schema name as it goes into SQL text: a plain lowercase identifier, nothing to quote.
pub fn check_schema_name(schema: &str) -> Result<(), StoreError> {
    let plain = schema.len() <= 63
        && schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "schema name {schema:?}: 1 to 63 of a-z, 0-9 and _, not starting with a digit"
        )))
    }
}

/// Brings the store's tables to this build's version; returns the migrations it applied.
/// Nodes starting together take turns on an advisory lock; a store migrated by a newer build
/// is refused.
pub async fn migrate(client: &mut Client, schema: &str) -> Result<Vec<i32>, StoreError> {
    check_schema_name(schema)?;
    let lock_key = format!("roster migrate {schema}");
    client
        .execute("SELECT pg_advisory_lock(hashtext($1))", &[&lock_key])
        .await
        .map_err(db_error)?;
    let migrated = apply_migrations(client, schema).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock(hashtext($1))", &[&lock_key])
        .await
        .map_err(db_error);
    let applied = migrated?;
    unlocked?;
    Ok(applied)
}

async fn apply_migrations(client: &mut Client, schema: &str) -> Result<Vec<i32>, StoreError> {
    client
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema};
             CREATE TABLE IF NOT EXISTS {schema}.migrations (
                 version    integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now());"
        ))
        .await
        .map_err(db_error)?;
    let row = client
        .query_one(
            &format!("SELECT coalesce(max(version), 0) FROM {schema}.migrations"),
            &[],
        )
        .await
        .map_err(db_error)?;
    let current: i32 = row.get(0);
    let newest = MIGRATIONS.last().map_or(0, |(version, _)| *version);
    if current > newest {
        return Err(StoreError::Incompatible(format!(
            "the store's schema is at migration {current}, newer than this build's {newest}: \
             upgrade this node"
        )));
    }
    let mut applied = Vec::new();
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        let transaction = client.transaction().await.map_err(db_error)?;
        transaction
            .batch_execute(&sql.replace("{schema}", schema))
            .await
            .map_err(db_error)?;
        transaction
            .execute(
                &format!("INSERT INTO {schema}.migrations (version) VALUES ($1)"),
                &[version],
            )
            .await
            .map_err(db_error)?;
        transaction.commit().await.map_err(db_error)?;
        applied.push(*version);
    }
    Ok(applied)
}

/// What every node on one store must agree on, kept in its identity row by the first node:
/// the secret's fingerprint (never the secret) and the settings that change decisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// An HMAC of a fixed label under the secret: equal secrets give equal fingerprints.
    pub secret_fingerprint: String,
    /// The decision settings, as canonical JSON text.
    pub settings: serde_json::Value,
}

/// Records `identity` in an empty store, or checks it against the one recorded; says which
/// part differs. Also refuses a store of a newer event format. Returns the store's id, made
/// by the first node: a node's local read models belong to one store.
pub async fn claim_identity(
    client: &Client,
    schema: &str,
    identity: &Identity,
) -> Result<String, StoreError> {
    let store_id = ulid::Ulid::new().to_string();
    client
        .execute(
            &format!(
                "INSERT INTO {schema}.identity VALUES (1, $1, $2, $3, $4::text::jsonb) ON CONFLICT (id) DO NOTHING"
            ),
            &[
                &store_id,
                &FORMAT_LEVEL,
                &identity.secret_fingerprint,
                &identity.settings.to_string(),
            ],
        )
        .await
        .map_err(db_error)?;
    let row = client
        .query_one(
            &format!(
                "SELECT format_level, secret_fingerprint, settings::text, store_id \
                 FROM {schema}.identity"
            ),
            &[],
        )
        .await
        .map_err(db_error)?;
    let level: i32 = row.get(0);
    let fingerprint: Option<String> = row.get(1);
    let settings: Option<String> = row.get(2);
    if level > FORMAT_LEVEL {
        return Err(StoreError::Incompatible(format!(
            "the store holds events of format {level}, newer than this build's {FORMAT_LEVEL}: \
             upgrade this node"
        )));
    }
    if fingerprint.as_deref() != Some(identity.secret_fingerprint.as_str()) {
        return Err(StoreError::Incompatible(
            "ROSTER_SECRET differs from the one the store's other nodes use".into(),
        ));
    }
    let recorded: Option<serde_json::Value> =
        settings.and_then(|text| serde_json::from_str(&text).ok());
    if recorded.as_ref() != Some(&identity.settings) {
        let differing = differing_keys(recorded.as_ref(), &identity.settings);
        return Err(StoreError::Incompatible(format!(
            "decision settings differ from the store's other nodes: {}",
            differing.join(", ")
        )));
    }
    Ok(row.get(3))
}

/// The top-level keys whose values differ between two JSON objects.
fn differing_keys(recorded: Option<&serde_json::Value>, ours: &serde_json::Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let recorded = recorded.and_then(|v| v.as_object()).unwrap_or(&empty);
    let ours = ours.as_object().unwrap_or(&empty);
    let mut keys: Vec<String> = recorded
        .keys()
        .chain(ours.keys())
        .filter(|key| recorded.get(*key) != ours.get(*key))
        .map(|key| {
            format!(
                "{key} (store: {}, this node: {})",
                recorded.get(key).map_or("none".into(), ToString::to_string),
                ours.get(key).map_or("none".into(), ToString::to_string)
            )
        })
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        for good in ["roster", "roster_2", "_x"] {
            assert!(check_schema_name(good).is_ok(), "{good}");
        }
        for bad in ["", "Roster", "2x", "a;b", "a b", "a\"b", &"x".repeat(64)] {
            assert!(check_schema_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn differing_settings_are_named_with_both_values() {
        let recorded = serde_json::json!({"a": 1, "b": 2});
        let ours = serde_json::json!({"a": 1, "b": 3, "c": 4});
        assert_eq!(
            differing_keys(Some(&recorded), &ours),
            [
                "b (store: 2, this node: 3)".to_string(),
                "c (store: none, this node: 4)".to_string()
            ]
        );
    }
}
