//! The commands that talk to an agent or a cluster, one module each, over
//! one HTTP client ([`client`]) and one way of printing ([`output`]).
//! They import the API's wire types and the domain; nothing imports them
//! but `cli.rs`.

pub mod client;
pub mod kube;
pub mod learn;
pub mod observe;
pub mod output;
pub mod policy;

#[cfg(test)]
mod observe_tests;
