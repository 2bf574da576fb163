//! Errors of the lab library. The CLI adds context with `anyhow`.

use std::path::PathBuf;

use super::{cmd::CmdError, names::InvalidLabName, spec::SpecError};

/// What can go wrong in the lab.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LabError {
    /// The lab name is not usable.
    #[error(transparent)]
    Name(#[from] InvalidLabName),
    /// The lab files are not usable.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// An `ip`/`nft` command failed.
    #[error(transparent)]
    Cmd(#[from] CmdError),
    /// The lab is not up (no state file).
    #[error("lab {lab} is not up (no {})", path.display())]
    NotUp {
        /// The lab.
        lab: String,
        /// The state file looked for.
        path: PathBuf,
    },
    /// `lab up` over a lab that exists.
    #[error(
        "lab {lab} is already up ({}); run `weir lab down --lab {lab}` first, or `weir lab up --replace`",
        path.display()
    )]
    AlreadyUp {
        /// The lab.
        lab: String,
        /// Its state file.
        path: PathBuf,
    },
    /// A file of the lab's could not be read or written.
    #[error("{action} {}", path.display())]
    Io {
        /// What was being done ("cannot write").
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The state file is not valid.
    #[error("invalid lab state {}", path.display())]
    StateFormat {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// An address range ran out.
    #[error("no free address left in {range} for {what}")]
    Exhausted {
        /// The range.
        range: String,
        /// What needed one.
        what: String,
    },
    /// A pod or service CIDR is already routed on this machine.
    #[error(
        "{field} {cidr} overlaps {route} already routed on this machine (dev {dev}); choose another {field} in the Lab object"
    )]
    CidrInUse {
        /// The Lab field (`spec.podCIDR`, `spec.nodes[1].podCIDR`, ...).
        field: String,
        /// The lab's range.
        cidr: String,
        /// The existing route.
        route: String,
        /// Its device.
        dev: String,
    },
    /// No pod or external host has this name.
    #[error(
        "no pod or external host {name:?} in lab {lab} (use NAMESPACE/POD, an external host name, or an IP)"
    )]
    UnknownEndpoint {
        /// What was asked for.
        name: String,
        /// The lab.
        lab: String,
    },
    /// A responder did not come up.
    #[error("responder in {netns} did not start (see {})", log.display())]
    Responder {
        /// Its netns.
        netns: String,
        /// Its log file.
        log: PathBuf,
    },
    /// A DNS lookup or zone change failed.
    #[error("dns: {reason}")]
    Dns {
        /// Why.
        reason: String,
    },
    /// A network namespace could not be entered.
    #[error("cannot enter network namespace {netns}")]
    Netns {
        /// The netns name.
        netns: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Lab results.
pub type Result<T, E = LabError> = std::result::Result<T, E>;
