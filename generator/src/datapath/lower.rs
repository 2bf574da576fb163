//! The policies of a [`PolicySet`] in the form the compiler walks.
//!
//! This mirrors `eval::compile` (whose types are private to `eval`) on
//! policies that [`PolicySet::new`] already validated: the same
//! `policyTypes` defaulting, peer shapes, CIDR truncation and port forms.
//! The differential test (`tests/datapath_compile.rs`) holds the two
//! together: the compiled datapath must judge every flow as the evaluator
//! does.

use ipnet::IpNet;
use k8s_openapi::{
    api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec},
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};

use super::CompileError;
use crate::{
    eval::{Direction, PolicyRef, PolicySet},
    model::Protocol,
    selector::Selector,
};

/// One policy: its selector and, per direction it governs, its rules.
#[derive(Debug)]
pub(super) struct Policy {
    pub(super) id: PolicyRef,
    pub(super) pod_selector: Selector,
    /// `Some` iff the (defaulted) policy types include Ingress.
    pub(super) ingress: Option<Vec<Rule>>,
    /// `Some` iff the (defaulted) policy types include Egress.
    pub(super) egress: Option<Vec<Rule>>,
}

impl Policy {
    pub(super) fn rules(&self, direction: Direction) -> Option<&[Rule]> {
        match direction {
            Direction::Ingress => self.ingress.as_deref(),
            Direction::Egress => self.egress.as_deref(),
        }
    }
}

#[derive(Debug)]
pub(super) struct Rule {
    /// `None`: every peer, in and out of the cluster.
    pub(super) peers: Option<Vec<Peer>>,
    /// `None`: every protocol and port.
    pub(super) ports: Option<Vec<Port>>,
}

#[derive(Debug)]
pub(super) enum Peer {
    Pods {
        /// `None`: the policy's own namespace.
        namespaces: Option<Selector>,
        pods: Selector,
    },
    IpBlock {
        cidr: IpNet,
        except: Vec<IpNet>,
    },
}

#[derive(Debug)]
pub(super) struct Port {
    pub(super) protocol: Protocol,
    pub(super) port: PortMatch,
}

#[derive(Debug)]
pub(super) enum PortMatch {
    Any,
    Range(u16, u16),
    Named(String),
}

/// Lower every policy of the set (sorted by namespace and name).
pub(super) fn lower(set: &PolicySet) -> Result<Vec<Policy>, CompileError> {
    set.policies().iter().map(lower_policy).collect()
}

/// Error constructor for one policy.
struct Fields<'a>(&'a PolicyRef);

impl Fields<'_> {
    fn invalid(&self, field: String, reason: String) -> CompileError {
        CompileError::InvalidPolicy {
            policy: self.0.to_string(),
            field,
            reason,
        }
    }

    fn selector(&self, s: &LabelSelector, field: &str) -> Result<Selector, CompileError> {
        Selector::new(s, field).map_err(|e| self.invalid(e.field, e.reason))
    }
}

fn lower_policy(policy: &NetworkPolicy) -> Result<Policy, CompileError> {
    let id = PolicyRef {
        namespace: policy.metadata.namespace.clone().unwrap_or_default(),
        name: policy.metadata.name.clone().unwrap_or_default(),
    };
    let f = Fields(&id);
    let default_spec = NetworkPolicySpec::default();
    let spec = policy.spec.as_ref().unwrap_or(&default_spec);
    let pod_selector = match &spec.pod_selector {
        Some(s) => f.selector(s, "spec.podSelector")?,
        None => Selector::everything(),
    };
    // `SetDefaults_NetworkPolicySpec`, as eval::compile.
    let (mut has_ingress, mut has_egress) = (false, false);
    match spec.policy_types.as_deref() {
        None | Some([]) => {
            has_ingress = true;
            has_egress = spec.egress.as_ref().is_some_and(|e| !e.is_empty());
        }
        Some(types) => {
            for t in types {
                match t.as_str() {
                    "Ingress" => has_ingress = true,
                    "Egress" => has_egress = true,
                    other => {
                        return Err(f.invalid(
                            "spec.policyTypes".into(),
                            format!("unsupported value {other:?}"),
                        ));
                    }
                }
            }
        }
    }
    let ingress = if has_ingress {
        let rules = spec.ingress.iter().flatten().enumerate();
        Some(
            rules
                .map(|(i, r)| {
                    lower_rule(
                        &f,
                        r.from.as_deref(),
                        r.ports.as_deref(),
                        &format!("spec.ingress[{i}]"),
                    )
                })
                .collect::<Result<_, _>>()?,
        )
    } else {
        None
    };
    let egress = if has_egress {
        let rules = spec.egress.iter().flatten().enumerate();
        Some(
            rules
                .map(|(i, r)| {
                    lower_rule(
                        &f,
                        r.to.as_deref(),
                        r.ports.as_deref(),
                        &format!("spec.egress[{i}]"),
                    )
                })
                .collect::<Result<_, _>>()?,
        )
    } else {
        None
    };
    Ok(Policy {
        id,
        pod_selector,
        ingress,
        egress,
    })
}

fn lower_rule(
    f: &Fields<'_>,
    peers: Option<&[NetworkPolicyPeer]>,
    ports: Option<&[NetworkPolicyPort]>,
    path: &str,
) -> Result<Rule, CompileError> {
    let peers = match peers {
        None | Some([]) => None,
        Some(peers) => Some(
            peers
                .iter()
                .enumerate()
                .map(|(i, p)| lower_peer(f, p, &format!("{path}.peers[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
    };
    let ports = match ports {
        None | Some([]) => None,
        Some(ports) => Some(
            ports
                .iter()
                .enumerate()
                .map(|(i, p)| lower_port(f, p, &format!("{path}.ports[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
    };
    Ok(Rule { peers, ports })
}

fn lower_peer(f: &Fields<'_>, peer: &NetworkPolicyPeer, path: &str) -> Result<Peer, CompileError> {
    match (&peer.pod_selector, &peer.namespace_selector, &peer.ip_block) {
        (None, None, Some(block)) => {
            let parse = |s: &str, field: String| {
                s.parse::<IpNet>()
                    .map(|n| n.trunc())
                    .map_err(|_| f.invalid(field, format!("invalid CIDR {s:?}")))
            };
            let cidr = parse(&block.cidr, format!("{path}.ipBlock.cidr"))?;
            let except = block
                .except
                .iter()
                .flatten()
                .enumerate()
                .map(|(i, e)| parse(e, format!("{path}.ipBlock.except[{i}]")))
                .collect::<Result<_, _>>()?;
            Ok(Peer::IpBlock { cidr, except })
        }
        (pods, namespaces, None) if pods.is_some() || namespaces.is_some() => Ok(Peer::Pods {
            namespaces: namespaces
                .as_ref()
                .map(|s| f.selector(s, &format!("{path}.namespaceSelector")))
                .transpose()?,
            pods: match pods {
                Some(s) => f.selector(s, &format!("{path}.podSelector"))?,
                None => Selector::everything(),
            },
        }),
        _ => Err(f.invalid(path.to_owned(), "invalid peer".into())),
    }
}

fn lower_port(f: &Fields<'_>, port: &NetworkPolicyPort, path: &str) -> Result<Port, CompileError> {
    let protocol = match port.protocol.as_deref() {
        None | Some("TCP") => Protocol::Tcp,
        Some("UDP") => Protocol::Udp,
        Some("SCTP") => Protocol::Sctp,
        Some(other) => {
            return Err(f.invalid(
                format!("{path}.protocol"),
                format!("unsupported protocol {other:?}"),
            ));
        }
    };
    let number = |n: i32| u16::try_from(n).ok().filter(|&n| n != 0);
    let matched = match (&port.port, port.end_port) {
        (None, None) => PortMatch::Any,
        (Some(IntOrString::String(name)), None) => PortMatch::Named(name.clone()),
        (Some(IntOrString::Int(n)), end) => {
            let start = number(*n);
            let end = match end {
                None => start,
                Some(e) => number(e),
            };
            match (start, end) {
                (Some(s), Some(e)) if s <= e => PortMatch::Range(s, e),
                _ => {
                    return Err(f.invalid(format!("{path}.port"), "invalid port range".into()));
                }
            }
        }
        _ => return Err(f.invalid(format!("{path}.endPort"), "invalid endPort".into())),
    };
    Ok(Port {
        protocol,
        port: matched,
    })
}
