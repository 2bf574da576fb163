//! A flow record as an agent's stream sent it: the relay reads the few
//! fields the merger needs ([`StreamRecord`]) and passes the line on as it
//! came, so a record costs one pass over its JSON and no re-encoding.
//! Only a record without `node_name` is re-encoded, to name its node.

use std::borrow::Cow;

use serde::Deserialize;

use super::stream::StreamRecord;
use crate::{
    api::wire::{FlowJson, LostJson},
    timestamp::parse_rfc3339,
};

/// One flow record: its NDJSON line (newline included) and what the
/// merger reads of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawFlow {
    line: Vec<u8>,
    time_ns: Option<u64>,
    seq: Option<u64>,
    node_name: String,
    initiator_node: Option<String>,
}

/// One line of an agent's `follow` stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamLine {
    /// A flow record.
    Flow(RawFlow),
    /// The agent skipped records for this stream.
    Lost(LostJson),
}

/// The fields of a line the relay reads; the rest is skipped unparsed.
#[derive(Deserialize)]
struct Header<'a> {
    #[serde(borrow)]
    time: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    node_name: Cow<'a, str>,
    #[serde(default, borrow)]
    weir: WeirHeader<'a>,
    lost_events: Option<serde::de::IgnoredAny>,
}

#[derive(Default, Deserialize)]
struct WeirHeader<'a> {
    #[serde(default, borrow)]
    initiator: Cow<'a, str>,
    #[serde(default, borrow)]
    peer_node: Option<Cow<'a, str>>,
    #[serde(default)]
    seq: Option<u64>,
}

impl StreamLine {
    /// Read one line of an agent's stream (its newline may be there or
    /// not).
    ///
    /// # Errors
    /// The line is not JSON, or neither a flow record (it has no `time`)
    /// nor a note of lost records.
    pub fn parse(line: &[u8]) -> Result<Self, String> {
        let header: Header<'_> = serde_json::from_slice(line).map_err(|e| e.to_string())?;
        if header.lost_events.is_some() {
            return serde_json::from_slice(line)
                .map(StreamLine::Lost)
                .map_err(|e| e.to_string());
        }
        let Some(time) = header.time else {
            return Err("a flow record has a `time`; this line has none".to_owned());
        };
        let mut owned = line.trim_ascii_end().to_vec();
        owned.push(b'\n');
        Ok(StreamLine::Flow(RawFlow {
            line: owned,
            time_ns: parse_rfc3339(&time),
            seq: header.weir.seq,
            node_name: header.node_name.into_owned(),
            initiator_node: (header.weir.initiator == "remote")
                .then(|| header.weir.peer_node.map(Cow::into_owned))
                .flatten(),
        }))
    }
}

impl RawFlow {
    /// The NDJSON line, newline included, to pass on.
    #[must_use]
    pub fn into_line(self) -> Vec<u8> {
        self.line
    }

    /// The line, newline included.
    #[must_use]
    pub fn line(&self) -> &[u8] {
        &self.line
    }
}

impl StreamRecord for RawFlow {
    fn time_ns(&self) -> Option<u64> {
        self.time_ns
    }

    fn seq(&self) -> Option<u64> {
        self.seq
    }

    fn node_name(&self) -> &str {
        &self.node_name
    }

    fn set_node_name(&mut self, node: &str) -> bool {
        // Rare (an agent that has no name): the line is re-encoded with it.
        let Ok(mut record) = serde_json::from_slice::<FlowJson>(&self.line) else {
            return false;
        };
        node.clone_into(&mut record.node_name);
        let Ok(mut line) = serde_json::to_vec(&record) else {
            return false;
        };
        line.push(b'\n');
        self.line = line;
        node.clone_into(&mut self.node_name);
        true
    }

    fn initiator_node(&self) -> Option<&str> {
        self.initiator_node.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::{RawFlow, StreamLine};
    use crate::relay::stream::StreamRecord as _;

    fn flow(line: &str) -> RawFlow {
        match StreamLine::parse(line.as_bytes()) {
            Ok(StreamLine::Flow(flow)) => flow,
            other => panic!("{line}: {other:?}"),
        }
    }

    const RESPONDER: &str = r#"{"time":"2026-12-07T01:02:03.000000004Z","verdict":"FORWARDED","node_name":"b","extra":{"nested":[1,2,{"x":"y"}]},"weir":{"initiator":"remote","peer_node":"a","seq":7}}"#;

    #[test]
    fn a_record_is_passed_on_byte_for_byte_with_its_header_read() {
        let record = flow(RESPONDER);
        assert_eq!(record.time_ns(), Some(1_796_605_323_000_000_004));
        assert_eq!(record.seq(), Some(7));
        assert_eq!(record.node_name(), "b");
        assert_eq!(record.initiator_node(), Some("a"));
        assert_eq!(record.into_line(), format!("{RESPONDER}\n").into_bytes());
    }

    #[test]
    fn the_initiators_own_report_names_no_initiator_node() {
        let local = RESPONDER.replace(r#""initiator":"remote""#, r#""initiator":"local""#);
        assert_eq!(flow(&local).initiator_node(), None);
        assert_eq!(flow(&format!("{local}\r\n")).line().last(), Some(&b'\n'));
    }

    #[test]
    fn escaped_strings_are_read_too() {
        let record = flow(r#"{"time":"2026-12-07T01:02:03Z","node_name":"n\u0031"}"#);
        assert_eq!(record.node_name(), "n1");
        assert_eq!(record.seq(), None);
    }

    #[test]
    fn an_unnamed_record_that_is_not_a_flow_record_is_passed_on_and_counted() {
        use std::time::Instant;

        use crate::relay::stream::{Merger, Options};

        // A header a flow's, a body not (no verdict, no addresses).
        let odd = r#"{"time":"2026-12-07T01:02:03Z","weir":{"seq":1}}"#;
        let mut merger = Merger::new(Options::default());
        let mut out = Vec::new();
        merger.push("node-a", flow(odd), Instant::now(), &mut out);
        merger.finish(&mut out);
        assert_eq!(merger.stats().unnamed, 1);
        let [record] = out.as_slice() else {
            panic!("one record out: {out:?}")
        };
        assert_eq!(record.line(), format!("{odd}\n").as_bytes());
        assert_eq!(record.node_name(), "");
    }

    #[test]
    fn a_lost_note_and_garbage_are_told_apart() {
        let lost = r#"{"lost_events":{"num_events_lost":3,"source":"WEIR_FOLLOW_BUFFER"}}"#;
        assert!(matches!(
            StreamLine::parse(lost.as_bytes()),
            Ok(StreamLine::Lost(l)) if l.lost_events.num_events_lost == 3
        ));
        for bad in [
            "",
            "{",
            "[1]",
            r#"{"verdict":"FORWARDED"}"#,
            r#"{"time":3}"#,
        ] {
            assert!(StreamLine::parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
