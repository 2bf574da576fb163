//! Pods from a `weir lab` state file. The file is re-read at every
//! snapshot, so pods appear and disappear as the lab is brought up, replaced
//! or taken down. External hosts are not pods: they are left out, and their
//! addresses resolve as external peers, as they would in a cluster.

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
}

impl LabSource {
    /// The source for lab `lab` (its state file under `/run/weir`).
    #[must_use]
    pub fn new(lab: &LabName) -> Self {
        Self {
            lab: lab.to_string(),
            path: state_path(lab),
        }
    }

    /// A source reading a state file at another path (tests).
    #[must_use]
    pub fn from_path(path: PathBuf) -> Self {
        Self {
            lab: path.display().to_string(),
            path,
        }
    }
}

/// The inventory a lab state describes: every pod with its host veth and
/// ports, namespaces with their labels, Services. External hosts are not
/// pods: only their names are kept, for the UI to show.
#[must_use]
pub fn inventory(state: &LabState) -> Inventory {
    Inventory {
        pods: state
            .pods
            .iter()
            .map(|p| LocalPod {
                meta: p.meta(),
                host_veth: Some(p.host_veth.clone()),
                ports: p.ports.iter().map(named_port).collect(),
                local: true,
                // Every lab pod is on this node, and attached: the
                // aggregator knows that without a name.
                node: None,
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
        known_hosts: state
            .external_hosts
            .iter()
            .flat_map(|h| h.ips.iter().map(|ip| (*ip, h.name.clone())))
            .collect(),
        ..Inventory::default()
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
            Ok(state) => Ok(inventory(&state)),
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
