//! Generations: the unit files of the last installs, kept so that
//! `orch rollback` can put back the last good ones.
//!
//! One JSON file in the deployment's state folder on the master's host
//! (next to the maintenance journal and the lock), written atomically by
//! `install` under the deployment's lock. It holds the installed generation
//! and at most [`KEEP_PREVIOUS`] before it, each with when it was installed
//! and from which configuration (path and sha256): a generation is every
//! unit file of every host, byte for byte, so a rollback needs neither the
//! old configuration nor the old templates.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::{Deployment, Role};
use crate::render::RenderedUnit;
use crate::store::{Store, StoreError};

/// Previous generations kept besides the installed one.
pub const KEEP_PREVIOUS: usize = 3;
const FILE: &str = "generations.json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoredUnit {
    pub unit: String,
    pub host: String,
    pub role: Role,
    pub template: String,
    pub content: String,
    /// A worker's kind: a rollback across a `naming` change pairs the
    /// workers by it (absent in generations recorded before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Generation {
    /// Counts up from 1 for the life of the state folder; never reused.
    pub number: u64,
    /// RFC 3339, UTC.
    pub installed_at: String,
    pub config_path: PathBuf,
    pub config_sha256: String,
    /// `install` or `rollback from N`.
    pub by: String,
    pub units: Vec<StoredUnit>,
}

/// What `status` shows of a generation: everything but the files.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub number: u64,
    pub installed_at: String,
    pub config_path: PathBuf,
    pub config_sha256: String,
    pub by: String,
    pub units: usize,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Generations {
    /// The generation whose files are installed (after a rollback, an older one).
    pub installed: Option<u64>,
    /// Oldest first.
    pub kept: Vec<Generation>,
}

#[derive(Debug, thiserror::Error)]
pub enum GenerationError {
    #[error("{deployment} has no generation to roll back to: install keeps the unit files of the last {} installs in {}, and {}", KEEP_PREVIOUS + 1, path.display(), match .installed { Some(n) => format!("generation {n} is the oldest kept"), None => "none is recorded yet".to_string() })]
    NothingBefore {
        deployment: String,
        installed: Option<u64>,
        path: PathBuf,
    },
    #[error("{deployment} has no generation {wanted}; kept: {}", if .kept.is_empty() { "none".to_string() } else { .kept.iter().map(u64::to_string).collect::<Vec<_>>().join(", ") })]
    Unknown {
        deployment: String,
        wanted: u64,
        kept: Vec<u64>,
    },
    #[error("cannot read the generations in {}: {cause}", path.display())]
    Parse {
        path: PathBuf,
        cause: serde_json::Error,
    },
    #[error("generations in {}: {cause}", path.display())]
    Store { path: PathBuf, cause: StoreError },
    #[error("cannot read the configuration {} to record its sha256: {cause}", path.display())]
    Config {
        path: PathBuf,
        cause: std::io::Error,
    },
}

pub fn path(d: &Deployment) -> PathBuf {
    crate::state::state_path(d)
        .parent()
        .expect("the journal is in the deployment's folder")
        .join(FILE)
}

impl Generations {
    /// The recorded generations, or none when nothing was recorded.
    pub async fn read(d: &Deployment, state_store: &Store) -> Result<Generations, GenerationError> {
        let path = path(d);
        let bytes = state_store
            .read(&path)
            .await
            .map_err(|cause| GenerationError::Store {
                path: path.clone(),
                cause,
            })?;
        match bytes {
            None => Ok(Generations::default()),
            Some(b) => {
                serde_json::from_slice(&b).map_err(|cause| GenerationError::Parse { path, cause })
            }
        }
    }

    /// Written atomically (a temporary file renamed over the old one).
    pub async fn write(&self, d: &Deployment, state_store: &Store) -> Result<(), GenerationError> {
        let path = path(d);
        let dir = path.parent().expect("in a folder").to_path_buf();
        let bytes = serde_json::to_vec(self).expect("generations serialize");
        state_store
            .write_files(&dir, &[(path.clone(), bytes)])
            .await
            .map_err(|cause| GenerationError::Store { path, cause })
    }

    pub fn installed(&self) -> Option<&Generation> {
        let n = self.installed?;
        self.kept.iter().find(|g| g.number == n)
    }

    /// Records `units` (rendered from `d`) as installed: a new generation
    /// unless they are the installed one's files; the oldest beyond the
    /// bound are dropped. Returns whether anything changed.
    pub fn record(
        &mut self,
        d: &Deployment,
        units: &[RenderedUnit],
        config: (&Path, &str),
        by: &str,
    ) -> bool {
        let kinds: std::collections::HashMap<&str, &str> = d
            .workers
            .iter()
            .map(|w| (w.service.unit.as_str(), w.kind.as_str()))
            .collect();
        let stored: Vec<StoredUnit> = units
            .iter()
            .map(|u| StoredUnit {
                kind: kinds.get(u.unit.as_str()).map(|k| k.to_string()),
                ..StoredUnit::from(u)
            })
            .collect();
        let same = |g: &Generation| {
            g.units.len() == stored.len()
                && g.units.iter().zip(&stored).all(|(a, b)| a.same_file(b))
        };
        if self.installed().is_some_and(same) {
            return false;
        }
        let number = self.kept.iter().map(|g| g.number).max().unwrap_or(0) + 1;
        self.kept.push(Generation {
            number,
            installed_at: now(),
            config_path: config.0.to_path_buf(),
            config_sha256: config.1.to_string(),
            by: by.to_string(),
            units: stored,
        });
        self.installed = Some(number);
        let excess = self.kept.len().saturating_sub(KEEP_PREVIOUS + 1);
        self.kept.drain(..excess);
        true
    }

    /// The generation `rollback --to N` (or, without `to`, the one before
    /// the installed one) would put back.
    pub fn pick(&self, d: &Deployment, to: Option<u64>) -> Result<&Generation, GenerationError> {
        match to {
            Some(n) => {
                self.kept
                    .iter()
                    .find(|g| g.number == n)
                    .ok_or_else(|| GenerationError::Unknown {
                        deployment: d.name.clone(),
                        wanted: n,
                        kept: self.kept.iter().map(|g| g.number).collect(),
                    })
            }
            None => {
                let below = self.installed.unwrap_or(u64::MAX);
                self.kept
                    .iter()
                    .filter(|g| g.number < below)
                    .max_by_key(|g| g.number)
                    .ok_or_else(|| GenerationError::NothingBefore {
                        deployment: d.name.clone(),
                        installed: self.installed,
                        path: path(d),
                    })
            }
        }
    }

    pub fn summaries(&self) -> Vec<Summary> {
        self.kept.iter().map(Generation::summary).collect()
    }
}

impl StoredUnit {
    /// The same file on the same host (what a generation is made of; the
    /// kind is a note about it).
    fn same_file(&self, other: &StoredUnit) -> bool {
        (
            &self.unit,
            &self.host,
            self.role,
            &self.template,
            &self.content,
        ) == (
            &other.unit,
            &other.host,
            other.role,
            &other.template,
            &other.content,
        )
    }
}

impl Generation {
    /// The worker kinds whose units a rollback to this generation may
    /// rename: its own (as recorded) and the configuration's.
    pub fn kinds(&self, d: &Deployment) -> Vec<String> {
        let mut kinds: Vec<String> = self.units.iter().filter_map(|u| u.kind.clone()).collect();
        kinds.extend(d.workers.iter().map(|w| w.kind.clone()));
        kinds.sort();
        kinds.dedup();
        kinds
    }

    /// The stored files, in the shape install plans from.
    pub fn rendered(&self) -> Vec<RenderedUnit> {
        self.units
            .iter()
            .map(|u| RenderedUnit {
                unit: u.unit.clone(),
                host: u.host.clone(),
                role: u.role,
                template: u.template.clone(),
                content: u.content.clone(),
            })
            .collect()
    }

    pub fn summary(&self) -> Summary {
        Summary {
            number: self.number,
            installed_at: self.installed_at.clone(),
            config_path: self.config_path.clone(),
            config_sha256: self.config_sha256.clone(),
            by: self.by.clone(),
            units: self.units.len(),
        }
    }
}

impl From<&RenderedUnit> for StoredUnit {
    fn from(r: &RenderedUnit) -> StoredUnit {
        StoredUnit {
            unit: r.unit.clone(),
            host: r.host.clone(),
            role: r.role,
            template: r.template.clone(),
            content: r.content.clone(),
            kind: None,
        }
    }
}

/// The sha256 (hex) of the configuration file, read where orch runs.
pub fn config_sha256(path: &Path) -> Result<String, GenerationError> {
    use sha2::Digest;
    let bytes = std::fs::read(path).map_err(|cause| GenerationError::Config {
        path: path.to_path_buf(),
        cause,
    })?;
    Ok(sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(name: &str, content: &str) -> RenderedUnit {
        RenderedUnit {
            unit: name.into(),
            host: "local".into(),
            role: Role::Worker,
            template: "worker".into(),
            content: content.into(),
        }
    }

    fn deployment() -> Deployment {
        let source = crate::config::Source {
            path: "t.toml".into(),
            text: "[deployment]\nname = \"syn\"\n[master]\nexec_start = \"/bin/true\"\n".into(),
        };
        Deployment::from_source(&source, None).expect("valid configuration")
    }

    fn record(g: &mut Generations, content: &str) -> bool {
        g.record(
            &deployment(),
            &[unit("a.service", content)],
            (Path::new("/c.toml"), "00"),
            "install",
        )
    }

    #[test]
    fn an_unchanged_install_is_no_new_generation_and_only_three_previous_are_kept() {
        let mut g = Generations::default();
        assert!(record(&mut g, "1"));
        assert!(!record(&mut g, "1"), "same files: same generation");
        for c in ["2", "3", "4", "5"] {
            assert!(record(&mut g, c));
        }
        let numbers: Vec<u64> = g.kept.iter().map(|g| g.number).collect();
        assert_eq!(numbers, [2, 3, 4, 5]);
        assert_eq!(g.installed, Some(5));
        assert_eq!(g.installed().unwrap().units[0].content, "5");
    }

    #[test]
    fn rollback_picks_the_one_before_the_installed_one_or_the_named_one() {
        let d = deployment();
        let mut g = Generations::default();
        let e = g.pick(&d, None).unwrap_err().to_string();
        assert!(e.contains("none is recorded yet"), "{e}");
        for c in ["1", "2", "3"] {
            record(&mut g, c);
        }
        assert_eq!(g.pick(&d, None).unwrap().number, 2);
        g.installed = Some(2);
        assert_eq!(g.pick(&d, None).unwrap().number, 1);
        g.installed = Some(1);
        let e = g.pick(&d, None).unwrap_err().to_string();
        assert!(e.contains("generation 1 is the oldest kept"), "{e}");
        assert_eq!(g.pick(&d, Some(3)).unwrap().number, 3);
        let e = g.pick(&d, Some(9)).unwrap_err().to_string();
        assert!(e.contains("no generation 9; kept: 1, 2, 3"), "{e}");
    }
}
