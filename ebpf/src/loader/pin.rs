//! The pin directory: maps by name, tcx links under `links/`.
//!
//! ```text
//! <pin>/FLOWS4, FLOWS, EVENTS, COUNTERS, ENDPOINTS, IDENTITIES, CIDRS, POLICY, ...
//! <pin>/links/<ifname>_ingress   weir_from_pod's tcx link
//! <pin>/links/<ifname>_egress    weir_to_pod's tcx link
//! ```
//!
//! A pinned tcx link keeps its program attached (and the program its maps)
//! after every file descriptor is closed; removing the pin file detaches it.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use aya::programs::TcAttachType;

use super::{Datapath, LoadError, SHARED_MAPS};

const LINKS: &str = "links";

/// Why [`Datapath::cleanup`] could not remove every pin.
#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    /// Removing a pin or a directory failed.
    #[error("removing {path}")]
    Remove {
        /// The pin or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

pub(super) fn create_dirs(dir: &Path) -> Result<(), LoadError> {
    let links = dir.join(LINKS);
    fs::create_dir_all(&links).map_err(|source| LoadError::PinDir {
        path: links,
        source,
    })
}

/// Where the link of `ifname`'s `attach_type` is pinned.
pub(super) fn link_path(dir: &Path, ifname: &str, attach_type: TcAttachType) -> PathBuf {
    let side = match attach_type {
        TcAttachType::Ingress => "ingress",
        TcAttachType::Egress => "egress",
        TcAttachType::Custom(_) => "custom",
    };
    dir.join(LINKS).join(format!("{ifname}_{side}"))
}

/// Interfaces that have a pinned link in `dir` (sorted, each once).
pub(super) fn pinned_interfaces(dir: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    let entries = match fs::read_dir(dir.join(LINKS)) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(names),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(ifname) = name
            .strip_suffix("_ingress")
            .or_else(|| name.strip_suffix("_egress"))
        {
            names.push(ifname.to_owned());
        }
    }
    names.sort();
    names.dedup();
    Ok(names)
}

/// Removes a pin; one that is not there is fine.
pub(super) fn remove(path: &Path) -> Result<(), CleanupError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(CleanupError::Remove {
            path: path.to_owned(),
            source,
        }),
    }
}

fn remove_dir(path: &Path) -> Result<(), CleanupError> {
    match fs::remove_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(CleanupError::Remove {
            path: path.to_owned(),
            source,
        }),
    }
}

impl Datapath {
    /// Removes every pinned link and map in `pin_dir`, and the directory:
    /// the agent's `--cleanup`. Removing a link's pin detaches its program
    /// (unless some process still holds the link); a map is freed once no
    /// program or process uses it.
    ///
    /// Removes only what weir pins there (`links/*`, the map names); a
    /// directory that does not exist is clean already. The kernel frees a
    /// link whose last reference was its pin from a workqueue: the programs
    /// are detached shortly after this returns, not necessarily before.
    ///
    /// # Errors
    ///
    /// [`CleanupError::Remove`] for the first pin or directory that could not
    /// be removed (the rest is still tried first).
    pub fn cleanup(pin_dir: &Path) -> Result<(), CleanupError> {
        let mut first_error = None;
        let mut note = |result: Result<(), CleanupError>| {
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        };
        let links = pin_dir.join(LINKS);
        match fs::read_dir(&links) {
            Ok(entries) => {
                for entry in entries {
                    match entry {
                        Ok(entry) => note(remove(&entry.path())),
                        Err(source) => note(Err(CleanupError::Remove {
                            path: links.clone(),
                            source,
                        })),
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => note(Err(CleanupError::Remove {
                path: links.clone(),
                source,
            })),
        }
        note(remove_dir(&links));
        for (name, ..) in SHARED_MAPS {
            note(remove(&pin_dir.join(name)));
        }
        note(remove_dir(pin_dir));
        first_error.map_or(Ok(()), Err)
    }
}
