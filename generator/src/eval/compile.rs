//! Validation and compilation of NetworkPolicies into the form the
//! evaluator and the datapath compiler walk: selectors compiled, CIDRs
//! parsed, `policyTypes` defaulted, ports resolved to ranges or names. The
//! one lowering of NetworkPolicy semantics both of them share.
//!
//! The checks are those of the API server's `ValidateNetworkPolicy`
//! (`pkg/apis/networking/validation`), so that a directory of policies that
//! `weir verify` accepts is one that `kubectl apply` accepts, and the other
//! way round for every rule weir evaluates.

use std::{collections::BTreeMap, net::IpAddr};

use ipnet::IpNet;
use k8s_openapi::{
    api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec},
    apimachinery::pkg::util::intstr::IntOrString,
};

use super::{Direction, NAMESPACE_NAME_LABEL, PolicyError, PolicyRef};
use crate::{model::Protocol, names, selector::Selector};

/// A validated policy.
#[derive(Clone, Debug)]
pub(crate) struct CompiledPolicy {
    pub(crate) id: PolicyRef,
    pub(crate) pod_selector: Selector,
    /// `Some` iff the (defaulted) policy types include Ingress.
    pub(crate) ingress: Option<Vec<Rule>>,
    /// `Some` iff the (defaulted) policy types include Egress.
    pub(crate) egress: Option<Vec<Rule>>,
}

impl CompiledPolicy {
    pub(crate) fn rules(&self, direction: Direction) -> Option<&[Rule]> {
        match direction {
            Direction::Ingress => self.ingress.as_deref(),
            Direction::Egress => self.egress.as_deref(),
        }
    }
}

/// One ingress or egress rule.
#[derive(Clone, Debug)]
pub(crate) struct Rule {
    /// `None`: `from`/`to` absent or empty, every peer (in and out of the cluster).
    pub(crate) peers: Option<Vec<Peer>>,
    /// `None`: `ports` absent or empty, every port and protocol (ICMP too).
    pub(crate) ports: Option<Vec<Port>>,
}

#[derive(Clone, Debug)]
pub(crate) enum Peer {
    /// `podSelector` and/or `namespaceSelector` (ANDed).
    Pods {
        namespaces: Namespaces,
        pods: Selector,
    },
    /// `ipBlock`: matches any address in `cidr` and in no `except`, a
    /// pod's too (see the module docs).
    IpBlock { cidr: IpNet, except: Vec<IpNet> },
}

#[derive(Clone, Debug)]
pub(crate) enum Namespaces {
    /// `namespaceSelector` absent: the policy's own namespace.
    Own,
    /// `namespaceSelector` present.
    Matching(Selector),
}

impl Namespaces {
    /// Whether `namespace` is one of these, for a policy of
    /// `policy_namespace`; `labels` are the cluster's namespaces' labels,
    /// with `kubernetes.io/metadata.name` always present.
    pub(crate) fn matches(
        &self,
        namespace: &str,
        policy_namespace: &str,
        labels: &BTreeMap<String, BTreeMap<String, String>>,
    ) -> bool {
        match self {
            Self::Own => namespace == policy_namespace,
            Self::Matching(selector) => {
                let labels = labels.get(namespace);
                selector.matches_with(|key| {
                    labels
                        .and_then(|l| l.get(key))
                        .map(String::as_str)
                        .or_else(|| (key == NAMESPACE_NAME_LABEL).then_some(namespace))
                })
            }
        }
    }
}

impl Peer {
    pub(crate) fn matches_ip(&self, ip: IpAddr) -> bool {
        match self {
            Self::Pods { .. } => false,
            Self::IpBlock { cidr, except } => {
                cidr.contains(&ip) && !except.iter().any(|e| e.contains(&ip))
            }
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Port {
    pub(crate) protocol: Protocol,
    pub(crate) port: PortMatch,
}

#[derive(Clone, Debug)]
pub(crate) enum PortMatch {
    /// `port` absent: every port of the protocol.
    Any,
    /// `port` (..= `endPort`).
    Range(u16, u16),
    /// A named container port of the destination pod.
    Named(String),
}

/// A field path and what is wrong with it.
type FieldError = (String, String);

fn field_err(field: impl Into<String>, reason: impl Into<String>) -> FieldError {
    (field.into(), reason.into())
}

pub(super) fn compile(policy: &NetworkPolicy) -> Result<CompiledPolicy, PolicyError> {
    let namespace = policy.metadata.namespace.as_deref().unwrap_or_default();
    let name = policy.metadata.name.as_deref().unwrap_or_default();
    let invalid = |(field, reason): FieldError| PolicyError::Invalid {
        policy: format!(
            "{}/{}",
            if namespace.is_empty() { "?" } else { namespace },
            if name.is_empty() { "?" } else { name }
        ),
        field,
        reason,
    };
    if namespace.is_empty() {
        return Err(invalid(field_err("metadata.namespace", "must be set")));
    }
    if name.is_empty() {
        return Err(invalid(field_err("metadata.name", "must be set")));
    }
    validate_meta(policy).map_err(invalid)?;
    compile_spec(policy)
        .map_err(invalid)
        .map(|(pod_selector, ingress, egress)| CompiledPolicy {
            id: PolicyRef {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            },
            pod_selector,
            ingress,
            egress,
        })
}

/// `ValidateObjectMeta` for a NetworkPolicy: a DNS-1123 label namespace,
/// a DNS-1123 subdomain name, valid labels and annotation keys.
fn validate_meta(policy: &NetworkPolicy) -> Result<(), FieldError> {
    let meta = &policy.metadata;
    if let Some(namespace) = &meta.namespace {
        names::dns1123_label(namespace).map_err(|e| field_err("metadata.namespace", e))?;
    }
    if let Some(name) = &meta.name {
        names::dns1123_subdomain(name).map_err(|e| field_err("metadata.name", e))?;
    }
    names::labels(meta.labels.iter().flatten(), "metadata.labels")?;
    for key in meta.annotations.iter().flatten().map(|(k, _)| k) {
        // The API server checks annotation keys lowercased.
        names::label_key(&key.to_lowercase()).map_err(|e| field_err("metadata.annotations", e))?;
    }
    Ok(())
}

type CompiledSpec = (Selector, Option<Vec<Rule>>, Option<Vec<Rule>>);

fn compile_spec(policy: &NetworkPolicy) -> Result<CompiledSpec, FieldError> {
    // An absent spec is the zero spec, as in the API server (a Go struct,
    // not a pointer): every pod of the namespace, Ingress only, no rules.
    let default_spec = NetworkPolicySpec::default();
    let spec = policy.spec.as_ref().unwrap_or(&default_spec);

    let pod_selector = match &spec.pod_selector {
        Some(s) => Selector::new(s, "spec.podSelector").map_err(|e| (e.field, e.reason))?,
        None => Selector::everything(),
    };

    // policyTypes defaulting, as `SetDefaults_NetworkPolicySpec`: when
    // unset or empty, Ingress always, Egress when there are egress rules
    // (`len(spec.Egress) != 0`: an explicit `egress: []` does not count,
    // the API server cannot tell it from an absent list).
    let (mut has_ingress, mut has_egress) = (false, false);
    match spec.policy_types.as_deref() {
        None | Some([]) => {
            has_ingress = true;
            has_egress = spec.egress.as_ref().is_some_and(|e| !e.is_empty());
        }
        Some(types) => {
            for (i, t) in types.iter().enumerate() {
                match t.as_str() {
                    "Ingress" => has_ingress = true,
                    "Egress" => has_egress = true,
                    other => {
                        return Err(field_err(
                            format!("spec.policyTypes[{i}]"),
                            format!("unsupported value {other:?} (expected Ingress or Egress)"),
                        ));
                    }
                }
            }
        }
    }

    // Rules are validated whatever the policy types say (the API server
    // does), but only kept for the directions the policy governs.
    let mut ingress = Vec::new();
    for (i, rule) in spec.ingress.iter().flatten().enumerate() {
        ingress.push(compile_rule(
            rule.from.as_deref(),
            rule.ports.as_deref(),
            &format!("spec.ingress[{i}]"),
            "from",
        )?);
    }
    let mut egress = Vec::new();
    for (i, rule) in spec.egress.iter().flatten().enumerate() {
        egress.push(compile_rule(
            rule.to.as_deref(),
            rule.ports.as_deref(),
            &format!("spec.egress[{i}]"),
            "to",
        )?);
    }
    Ok((
        pod_selector,
        has_ingress.then_some(ingress),
        has_egress.then_some(egress),
    ))
}

fn compile_rule(
    peers: Option<&[NetworkPolicyPeer]>,
    ports: Option<&[NetworkPolicyPort]>,
    path: &str,
    peers_field: &str,
) -> Result<Rule, FieldError> {
    let peers = match peers {
        None | Some([]) => None,
        Some(peers) => Some(
            peers
                .iter()
                .enumerate()
                .map(|(i, p)| compile_peer(p, &format!("{path}.{peers_field}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
    };
    let ports = match ports {
        None | Some([]) => None,
        Some(ports) => Some(
            ports
                .iter()
                .enumerate()
                .map(|(i, p)| compile_port(p, &format!("{path}.ports[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
    };
    Ok(Rule { peers, ports })
}

fn compile_peer(peer: &NetworkPolicyPeer, path: &str) -> Result<Peer, FieldError> {
    let sel = |s, field: &str| {
        Selector::new(s, &format!("{path}.{field}")).map_err(|e| (e.field, e.reason))
    };
    match (&peer.pod_selector, &peer.namespace_selector, &peer.ip_block) {
        (None, None, None) => Err(field_err(
            path,
            "must specify a peer (podSelector, namespaceSelector or ipBlock)",
        )),
        (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => Err(field_err(
            path,
            "may not specify both ipBlock and another peer",
        )),
        (None, None, Some(block)) => {
            let cidr = parse_cidr(&block.cidr, &format!("{path}.ipBlock.cidr"))?;
            let mut except = Vec::new();
            for (i, e) in block.except.iter().flatten().enumerate() {
                let field = format!("{path}.ipBlock.except[{i}]");
                let e = parse_cidr(e, &field)?;
                if !cidr.contains(&e) || e.prefix_len() <= cidr.prefix_len() {
                    return Err(field_err(
                        field,
                        format!("{e} must be a strict subset of cidr {cidr}"),
                    ));
                }
                except.push(e);
            }
            Ok(Peer::IpBlock { cidr, except })
        }
        (pods, namespaces, None) => Ok(Peer::Pods {
            namespaces: match namespaces {
                Some(s) => Namespaces::Matching(sel(s, "namespaceSelector")?),
                None => Namespaces::Own,
            },
            pods: match pods {
                Some(s) => sel(s, "podSelector")?,
                None => Selector::everything(),
            },
        }),
    }
}

/// A CIDR in `address/prefix` form; host bits are dropped, as the API
/// server's `ParseCIDRSloppy` + `IPNet` do.
fn parse_cidr(s: &str, field: &str) -> Result<IpNet, FieldError> {
    s.parse::<IpNet>()
        .map(|n| n.trunc())
        .map_err(|_| field_err(field, format!("invalid CIDR {s:?}")))
}

fn compile_port(port: &NetworkPolicyPort, path: &str) -> Result<Port, FieldError> {
    let protocol = match port.protocol.as_deref() {
        None | Some("TCP") => Protocol::Tcp,
        Some("UDP") => Protocol::Udp,
        Some("SCTP") => Protocol::Sctp,
        Some(other) => {
            return Err(field_err(
                format!("{path}.protocol"),
                format!("unsupported protocol {other:?} (expected TCP, UDP or SCTP)"),
            ));
        }
    };
    let number = |n: i32, field: &str| {
        u16::try_from(n).ok().filter(|&n| n != 0).ok_or_else(|| {
            field_err(
                format!("{path}.{field}"),
                format!("{n} is not between 1 and 65535"),
            )
        })
    };
    let port = match (&port.port, port.end_port) {
        (None, None) => PortMatch::Any,
        (None, Some(_)) => {
            return Err(field_err(
                format!("{path}.endPort"),
                "may not be specified when port is not specified",
            ));
        }
        (Some(IntOrString::String(_)), Some(_)) => {
            return Err(field_err(
                format!("{path}.endPort"),
                "may not be specified when port is non-numeric",
            ));
        }
        (Some(IntOrString::String(name)), None) => {
            if let Err(reason) = check_port_name(name) {
                return Err(field_err(format!("{path}.port"), reason));
            }
            PortMatch::Named(name.clone())
        }
        (Some(IntOrString::Int(n)), end) => {
            let start = number(*n, "port")?;
            let end = match end {
                None => start,
                Some(e) => {
                    let e = number(e, "endPort")?;
                    if e < start {
                        return Err(field_err(
                            format!("{path}.endPort"),
                            format!("{e} must be greater than or equal to port {start}"),
                        ));
                    }
                    e
                }
            };
            PortMatch::Range(start, end)
        }
    };
    Ok(Port { protocol, port })
}

/// `IsValidPortName` (an `IANA_SVC_NAME`): at most 15 characters of
/// `[a-z0-9-]`, at least one letter, no leading, trailing or double hyphen.
fn check_port_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.bytes().any(|b| b.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid port name {name:?} (at most 15 lowercase letters, digits and \
             single inner hyphens, with at least one letter)"
        ))
    }
}
