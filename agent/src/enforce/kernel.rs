//! [`PolicyMapsIo`] over the datapath's real maps, taken from the loader
//! ([`Datapath::take_policy_maps`](weir_ebpf::loader::Datapath::take_policy_maps))
//! and owned by the enforcer task from then on: the datapath task keeps
//! the programs, the flow table and the ring buffer; the enforcer is the
//! only writer of these maps, so neither needs a lock. It also deletes
//! denied entries of the flow table (through its own handle) after a
//! change: the datapath task's sweep sees them gone like expired ones.

use aya::maps::{MapError, lpm_trie::Key};
use weir_ebpf::loader::PolicyMaps;

use weir_ebpf::abi;

use super::entries::{Entries, MapIoError, Op, PolicyMapsIo, Rejudge};

fn io(op: &'static str, map: &'static str) -> impl FnOnce(MapError) -> MapIoError {
    move |source| MapIoError {
        op,
        map,
        source: Box::new(source),
    }
}

/// A delete of an absent key is success: the map already is as wanted.
fn absent_ok(result: Result<(), MapError>) -> Result<(), MapError> {
    match result {
        Err(MapError::KeyNotFound) => Ok(()),
        other => other,
    }
}

impl PolicyMapsIo for PolicyMaps {
    fn read(&self) -> Result<Entries, MapIoError> {
        let mut entries = Entries::default();
        for item in self.endpoints.iter() {
            let (k, v) = item.map_err(io("read", "ENDPOINTS"))?;
            entries.endpoints.insert(k, v);
        }
        for item in self.identities.iter() {
            let (k, v) = item.map_err(io("read", "IDENTITIES"))?;
            entries.identities.insert(k, v);
        }
        for item in self.cidrs.iter() {
            let (k, v) = item.map_err(io("read", "CIDRS"))?;
            entries.cidrs.insert((k.prefix_len(), k.data()), v);
        }
        for item in self.policy.iter() {
            let (k, v) = item.map_err(io("read", "POLICY"))?;
            entries.policy.insert((k.prefix_len(), k.data()), v);
        }
        for item in self.policy_exact.iter() {
            let (k, v) = item.map_err(io("read", "POLICY_EXACT"))?;
            entries.exact.insert(k, v);
        }
        for item in self.peers.keys() {
            entries.peers.insert(item.map_err(io("read", "PEERS"))?);
        }
        Ok(entries)
    }

    fn write(&mut self, op: &Op) -> Result<(), MapIoError> {
        let map = op.map();
        match *op {
            Op::PutEndpoint(k, v) => self.endpoints.insert(k, v, 0).map_err(io("update", map)),
            Op::DelEndpoint(k) => absent_ok(self.endpoints.remove(&k)).map_err(io("delete", map)),
            Op::PutIdentity(k, v) => self.identities.insert(k, v, 0).map_err(io("update", map)),
            Op::DelIdentity(k) => absent_ok(self.identities.remove(&k)).map_err(io("delete", map)),
            Op::PutCidr((len, data), v) => self
                .cidrs
                .insert(&Key::new(len, data), v, 0)
                .map_err(io("update", map)),
            Op::DelCidr((len, data)) => {
                absent_ok(self.cidrs.remove(&Key::new(len, data))).map_err(io("delete", map))
            }
            Op::BumpCidrsEpoch => self.cidrs_epoch.bump().map(drop).map_err(io("update", map)),
            Op::PutExact(k, v) => self.policy_exact.insert(k, v, 0).map_err(io("update", map)),
            Op::DelExact(k) => absent_ok(self.policy_exact.remove(&k)).map_err(io("delete", map)),
            Op::PutRule((len, data), v) => self
                .policy
                .insert(&Key::new(len, data), v, 0)
                .map_err(io("update", map)),
            Op::DelRule((len, data)) => {
                absent_ok(self.policy.remove(&Key::new(len, data))).map_err(io("delete", map))
            }
            Op::PutPeer(k) => self.peers.insert(k, 1, 0).map_err(io("update", map)),
            Op::DelPeer(k) => absent_ok(self.peers.remove(&k)).map_err(io("delete", map)),
        }
    }

    fn capacity(&self) -> [usize; 6] {
        let c = &self.capacities;
        [
            c.endpoints,
            c.identities,
            c.cidrs,
            c.policy_exact,
            c.policy,
            c.peers,
        ]
        .map(|n| n as usize)
    }

    fn forget_denied(&mut self, which: &Rejudge) -> Result<usize, MapIoError> {
        if *which == Rejudge::Nothing {
            return Ok(0);
        }
        // Collect first: deleting while iterating a BPF hash restarts walks.
        let mut denied = Vec::new();
        for item in self.flows.iter() {
            let (key, stats) = match item {
                Ok(entry) => entry,
                // removed by the sweep or the programs mid-walk
                Err(MapError::KeyNotFound) => continue,
                Err(e) => return Err(io("read", "FLOWS4/FLOWS")(e)),
            };
            if stats.verdict != abi::VERDICT_FORWARDED && which.covers(key.ifindex) {
                denied.push(key);
            }
        }
        for key in &denied {
            absent_ok(self.flows.remove(key)).map_err(io("delete", "FLOWS4/FLOWS"))?;
        }
        Ok(denied.len())
    }
}
