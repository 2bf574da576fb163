//! Pods from a `weir lab` state file. The file is re-read at every
//! snapshot, so pods appear and disappear as the lab is brought up, replaced
//! or taken down. External hosts are not pods: they are left out, and their
//! addresses resolve as external peers, as they would in a cluster.
//!
//! In a multi-node lab the agent is one node (`--node-name`): it attaches
//! to that node's pods only and knows every other pod's node, as the kube
//! source knows `spec.nodeName`, so a connection to another node's pod is
//! counted from its side (initiator or responder) with the peer's node.

use std::path::PathBuf;

use weir_generator::cluster::{ClusterService, NamedPort, ServicePort, TargetPort};
use weir_lab::{
    LabError, LabName,
    state::{LabState, Port, ServiceState, state_path},
};

use super::{Inventory, LocalPod, Source, SourceError};

/// Reads the state of one lab.
#[derive(Clone, Debug)]
pub struct LabSource {
    lab: String,
    path: PathBuf,
    node: Option<String>,
}

impl LabSource {
    /// The source for lab `lab` (its state file under `/run/weir`).
    #[must_use]
    pub fn new(lab: &LabName) -> Self {
        Self {
            lab: lab.to_string(),
            path: state_path(lab),
            node: None,
        }
    }

    /// This agent is node `node` of a multi-node lab (ignored by a
    /// one-node lab, whose pods are all this node's).
    #[must_use]
    pub fn with_node(mut self, node: impl Into<String>) -> Self {
        self.node = Some(node.into());
        self
    }

    /// A source reading a state file at another path (tests).
    #[must_use]
    pub fn from_path(path: PathBuf) -> Self {
        Self {
            lab: path.display().to_string(),
            path,
            node: None,
        }
    }
}

/// The inventory a lab state describes: every pod with its host veth and
/// ports, namespaces with their labels, Services. External hosts are not
/// pods: only their names are kept, for the UI to show.
#[must_use]
pub fn inventory(state: &LabState) -> Inventory {
    let mut inventory = inventory_of_node(state, None);
    inventory.warnings.clear();
    inventory
}

/// A multi-node lab whose nodes do not include the agent's.
fn not_a_node(state: &LabState, node: Option<&str>) -> Option<String> {
    let nodes = state.node_names();
    (!nodes.is_empty() && node.is_none_or(|n| !nodes.contains(&n))).then(|| {
        format!(
            "lab {} has nodes {} and this agent is none of them ({}): start it with --node-name NODE; it attaches to no pod",
            state.lab,
            nodes.join(", "),
            node.unwrap_or("no --node-name")
        )
    })
}

/// The inventory of node `node` of a lab: in a one-node lab, every pod
/// is this node's (and `node` is ignored); in a multi-node lab, only
/// `node`'s pods have a host veth to attach to, and every pod says its
/// node. The nodes' addresses are named `node/NAME`, this node's are its
/// own.
#[must_use]
pub fn inventory_of_node(state: &LabState, node: Option<&str>) -> Inventory {
    let multi = !state.nodes.is_empty();
    let this = |pod_node: Option<&String>| !multi || pod_node.map(String::as_str) == node;
    let mut known_hosts: std::collections::BTreeMap<_, _> = state
        .external_hosts
        .iter()
        .flat_map(|h| h.ips.iter().map(|ip| (*ip, h.name.clone())))
        .collect();
    known_hosts.extend(
        state
            .nodes
            .iter()
            .filter(|n| Some(n.name.as_str()) != node)
            .map(|n| (n.address, format!("node/{}", n.name))),
    );
    let node_ips = state
        .segment(if multi { node } else { None })
        .filter(|s| s.node == node || !multi)
        .map(|s| s.node_addresses())
        .unwrap_or_default();
    let mut inventory = Inventory {
        pods: state
            .pods
            .iter()
            .map(|p| LocalPod {
                meta: p.meta(),
                host_veth: this(p.node.as_ref()).then(|| p.host_veth.clone()),
                ports: p.ports.iter().map(named_port).collect(),
                local: this(p.node.as_ref()),
                // A one-node lab's pods are all on this node, and
                // attached: the aggregator knows that without a name.
                node: p.node.clone(),
            })
            .collect(),
        namespaces: state
            .namespaces
            .iter()
            .map(|(name, labels)| {
                let mut labels = labels.clone();
                labels
                    .entry(weir_generator::cluster::NAMESPACE_NAME_LABEL.into())
                    .or_insert_with(|| name.clone());
                (name.clone(), labels)
            })
            .collect(),
        services: state.services.iter().map(service).collect(),
        known_hosts,
        node_ips,
        warnings: not_a_node(state, node).into_iter().collect(),
        ..Inventory::default()
    };
    for (name, annotations) in &state.namespace_annotations {
        inventory.namespace_annotations(name, annotations);
    }
    inventory
}

/// Refuse, before the agent starts, to be no node of a multi-node lab
/// that is up (a lab that is not up yet is checked at every snapshot).
///
/// # Errors
/// The lab's nodes do not include `node`.
pub fn check_node(lab: &LabName, node: &str) -> Result<(), String> {
    match LabState::load(lab.as_str()) {
        Ok(state) => not_a_node(&state, Some(node)).map_or(Ok(()), Err),
        Err(_) => Ok(()),
    }
}

fn named_port(p: &Port) -> NamedPort {
    NamedPort {
        name: p.name.clone(),
        port: p.port,
        protocol: p.protocol,
    }
}

fn service(s: &ServiceState) -> ClusterService {
    ClusterService {
        namespace: s.namespace.clone(),
        name: s.name.clone(),
        cluster_ips: s.cluster_ips.clone(),
        selector: s.selector.clone(),
        ports: s
            .ports
            .iter()
            .map(|p| ServicePort {
                port: p.port,
                protocol: p.protocol,
                target: match p.target_port.parse() {
                    Ok(number) => TargetPort::Number(number),
                    Err(_) => TargetPort::Name(p.target_port.clone()),
                },
            })
            .collect(),
    }
}

impl Source for LabSource {
    fn snapshot(&mut self) -> Result<Inventory, SourceError> {
        match LabState::load_from(&self.path, &self.lab) {
            Ok(state) => Ok(inventory_of_node(&state, self.node.as_deref())),
            // No lab (yet, or any more): no pods.
            Err(LabError::NotUp { .. }) => Ok(Inventory::default()),
            Err(LabError::StateFormat { source, .. }) => Err(SourceError::Parse {
                path: self.path.clone(),
                document: 1,
                reason: source.to_string(),
            }),
            Err(LabError::Io { source, .. }) => Err(SourceError::Read {
                path: self.path.clone(),
                source,
            }),
            Err(other) => Err(SourceError::Read {
                path: self.path.clone(),
                source: std::io::Error::other(other),
            }),
        }
    }

    fn name(&self) -> &'static str {
        "lab"
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, path::Path};

    use weir_lab::{plan::plan, spec::parse_str};

    use super::*;

    const YAML: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: a}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: c, ports: [{containerPort: 80}]}]}
---
apiVersion: lab.weir.dev/v1alpha1
kind: ExternalHost
metadata: {name: pay}
spec: {ips: [203.0.113.10]}
";

    #[test]
    fn a_node_of_a_multi_node_lab_attaches_its_own_pods_and_knows_the_others_nodes() {
        let yaml = "apiVersion: lab.weir.dev/v1alpha1\nkind: Lab\nspec:\n  nodes:\n  - {name: a, podCIDR: 10.151.0.0/16}\n  - {name: b, podCIDR: 10.152.0.0/16}\n---\n\
            apiVersion: v1\nkind: Pod\nmetadata: {name: client}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: server}\nspec: {nodeName: b}\n";
        let state = plan(
            &"x".parse().unwrap(),
            &parse_str(Path::new("t.yaml"), yaml).unwrap(),
        )
        .unwrap();
        let pods = |inv: &Inventory| -> Vec<(String, bool, bool, Option<String>)> {
            inv.pods
                .iter()
                .map(|p| {
                    (
                        p.meta.name.clone(),
                        p.local,
                        p.host_veth.is_some(),
                        p.node.clone(),
                    )
                })
                .collect()
        };
        let a = inventory_of_node(&state, Some("a"));
        assert_eq!(
            pods(&a),
            [
                ("client".into(), true, true, Some("a".into())),
                ("server".into(), false, false, Some("b".into())),
            ]
        );
        assert_eq!(
            a.node_ips,
            ["10.151.0.1".parse::<std::net::IpAddr>().unwrap()]
        );
        assert_eq!(a.known_hosts[&"10.152.0.1".parse().unwrap()], "node/b");
        assert!(a.warnings.is_empty(), "{:?}", a.warnings);
        let b = inventory_of_node(&state, Some("b"));
        assert_eq!(
            pods(&b),
            [
                ("client".into(), false, false, Some("a".into())),
                ("server".into(), true, true, Some("b".into())),
            ]
        );
        // An agent that is none of the lab's nodes attaches to nothing and
        // says why.
        let none = inventory_of_node(&state, Some("c"));
        assert!(none.pods.iter().all(|p| !p.local && p.host_veth.is_none()));
        assert!(
            none.warnings[0].contains("has nodes a, b") && none.warnings[0].contains("--node-name"),
            "{:?}",
            none.warnings
        );
        // A one-node lab ignores the node name: every pod is this node's.
        let one = plan(
            &"y".parse().unwrap(),
            &parse_str(Path::new("t.yaml"), YAML).unwrap(),
        )
        .unwrap();
        let inv = inventory_of_node(&one, Some("whatever"));
        assert!(
            inv.pods
                .iter()
                .all(|p| p.local && p.host_veth.is_some() && p.node.is_none())
        );
        assert_eq!(inv, inventory(&one));
        assert_eq!(
            inv.node_ips,
            ["10.88.0.1".parse::<std::net::IpAddr>().unwrap()]
        );
    }

    /// The lab keeps the namespaces' annotations as a cluster does: the
    /// guard's and automatic promotion's settings are read from them, and
    /// a bad value is a warning naming the namespace and the value.
    #[test]
    fn namespace_annotations_set_the_guard_and_automatic_promotion() {
        let yaml = YAML.replace(
            "metadata: {name: shop, labels: {team: a}}",
            "metadata:\n  name: shop\n  labels: {team: a}\n  annotations:\n    \
             weir.dev/promote: auto\n    weir.dev/promote-after: 3s\n    \
             weir.dev/guard-max-drops: '2'\n    weir.dev/guard-window: soon",
        );
        let spec = parse_str(Path::new("t.yaml"), &yaml).unwrap();
        let state = plan(&"x".parse().unwrap(), &spec).unwrap();
        let state: LabState = serde_json::from_slice(&serde_json::to_vec(&state).unwrap()).unwrap();
        let inv = inventory_of_node(&state, None);
        assert_eq!(
            inv.promote,
            BTreeMap::from([(
                "shop".to_owned(),
                crate::promote::Settings {
                    after: std::time::Duration::from_secs(3)
                }
            )])
        );
        assert_eq!(
            inv.guard["shop"],
            crate::guard::Settings {
                max_drops: 2,
                ..crate::guard::Settings::default()
            }
        );
        assert_eq!(
            inv.warnings,
            [
                "namespace shop: annotation weir.dev/guard-window=\"soon\" is not a duration \
              (15m, 1h, 0 for none); using the default 15m"
            ]
        );
    }

    #[test]
    fn snapshot_follows_the_state_file() {
        let dir = std::env::temp_dir().join(format!("weir-labsource-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("lab-x.json");
        let mut source = LabSource::from_path(path.clone());
        assert_eq!(source.snapshot().unwrap(), Inventory::default());

        let spec = parse_str(Path::new("t.yaml"), YAML).unwrap();
        let state = plan(&"x".parse().unwrap(), &spec).unwrap();
        std::fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();
        let inv = source.snapshot().unwrap();
        assert_eq!(inv.pods.len(), 2, "external hosts are not pods");
        assert_eq!(
            inv.known_hosts,
            BTreeMap::from([("203.0.113.10".parse().unwrap(), "pay".to_owned())]),
            "external hosts are named"
        );
        assert!(inv.pods.iter().all(|p| p.host_veth.is_some()));
        assert!(
            inv.pods
                .iter()
                .all(|p| p.meta.workload.to_string() == "shop/web")
        );
        assert_eq!(
            inv.namespaces["shop"]["kubernetes.io/metadata.name"],
            "shop"
        );
        assert_eq!(inv.namespaces["shop"]["team"], "a");
        assert!(
            inv.pods
                .iter()
                .all(|p| p.ports.len() == 1 && p.ports[0].port == 80)
        );

        std::fs::write(&path, b"{not json").unwrap();
        assert!(matches!(source.snapshot(), Err(SourceError::Parse { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
