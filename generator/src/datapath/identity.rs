//! The identity allocator, carried from one compile to the next.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{CompileError, ID_FIRST};
use crate::eval::{Direction, PolicyRef, RuleRef};

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
/// A new allocator numbers everything afresh: the first diff then
/// rewrites every entry, which is correct, only not minimal. The agent
/// therefore saves it (serde, as [`SavedIdentities`]) and a restarted
/// agent carries on with the same numbers: its first diff against the maps
/// it adopts is empty.
///
/// [`compile`]: super::compile
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "SavedIdentities", try_from = "SavedIdentities")]
pub struct Identities {
    ids: Allocator<IdentityKey>,
    rules: Allocator<RuleRef>,
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

    pub(super) fn assign_rules(&mut self, keys: BTreeSet<RuleRef>) -> Result<(), CompileError> {
        self.rules.assign(keys, "rule ids")
    }

    pub(super) fn rule_ids(&self) -> &BTreeMap<RuleRef, u32> {
        &self.rules.by_key
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
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

/// [`Identities`] as saved: every number in use and what it stands for, and
/// where each counter goes on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedIdentities {
    /// The next identity number to try.
    pub next_identity: u32,
    /// Identities in use.
    pub identities: Vec<SavedIdentity>,
    /// The next rule id to try.
    pub next_rule: u32,
    /// Rule ids in use.
    pub rules: Vec<SavedRule>,
}

/// One identity in use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SavedIdentity {
    /// [`IdentityKey::Pod`].
    Pod {
        /// The number.
        id: u32,
        /// Namespace.
        namespace: String,
        /// Labels.
        labels: BTreeMap<String, String>,
    },
    /// [`IdentityKey::Cidr`].
    Cidr {
        /// The number.
        id: u32,
        /// The prefix.
        cidr: IpNet,
    },
}

/// One rule id in use: `spec.<direction>[index]` of a policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedRule {
    /// The number.
    pub id: u32,
    /// The policy's namespace.
    pub namespace: String,
    /// The policy's name.
    pub name: String,
    /// `ingress` or `egress`.
    pub direction: String,
    /// Index in that list.
    pub index: usize,
}

/// A saved allocator that cannot be what [`Identities`] saved.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SavedIdentitiesError {
    /// A number below the first one, or used twice, or a key numbered twice.
    #[error("{what} {id} is reserved or used twice")]
    Duplicate {
        /// `identity` or `rule id`.
        what: &'static str,
        /// The number.
        id: u32,
    },
    /// A rule direction other than `ingress` or `egress`.
    #[error("rule {id}: unknown direction {direction:?}")]
    Direction {
        /// The rule id.
        id: u32,
        /// What the file says.
        direction: String,
    },
}

impl From<Identities> for SavedIdentities {
    fn from(ids: Identities) -> Self {
        Self {
            next_identity: ids.ids.next,
            identities: ids
                .ids
                .by_id
                .iter()
                .map(|(&id, key)| match key {
                    IdentityKey::Pod { namespace, labels } => SavedIdentity::Pod {
                        id,
                        namespace: namespace.clone(),
                        labels: labels.clone(),
                    },
                    IdentityKey::Cidr(cidr) => SavedIdentity::Cidr { id, cidr: *cidr },
                })
                .collect(),
            next_rule: ids.rules.next,
            rules: ids
                .rules
                .by_id
                .iter()
                .map(|(&id, origin)| SavedRule {
                    id,
                    namespace: origin.policy.namespace.clone(),
                    name: origin.policy.name.clone(),
                    direction: origin.direction.field().to_owned(),
                    index: origin.index,
                })
                .collect(),
        }
    }
}

impl TryFrom<SavedIdentities> for Identities {
    type Error = SavedIdentitiesError;

    fn try_from(saved: SavedIdentities) -> Result<Self, Self::Error> {
        let mut ids = Self::new();
        ids.ids.next = saved.next_identity.max(ID_FIRST);
        for entry in saved.identities {
            let (id, key) = match entry {
                SavedIdentity::Pod {
                    id,
                    namespace,
                    labels,
                } => (id, IdentityKey::Pod { namespace, labels }),
                SavedIdentity::Cidr { id, cidr } => (id, IdentityKey::Cidr(cidr)),
            };
            ids.ids.restore(id, key, "identity")?;
        }
        ids.rules.next = saved.next_rule.max(super::RULE_FIRST);
        for rule in saved.rules {
            let direction = match rule.direction.as_str() {
                "ingress" => Direction::Ingress,
                "egress" => Direction::Egress,
                _ => {
                    return Err(SavedIdentitiesError::Direction {
                        id: rule.id,
                        direction: rule.direction,
                    });
                }
            };
            let origin = RuleRef {
                policy: PolicyRef {
                    namespace: rule.namespace,
                    name: rule.name,
                },
                direction,
                index: rule.index,
            };
            ids.rules.restore(rule.id, origin, "rule id")?;
        }
        Ok(ids)
    }
}

impl<K: Ord + Clone> Allocator<K> {
    fn restore(&mut self, id: u32, key: K, what: &'static str) -> Result<(), SavedIdentitiesError> {
        if id < self.first || self.by_id.contains_key(&id) || self.by_key.contains_key(&key) {
            return Err(SavedIdentitiesError::Duplicate { what, id });
        }
        self.by_id.insert(id, key.clone());
        self.by_key.insert(key, id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_identities_round_trip_and_refuse_duplicates() {
        let mut ids = Identities::new();
        let pod = IdentityKey::Pod {
            namespace: "shop".to_owned(),
            labels: BTreeMap::from([("app".to_owned(), "web".to_owned())]),
        };
        let cidr = IdentityKey::Cidr("10.0.0.0/8".parse().unwrap());
        ids.assign_identities(BTreeSet::from([pod.clone(), cidr.clone()]))
            .unwrap();
        // a released number is not reused after the restore either
        ids.assign_identities(BTreeSet::from([cidr.clone()]))
            .unwrap();
        let origin = RuleRef {
            policy: PolicyRef {
                namespace: "shop".to_owned(),
                name: "web".to_owned(),
            },
            direction: Direction::Egress,
            index: 2,
        };
        ids.assign_rules(BTreeSet::from([origin.clone()])).unwrap();

        let json = serde_json::to_string(&ids).unwrap();
        let back: Identities = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ids);
        assert_eq!(back.identity(&cidr), ids.identity(&cidr));
        assert_eq!(back.rule_ids()[&origin], ids.rule_ids()[&origin]);
        let mut again = back.clone();
        again
            .assign_identities(BTreeSet::from([cidr.clone(), pod.clone()]))
            .unwrap();
        assert!(
            again.identity(&pod).unwrap() > ids.identity(&cidr).unwrap(),
            "numbers keep increasing across a restore: {json}"
        );

        let mut saved = SavedIdentities::from(ids);
        let first = saved.identities[0].clone();
        saved.identities.push(first);
        assert!(matches!(
            Identities::try_from(saved),
            Err(SavedIdentitiesError::Duplicate { .. })
        ));
    }
}
