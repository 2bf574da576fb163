//! A flow as the agent sees it after decoding: one endpoint's view of one
//! connection, with counter deltas since the last report. Produced by the
//! [`tracker`](crate::tracker) from ring-buffer events and flow-table sweeps,
//! consumed by the [`aggregator`](crate::aggregator).

use std::net::SocketAddr;

use weir_generator::model::Protocol;

/// Which side opened the connection, seen from the endpoint's pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Initiator {
    /// The pod behind the endpoint opened it.
    Local,
    /// The peer opened it.
    Remote,
    /// Not known (kept as its own state, never guessed into one of the others).
    Unknown,
}

/// One endpoint's report on one flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    /// Host-side veth the flow was seen on.
    pub ifindex: u32,
    /// Transport protocol.
    pub protocol: Protocol,
    /// The pod's side of the flow. For ICMP the port is the echo identifier.
    pub local: SocketAddr,
    /// The peer's side of the flow.
    pub remote: SocketAddr,
    /// Who opened it.
    pub initiator: Initiator,
    /// True when no handshake was seen and the first packet decided the
    /// initiator (a flow already open when the probes attached).
    pub initiator_guessed: bool,
    /// True for the first report of a flow: it counts as a new connection.
    pub new_flow: bool,
    /// True for the last report: the flow expired from the table.
    pub closed: bool,
    /// Packets sent by the pod since the last report.
    pub packets_from_pod: u64,
    /// Bytes sent by the pod since the last report.
    pub bytes_from_pod: u64,
    /// Packets received by the pod since the last report.
    pub packets_to_pod: u64,
    /// Bytes received by the pod since the last report.
    pub bytes_to_pod: u64,
    /// TCP flags sent by the pod (cumulative).
    pub tcp_flags_from_pod: u8,
    /// TCP flags received by the pod (cumulative).
    pub tcp_flags_to_pod: u8,
    /// ICMP type and code of the first message, for ICMP flows.
    pub icmp: Option<(u8, u8)>,
    /// First packet, Unix nanoseconds.
    pub first_seen: u64,
    /// Last packet, Unix nanoseconds.
    pub last_seen: u64,
    /// Kernel timestamp of the event that produced this report, as Unix
    /// nanoseconds: the start of the aggregation-delay measurement.
    pub kernel_time: u64,
}

impl Observation {
    /// The responder's port: the port an edge and a policy are about.
    #[must_use]
    pub fn destination_port(&self) -> u16 {
        match self.initiator {
            Initiator::Remote => self.local.port(),
            Initiator::Local | Initiator::Unknown => self.remote.port(),
        }
    }
}
