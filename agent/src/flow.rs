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

/// What the datapath decided for a flow (Hubble's `verdict`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Verdict {
    /// Allowed, or not judged (the namespace is observed only).
    #[default]
    Forwarded,
    /// Denied by the policies, passed anyway (audit mode).
    Audit,
    /// Denied and dropped (enforce mode).
    Dropped,
}

impl Verdict {
    /// From the kernel's `VERDICT_*`; an unknown value reads as forwarded
    /// (the kernel passes what it did not drop).
    #[must_use]
    pub fn from_abi(value: u8) -> Self {
        match value {
            weir_ebpf::abi::VERDICT_AUDIT => Self::Audit,
            weir_ebpf::abi::VERDICT_DROPPED => Self::Dropped,
            _ => Self::Forwarded,
        }
    }

    /// `FORWARDED`, `AUDIT` or `DROPPED`, as Hubble writes verdicts.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Forwarded => "FORWARDED",
            Self::Audit => "AUDIT",
            Self::Dropped => "DROPPED",
        }
    }
}

impl std::str::FromStr for Verdict {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "FORWARDED" => Ok(Self::Forwarded),
            "AUDIT" => Ok(Self::Audit),
            "DROPPED" => Ok(Self::Dropped),
            _ => Err(format!("expected FORWARDED, AUDIT or DROPPED, got {s:?}")),
        }
    }
}

/// Why the policies deny a flow (none when forwarded).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DenyReason {
    /// Not denied.
    #[default]
    None,
    /// The pod is isolated and no rule allows anything in this direction.
    DefaultDeny,
    /// No rule names the peer.
    PeerNotAllowed,
    /// A rule names the peer, on other ports.
    PortNotAllowed,
}

impl DenyReason {
    /// From the kernel's `REASON_*`.
    #[must_use]
    pub fn from_abi(value: u8) -> Self {
        match value {
            weir_ebpf::abi::REASON_DEFAULT_DENY => Self::DefaultDeny,
            weir_ebpf::abi::REASON_PEER_NOT_ALLOWED => Self::PeerNotAllowed,
            weir_ebpf::abi::REASON_PORT_NOT_ALLOWED => Self::PortNotAllowed,
            _ => Self::None,
        }
    }

    /// `none`, `default-deny`, `peer-not-allowed` or `port-not-allowed`
    /// (the evaluator's names, as `weir verify` prints them).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::DefaultDeny => "default-deny",
            Self::PeerNotAllowed => "peer-not-allowed",
            Self::PortNotAllowed => "port-not-allowed",
        }
    }
}

/// The direction the datapath checked, seen from the endpoint's pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CheckedDirection {
    /// Traffic into the pod: its ingress policies.
    Ingress,
    /// Traffic out of the pod: its egress policies.
    Egress,
}

impl CheckedDirection {
    /// From the kernel's `DIR_*`.
    #[must_use]
    pub fn from_abi(value: u8) -> Option<Self> {
        match value {
            weir_ebpf::abi::DIR_INGRESS => Some(Self::Ingress),
            weir_ebpf::abi::DIR_EGRESS => Some(Self::Egress),
            _ => None,
        }
    }

    /// The side a flow is judged on at its endpoint: a flow the pod opened
    /// is its egress, one its peer opened its ingress (what the datapath
    /// checks on a flow's first packet).
    #[must_use]
    pub fn of_initiator(initiator: Initiator) -> Option<Self> {
        match initiator {
            Initiator::Local => Some(Self::Egress),
            Initiator::Remote => Some(Self::Ingress),
            Initiator::Unknown => None,
        }
    }

    /// `INGRESS` or `EGRESS`, as Hubble's `traffic_direction`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ingress => "INGRESS",
            Self::Egress => "EGRESS",
        }
    }
}

/// One kernel flow table entry, by what names it: the endpoint's veth and
/// the 5-tuple as the endpoint sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct EntryKey {
    /// Host-side veth of the endpoint.
    pub ifindex: u32,
    /// Transport protocol.
    pub protocol: Protocol,
    /// The pod's side.
    pub local: SocketAddr,
    /// The peer's side.
    pub remote: SocketAddr,
}

/// How much of one kernel flow table entry was reported: its cumulative
/// counters and connections as of a report. The store keeps those of the
/// folded reports, so that an agent started on the same (pinned) table
/// reads deltas from there and never folds a packet or a connection twice.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EntryCounters {
    /// Packets sent by the pod.
    pub packets_from_pod: u64,
    /// Bytes sent by the pod.
    pub bytes_from_pod: u64,
    /// Packets received by the pod.
    pub packets_to_pod: u64,
    /// Bytes received by the pod.
    pub bytes_to_pod: u64,
    /// Connections the entry carried (a reused 5-tuple reopens it).
    pub connections: u32,
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
    /// True for the first report of a connection: a new flow table entry,
    /// or an entry a new connection reopened (a reused 5-tuple).
    pub new_flow: bool,
    /// New connections this report counts: 1 for a new flow, more when the
    /// 5-tuple was reused several times since the last report (the timing
    /// and verdict fields are the latest connection's), 0 otherwise.
    pub connections: u32,
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
    /// The datapath's verdict (decided on the flow's first packet).
    pub verdict: Verdict,
    /// Why it was not forwarded.
    pub reason: DenyReason,
    /// The direction that was checked, when known.
    pub direction: Option<CheckedDirection>,
    /// The policies that isolate the endpoint's pod in that direction
    /// (`namespace/name`), filled in by the agent for judged flows that
    /// were not forwarded.
    pub policies: Vec<String>,
    /// The entry's counters once this report is folded (`None`: not a
    /// report of a kernel entry).
    pub folded: Option<EntryCounters>,
}

impl Observation {
    /// The kernel entry this report is about.
    #[must_use]
    pub fn entry(&self) -> EntryKey {
        EntryKey {
            ifindex: self.ifindex,
            protocol: self.protocol,
            local: self.local,
            remote: self.remote,
        }
    }

    /// The responder's port: the port an edge and a policy are about.
    #[must_use]
    pub fn destination_port(&self) -> u16 {
        match self.initiator {
            Initiator::Remote => self.local.port(),
            Initiator::Local | Initiator::Unknown => self.remote.port(),
        }
    }
}
