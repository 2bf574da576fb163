//! A DNS answer, parsed with hickory-proto: the question, the response
//! code, and the addresses the question's name resolved to through its
//! CNAME chain. Pure and bounded: hickory's decoder refuses compression
//! pointers that do not point backwards (no loops), the chain walk stops
//! after [`MAX_CHAIN`] names, and a message is at most the datapath's copy.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use hickory_proto::{
    op::{Message, MessageType, ResponseCode},
    rr::{Name, RData},
};

/// The longest CNAME chain followed (resolvers give up sooner: 8 to 16).
pub const MAX_CHAIN: usize = 16;

/// The response code, as far as names are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rcode {
    /// NOERROR: the answer section holds what the name has.
    NoError,
    /// NXDOMAIN: the name does not exist.
    NxDomain,
    /// Anything else (SERVFAIL, REFUSED, ...), by number.
    Other(u16),
}

/// One parsed answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The name asked for: lowercase, without the root's trailing dot.
    pub query: String,
    /// The response code.
    pub rcode: Rcode,
    /// The names the query led to through CNAMEs, in order (without the
    /// query itself).
    pub cnames: Vec<String>,
    /// The A and AAAA addresses of the query's name (at the end of its
    /// chain), each with the smallest TTL along the way, in seconds.
    pub addresses: Vec<(IpAddr, u32)>,
}

/// Why a message is not an answer weir uses.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not a DNS message (malformed, or cut where it cannot be read).
    #[error("malformed dns message: {0}")]
    Malformed(String),
    /// A query, not a response.
    #[error("dns message is a query, not a response")]
    NotResponse,
    /// A response without exactly one question.
    #[error("dns response has {0} questions, expected 1")]
    Questions(usize),
}

fn key(name: &Name) -> String {
    let mut s = name.to_ascii().to_ascii_lowercase();
    if s.ends_with('.') && s.len() > 1 {
        s.pop();
    }
    s
}

/// Parse one DNS response.
///
/// # Errors
/// [`ParseError`] for what is not a usable response.
pub fn parse(message: &[u8]) -> Result<Answer, ParseError> {
    let msg = Message::from_vec(message).map_err(|e| ParseError::Malformed(e.to_string()))?;
    if msg.metadata.message_type != MessageType::Response {
        return Err(ParseError::NotResponse);
    }
    let [question] = msg.queries.as_slice() else {
        return Err(ParseError::Questions(msg.queries.len()));
    };
    let query = key(question.name());
    let rcode = match msg.metadata.response_code {
        ResponseCode::NoError => Rcode::NoError,
        ResponseCode::NXDomain => Rcode::NxDomain,
        other => Rcode::Other(u16::from(other)),
    };
    // owner -> (CNAME target, ttl); owner -> addresses
    let mut cname: BTreeMap<String, (String, u32)> = BTreeMap::new();
    let mut addrs: BTreeMap<String, Vec<(IpAddr, u32)>> = BTreeMap::new();
    for record in &msg.answers {
        let owner = key(&record.name);
        match &record.data {
            RData::CNAME(target) => {
                cname.entry(owner).or_insert((key(&target.0), record.ttl));
            }
            RData::A(a) => addrs
                .entry(owner)
                .or_default()
                .push((IpAddr::V4(a.0), record.ttl)),
            RData::AAAA(a) => addrs
                .entry(owner)
                .or_default()
                .push((IpAddr::V6(a.0), record.ttl)),
            _ => {}
        }
    }
    let mut at = query.clone();
    let mut ttl = u32::MAX;
    let mut cnames = Vec::new();
    let mut seen = BTreeSet::from([at.clone()]);
    while let Some((next, t)) = cname.get(&at) {
        if cnames.len() == MAX_CHAIN || !seen.insert(next.clone()) {
            break;
        }
        ttl = ttl.min(*t);
        cnames.push(next.clone());
        at.clone_from(next);
    }
    let addresses = if rcode == Rcode::NoError {
        let mut out: Vec<(IpAddr, u32)> = Vec::new();
        for (ip, t) in addrs.remove(&at).unwrap_or_default() {
            if !out.iter().any(|(seen, _)| *seen == ip) {
                out.push((ip, t.min(ttl)));
            }
        }
        out
    } else {
        Vec::new()
    };
    Ok(Answer {
        query,
        rcode,
        cnames,
        addresses,
    })
}

#[cfg(test)]
mod tests {
    use std::{net::Ipv4Addr, str::FromStr as _};

    use hickory_proto::{
        op::{Message, OpCode, Query},
        rr::{
            Record, RecordType,
            rdata::{A, AAAA, CNAME},
        },
    };
    use proptest::prelude::*;

    use super::*;

    fn name(s: &str) -> Name {
        Name::from_str(s).expect("name")
    }

    /// api.payments.example -> CNAME edge.cdn.example (ttl 300) -> A (ttl 30).
    fn chained() -> Vec<u8> {
        let mut m = Message::response(7, OpCode::Query);
        m.add_query(Query::query(name("API.payments.example."), RecordType::A));
        m.add_answer(Record::from_rdata(
            name("api.payments.example."),
            300,
            RData::CNAME(CNAME(name("edge.cdn.example."))),
        ));
        m.add_answer(Record::from_rdata(
            name("edge.cdn.example."),
            30,
            RData::A(A(Ipv4Addr::new(203, 0, 113, 10))),
        ));
        m.add_answer(Record::from_rdata(
            name("edge.cdn.example."),
            60,
            RData::AAAA(AAAA("2001:db8::10".parse().expect("v6"))),
        ));
        // an unrelated address for another name is not the query's
        m.add_answer(Record::from_rdata(
            name("other.example."),
            60,
            RData::A(A(Ipv4Addr::new(198, 51, 100, 1))),
        ));
        m.to_vec().expect("encode")
    }

    #[test]
    fn follows_the_cname_chain_with_the_smallest_ttl() {
        let a = parse(&chained()).expect("parses");
        assert_eq!(a.query, "api.payments.example");
        assert_eq!(a.rcode, Rcode::NoError);
        assert_eq!(a.cnames, ["edge.cdn.example"]);
        assert_eq!(
            a.addresses,
            [
                (IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10)), 30),
                ("2001:db8::10".parse().expect("v6"), 60)
            ]
        );
    }

    #[test]
    fn nxdomain_is_recorded_with_no_addresses() {
        let mut m = Message::error_msg(9, OpCode::Query, ResponseCode::NXDomain);
        m.add_query(Query::query(name("nope.example."), RecordType::A));
        let a = parse(&m.to_vec().expect("encode")).expect("parses");
        assert_eq!(
            (a.query.as_str(), a.rcode),
            ("nope.example", Rcode::NxDomain)
        );
        assert!(a.addresses.is_empty());
    }

    #[test]
    fn cname_loops_end() {
        let mut m = Message::response(7, OpCode::Query);
        m.add_query(Query::query(name("a.example."), RecordType::A));
        for (from, to) in [("a.example.", "b.example."), ("b.example.", "a.example.")] {
            m.add_answer(Record::from_rdata(
                name(from),
                5,
                RData::CNAME(CNAME(name(to))),
            ));
        }
        let a = parse(&m.to_vec().expect("encode")).expect("parses");
        assert_eq!(a.cnames, ["b.example"]);
        assert!(a.addresses.is_empty());
    }

    #[test]
    fn queries_and_compression_pointer_loops_are_refused() {
        let mut q = Message::query();
        q.add_query(Query::query(name("a.example."), RecordType::A));
        assert_eq!(
            parse(&q.to_vec().expect("encode")),
            Err(ParseError::NotResponse)
        );
        // header (response, 1 question), then a name that is a pointer to itself
        let looped = [
            0, 1, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1,
        ];
        assert!(matches!(parse(&looped), Err(ParseError::Malformed(_))));
        // a pointer forward, and two pointers to each other
        let forward = [
            0, 1, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 14, 0xc0, 12, 0, 1, 0, 1,
        ];
        assert!(matches!(parse(&forward), Err(ParseError::Malformed(_))));
    }

    /// Byte-level mutations of real answers: flipped bytes, cuts, pointers
    /// written anywhere (loops included), and pure noise.
    fn mutated() -> impl Strategy<Value = Vec<u8>> {
        let base = chained();
        let len = base.len();
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..600),
            (0..len).prop_map({
                let base = base.clone();
                move |cut| base[..cut].to_vec()
            }),
            prop::collection::vec((0..len, any::<u8>()), 1..8).prop_map({
                let base = base.clone();
                move |edits| {
                    let mut b = base.clone();
                    for (at, v) in edits {
                        b[at] = v;
                    }
                    b
                }
            }),
            prop::collection::vec((12..len - 1, 0..len), 1..4).prop_map(move |ptrs| {
                let mut b = base.clone();
                for (at, to) in ptrs {
                    let to = u16::try_from(to).expect("short");
                    b[at] = 0xc0 | u8::try_from(to >> 8).expect("small");
                    b[at + 1] = u8::try_from(to & 0xff).expect("byte");
                }
                b
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// No panic, and what parses is consistent: the addresses belong
        /// to a NOERROR answer and are unique.
        #[test]
        fn mutated_messages_never_panic(bytes in mutated()) {
            if let Ok(answer) = parse(&bytes) {
                prop_assert!(answer.cnames.len() <= MAX_CHAIN);
                if answer.rcode != Rcode::NoError {
                    prop_assert!(answer.addresses.is_empty());
                }
                let mut ips: Vec<_> = answer.addresses.iter().map(|(ip, _)| *ip).collect();
                ips.sort();
                ips.dedup();
                prop_assert_eq!(ips.len(), answer.addresses.len());
            }
        }
    }
}
