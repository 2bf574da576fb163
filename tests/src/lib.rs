//! Helpers for weir privileged integration tests.

pub mod netns;
pub mod packets;
pub mod harness;
