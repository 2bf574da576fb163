use clap::Parser as _;
use weir_generator::model::Protocol;

use super::observe::*;
use crate::{
    aggregator::testing::*,
    api::{
        AppState, SharedResolver,
        wire::{FlowJson, GraphJson},
    },
    flow::Initiator,
};

/// An agent API on a random local port, on its own runtime thread.
fn serve() -> String {
    let (aggregator, metrics) = node_aggregator();
    let r = shop();
    // The cart's own report lets the connection in (it is held until then).
    aggregator.fold(
        &obs(1, "10.0.0.1:43210", "10.0.0.2:7070", Initiator::Local),
        &r,
    );
    let mut at_cart = obs(2, "10.0.0.2:7070", "10.0.0.1:43210", Initiator::Remote);
    at_cart.new_flow = false;
    at_cart.connections = 0;
    aggregator.fold(&at_cart, &r);
    let mut icmp = obs(2, "10.0.0.2:9", "[2001:db8::1]:9", Initiator::Remote);
    icmp.protocol = Protocol::IcmpV6;
    icmp.local = "[fd00::2]:9".parse().unwrap();
    icmp.icmp = Some((128, 0));
    aggregator.fold(&icmp, &r);
    aggregator.close_followers();
    let state = AppState::new(aggregator, metrics, SharedResolver::default(), "node-1");
    super::testing::serve(state)
}

#[derive(Debug, clap::Parser)]
struct TestCli {
    #[command(subcommand)]
    command: TestCommand,
}

#[derive(Debug, clap::Subcommand)]
enum TestCommand {
    Observe(ObserveArgs),
    Graph(GraphArgs),
}

fn output(argv: &[&str]) -> anyhow::Result<String> {
    let mut out = Vec::new();
    match TestCli::try_parse_from(argv)?.command {
        TestCommand::Observe(args) => observe(&args, &mut out)?,
        TestCommand::Graph(args) => graph(&args, &mut out)?,
    }
    Ok(String::from_utf8(out)?)
}

#[test]
fn observe_and_graph_print_what_the_agent_serves() {
    let server = serve();
    let table = output(&["weir", "observe", "--server", &server]).unwrap();
    assert_eq!(
        table,
        "Nov 14 22:13:20.000: shop/frontend-a:43210 -> shop/cart-a:7070 from-endpoint FORWARDED (TCP Flags: SYN, ACK)\n\
         Nov 14 22:13:20.000: 2001:db8::1 -> shop/cart-a to-endpoint FORWARDED (ICMPv6 EchoRequest)\n"
    );

    let json = output(&[
        "weir",
        "observe",
        "--server",
        &server,
        "-o",
        "json",
        "--protocol",
        "icmpv6",
    ])
    .unwrap();
    let lines: Vec<FlowJson> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].traffic_direction, "INGRESS");

    // Followers were closed, so the stream ends after the backlog.
    let followed = output(&[
        "weir",
        "observe",
        "--server",
        &server,
        "-f",
        "--pod",
        "shop/frontend-a",
    ])
    .unwrap();
    assert_eq!(followed.lines().count(), 1, "{followed}");

    // Asked for, each line names its node (a relay's answers always do).
    let table = output(&[
        "weir",
        "observe",
        "--server",
        &server,
        "--print-node-name",
        "--both-sides",
        "--protocol",
        "tcp",
    ])
    .unwrap();
    assert_eq!(
        table,
        "Nov 14 22:13:20.000 [node-1]: shop/frontend-a:43210 -> shop/cart-a:7070 from-endpoint FORWARDED (TCP Flags: SYN, ACK)\n"
    );

    let table = output(&["weir", "graph", "--server", &server]).unwrap();
    assert_eq!(
        table,
        "SOURCE             TARGET     PORTS     CONNECTIONS  PACKETS  BYTES  LAST SEEN\n\
         shop/frontend  ->  shop/cart  7070/TCP  1            2        120    Nov 14 22:13:20.500\n\
         2001:db8::1    ->  shop/cart  ICMPv6    1            2        120    Nov 14 22:13:20.500\n"
    );
    let json = output(&["weir", "graph", "--server", &server, "-o", "json"]).unwrap();
    let graph: GraphJson = serde_json::from_str(&json).unwrap();
    assert_eq!(graph.edges.len(), 2);
}

#[test]
fn errors_name_the_url_and_the_bad_parameter() {
    let server = serve();
    let err = output(&["weir", "observe", "--server", &server, "--pod", "nopod"]).unwrap_err();
    let message = format!("{err:#}");
    assert!(message.contains("/api/flows?"), "{message}");
    assert!(message.contains("bad query parameter `pod`"), "{message}");
    // As printed: the agent's words, never the status under them.
    let printed = format!("{:#}", finish(Err(err)).unwrap_err());
    assert!(
        printed.starts_with(&format!("{server}/api/flows?")) && !printed.contains("HTTP 400"),
        "{printed}"
    );

    // A port nobody listens on: bind one, then free it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let err = output(&["weir", "graph", "--server", &format!("http://{closed}")]).unwrap_err();
    let message = format!("{err:#}");
    assert!(
        message.contains(&format!(
            "cannot reach the weir agent at http://{closed}/api/graph"
        )),
        "{message}"
    );
}
