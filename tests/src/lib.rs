//! Helpers for weir privileged integration tests.

pub mod chart;
pub mod cni;
pub mod dns_burst;
pub mod fake_apiserver;
pub mod harness;
pub mod netns;
pub mod packets;
pub mod policy_set;
pub mod shop;
pub mod test_run;
