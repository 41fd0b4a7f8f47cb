//! What the cross-crate tests share: the filesystem that forgets what was not synced, and the
//! one way to wait for a condition.

pub mod lazyfs;
pub mod poll;
