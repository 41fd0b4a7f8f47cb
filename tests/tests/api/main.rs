//! Integration tests of the HTTP API over real TCP against the real server: one test binary,
//! a `spawn_app()` helper, a temporary data directory per test.

mod delivery;
mod helpers;
mod lifecycle;
mod webhooks;
