//! The enforced policies and the namespaces' modes on disk:
//! `<state-dir>/enforce.json`, a versioned JSON document written atomically
//! (temp file, fsync, rename), so a restarted agent enforces what the last
//! one was told to, and a crash mid-write leaves the previous file.
//!
//! Not in the learning store (`weir.redb`): that file belongs to the save
//! task and holds what was observed; this one holds what the user asked
//! for, is small, and is readable with `jq` when something goes wrong.
//!
//! Beside it, `enforce-identities.json` keeps the compiler's identity and
//! rule-id allocator ([`IdentitiesFile`]), so a restarted agent numbers
//! everything as the maps it adopts do and its first diff is empty.

use std::{
    collections::BTreeMap,
    io::Write as _,
    path::{Path, PathBuf},
};

use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde::{Deserialize, Serialize};
use weir_generator::datapath::{Identities, Mode};

/// Version of the file format this build reads and writes.
pub const FORMAT_VERSION: u64 = 1;

/// The file's name inside the state directory.
pub const FILE_NAME: &str = "enforce.json";

/// What the user asked to enforce.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Desired {
    /// Policies by (namespace, name).
    #[serde(with = "policy_list")]
    pub policies: BTreeMap<(String, String), NetworkPolicy>,
    /// Namespace -> mode (namespaces not listed have the agent's
    /// `--default-mode`).
    pub modes: BTreeMap<String, Mode>,
}

#[derive(Serialize, Deserialize)]
struct File {
    format_version: u64,
    #[serde(flatten)]
    desired: Desired,
}

/// Policies as a plain list on disk (the map key is their own metadata).
mod policy_list {
    use std::collections::BTreeMap;

    use k8s_openapi::api::networking::v1::NetworkPolicy;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S: Serializer>(
        map: &BTreeMap<(String, String), NetworkPolicy>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        map.values().collect::<Vec<_>>().serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<(String, String), NetworkPolicy>, D::Error> {
        let list = Vec::<NetworkPolicy>::deserialize(d)?;
        Ok(list.into_iter().map(|p| (super::key_of(&p), p)).collect())
    }
}

/// `(namespace, name)` of a policy (empty strings for missing parts, which
/// validation refuses before anything is stored).
#[must_use]
pub fn key_of(policy: &NetworkPolicy) -> (String, String) {
    (
        policy.metadata.namespace.clone().unwrap_or_default(),
        policy.metadata.name.clone().unwrap_or_default(),
    )
}

/// What the file cannot do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DesiredError {
    /// Reading or writing failed.
    #[error("{}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file does not parse (left untouched).
    #[error("{} is corrupt (left untouched)", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What did not parse.
        #[source]
        source: serde_json::Error,
    },
    /// The file has no `format_version` (left untouched).
    #[error("{} is corrupt (left untouched): no format_version", path.display())]
    NoFormatVersion {
        /// The file.
        path: PathBuf,
    },
    /// Written by a newer weir.
    #[error(
        "{} has format version {found}, newer than the version this weir reads ({FORMAT_VERSION})",
        path.display()
    )]
    NewerFormat {
        /// The file.
        path: PathBuf,
        /// The version in the file.
        found: u64,
    },
}

/// The file in a state directory.
#[derive(Clone, Debug)]
pub struct DesiredFile {
    path: PathBuf,
}

impl DesiredFile {
    /// The file in `dir`.
    #[must_use]
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            path: dir.join(FILE_NAME),
        }
    }

    /// Its path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What it holds; nothing asked yet when it does not exist.
    ///
    /// # Errors
    /// See [`DesiredError`].
    pub fn load(&self) -> Result<Desired, DesiredError> {
        Ok(read_versioned::<File>(&self.path)?
            .map(|file| file.desired)
            .unwrap_or_default())
    }

    /// Replace the file's content, atomically.
    ///
    /// # Errors
    /// See [`DesiredError`].
    pub fn save(&self, desired: &Desired) -> Result<(), DesiredError> {
        write_versioned(
            &self.path,
            serde_json::to_vec_pretty(&File {
                format_version: FORMAT_VERSION,
                desired: desired.clone(),
            }),
        )
    }
}

/// A file of this format: `Ok(None)` when it does not exist; a newer
/// `format_version` or one that does not parse is an error and the file
/// is left as it is.
fn read_versioned<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, DesiredError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(DesiredError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    let corrupt = |source| DesiredError::Corrupt {
        path: path.to_owned(),
        source,
    };
    let value: serde_json::Value = serde_json::from_str(&text).map_err(corrupt)?;
    let found = value
        .get("format_version")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| DesiredError::NoFormatVersion {
            path: path.to_owned(),
        })?;
    if found > FORMAT_VERSION {
        return Err(DesiredError::NewerFormat {
            path: path.to_owned(),
            found,
        });
    }
    serde_json::from_value(value).map(Some).map_err(corrupt)
}

/// Write `encoded` (a file of this format) atomically.
fn write_versioned(path: &Path, encoded: serde_json::Result<Vec<u8>>) -> Result<(), DesiredError> {
    let io = |source| DesiredError::Io {
        path: path.to_owned(),
        source,
    };
    let bytes = encoded.map_err(|e| io(std::io::Error::other(e)))?;
    write_atomically(path, &bytes).map_err(io)
}

/// Temp file, fsync, rename: a crash leaves the old content or the new.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The identity allocator's file, `enforce-identities.json` beside
/// [`FILE_NAME`]. Losing it is harmless (the next agent renumbers, and its
/// first diff rewrites the maps): [`IdentitiesFile::load`] then starts
/// afresh, and the caller only logs a failed save.
#[derive(Clone, Debug)]
pub struct IdentitiesFile {
    path: PathBuf,
}

/// The allocator file's name inside the state directory.
pub const IDENTITIES_FILE_NAME: &str = "enforce-identities.json";

#[derive(Serialize, Deserialize)]
struct SavedFile {
    format_version: u64,
    identities: Identities,
}

impl IdentitiesFile {
    /// The file beside the desired state's.
    #[must_use]
    pub fn beside(desired: &DesiredFile) -> Self {
        Self {
            path: desired.path.with_file_name(IDENTITIES_FILE_NAME),
        }
    }

    /// Its path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved allocator; `Ok(None)` when there is none yet.
    ///
    /// # Errors
    /// An unreadable, corrupt or newer file (the caller starts afresh).
    pub fn load(&self) -> Result<Option<Identities>, DesiredError> {
        Ok(read_versioned::<SavedFile>(&self.path)?.map(|file| file.identities))
    }

    /// Replace the file's content, atomically.
    ///
    /// # Errors
    /// See [`DesiredError`].
    pub fn save(&self, identities: &Identities) -> Result<(), DesiredError> {
        write_versioned(
            &self.path,
            serde_json::to_vec(&SavedFile {
                format_version: FORMAT_VERSION,
                identities: identities.clone(),
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(ns: &str, name: &str) -> NetworkPolicy {
        serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": ns, "name": name},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}
        }))
        .unwrap()
    }

    #[test]
    fn round_trips_and_refuses_newer_or_corrupt_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = DesiredFile::in_dir(dir.path());
        assert_eq!(file.load().unwrap(), Desired::default());
        let desired = Desired {
            policies: BTreeMap::from([(
                ("shop".to_owned(), "deny".to_owned()),
                policy("shop", "deny"),
            )]),
            modes: BTreeMap::from([("shop".to_owned(), Mode::Enforce)]),
        };
        file.save(&desired).unwrap();
        assert_eq!(file.load().unwrap(), desired);
        let text = std::fs::read_to_string(file.path()).unwrap();
        assert!(text.contains("\"enforce\""), "{text}");

        std::fs::write(file.path(), r#"{"format_version": 99}"#).unwrap();
        assert!(matches!(
            file.load(),
            Err(DesiredError::NewerFormat { found: 99, .. })
        ));
        std::fs::write(file.path(), "not json").unwrap();
        assert!(matches!(file.load(), Err(DesiredError::Corrupt { .. })));
        assert_eq!(std::fs::read_to_string(file.path()).unwrap(), "not json");
    }

    #[test]
    fn a_corrupt_file_is_named_with_what_did_not_parse() {
        let dir = tempfile::tempdir().unwrap();
        let file = DesiredFile::in_dir(dir.path());
        let path = file.path().display().to_string();
        for (text, detail) in [
            ("not json", "expected ident at line 1 column 2"),
            ("{}", "no format_version"),
            (
                r#"{"format_version": 1, "policies": 3}"#,
                "invalid type: integer `3`, expected a sequence",
            ),
        ] {
            std::fs::write(file.path(), text).unwrap();
            let error = file.load().unwrap_err();
            assert_eq!(
                crate::error_chain::chain(&error),
                format!("{path} is corrupt (left untouched): {detail}"),
                "{text}"
            );
        }
    }
}
