//! Integration tests of the HTTP API over real TCP against the real server: one test binary,
//! a `spawn_app()` helper, a temporary data directory per test.

mod abuse;
mod attacker;
mod auth;
mod codes;
mod compat;
mod connections;
mod delivery;
mod errors;
mod findings;
mod fuzz_bodies;
mod helpers;
mod history;
mod idempotency;
mod invitations;
mod keys;
mod lifecycle;
mod limits;
mod links;
mod members;
mod past;
mod races;
mod resources;
mod system;
mod webhooks;
