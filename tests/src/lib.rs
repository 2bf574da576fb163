//! Helpers for weir privileged integration tests.
