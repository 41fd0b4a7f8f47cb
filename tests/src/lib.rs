//! What the cross-crate tests share: the filesystem that forgets what was not synced.

pub mod lazyfs;
