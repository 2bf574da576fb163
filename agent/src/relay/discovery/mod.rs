//! Which agents the relay reads, as one value that changes over time: a
//! static list (`--agent NODE=URL`) or the EndpointSlices of the headless
//! Service over the agents' DaemonSet.

pub mod kube;

use std::collections::BTreeMap;

use tokio::sync::watch;

/// The DNS name an agent's relay-listener certificate is issued for.
#[must_use]
pub fn agent_server_name(node: &str) -> String {
    crate::tls::agent_server_name(node)
}

/// One agent, as discovery knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentEndpoint {
    /// The node the agent runs on: its certificate names
    /// [`agent_server_name`] of it.
    pub node: String,
    /// Where its relay listener is: `https://HOST:PORT`.
    pub url: String,
    /// The endpoint is ready (the agent passed its readiness probe).
    pub ready: bool,
    /// The pod is going away (a drained or deleted node).
    pub terminating: bool,
}

/// Every agent discovery knows at one moment, by node.
///
/// The default is discovery before it knows anything (not listed).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentSet {
    /// Discovery has listed the agents: until then `agents` is empty for
    /// want of knowing, not because there are none (a node held from the
    /// checkpoint is not deleted, coverage is not complete). A static list
    /// is listed from the start; the Kubernetes watches once they listed.
    pub listed: bool,
    /// How many agents there should be (the DaemonSet's
    /// `status.desiredNumberScheduled`); `None` without a DaemonSet to ask
    /// (a static list expects exactly its agents).
    pub expected: Option<usize>,
    /// By node name.
    pub agents: BTreeMap<String, AgentEndpoint>,
}

impl AgentSet {
    /// How many agents coverage counts on: the DaemonSet's number when
    /// known, else the agents listed.
    #[must_use]
    pub fn expected(&self) -> usize {
        self.expected.unwrap_or(self.agents.len())
    }
}

/// A static list of `(node, url)`: always ready, never changing.
#[must_use]
pub fn static_list(agents: &[(String, String)]) -> watch::Receiver<AgentSet> {
    let set = AgentSet {
        listed: true,
        expected: None,
        agents: agents
            .iter()
            .map(|(node, url)| {
                (
                    node.clone(),
                    AgentEndpoint {
                        node: node.clone(),
                        url: url.clone(),
                        ready: true,
                        terminating: false,
                    },
                )
            })
            .collect(),
    };
    // The sender is dropped: receivers keep the last value for good.
    watch::channel(set).1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_static_list_expects_exactly_its_agents() {
        let rx = static_list(&[
            ("a".to_owned(), "https://10.0.0.1:4244".to_owned()),
            ("b".to_owned(), "https://10.0.0.2:4244".to_owned()),
        ]);
        let set = rx.borrow().clone();
        assert!(set.listed && !AgentSet::default().listed);
        assert_eq!(set.expected(), 2);
        assert!(set.agents.values().all(|a| a.ready && !a.terminating));
        assert_eq!(set.agents["b"].url, "https://10.0.0.2:4244");
        assert_eq!(agent_server_name("b"), "b.agents.weir.internal");
    }
}
