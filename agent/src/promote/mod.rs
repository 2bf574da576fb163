//! Automatic promotion (`weir.dev/promote: auto` on a namespace): observe
//! goes to audit once the namespace is ready (the readiness of `weir
//! status`: quiet for the quiet period, the suggestion covering its recent
//! traffic), and audit goes to enforce after an audit period (24 hours
//! unless `weir.dev/promote-after` says otherwise) in which the
//! namespace's policies marked no learned traffic as would-drop, the
//! namespace still being ready then. Each flip to enforce is guarded as
//! `weir mode set` guards it.
//!
//! The audit period runs from the latest of: when the namespace was seen
//! entering audit, its latest would-drop, and the guard's latest revert of
//! it. After a revert the namespace therefore waits a new full audit
//! period, and since the edge the guard saw dropped is learned traffic the
//! policies still miss, its next use under audit is a would-drop that
//! restarts the clock again: auto promotion does not go back to enforce
//! until a person fixed the policies (approved the edge in `weir pending`,
//! or wrote the rule), or the edge stayed unused for a whole period.
//!
//! This module is the decision only, pure and synchronous ([`decide`]):
//! `api::promote` gathers the observations once a sweep and makes the
//! steps. The clocks are saved in `promote.json` of the state directory
//! after every change, so a restart keeps them.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use weir_generator::datapath::Mode;

use crate::guard::StateFileError;

/// The namespace annotation that turns automatic promotion on (`auto`) or
/// off (`off`, or no annotation).
pub const PROMOTE_ANNOTATION: &str = "weir.dev/promote";
/// The namespace annotation that sets the audit period (`24h`, `30m`).
pub const AFTER_ANNOTATION: &str = "weir.dev/promote-after";
/// The audit period without an annotation.
pub const DEFAULT_AFTER: Duration = Duration::from_secs(24 * 3600);
/// The state's file name inside the state directory.
pub const FILE_NAME: &str = "promote.json";
/// Who automatic promotion is in the audit log and as field manager.
pub const ACTOR: &str = "weir-promote";

/// A namespace's automatic promotion settings (it has some only when
/// `weir.dev/promote: auto`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// How long audit must mark nothing before enforce.
    pub after: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            after: DEFAULT_AFTER,
        }
    }
}

/// A namespace's settings from its annotations (`None`: not automatic);
/// a value that does not parse is reported (naming the namespace, the
/// annotation and the value) and its default used.
#[must_use]
pub fn settings(
    namespace: &str,
    annotations: Option<&BTreeMap<String, String>>,
) -> (Option<Settings>, Vec<String>) {
    let mut warnings = Vec::new();
    let Some(annotations) = annotations else {
        return (None, warnings);
    };
    let mut out = Settings::default();
    if let Some(value) = annotations.get(AFTER_ANNOTATION) {
        match humantime::parse_duration(value.trim()) {
            Ok(after) if !after.is_zero() => out.after = after,
            _ => warnings.push(format!(
                "namespace {namespace}: annotation {AFTER_ANNOTATION}={value:?} is not a \
                 positive duration (24h, 30m); using the default {}",
                humantime::format_duration(DEFAULT_AFTER)
            )),
        }
    }
    let auto = match annotations.get(PROMOTE_ANNOTATION).map(|v| v.trim()) {
        None | Some("off") => false,
        Some("auto") => true,
        Some(value) => {
            warnings.push(format!(
                "namespace {namespace}: annotation {PROMOTE_ANNOTATION}={value:?} is not auto \
                 or off; using the default off"
            ));
            false
        }
    };
    (auto.then_some(out), warnings)
}

/// The clock of one namespace, as saved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clock {
    /// The mode it runs in.
    pub mode: Mode,
    /// When its period started, Unix ns: the namespace seen entering
    /// `mode`, or a later would-drop or revert.
    pub since: u64,
}

/// A promotion made, for `weir status` and the UI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Promoted {
    /// The mode before.
    pub from: Mode,
    /// The mode after.
    pub to: Mode,
    /// When, Unix ns.
    pub at: u64,
}

/// Automatic promotion's whole state, as saved.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Promote {
    /// The clocks of the namespaces promoted automatically.
    #[serde(default)]
    pub clocks: BTreeMap<String, Clock>,
    /// Their last promotion.
    #[serde(default)]
    pub promoted: BTreeMap<String, Promoted>,
}

/// What one namespace looks like at a check.
#[derive(Clone, Copy, Debug, Default)]
pub struct Observation<'a> {
    /// Its mode now.
    pub mode: Mode,
    /// Why it is not ready, or `None` when it is.
    pub not_ready: Option<&'a str>,
    /// The latest would-drop of learned traffic by its policies (the last
    /// packet of an edge audit marked or enforce dropped that its policies
    /// deny), Unix ns.
    pub last_would_drop: Option<u64>,
    /// The guard's latest revert of it, Unix ns.
    pub reverted_at: Option<u64>,
}

/// What to do with a namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Not promoted automatically.
    Off,
    /// Set it to this mode now.
    Promote(Mode),
    /// The next step, and when (`None`: when it is ready), with why not
    /// yet.
    Wait {
        /// The mode it goes to next.
        to: Mode,
        /// When, Unix ns, if nothing marks or changes.
        at: Option<u64>,
        /// Why not now.
        why: String,
    },
    /// Enforced: nothing left to promote.
    Done,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Decide for one namespace at `now`: the clock to keep (none when the
/// namespace is not automatic) and the decision.
#[must_use]
pub fn decide(
    clock: Option<Clock>,
    settings: Option<Settings>,
    seen: &Observation<'_>,
    now: u64,
) -> (Option<Clock>, Decision) {
    let Some(settings) = settings else {
        return (None, Decision::Off);
    };
    let mut clock = match clock {
        Some(c) if c.mode == seen.mode => c,
        // First seen, or its mode changed (a promotion, a person, the
        // guard): its period starts now.
        _ => Clock {
            mode: seen.mode,
            since: now,
        },
    };
    if seen.mode == Mode::Audit {
        // A would-drop or a revert during the period starts it again. The
        // clock keeps it, so a would-drop whose edge later leaves the
        // queue still counted.
        clock.since = [seen.last_would_drop, seen.reverted_at]
            .into_iter()
            .flatten()
            .filter(|&t| t <= now)
            .fold(clock.since, u64::max);
    }
    let decision = match seen.mode {
        Mode::Enforce => Decision::Done,
        Mode::Observe => match seen.not_ready {
            Some(why) => Decision::Wait {
                to: Mode::Audit,
                at: None,
                why: format!("not ready: {why}"),
            },
            None => Decision::Promote(Mode::Audit),
        },
        Mode::Audit => {
            let at = clock.since.saturating_add(nanos(settings.after));
            match seen.not_ready {
                _ if now < at => Decision::Wait {
                    to: Mode::Enforce,
                    at: Some(at),
                    why: format!(
                        "{} of audit with no would-drop of learned traffic, since {}",
                        humantime::format_duration(settings.after),
                        crate::timestamp::rfc3339(clock.since)
                    ),
                },
                Some(why) => Decision::Wait {
                    to: Mode::Enforce,
                    at: None,
                    why: format!("not ready: {why}"),
                },
                None => Decision::Promote(Mode::Enforce),
            }
        }
    };
    (Some(clock), decision)
}

/// Where automatic promotion's state is saved.
#[derive(Clone, Debug)]
pub struct PromoteFile {
    path: PathBuf,
}

impl PromoteFile {
    /// `promote.json` in `dir`.
    #[must_use]
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            path: dir.join(FILE_NAME),
        }
    }
}

/// Automatic promotion's state as the agent shares it, saved to its file
/// (when it has one) after every change.
#[derive(Debug, Default)]
pub struct PromoteHandle {
    state: std::sync::Mutex<Promote>,
    file: Option<PromoteFile>,
}

impl PromoteHandle {
    /// The state saved in `file` (empty without one).
    ///
    /// # Errors
    /// An unreadable or unparsable file: the agent says so rather than
    /// restart the clocks.
    pub fn load(file: PromoteFile) -> Result<Self, StateFileError> {
        Ok(Self {
            state: std::sync::Mutex::new(crate::guard::load_json("promotion", &file.path)?),
            file: Some(file),
        })
    }

    /// A copy of the state.
    #[must_use]
    pub fn snapshot(&self) -> Promote {
        self.lock().clone()
    }

    /// Change the state with `f`; save it when it changed.
    ///
    /// # Errors
    /// The file cannot be written (the change is kept in memory).
    pub fn update<T>(&self, f: impl FnOnce(&mut Promote) -> T) -> (T, Result<(), StateFileError>) {
        let mut state = self.lock();
        let before = state.clone();
        let out = f(&mut state);
        let saved = match &self.file {
            Some(file) if before != *state => {
                crate::guard::save_json("promotion", &file.path, &*state)
            }
            _ => Ok(()),
        };
        (out, saved)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Promote> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests;
