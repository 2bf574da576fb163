//! `weir observe` and `weir graph`: clients of a running agent's API.
//!
//! `weir observe` prints flows like `hubble observe`: one line per flow in
//! Hubble's compact form, or the JSON records as NDJSON (`-o json`), which
//! Hubble's tooling reads. `weir graph` prints the workload graph.
//!
//! Through `weir relay` the flows are every node's, merged in time order:
//! each line names its node (as `hubble observe --print-node-name` does),
//! and a connection between two nodes is shown once, from its initiator's
//! side, unless `--both-sides` is given.

use std::{
    io::{self, BufRead, BufReader, Write},
    process::ExitCode,
    time::Duration,
};

use anyhow::Context as _;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use weir_generator::model::Protocol;

use super::{
    client::{self, Client, ClientError, ServerArgs, endpoint},
    output::{Output, port, table},
};
use crate::api::wire::{EndpointJson, FlowJson, GraphJson, L4Json};

/// How long a request that does not follow a stream may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// `weir observe` arguments.
#[derive(Debug, clap::Args)]
pub struct ObserveArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Keep printing new flows as they come.
    #[arg(short, long)]
    pub follow: bool,
    /// How many recent flows to print first.
    #[arg(long, default_value_t = 20)]
    pub last: usize,
    /// Only flows from or to pods of this namespace.
    #[arg(long, value_parser = client::namespace_arg)]
    pub namespace: Option<String>,
    /// Only flows from or to this pod.
    #[arg(long, value_name = "NAMESPACE/POD")]
    pub pod: Option<String>,
    /// Only flows from or to this port.
    #[arg(long)]
    pub port: Option<u16>,
    /// Only flows of this protocol (TCP, UDP, SCTP, ICMP, ICMPv6).
    #[arg(long)]
    pub protocol: Option<Protocol>,
    /// Only flows with this verdict (FORWARDED, AUDIT, DROPPED).
    #[arg(long)]
    pub verdict: Option<crate::flow::Verdict>,
    /// Through a relay: show both nodes' reports of a connection between
    /// two nodes (by default only its initiator's).
    #[arg(long)]
    pub both_sides: bool,
    /// Name each flow's node (always through a relay).
    #[arg(long)]
    pub print_node_name: bool,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// `weir graph` arguments.
#[derive(Debug, clap::Args)]
pub struct GraphArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// Run `weir observe`.
///
/// # Errors
/// The agent cannot be reached or answers with an error.
pub fn run(args: &ObserveArgs) -> anyhow::Result<ExitCode> {
    finish(observe(args, &mut io::stdout().lock()))
}

/// Run `weir graph`.
///
/// # Errors
/// The agent cannot be reached or answers with an error.
pub fn run_graph(args: &GraphArgs) -> anyhow::Result<ExitCode> {
    finish(graph(args, &mut io::stdout().lock()))
}

/// A closed stdout (`weir observe -f | head`) is a normal way to stop.
/// An agent's refusal is said in its own words, without the status under
/// it (as these two commands always have).
pub(super) fn finish(result: anyhow::Result<()>) -> anyhow::Result<ExitCode> {
    match result {
        Err(e)
            if e.downcast_ref::<io::Error>()
                .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe) =>
        {
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => match e
            .downcast_ref::<ClientError>()
            .and_then(ClientError::refusal)
        {
            Some(refusal) => Err(anyhow::anyhow!("{refusal}")),
            None => Err(e),
        },
        Ok(()) => Ok(ExitCode::SUCCESS),
    }
}

/// `weir observe`, writing to `out`.
///
/// # Errors
/// See [`run`].
pub fn observe(args: &ObserveArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let mut url = endpoint(&args.server.server, &["api", "flows"])?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("last", &args.last.to_string());
        if let Some(ns) = &args.namespace {
            q.append_pair("namespace", ns);
        }
        if let Some(pod) = &args.pod {
            q.append_pair("pod", pod);
        }
        if let Some(port) = args.port {
            q.append_pair("port", &port.to_string());
        }
        if let Some(protocol) = args.protocol {
            q.append_pair("protocol", protocol.as_str());
        }
        if let Some(verdict) = args.verdict {
            q.append_pair("verdict", verdict.as_str());
        }
        if args.both_sides {
            q.append_pair("both_sides", "true");
        }
        if args.follow {
            q.append_pair("follow", "true");
        }
    }
    let response = Client::with_timeout((!args.follow).then_some(TIMEOUT))?.get(&url)?;
    // A relay says how much of the cluster it covers: its flows are many
    // nodes', so each line names its node.
    let style = Style {
        output: args.output,
        node: args.print_node_name || response.headers().contains_key(COVERAGE_HEADER),
    };
    if args.follow {
        let reader = BufReader::new(response);
        for line in reader.lines() {
            let line = line.with_context(|| format!("reading the flow stream from {url}"))?;
            print_line(&line, style, out)?;
            out.flush()?;
        }
        return Ok(());
    }
    let flows: Vec<serde_json::Value> = client::decode(response, &url, "a list of flows")?;
    for flow in flows {
        print_line(&flow.to_string(), style, out)?;
    }
    Ok(())
}

/// The header a relay puts on every answer.
const COVERAGE_HEADER: &str = "weir-coverage";

/// How flows are printed.
#[derive(Clone, Copy, Debug)]
struct Style {
    output: Output,
    /// Name each flow's node.
    node: bool,
}

/// Print one NDJSON line from the agent: a flow, or a note on lost flows.
fn print_line(line: &str, style: Style, out: &mut impl Write) -> anyhow::Result<()> {
    let output = style.output;
    let value: serde_json::Value =
        serde_json::from_str(line).with_context(|| format!("the agent sent a bad line: {line}"))?;
    if let Some(lost) = value.get("lost_events") {
        let n = lost
            .get("num_events_lost")
            .and_then(serde_json::Value::as_u64);
        tracing::warn!(lost = n, "fell behind the agent: flows were skipped");
        if output == Output::Json {
            writeln!(out, "{line}")?;
        }
        return Ok(());
    }
    match output {
        Output::Json => writeln!(out, "{line}")?,
        Output::Table => {
            let flow: FlowJson = serde_json::from_value(value)
                .with_context(|| format!("the agent sent a flow weir cannot read: {line}"))?;
            if style.node {
                writeln!(out, "{}", compact_on_node(&flow))?;
            } else {
                writeln!(out, "{}", compact(&flow))?;
            }
        }
    }
    Ok(())
}

/// Hubble's compact line with the flow's node, as `hubble observe
/// --print-node-name` prints it:
/// `Nov 14 22:13:20.000 [node-1]: shop/web-1:43210 -> shop/db-0:5432 ...`.
#[must_use]
pub fn compact_on_node(flow: &FlowJson) -> String {
    let line = compact(flow);
    let time = short_time(&flow.time);
    match line.strip_prefix(&time) {
        Some(rest) => format!("{time} [{}]{rest}", flow.node_name),
        None => line,
    }
}

/// Hubble's compact line:
/// `Nov 14 22:13:20.000: shop/web-1:43210 -> shop/db-0:5432 from-endpoint FORWARDED (TCP Flags: SYN)`.
#[must_use]
pub fn compact(flow: &FlowJson) -> String {
    let (sport, dport) = match &flow.l4 {
        L4Json::Tcp(t) => (Some(t.source_port), Some(t.destination_port)),
        L4Json::Udp(p) | L4Json::Sctp(p) => (Some(p.source_port), Some(p.destination_port)),
        L4Json::Icmp(_) | L4Json::IcmpV6(_) => (None, None),
    };
    let point = match flow.traffic_direction.as_str() {
        _ if flow.l7.is_some() => "dns-response",
        "EGRESS" => "from-endpoint",
        "INGRESS" => "to-endpoint",
        _ => "unknown-point",
    };
    let mut line = format!(
        "{}: {} -> {} {point} {} ({})",
        short_time(&flow.time),
        peer(&flow.source, &flow.source_names, flow.ip.source, sport),
        peer(
            &flow.destination,
            &flow.destination_names,
            flow.ip.destination,
            dport
        ),
        flow.verdict,
        flow.summary
    );
    // Hubble names a drop's reason before the verdict; weir says why after,
    // in the evaluator's words.
    if let Some(policy) = &flow.weir.policy {
        line.push_str(" policy: ");
        line.push_str(&policy.reason);
        if let Some(direction) = &policy.direction {
            line.push(' ');
            line.push_str(&direction.to_ascii_lowercase());
        }
        if !policy.policies.is_empty() {
            line.push_str(", isolated by ");
            line.push_str(&policy.policies.join(", "));
        }
    }
    line
}

/// A pod as `ns/pod`; an address with DNS names as the names (Hubble's
/// way), then the address in parentheses; else the address.
fn peer(
    endpoint: &EndpointJson,
    names: &[String],
    ip: std::net::IpAddr,
    port: Option<u16>,
) -> String {
    let name = match (&endpoint.namespace, &endpoint.pod_name) {
        (Some(ns), Some(pod)) => format!("{ns}/{pod}"),
        _ if !names.is_empty() => {
            let at = port.map_or_else(String::new, |p| format!(":{p}"));
            return format!("{}{at} ({ip})", names.join(","));
        }
        _ if ip.is_ipv6() && port.is_some() => format!("[{ip}]"),
        _ => ip.to_string(),
    };
    match port {
        Some(port) => format!("{name}:{port}"),
        None => name,
    }
}

/// `Nov 14 22:13:20.123` from RFC 3339; the input as is if it does not parse.
fn short_time(rfc3339: &str) -> String {
    match OffsetDateTime::parse(rfc3339, &Rfc3339) {
        Ok(t) => {
            let month = t.month().to_string();
            format!(
                "{} {:02} {:02}:{:02}:{:02}.{:03}",
                month.get(..3).unwrap_or(&month),
                t.day(),
                t.hour(),
                t.minute(),
                t.second(),
                t.millisecond()
            )
        }
        Err(_) => rfc3339.to_owned(),
    }
}

/// `weir graph`, writing to `out`.
///
/// # Errors
/// See [`run_graph`].
pub fn graph(args: &GraphArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let url = endpoint(&args.server.server, &["api", "graph"])?;
    let graph: GraphJson = Client::with_timeout(Some(TIMEOUT))?.get_json(&url, "a graph")?;
    match args.output {
        Output::Json => {
            serde_json::to_writer_pretty(&mut *out, &graph)?;
            writeln!(out)?;
        }
        Output::Table => out.write_all(graph_table(&graph).as_bytes())?,
    }
    Ok(())
}

/// The graph as aligned columns, one row per (source, target) pair.
#[must_use]
pub fn graph_table(graph: &GraphJson) -> String {
    let header = [
        "SOURCE",
        "",
        "TARGET",
        "PORTS",
        "CONNECTIONS",
        "PACKETS",
        "BYTES",
        "LAST SEEN",
    ];
    let rows = std::iter::once(header.map(str::to_owned)).chain(graph.edges.iter().map(|e| {
        let ports: Vec<String> = e.ports.iter().map(|p| port(p.protocol, p.port)).collect();
        [
            e.source.clone(),
            "->".to_owned(),
            e.target.clone(),
            ports.join(","),
            e.connections.to_string(),
            e.packets.to_string(),
            e.bytes.to_string(),
            short_time(&e.last_seen),
        ]
    }));
    table(&rows.collect::<Vec<_>>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dns_answer_record_prints_the_rcode_and_the_name() {
        let flow: FlowJson = serde_json::from_value(serde_json::json!({
            "time": "2026-12-07T04:00:00.000000000Z",
            "verdict": "FORWARDED",
            "IP": {"source": "10.0.0.1", "destination": "10.96.0.10", "ipVersion": "IPv4"},
            "l4": {"UDP": {"source_port": 40000, "destination_port": 53}},
            "source": {"namespace": "shop", "pod_name": "client"},
            "destination": {},
            "Type": "L7",
            "l7": {"type": "RESPONSE", "dns": {"query": "nope.example.", "rcode": 3}},
            "node_name": "node-1",
            "traffic_direction": "EGRESS",
            "Summary": "NXDOMAIN nope.example",
        }))
        .expect("a flow");
        assert_eq!(
            compact(&flow),
            "Dec 07 04:00:00.000: shop/client:40000 -> 10.96.0.10:53 dns-response FORWARDED \
             (NXDOMAIN nope.example)"
        );
    }

    #[test]
    fn compact_lines_name_external_peers_by_their_dns_names() {
        let flow: FlowJson = serde_json::from_value(serde_json::json!({
            "time": "2026-12-07T04:00:00.000000000Z",
            "verdict": "FORWARDED",
            "IP": {"source": "10.0.0.1", "destination": "203.0.113.10", "ipVersion": "IPv4"},
            "l4": {"TCP": {"source_port": 40000, "destination_port": 443, "flags": {"SYN": true}}},
            "source": {"namespace": "shop", "pod_name": "client"},
            "destination": {},
            "destination_names": ["api.payments.example"],
            "Type": "L3_L4",
            "node_name": "node-1",
            "traffic_direction": "EGRESS",
            "Summary": "TCP Flags: SYN",
        }))
        .expect("a flow");
        assert_eq!(
            compact(&flow),
            "Dec 07 04:00:00.000: shop/client:40000 -> api.payments.example:443 (203.0.113.10) \
             from-endpoint FORWARDED (TCP Flags: SYN)"
        );
    }
}
