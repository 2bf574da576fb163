//! The enforcer: what the user asked to enforce (policies and per-namespace
//! modes, kept in `--state-dir`), compiled by the generator against the
//! node's pods, written to the datapath's enforcement maps.
//!
//! Every change, whether a policy, a mode or the inventory (pods come and
//! go, IPs change), goes the same way, and either completes or changes
//! nothing:
//!
//! 1. the whole policy set is validated ([`PolicySet::new`]): one invalid
//!    policy refuses the change, the previous set stays in force;
//! 2. it is compiled ([`compile`](weir_generator::datapath::compile)) with the identity allocator kept from
//!    the last compile, so unchanged pods keep their identities and the
//!    diff stays small;
//! 3. the node's entries (ENDPOINTS only for pods attached here, keyed by
//!    their host veth's ifindex) are checked against each map's capacity
//!    *before* anything is written: an overflow is refused naming the map
//!    and its limit;
//! 4. the writes are applied in the order of [`entries::plan`] (new
//!    identities, CIDRs, peers and rules, then endpoints, deletes last), so
//!    no connection both old and new policies allow is refused mid-update;
//!    a failed write rolls the maps back to the previous content;
//! 5. the desired state is saved, and so is the identity allocator;
//! 6. flows judged AUDIT or DROPPED at the endpoints the change could allow
//!    more for ([`entries::rejudge`]) are deleted from the flow table, so
//!    their next packet is judged under the new maps: a UDP 5-tuple that
//!    kept sending while denied passes as soon as the policy allowing it is
//!    applied. FORWARDED flows are kept, so a change that denies spares
//!    established connections until they end or idle out, as Cilium and an
//!    iptables `ESTABLISHED` rule do; removing an allowance must not cut a
//!    transfer in the middle, and new connections get the new verdict.
//!    Only then does the caller hear "applied", which therefore means
//!    "enforced".
//!
//! The maps may be pinned by a previous agent: at start the enforcer reads
//! what they hold and the first compile is diffed against that, with the
//! identity allocator the previous agent saved ([`state_file::IdentitiesFile`]),
//! so a restart rewrites nothing that did not change. (Without that file,
//! a new agent numbers identities afresh; while it rewrites the maps, new
//! connections can be judged against a mix of both numberings.)

pub mod entries;
pub mod kernel;
pub mod state_file;
pub mod task;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    sync::Arc,
};

use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde::Serialize;
use weir_generator::{
    cluster::Cluster,
    datapath::{self, CompileError, DatapathState, Identities, Input, Mode, PodKey},
    eval::{Direction, PolicyError, PolicySet},
};

use self::{
    entries::{Entries, MAPS, MapIoError, Op, PolicyMapsIo},
    state_file::{Desired, DesiredError, DesiredFile, IdentitiesFile, key_of},
};
use crate::{error_chain::chain, flow::CheckedDirection};

/// What the enforcer needs to know of the node, from the datapath task's
/// view of the pod source.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeView {
    /// Namespaces, pods, Services.
    pub cluster: Arc<Cluster>,
    /// The pods attached on this node, by their host veth's ifindex.
    pub local: BTreeMap<PodKey, u32>,
    /// The node's own addresses: they resolve to the host identity, always
    /// allowed (kubelet probes), as NetworkPolicy requires.
    pub node_ips: Vec<IpAddr>,
    /// The policy set the pod source declares (the cluster's
    /// NetworkPolicies), when it has one: it replaces the stored set whole.
    pub policies: Option<crate::resolve::ClusterPolicies>,
    /// The modes the pod source declares (namespace labels), when it has
    /// them: they replace the stored modes whole.
    pub modes: Option<BTreeMap<String, Mode>>,
}

/// A change to what is enforced.
#[derive(Clone, Debug)]
pub enum Change {
    /// Add or replace these policies (by namespace and name); first remove
    /// every policy of the `replace` namespaces.
    Apply {
        /// Policies.
        policies: Vec<NetworkPolicy>,
        /// Namespaces whose previous policies go.
        replace: BTreeSet<String>,
    },
    /// Remove one policy.
    Delete {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// Set a namespace's mode.
    SetMode {
        /// Namespace.
        namespace: String,
        /// Mode.
        mode: Mode,
    },
}

/// Why a change was refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnforceError {
    /// The resulting policy set does not validate; nothing changed.
    #[error("the policy set is invalid, nothing changed")]
    Invalid {
        /// The first invalid policy and field.
        #[source]
        source: PolicyError,
    },
    /// The compiler refused the set; nothing changed.
    #[error("cannot compile the policies, nothing changed")]
    Compile {
        /// Why.
        #[source]
        source: CompileError,
    },
    /// A map would overflow; nothing changed.
    #[error("map {map} needs {needed} entries, its limit is {limit}; nothing changed")]
    MapFull {
        /// The map.
        map: &'static str,
        /// Entries needed on this node.
        needed: usize,
        /// Its capacity.
        limit: usize,
    },
    /// No such policy.
    #[error("no enforced policy {namespace}/{name}")]
    NoSuchPolicy {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// The pod source was not read yet.
    #[error("the agent has not read its pod source yet")]
    NotReady,
    /// The pod source declares this (the cluster's objects); change it there.
    #[error("{what}: change them in the cluster")]
    Declared {
        /// What the source declares.
        what: &'static str,
    },
    /// A map write failed; the previous content was restored.
    #[error("a map write failed (previous enforcement {})", if *rolled_back { "restored" } else { "NOT fully restored" })]
    Write {
        /// Whether the rollback succeeded.
        rolled_back: bool,
        /// The write.
        #[source]
        source: MapIoError,
    },
    /// The desired state cannot be saved; the maps were restored.
    #[error("cannot save the enforced policies")]
    Save {
        /// Why.
        #[source]
        source: DesiredError,
    },
    /// The desired state cannot be read at start ([`Enforcer::new`]); its
    /// message names the file.
    #[error(transparent)]
    Load {
        /// Why.
        source: DesiredError,
    },
    /// The maps cannot be read at start ([`Enforcer::new`]); its message
    /// names the map.
    #[error(transparent)]
    ReadMaps {
        /// The read.
        source: MapIoError,
    },
}

impl EnforceError {
    /// Whether the client's input is at fault (4xx), not the agent.
    #[must_use]
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            Self::Invalid { .. }
                | Self::Compile { .. }
                | Self::MapFull { .. }
                | Self::NoSuchPolicy { .. }
                | Self::Declared { .. }
        )
    }
}

/// What a change did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// Map writes done.
    pub writes: usize,
    /// Denied flows deleted from the flow table to be judged again.
    pub rejudged_flows: usize,
    /// Entries per map afterwards.
    pub entries: BTreeMap<&'static str, usize>,
}

/// What is enforced (the API converts it to its JSON form).
#[derive(Clone, Debug, Default)]
pub struct View {
    /// The enforced policies, by namespace and name.
    pub policies: Vec<NetworkPolicy>,
    /// Namespace -> mode, as set.
    pub modes: BTreeMap<String, Mode>,
    /// The mode of every other namespace.
    pub default_mode: Mode,
    /// Entries per map.
    pub entries: BTreeMap<&'static str, usize>,
    /// Capacity per map (after overrides).
    pub limits: BTreeMap<&'static str, usize>,
    /// Whether the maps reflect the policies (the pod source was read).
    pub ready: bool,
    /// Why the pinned maps are kept as they are instead of what is
    /// desired: the saved file is gone while they still judge.
    pub held: Option<String>,
}

impl View {
    /// Whether some namespace is judged (audit or enforce).
    #[must_use]
    pub fn judging(&self) -> bool {
        self.held.is_some()
            || self.default_mode != Mode::Observe
            || self.modes.values().any(|m| *m != Mode::Observe)
    }
}

/// What the flow log needs to explain a verdict.
#[derive(Debug, Default)]
pub struct Explain {
    identity_of: HashMap<u32, u32>,
    isolation: BTreeMap<(u32, Direction), Vec<String>>,
}

impl Explain {
    /// The policies isolating the pod behind `ifindex` in `direction`.
    #[must_use]
    pub fn policies(&self, ifindex: u32, direction: CheckedDirection) -> Vec<String> {
        let direction = match direction {
            CheckedDirection::Ingress => Direction::Ingress,
            CheckedDirection::Egress => Direction::Egress,
        };
        self.identity_of
            .get(&ifindex)
            .and_then(|id| self.isolation.get(&(*id, direction)))
            .cloned()
            .unwrap_or_default()
    }
}

/// The enforcer's state; driven by [`task`].
pub struct Enforcer<M> {
    maps: M,
    file: DesiredFile,
    identities_file: IdentitiesFile,
    desired: Desired,
    default_mode: Mode,
    identities: Identities,
    applied: Entries,
    compiled: DatapathState,
    node: Option<Arc<NodeView>>,
    limits: [usize; 6],
    /// Set while the pinned maps are kept as found (see [`View::held`]).
    held: Option<String>,
}

impl<M: PolicyMapsIo> Enforcer<M> {
    /// Load the desired state from `file` and read what the maps hold.
    /// Nothing is written until [`Enforcer::set_node`].
    ///
    /// # Errors
    /// [`EnforceError::Load`] for an unreadable file,
    /// [`EnforceError::ReadMaps`] for unreadable maps.
    pub fn new(
        maps: M,
        file: DesiredFile,
        default_mode: Mode,
        limit_overrides: &BTreeMap<String, usize>,
    ) -> Result<Self, EnforceError> {
        let desired = file
            .load()
            .map_err(|source| EnforceError::Load { source })?;
        let identities_file = IdentitiesFile::beside(&file);
        let identities = match identities_file.load() {
            Ok(saved) => saved.unwrap_or_default(),
            Err(error) => {
                tracing::warn!(
                    error = chain(&error),
                    "cannot read the saved identities, numbering afresh (the first update rewrites the maps)"
                );
                Identities::new()
            }
        };
        let applied = maps
            .read()
            .map_err(|source| EnforceError::ReadMaps { source })?;
        // The file gone while the pinned maps still judge some pod: a
        // missing file must not silently end enforcement. Keep the maps as
        // they are until told (a change through the API).
        let held = (!file.path().exists()
            && applied
                .endpoints
                .values()
                .any(|e| e.mode != weir_ebpf::abi::MODE_OBSERVE))
        .then(|| {
            let judged = applied
                .endpoints
                .values()
                .filter(|e| e.mode != weir_ebpf::abi::MODE_OBSERVE)
                .count();
            let reason = format!(
                "{} is missing while the pinned maps still judge {judged} pods \
                 ({} policy entries): enforcement is kept as pinned, frozen, until a change \
                 through the API (weir mode set, weir policy apply) replaces it; \
                 restore the file and restart to enforce it again, or `weir agent --cleanup` to end it",
                file.path().display(),
                applied.exact.len() + applied.policy.len()
            );
            tracing::error!("{reason}");
            reason
        });
        let mut limits = maps.capacity();
        for (i, name) in MAPS.iter().enumerate() {
            if let Some(limit) = limit_overrides.get(*name) {
                limits[i] = limits[i].min(*limit);
            }
        }
        Ok(Self {
            maps,
            file,
            identities_file,
            desired,
            default_mode,
            identities,
            applied,
            compiled: DatapathState::default(),
            node: None,
            limits,
            held,
        })
    }

    /// What the maps held at start (a previous agent's pinned state).
    #[must_use]
    pub fn applied(&self) -> &Entries {
        &self.applied
    }

    /// A new view of the node: recompile what is desired against it.
    ///
    /// # Errors
    /// As [`Enforcer::change`]; the previous maps stay.
    pub fn set_node(&mut self, node: Arc<NodeView>) -> Result<Outcome, EnforceError> {
        let previous = self.node.replace(Arc::clone(&node));
        let declared = node.policies.is_some() && node.modes.is_some();
        if self.held.is_some() && !declared {
            // Held: the maps stay as the previous agent left them.
            return Ok(Outcome {
                writes: 0,
                rejudged_flows: 0,
                entries: self.entry_counts(),
            });
        }
        let result = if node.policies.is_some() || node.modes.is_some() {
            self.commit_declared(&node)
        } else {
            let desired = self.desired.clone();
            self.commit(desired, false)
        };
        if result.is_err() && previous.is_some() {
            // The maps still hold what the previous view compiled to.
            self.node = previous;
        }
        result
    }

    /// The source declares the policy set and/or the modes (the cluster's
    /// NetworkPolicies and namespace labels): they replace what is stored.
    /// A declared set that does not validate is refused whole: the
    /// previous set stays in force, while the pods and modes still follow
    /// the view. What is enforced is saved, so a restart without the
    /// source enforces it again.
    fn commit_declared(&mut self, node: &NodeView) -> Result<Outcome, EnforceError> {
        let mut desired = self.desired.clone();
        if let Some(modes) = &node.modes {
            desired.modes.clone_from(modes);
        }
        let mut with_policies = desired.clone();
        if let Some(policies) = &node.policies {
            with_policies.policies = policies
                .policies()
                .iter()
                .map(|p| (key_of(p), p.clone()))
                .collect();
        }
        match self.commit(with_policies, true) {
            Err(error @ EnforceError::Invalid { .. }) => {
                tracing::warn!(
                    error = chain(&error),
                    "the cluster's NetworkPolicies are refused as a whole; the previous set stays in force"
                );
                self.commit(desired, true)
            }
            result => result,
        }
    }

    /// A change the source declares instead (see [`NodeView::policies`]
    /// and [`NodeView::modes`]) is refused.
    fn refuse_declared(&self, change: &Change) -> Result<(), EnforceError> {
        let Some(node) = &self.node else {
            return Ok(());
        };
        let what = match change {
            Change::SetMode { .. } if node.modes.is_some() => {
                "namespace modes come from the label weir.dev/mode of each Namespace"
            }
            Change::Apply { .. } | Change::Delete { .. } if node.policies.is_some() => {
                "the enforced policies are the cluster's NetworkPolicy objects"
            }
            _ => return Ok(()),
        };
        Err(EnforceError::Declared { what })
    }

    /// Apply a change; on error nothing changed (see [`EnforceError`]).
    ///
    /// # Errors
    /// See [`EnforceError`].
    pub fn change(&mut self, change: Change) -> Result<Outcome, EnforceError> {
        self.refuse_declared(&change)?;
        let held = self.held.take();
        let result = self.apply_change(change);
        match (&result, held) {
            (Ok(_), Some(reason)) => tracing::warn!(
                "told: the pinned enforcement held since start is replaced by what is asked from now on ({reason})"
            ),
            (Err(_), held) => self.held = held,
            (Ok(_), None) => {}
        }
        result
    }

    fn apply_change(&mut self, change: Change) -> Result<Outcome, EnforceError> {
        let mut desired = self.desired.clone();
        match change {
            Change::Apply { policies, replace } => {
                desired.policies.retain(|(ns, _), _| !replace.contains(ns));
                for policy in policies {
                    desired.policies.insert(key_of(&policy), policy);
                }
            }
            Change::Delete { namespace, name } => {
                if desired
                    .policies
                    .remove(&(namespace.clone(), name.clone()))
                    .is_none()
                {
                    return Err(EnforceError::NoSuchPolicy { namespace, name });
                }
            }
            Change::SetMode { namespace, mode } => {
                desired.modes.insert(namespace, mode);
            }
        }
        self.commit(desired, true)
    }

    fn commit(&mut self, desired: Desired, save: bool) -> Result<Outcome, EnforceError> {
        let Some(node) = self.node.clone() else {
            return Err(EnforceError::NotReady);
        };
        let set = PolicySet::new(desired.policies.values().cloned().collect())
            .map_err(|source| EnforceError::Invalid { source })?;
        let mut identities = self.identities.clone();
        let state = datapath::compile(
            &Input {
                policies: &set,
                cluster: &node.cluster,
                modes: &desired.modes,
                default_mode: self.default_mode,
                node_ips: &node.node_ips,
            },
            &mut identities,
        )
        .map_err(|source| EnforceError::Compile { source })?;
        let entries = Entries::of_state(&state, &node.local);
        for ((map, needed), limit) in MAPS.iter().zip(entries.counts()).zip(self.limits) {
            if needed > limit {
                return Err(EnforceError::MapFull { map, needed, limit });
            }
        }
        let ops = entries::plan(&self.applied, &entries);
        let old = self.applied.clone();
        if let Err(error) = self.write_all(&ops) {
            let rolled_back = self.write_all(&entries::plan(&self.applied, &old)).is_ok();
            return Err(EnforceError::Write {
                rolled_back,
                source: error,
            });
        }
        if save
            && desired != self.desired
            && let Err(source) = self.file.save(&desired)
        {
            // Best effort: the maps go back to what the saved file says.
            let _ = self.write_all(&entries::plan(&self.applied, &old));
            return Err(EnforceError::Save { source });
        }
        self.desired = desired;
        if identities != self.identities
            && let Err(error) = self.identities_file.save(&identities)
        {
            // Enforcement is right either way; a restart would renumber.
            tracing::warn!(error = chain(&error), "cannot save the identity allocator");
        }
        self.identities = identities;
        self.compiled = state;
        let rejudge = entries::rejudge(&ops, &old, &self.applied);
        let rejudged_flows = self.maps.forget_denied(&rejudge).unwrap_or_else(|error| {
            // The maps are right; denied flows keep their verdict until
            // they idle out.
            tracing::warn!(
                error = chain(&error),
                "cannot delete denied flows to judge them again"
            );
            0
        });
        Ok(Outcome {
            writes: ops.len(),
            rejudged_flows,
            entries: self.entry_counts(),
        })
    }

    /// Write `ops` in order, mirroring each success in `applied`.
    fn write_all(&mut self, ops: &[Op]) -> Result<(), MapIoError> {
        for op in ops {
            self.maps.write(op)?;
            self.applied.apply(op);
        }
        Ok(())
    }

    fn entry_counts(&self) -> BTreeMap<&'static str, usize> {
        MAPS.iter().copied().zip(self.applied.counts()).collect()
    }

    /// What is enforced.
    #[must_use]
    pub fn view(&self) -> View {
        View {
            policies: self.desired.policies.values().cloned().collect(),
            modes: self.desired.modes.clone(),
            default_mode: self.default_mode,
            entries: self.entry_counts(),
            limits: MAPS.iter().copied().zip(self.limits).collect(),
            ready: self.node.is_some(),
            held: self.held.clone(),
        }
    }

    /// What the flow log needs to explain verdicts.
    #[must_use]
    pub fn explain(&self) -> Explain {
        Explain {
            identity_of: self
                .applied
                .endpoints
                .iter()
                .map(|(ifindex, ep)| (*ifindex, ep.identity))
                .collect(),
            isolation: self
                .compiled
                .isolation
                .iter()
                .map(|(key, refs)| (*key, refs.iter().map(ToString::to_string).collect()))
                .collect(),
        }
    }

    /// Whether some namespace is judged (audit or enforce).
    #[must_use]
    pub fn judging(&self) -> bool {
        self.default_mode != Mode::Observe
            || self.desired.modes.values().any(|m| *m != Mode::Observe)
    }
}

#[cfg(test)]
mod declared_tests;
#[cfg(test)]
mod tests;
