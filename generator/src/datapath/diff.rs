//! What changes between two compiles, per kernel map.

use std::{
    cmp::Ordering,
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use ipnet::IpNet;

use super::{DatapathState, EndpointState, PeerKey, PodKey, RuleKey};

/// The changes of one map: entries to write (new, or with a new value) and
/// keys to delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapDiff<K, V> {
    /// Entries to insert or overwrite.
    pub upserts: BTreeMap<K, V>,
    /// Keys to delete.
    pub deletes: BTreeSet<K>,
}

impl<K, V> Default for MapDiff<K, V> {
    fn default() -> Self {
        Self {
            upserts: BTreeMap::new(),
            deletes: BTreeSet::new(),
        }
    }
}

impl<K: Ord + Clone, V: PartialEq + Clone> MapDiff<K, V> {
    /// The changes from `old` to `new` (one merge walk: O(old + new)).
    #[must_use]
    pub fn between(old: &BTreeMap<K, V>, new: &BTreeMap<K, V>) -> Self {
        let mut diff = Self::default();
        let mut a = old.iter().peekable();
        let mut b = new.iter().peekable();
        loop {
            match (a.peek(), b.peek()) {
                (None, None) => break,
                (Some((k, _)), None) => {
                    diff.deletes.insert((*k).clone());
                    a.next();
                }
                (None, Some((k, v))) => {
                    diff.upserts.insert((*k).clone(), (*v).clone());
                    b.next();
                }
                (Some((ka, va)), Some((kb, vb))) => match ka.cmp(kb) {
                    Ordering::Less => {
                        diff.deletes.insert((*ka).clone());
                        a.next();
                    }
                    Ordering::Greater => {
                        diff.upserts.insert((*kb).clone(), (*vb).clone());
                        b.next();
                    }
                    Ordering::Equal => {
                        if va != vb {
                            diff.upserts.insert((*kb).clone(), (*vb).clone());
                        }
                        a.next();
                        b.next();
                    }
                },
            }
        }
        diff
    }
}

impl<K, V> MapDiff<K, V> {
    /// Whether nothing changes.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.deletes.is_empty()
    }

    /// Number of writes and deletes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.upserts.len() + self.deletes.len()
    }
}

fn set_diff<K: Ord + Clone>(old: &BTreeSet<K>, new: &BTreeSet<K>) -> MapDiff<K, ()> {
    MapDiff {
        upserts: new.difference(old).map(|k| (k.clone(), ())).collect(),
        deletes: old.difference(new).cloned().collect(),
    }
}

/// The changes between two [`DatapathState`]s, per kernel map.
///
/// Apply in this order so that no packet sees a half-applied policy that
/// drops more than either state: every upsert of IDENTITIES, CIDRS, POLICY
/// and PEERS (new rules exist before anything refers to them); then
/// ENDPOINTS upserts and deletes (an endpoint switches identity, mode or
/// flags); then the deletes of POLICY, PEERS, CIDRS and IDENTITIES.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diff {
    /// ENDPOINTS.
    pub endpoints: MapDiff<PodKey, EndpointState>,
    /// IDENTITIES.
    pub ips: MapDiff<IpAddr, u32>,
    /// CIDRS.
    pub cidrs: MapDiff<IpNet, u32>,
    /// POLICY.
    pub rules: MapDiff<RuleKey, u32>,
    /// PEERS (a set: upserts carry `()`).
    pub peers: MapDiff<PeerKey, ()>,
}

impl Diff {
    /// Whether no map changes.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
            && self.ips.is_empty()
            && self.cidrs.is_empty()
            && self.rules.is_empty()
            && self.peers.is_empty()
    }

    /// Number of map operations.
    #[must_use]
    pub fn len(&self) -> usize {
        self.endpoints.len()
            + self.ips.len()
            + self.cidrs.len()
            + self.rules.len()
            + self.peers.len()
    }
}

impl DatapathState {
    /// What to write and delete to turn the maps of `self` into `newer`'s.
    /// `rule_table` and `isolation` live in userspace: take `newer`'s.
    #[must_use]
    pub fn diff(&self, newer: &Self) -> Diff {
        Diff {
            endpoints: MapDiff::between(&self.endpoints, &newer.endpoints),
            ips: MapDiff::between(&self.ips, &newer.ips),
            cidrs: MapDiff::between(&self.cidrs, &newer.cidrs),
            rules: MapDiff::between(&self.rules, &newer.rules),
            peers: set_diff(&self.peers, &newer.peers),
        }
    }
}
