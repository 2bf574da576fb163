//! The relay reading agents: real agent APIs on 127.0.0.1 (their
//! contribution, 304s and events), and simulated ones for what a real
//! agent cannot be made to do on cue (a new epoch, going away).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, atomic::AtomicUsize},
    time::Duration,
};

use weir_generator::model::{EdgeKey, NodeId, Protocol, WorkloadKind, WorkloadRef};

use super::*;
use crate::{
    aggregator::{Aggregator, Options, testing::*},
    api::{
        self, AppState,
        wire::{ContributionJson, NodeState},
    },
    flow::Initiator,
    metrics::Metrics,
    relay::{
        checkpoint::Checkpoint,
        discovery::static_list,
        http::{AgentNames, HttpFetch},
    },
    resolve::{Inventory, Resolver},
};

fn aggregator(node: &str) -> Arc<Aggregator> {
    Arc::new(Aggregator::new(
        Options {
            node_name: node.into(),
            ..Options::default()
        },
        Arc::new(Metrics::new()),
    ))
}

/// frontend (10.0.0.1) on node a, db (10.0.1.9) on node b.
fn resolver(attached: &str) -> FakeResolver {
    FakeResolver::default()
        .pod(
            "shop",
            "frontend",
            "frontend-a",
            "10.0.0.1",
            (attached == "a").then_some(1),
        )
        .pod(
            "data",
            "db",
            "db-0",
            "10.0.1.9",
            (attached == "b").then_some(3),
        )
        .on_node("10.0.0.1", "a")
        .on_node("10.0.1.9", "b")
}

/// A connection frontend -> db, from port `client`, seen at `node`.
fn connect(agg: &Aggregator, node: &str, client: u16) {
    let (o, r) = if node == "a" {
        (
            obs(
                1,
                &format!("10.0.0.1:{client}"),
                "10.0.1.9:5432",
                Initiator::Local,
            ),
            resolver("a"),
        )
    } else {
        (
            obs(
                3,
                "10.0.1.9:5432",
                &format!("10.0.0.1:{client}"),
                Initiator::Remote,
            ),
            resolver("b"),
        )
    };
    agg.fold(&o, &r);
}

fn to_db() -> EdgeKey {
    EdgeKey {
        source: NodeId::Workload(WorkloadRef::new(
            "shop",
            WorkloadKind::Deployment,
            "frontend",
        )),
        target: NodeId::Workload(WorkloadRef::new("data", WorkloadKind::Deployment, "db")),
        protocol: Protocol::Tcp,
        port: 5432,
    }
}

/// Serve an agent's API over `agg` on 127.0.0.1; its URL.
async fn serve_agent(agg: Arc<Aggregator>, node: &str) -> String {
    let resolver = Arc::new(std::sync::RwLock::new(Arc::new(Resolver::new(
        &Inventory::default(),
        |_| None,
    ))));
    let state = AppState::new(agg, Arc::new(Metrics::new()), resolver, node);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, api::app(state)).await.unwrap();
    });
    format!("http://{addr}")
}

/// Wait until `done` holds (10 s at most).
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn connections(hub: &Hub) -> u64 {
    hub.aggregator()
        .graph()
        .edges
        .get(&to_db())
        .map_or(0, |e| e.connections)
}

/// Counts the answers a [`Fetch`] gave.
struct Counting<F> {
    inner: F,
    not_modified: AtomicUsize,
    changed: AtomicUsize,
}

impl<F: Fetch> Fetch for Counting<F> {
    async fn contribution(
        &self,
        agent: &AgentEndpoint,
        etag: Option<&str>,
    ) -> Result<Fetched, String> {
        let answer = self.inner.contribution(agent, etag).await;
        let counter = match &answer {
            Ok(Fetched::NotModified) => &self.not_modified,
            _ => &self.changed,
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        answer
    }

    async fn watch(&self, agent: &AgentEndpoint, changed: Arc<Notify>) -> Result<(), String> {
        self.inner.watch(agent, changed).await
    }
}

fn http() -> HttpFetch {
    let names = Arc::new(AgentNames::default());
    let client = reqwest::Client::builder()
        .dns_resolver(Arc::clone(&names))
        .build()
        .unwrap();
    HttpFetch::new(client, names)
}

fn pace(interval: Duration) -> Pace {
    Pace {
        backoff: Duration::from_millis(20),
        timeout: Duration::from_secs(5),
        ..Pace::new(interval, 2, Duration::from_secs(3600))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_reads_both_agents_and_counts_a_cross_node_connection_once() {
    let (a, b) = (aggregator("a"), aggregator("b"));
    connect(&a, "a", 40_000);
    connect(&b, "b", 40_000);
    let agents = static_list(&[
        ("a".to_owned(), serve_agent(Arc::clone(&a), "a").await),
        ("b".to_owned(), serve_agent(Arc::clone(&b), "b").await),
    ]);
    let hub = Hub::new(agents.clone(), None, aggregator("relay"));
    let fetch = Arc::new(Counting {
        inner: http(),
        not_modified: AtomicUsize::new(0),
        changed: AtomicUsize::new(0),
    });
    tokio::spawn(Arc::clone(&hub).run_merger(Duration::from_millis(10)));
    tokio::spawn(run(
        Arc::clone(&hub),
        Arc::clone(&fetch),
        agents,
        pace(Duration::from_millis(100)),
    ));

    until("both synced", || hub.coverage().synced == 2).await;
    until("the merged edge", || connections(&hub) == 1).await;
    // Nothing changed: the agents answer 304, the view stays as it is.
    let merges = hub.merges();
    until("a 304", || {
        fetch
            .not_modified
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 2
    })
    .await;
    assert_eq!(hub.merges(), merges, "a 304 remakes nothing");
    assert_eq!(connections(&hub), 1, "still once, not twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_graph_event_brings_its_change_without_waiting_for_the_interval() {
    let a = aggregator("a");
    connect(&a, "a", 40_000);
    let agents = static_list(&[("a".to_owned(), serve_agent(Arc::clone(&a), "a").await)]);
    let hub = Hub::new(agents.clone(), None, aggregator("relay"));
    tokio::spawn(Arc::clone(&hub).run_merger(Duration::from_millis(10)));
    // An hour between reads: only the events can bring the change.
    tokio::spawn(run(
        Arc::clone(&hub),
        Arc::new(http()),
        agents,
        pace(Duration::from_secs(3600)),
    ));
    until("the first read", || connections(&hub) == 1).await;
    // Let the event stream connect (its first event is sent on connect).
    tokio::time::sleep(Duration::from_millis(700)).await;
    connect(&a, "a", 40_001);
    until("the change, through the events", || connections(&hub) == 2).await;
}

/// Simulated agents: each node's answer, set by the test.
#[derive(Default)]
struct Simulated {
    answers: Mutex<BTreeMap<String, Result<ContributionJson, String>>>,
}

impl Simulated {
    fn set(&self, node: &str, answer: Result<ContributionJson, String>) {
        self.answers.lock().unwrap().insert(node.to_owned(), answer);
    }
}

fn etag(c: &ContributionJson) -> String {
    format!("\"{}-{}-{}\"", c.epoch, c.instance, c.version)
}

impl Fetch for Simulated {
    async fn contribution(
        &self,
        agent: &AgentEndpoint,
        held: Option<&str>,
    ) -> Result<Fetched, String> {
        let answer = self.answers.lock().unwrap().get(&agent.node).cloned();
        match answer {
            None => Err("connection refused".to_owned()),
            Some(Err(e)) => Err(e),
            Some(Ok(c)) if held == Some(etag(&c).as_str()) => Ok(Fetched::NotModified),
            Some(Ok(c)) => Ok(Fetched::Changed {
                etag: Some(etag(&c)),
                contribution: Box::new(c),
            }),
        }
    }

    async fn watch(&self, _: &AgentEndpoint, _: Arc<Notify>) -> Result<(), String> {
        Err("no events".to_owned())
    }
}

/// `agg`'s contribution under `epoch`.
fn contribution(agg: &Aggregator, epoch: u64) -> ContributionJson {
    let c = agg.contribution();
    let tag = crate::api::contribution::Tag {
        epoch,
        instance: 1,
        version: c.view.version,
        cluster: 0,
    };
    crate::api::contribution::to_json(
        &c,
        &Resolver::new(&Inventory::default(), |_| None),
        &tag,
        "2026-01-01T00:00:00Z",
    )
}

fn state_of(hub: &Hub, node: &str) -> NodeState {
    hub.coverage()
        .nodes
        .iter()
        .find(|n| n.node == node)
        .map(|n| n.state)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_epoch_replaces_a_gone_agent_is_stale_and_a_restart_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (aggregator("a"), aggregator("b"));
    connect(&a, "a", 40_000);
    connect(&b, "b", 40_000);
    connect(&b, "b", 40_001);
    let sim = Arc::new(Simulated::default());
    sim.set("a", Ok(contribution(&a, 1)));
    sim.set("b", Ok(contribution(&b, 2)));
    let agents = static_list(&[
        ("a".to_owned(), "https://10.0.0.1:4244".to_owned()),
        ("b".to_owned(), "https://10.0.0.2:4244".to_owned()),
    ]);
    let hub = Hub::new(
        agents.clone(),
        Some(Checkpoint::open(dir.path()).unwrap()),
        aggregator("relay"),
    );
    let merging = tokio::spawn(Arc::clone(&hub).run_merger(Duration::from_millis(10)));
    let syncing = tokio::spawn(run(
        Arc::clone(&hub),
        Arc::clone(&sim),
        agents.clone(),
        pace(Duration::from_millis(50)),
    ));
    until("both synced", || hub.coverage().synced == 2).await;
    // a's initiator side wins: 1 connection, not b's 2, not 3.
    until("the merged edge", || connections(&hub) == 1).await;

    // a goes away: its contribution stays, stale.
    sim.answers.lock().unwrap().remove("a");
    until("a stale", || state_of(&hub, "a") == NodeState::Stale).await;
    let c = hub.coverage();
    assert_eq!(
        (c.synced, c.stale.as_slice()),
        (1, ["a".to_owned()].as_slice())
    );
    assert_eq!(connections(&hub), 1, "a's edge is kept");
    assert_eq!(hub.held()["a"].error.as_deref(), Some("connection refused"));

    // b comes back with a wiped store: a new epoch, an empty graph.
    sim.set("b", Ok(contribution(&aggregator("b"), 3)));
    until("b's new epoch", || {
        hub.held()["b"]
            .contribution
            .as_ref()
            .is_some_and(|c| c.epoch == "0000000000000003")
    })
    .await;
    until("b's old counts gone", || {
        hub.held()["b"]
            .contribution
            .as_ref()
            .is_some_and(|c| c.edges.is_empty())
    })
    .await;
    assert_eq!(connections(&hub), 1, "a's stale side remains");

    // The relay restarts, with no agent answering: nothing is lost.
    for task in [syncing, merging] {
        task.abort();
        let _ = task.await;
    }
    // The agents' tasks end soon after (an abort is not immediate).
    until("the tasks gone", || Arc::strong_count(&hub) == 1).await;
    let before = hub.aggregator().graph();
    let held = hub.held();
    // As the relay does at shutdown: new contributions are written.
    hub.flush();
    drop(hub);
    let (checkpoint, reopened) = Checkpoint::open(dir.path()).unwrap();
    assert_eq!(reopened, held);
    let again = Hub::new(agents, Some((checkpoint, reopened)), aggregator("relay"));
    assert_eq!(again.aggregator().graph(), before);
    assert_eq!(state_of(&again, "a"), NodeState::Stale);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpointed_node_is_not_deleted_before_discovery_has_listed() {
    let dir = tempfile::tempdir().unwrap();
    let a = aggregator("a");
    connect(&a, "a", 40_000);
    let (checkpoint, _) = Checkpoint::open(dir.path()).unwrap();
    let held = BTreeMap::from([(
        "a".to_owned(),
        crate::relay::hub::Held {
            contribution: Some(Arc::new(contribution(&a, 1))),
            ..Default::default()
        },
    )]);
    // Kubernetes discovery before its first list.
    let (tx, agents) = watch::channel(AgentSet::default());
    let hub = Hub::new(
        agents.clone(),
        Some((checkpoint, held)),
        aggregator("relay"),
    );
    let syncing = tokio::spawn(run(
        Arc::clone(&hub),
        Arc::new(Simulated::default()),
        agents,
        pace(Duration::from_millis(50)),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        hub.held()["a"].deleted_since,
        None,
        "an empty set not yet listed deleted a node"
    );
    // Listed, without a: a is gone.
    tx.send(AgentSet {
        listed: true,
        ..AgentSet::default()
    })
    .unwrap();
    until("a deleted", || hub.held()["a"].deleted_since.is_some()).await;
    syncing.abort();
}

/// An agent that answers until it dies; its event stream stays open until
/// then.
#[derive(Default)]
struct Dying {
    answer: Mutex<Option<ContributionJson>>,
    died: Notify,
}

impl Fetch for Dying {
    async fn contribution(&self, _: &AgentEndpoint, _: Option<&str>) -> Result<Fetched, String> {
        match self.answer.lock().unwrap().clone() {
            Some(c) => Ok(Fetched::Changed {
                etag: Some(etag(&c)),
                contribution: Box::new(c),
            }),
            None => Err("connection refused".to_owned()),
        }
    }

    async fn watch(&self, _: &AgentEndpoint, _: Arc<Notify>) -> Result<(), String> {
        if self.answer.lock().unwrap().is_none() {
            return Err("connection refused".to_owned());
        }
        self.died.notified().await;
        Err("stream ended".to_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_agent_is_stale_when_its_events_end_not_at_the_next_read() {
    let a = aggregator("a");
    connect(&a, "a", 40_000);
    let dying = Arc::new(Dying::default());
    *dying.answer.lock().unwrap() = Some(contribution(&a, 1));
    let agents = static_list(&[("a".to_owned(), "https://10.0.0.1:4244".to_owned())]);
    let hub = Hub::new(agents.clone(), None, aggregator("relay"));
    // The periodic read is an hour away: only the events' end can tell.
    let syncing = tokio::spawn(run(
        Arc::clone(&hub),
        Arc::clone(&dying),
        agents,
        pace(Duration::from_secs(3600)),
    ));
    until("a synced", || hub.coverage().synced == 1).await;
    // Let the event stream open before the agent dies.
    tokio::time::sleep(Duration::from_millis(200)).await;
    *dying.answer.lock().unwrap() = None;
    dying.died.notify_waiters();
    until("a stale", || state_of(&hub, "a") == NodeState::Stale).await;
    syncing.abort();
}
