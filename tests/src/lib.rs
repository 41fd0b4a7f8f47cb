//! What the cross-crate tests share: the filesystem that forgets what was not synced, the one
//! way to wait for a condition, what the crash tests read and check, and an engine on memory.

pub mod crash;
pub mod lazyfs;
pub mod pg;
pub mod poll;

use std::sync::Arc;

use roster_engine::{Engine, EngineConfig};
use roster_eventstore::{EventStore, MemoryStore};
use roster_projections::{ReadModels, Snapshots};

/// An engine on an in-memory log and read models, with handles on both kept for the test to
/// look behind the engine (what the log holds, what the read models say).
pub async fn engine_in_memory(config: EngineConfig) -> (Arc<MemoryStore>, Arc<ReadModels>, Engine) {
    let store = Arc::new(MemoryStore::in_memory());
    let models = Arc::new(ReadModels::in_memory());
    let engine = Engine::start_with(
        Arc::clone(&store) as Arc<dyn EventStore>,
        Arc::clone(&models),
        Snapshots::in_memory(),
        config,
    )
    .await
    .expect("an engine on memory starts");
    (store, models, engine)
}
