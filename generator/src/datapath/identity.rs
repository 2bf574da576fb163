//! The identity allocator, carried from one compile to the next.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;

use super::{CompileError, ID_FIRST, RuleOrigin};

/// What an identity stands for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IdentityKey {
    /// The pods of a namespace that carry exactly these labels: everything
    /// a policy selects or matches a pod by.
    Pod {
        /// Namespace.
        namespace: String,
        /// The full label set.
        labels: BTreeMap<String, String>,
    },
    /// One prefix of the CIDRS trie: an `ipBlock` cidr or one of its excepts.
    Cidr(IpNet),
}

/// Identity and rule-id allocator. Keep it from one [`compile`] to the
/// next: a key keeps its number as long as it is in use, so recompiling
/// after a change rewrites only the map entries the change is about.
///
/// Numbers are handed out in increasing order and not reused until the
/// counter wraps around (then the lowest free number above the reserved
/// ones is taken): an identity that disappears does not come back meaning
/// something else while stale entries may still name it. Keys no longer in
/// use are forgotten at each compile, so the allocator stays as large as
/// the cluster, whatever the churn of labels (`pod-template-hash`).
///
/// A new allocator (an agent restart) numbers everything afresh: the first
/// diff then rewrites every entry, which is correct, only not minimal.
///
/// [`compile`]: super::compile
#[derive(Clone, Debug)]
pub struct Identities {
    ids: Allocator<IdentityKey>,
    rules: Allocator<RuleOrigin>,
}

impl Default for Identities {
    fn default() -> Self {
        Self::new()
    }
}

impl Identities {
    /// An empty allocator: identities from 256, rule ids from 1.
    #[must_use]
    pub fn new() -> Self {
        Self {
            ids: Allocator::new(ID_FIRST),
            rules: Allocator::new(super::RULE_FIRST),
        }
    }

    /// The identity of `key`, if it is in use.
    #[must_use]
    pub fn identity(&self, key: &IdentityKey) -> Option<u32> {
        self.ids.by_key.get(key).copied()
    }

    /// What `identity` stands for, if it is in use (reserved identities
    /// stand for nothing here).
    #[must_use]
    pub fn key(&self, identity: u32) -> Option<&IdentityKey> {
        self.ids.by_id.get(&identity)
    }

    /// Every identity in use, by key.
    pub fn iter(&self) -> impl Iterator<Item = (&IdentityKey, u32)> {
        self.ids.by_key.iter().map(|(k, &v)| (k, v))
    }

    /// Number of identities in use.
    #[must_use]
    pub fn len(&self) -> usize {
        self.ids.by_key.len()
    }

    /// Whether no identity is in use.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ids.by_key.is_empty()
    }

    pub(super) fn assign_identities(
        &mut self,
        keys: BTreeSet<IdentityKey>,
    ) -> Result<(), CompileError> {
        self.ids.assign(keys, "identities")
    }

    pub(super) fn assign_rules(&mut self, keys: BTreeSet<RuleOrigin>) -> Result<(), CompileError> {
        self.rules.assign(keys, "rule ids")
    }

    pub(super) fn rule_ids(&self) -> &BTreeMap<RuleOrigin, u32> {
        &self.rules.by_key
    }
}

#[derive(Clone, Debug)]
struct Allocator<K> {
    by_key: BTreeMap<K, u32>,
    by_id: BTreeMap<u32, K>,
    first: u32,
    next: u32,
}

impl<K: Ord + Clone> Allocator<K> {
    const fn new(first: u32) -> Self {
        Self {
            by_key: BTreeMap::new(),
            by_id: BTreeMap::new(),
            first,
            next: first,
        }
    }

    /// Keep the numbers of the keys in `keys`, forget the others, number
    /// the new ones in key order.
    fn assign(&mut self, keys: BTreeSet<K>, what: &'static str) -> Result<(), CompileError> {
        let by_key = &mut self.by_key;
        self.by_id.retain(|_, k| {
            let keep = keys.contains(k);
            if !keep {
                by_key.remove(k);
            }
            keep
        });
        let capacity = u64::from(u32::MAX - self.first) + 1;
        for key in keys {
            if self.by_key.contains_key(&key) {
                continue;
            }
            if self.by_id.len() as u64 >= capacity {
                return Err(CompileError::Exhausted { what });
            }
            while self.by_id.contains_key(&self.next) {
                self.next = self.next.checked_add(1).unwrap_or(self.first);
            }
            let id = self.next;
            self.next = self.next.checked_add(1).unwrap_or(self.first);
            self.by_id.insert(id, key.clone());
            self.by_key.insert(key, id);
        }
        Ok(())
    }
}
