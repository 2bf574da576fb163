//! Taking a name's rule out of a standard policy once a dialect's object
//! holds the name.
//!
//! The learner gives each name of a workload one egress rule whose peers
//! are the name's addresses (host `ipBlock`s, no `except`) and whose ports
//! are the name's. A host `ipBlock` peer is removed when its address is one
//! of a name's and the rule allows it no port the name's rule did not, so
//! nothing else the policy allows is lost. A rule left without peers is
//! removed whole (a rule whose `to` is empty allows every destination).

use std::{collections::BTreeSet, fmt::Write as _, net::IpAddr};

use ipnet::IpNet;
use k8s_openapi::{
    api::networking::v1::{NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyPeer},
    apimachinery::pkg::util::intstr::IntOrString,
};

use super::FqdnEgress;
use crate::{
    model::Protocol,
    synth::{EVIDENCE_ANNOTATION, FQDN_RULES_ANNOTATION, FqdnRuleNote},
};

/// Remove the peers of `names` from `policy`'s egress, noting in its
/// evidence which object (`moved_to`) holds them now. Returns the indices
/// of the rules removed whole.
pub(super) fn strip(
    policy: &mut NetworkPolicy,
    names: &[&FqdnEgress],
    moved_to: &str,
) -> Vec<usize> {
    let Some(egress) = policy.spec.as_mut().and_then(|s| s.egress.as_mut()) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    let mut moved = BTreeSet::new();
    let mut index = 0;
    egress.retain_mut(|rule| {
        let i = index;
        index += 1;
        let Some(ports) = rule_ports(rule) else {
            return true;
        };
        let Some(to) = rule.to.as_mut().filter(|to| !to.is_empty()) else {
            return true;
        };
        to.retain(|peer| {
            let Some(ip) = host_block(peer) else {
                return true;
            };
            match names.iter().find(|f| {
                f.addresses.contains_key(&ip) && ports.iter().all(|p| f.ports.contains(p))
            }) {
                Some(f) => {
                    moved.insert(f.name.clone());
                    false
                }
                None => true,
            }
        });
        if to.is_empty() {
            removed.push(i);
            false
        } else {
            true
        }
    });
    if egress.is_empty()
        && let Some(spec) = policy.spec.as_mut()
    {
        // policyTypes keeps Egress: the workload stays isolated for egress.
        spec.egress = None;
    }
    if !moved.is_empty()
        && let Some(evidence) = policy
            .metadata
            .annotations
            .as_mut()
            .and_then(|a| a.get_mut(EVIDENCE_ANNOTATION))
    {
        for name in moved {
            let _ = writeln!(evidence, "egress to {name}: allowed by {moved_to}");
        }
    }
    removed
}

/// The address of a host `ipBlock` peer without `except`.
fn host_block(peer: &NetworkPolicyPeer) -> Option<IpAddr> {
    let block = peer.ip_block.as_ref()?;
    if peer.pod_selector.is_some()
        || peer.namespace_selector.is_some()
        || block.except.as_ref().is_some_and(|e| !e.is_empty())
    {
        return None;
    }
    let net = block.cidr.parse::<IpNet>().ok()?;
    (net.prefix_len() == net.max_prefix_len()).then(|| net.addr())
}

/// A rule's ports as (protocol, number); None when it has none (every
/// port) or one weir does not write (named, ranges).
fn rule_ports(rule: &NetworkPolicyEgressRule) -> Option<Vec<(Protocol, u16)>> {
    let ports = rule.ports.as_ref().filter(|p| !p.is_empty())?;
    ports
        .iter()
        .map(|p| {
            let (Some(IntOrString::Int(port)), None) = (&p.port, p.end_port) else {
                return None;
            };
            let proto = p
                .protocol
                .as_deref()
                .unwrap_or("TCP")
                .parse::<Protocol>()
                .ok()?;
            Some((proto, u16::try_from(*port).ok()?))
        })
        .collect()
}

/// Bring `policy`'s [`FQDN_RULES_ANNOTATION`] in line with its egress
/// after [`strip`]: an egress entry points at the rule that still holds
/// every address of its name, or is dropped when none does (the name went
/// to the dialect's object). Ingress entries are left as they are.
pub(super) fn renumber_notes(policy: &mut NetworkPolicy) {
    let Ok(notes) = FqdnRuleNote::of(policy) else {
        return;
    };
    if notes.is_empty() {
        return;
    }
    let egress = policy
        .spec
        .as_ref()
        .and_then(|s| s.egress.as_deref())
        .unwrap_or_default();
    let holds = |rule: &NetworkPolicyEgressRule, address: IpAddr| {
        rule.to.iter().flatten().any(|peer| {
            peer.ip_block.as_ref().is_some_and(|b| {
                b.cidr.parse::<IpNet>().is_ok_and(|net| {
                    net.addr() == address && net.prefix_len() == net.max_prefix_len()
                })
            })
        })
    };
    let kept: Vec<FqdnRuleNote> = notes
        .into_iter()
        .filter_map(|mut note| {
            if note.direction != "egress" {
                return Some(note);
            }
            note.rule = egress
                .iter()
                .position(|rule| note.addresses.keys().all(|a| holds(rule, *a)))?;
            Some(note)
        })
        .collect();
    let annotations = policy.metadata.annotations.get_or_insert_default();
    if kept.is_empty() {
        annotations.remove(FQDN_RULES_ANNOTATION);
    } else {
        // Plain data with string keys: it always serializes.
        let json =
            serde_json::to_string_pretty(&kept).expect("name rule notes always serialize to JSON");
        annotations.insert(FQDN_RULES_ANNOTATION.to_owned(), json + "\n");
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::networking::v1::{IPBlock, NetworkPolicyPort, NetworkPolicySpec};

    use super::*;
    use crate::{
        dialect::AddressSeen,
        model::{WorkloadKind, WorkloadRef},
    };

    fn block(cidr: &str) -> NetworkPolicyPeer {
        NetworkPolicyPeer {
            ip_block: Some(IPBlock {
                cidr: cidr.to_owned(),
                except: None,
            }),
            ..NetworkPolicyPeer::default()
        }
    }

    fn rule(peers: &[&str], ports: &[u16]) -> NetworkPolicyEgressRule {
        NetworkPolicyEgressRule {
            to: Some(peers.iter().map(|c| block(c)).collect()),
            ports: Some(
                ports
                    .iter()
                    .map(|p| NetworkPolicyPort {
                        port: Some(IntOrString::Int(i32::from(*p))),
                        protocol: Some("TCP".to_owned()),
                        end_port: None,
                    })
                    .collect(),
            ),
        }
    }

    #[test]
    fn only_what_the_name_covers_is_removed_and_no_rule_is_left_empty() {
        let name = FqdnEgress {
            namespace: "shop".into(),
            workload: WorkloadRef::new("shop", WorkloadKind::Deployment, "web"),
            policy: "weir-web".into(),
            pod_selector: BTreeMap::new(),
            name: "api.example".into(),
            ports: vec![(Protocol::Tcp, 443)],
            addresses: BTreeMap::from([
                ("203.0.113.10".parse().unwrap(), AddressSeen::default()),
                ("203.0.113.11".parse().unwrap(), AddressSeen::default()),
            ]),
            seen: AddressSeen::default(),
        };
        let mut policy = NetworkPolicy {
            spec: Some(NetworkPolicySpec {
                egress: Some(vec![
                    // The name's own rule: removed whole.
                    rule(&["203.0.113.10/32", "203.0.113.11/32"], &[443]),
                    // Shared with an unnamed address: only the name's peer goes.
                    rule(&["198.51.100.9/32", "203.0.113.10/32"], &[443]),
                    // A port the name was not seen on: kept.
                    rule(&["203.0.113.11/32"], &[443, 8443]),
                    // Not a host block: kept.
                    rule(&["203.0.113.0/24"], &[443]),
                ]),
                ..NetworkPolicySpec::default()
            }),
            ..NetworkPolicy::default()
        };
        let removed = strip(&mut policy, &[&name], "CiliumNetworkPolicy weir-web");
        assert_eq!(removed, [0]);
        let egress = policy.spec.unwrap().egress.unwrap();
        assert_eq!(
            egress,
            [
                rule(&["198.51.100.9/32"], &[443]),
                rule(&["203.0.113.11/32"], &[443, 8443]),
                rule(&["203.0.113.0/24"], &[443]),
            ]
        );
        assert!(
            egress
                .iter()
                .all(|r| r.to.as_ref().is_some_and(|t| !t.is_empty()))
        );
    }
}
