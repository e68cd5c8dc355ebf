//! Generations: the unit files of the last installs, kept so that
//! `orch rollback` can put back the last good ones.
//!
//! In the deployment's state folder on the master's host (next to the
//! maintenance journal and the lock), written atomically by `install` under
//! the deployment's lock: the installed generation and at most
//! [`KEEP_PREVIOUS`] before it, each with when it was installed and from
//! which configuration (path and sha256). A generation is every unit file
//! of every host, byte for byte, so a rollback needs neither the old
//! configuration nor the old templates.
//!
//! One file per generation (`generation-N.json`, megabytes at thousands of
//! workers) and one small index (`generations.index.json`: the installed
//! number and a [`Summary`] of each), which is all `status` reads. A write
//! puts the new generation's file in place first, then the index, and only
//! then removes the files the index no longer names: at every moment the
//! index names files that exist. The single `generations.json` of earlier
//! versions is still read, and replaced by the new files on the next write.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::{Deployment, Role, MAX_WORKERS};
use crate::render::RenderedUnit;
use crate::store::{Store, StoreError, MAX_FILE_BYTES};

/// Previous generations kept besides the installed one.
pub const KEEP_PREVIOUS: usize = 3;
const INDEX: &str = "generations.index.json";
/// Every generation in one file, as versions before the index wrote it.
const LEGACY: &str = "generations.json";

/// The most orch reads of one generation's file: [`MAX_WORKERS`] units of
/// 6 KiB each as JSON, a rendered worker unit being about 1 KiB (5,000
/// workers make about 6 MB). A unit file may be up to
/// [`MAX_FILE_BYTES`], but every unit at that size would make gigabytes
/// of one JSON file to hold in memory: the bound is a fixed cap with a
/// wide margin instead, and a generation over it is refused by name.
pub const MAX_GENERATION_BYTES: u64 = MAX_WORKERS as u64 * 6 * 1024;
/// The legacy file held the installed generation and those before it.
const MAX_LEGACY_BYTES: u64 = (KEEP_PREVIOUS as u64 + 1) * MAX_GENERATION_BYTES;

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
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
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
    /// Where they were read from: which generations have their own file
    /// already, and whether the legacy single file is to be replaced.
    #[serde(skip)]
    on_disk: OnDisk,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct OnDisk {
    files: Vec<u64>,
    legacy: bool,
    /// Generations known from the index alone (number: its unit count):
    /// their files were not read, so they must not be rewritten from here.
    unread: std::collections::BTreeMap<u64, usize>,
}

/// What the index file holds: all `status` needs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Index {
    pub installed: Option<u64>,
    /// Oldest first.
    pub kept: Vec<Summary>,
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
    #[error("{} names generation {number}, but {} does not exist", index.display(), path.display())]
    Missing {
        index: PathBuf,
        number: u64,
        path: PathBuf,
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

/// The index: what messages name as where the generations are kept.
pub fn path(d: &Deployment) -> PathBuf {
    crate::state::dir(d).join(INDEX)
}

fn legacy_path(d: &Deployment) -> PathBuf {
    crate::state::dir(d).join(LEGACY)
}

/// The file of generation `number`.
pub fn generation_path(d: &Deployment, number: u64) -> PathBuf {
    crate::state::dir(d).join(format!("generation-{number}.json"))
}

/// Reads and parses `path` (at most `max` bytes); `None` when absent.
async fn read_json<T: serde::de::DeserializeOwned>(
    store: &Store,
    path: &Path,
    max: u64,
) -> Result<Option<T>, GenerationError> {
    let bytes = store
        .read(path, max)
        .await
        .map_err(|cause| GenerationError::Store {
            path: path.to_path_buf(),
            cause,
        })?;
    let Some(bytes) = bytes else { return Ok(None) };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|cause| GenerationError::Parse {
            path: path.to_path_buf(),
            cause,
        })
}

impl Index {
    /// The index alone (what `status` shows), or, from a version before
    /// the index, the summaries of the legacy file.
    pub async fn read(d: &Deployment, state_store: &Store) -> Result<Index, GenerationError> {
        if let Some(index) = read_json(state_store, &path(d), MAX_FILE_BYTES).await? {
            return Ok(index);
        }
        let legacy = Generations::read_legacy(d, state_store).await?;
        Ok(legacy.index())
    }

    pub fn installed(&self) -> Option<&Summary> {
        let n = self.installed?;
        self.kept.iter().find(|g| g.number == n)
    }
}

impl Generations {
    /// The recorded generations, every one read in full, or none when
    /// nothing was recorded.
    pub async fn read(d: &Deployment, state_store: &Store) -> Result<Generations, GenerationError> {
        let mut g = Generations::read_index(d, state_store).await?;
        for n in g.kept.iter().map(|g| g.number).collect::<Vec<_>>() {
            g.load(d, state_store, n).await?;
        }
        Ok(g)
    }

    /// What `install` needs: the index, and in full only the installed
    /// generation (its files are what a new install is compared with).
    /// At 5,000 workers each generation is ~8 MB: the others stay unread.
    pub async fn read_for_install(
        d: &Deployment,
        state_store: &Store,
    ) -> Result<Generations, GenerationError> {
        let mut g = Generations::read_index(d, state_store).await?;
        if let Some(n) = g.installed {
            g.load(d, state_store, n).await?;
        }
        Ok(g)
    }

    /// What `rollback [--to N]` needs: the index, and in full only the
    /// generation it puts back (`pick`).
    pub async fn read_for_rollback(
        d: &Deployment,
        state_store: &Store,
        to: Option<u64>,
    ) -> Result<Generations, GenerationError> {
        let mut g = Generations::read_index(d, state_store).await?;
        let n = g.pick(d, to)?.number;
        g.load(d, state_store, n).await?;
        Ok(g)
    }

    /// The index alone: each kept generation a summary without its files
    /// (noted in `on_disk.unread`) until [`Generations::load`] reads it.
    async fn read_index(
        d: &Deployment,
        state_store: &Store,
    ) -> Result<Generations, GenerationError> {
        let Some(index) = read_json::<Index>(state_store, &path(d), MAX_FILE_BYTES).await? else {
            return Generations::read_legacy(d, state_store).await;
        };
        Ok(Generations {
            installed: index.installed,
            kept: index.kept.iter().map(Generation::unread).collect(),
            on_disk: OnDisk {
                files: index.kept.iter().map(|s| s.number).collect(),
                legacy: false,
                unread: index.kept.iter().map(|s| (s.number, s.units)).collect(),
            },
        })
    }

    /// Reads generation `number`'s file in full, unless read already; its
    /// absence is an error naming the index and the file.
    async fn load(
        &mut self,
        d: &Deployment,
        state_store: &Store,
        number: u64,
    ) -> Result<(), GenerationError> {
        if !self.on_disk.unread.contains_key(&number) {
            return Ok(());
        }
        let path = generation_path(d, number);
        let Some(read) = read_json::<Generation>(state_store, &path, MAX_GENERATION_BYTES).await?
        else {
            return Err(GenerationError::Missing {
                index: self::path(d),
                number,
                path,
            });
        };
        if let Some(g) = self.kept.iter_mut().find(|g| g.number == number) {
            *g = read;
        }
        self.on_disk.unread.remove(&number);
        Ok(())
    }

    /// The single file of versions before the index.
    async fn read_legacy(
        d: &Deployment,
        state_store: &Store,
    ) -> Result<Generations, GenerationError> {
        let path = legacy_path(d);
        let read: Option<Generations> = read_json(state_store, &path, MAX_LEGACY_BYTES).await?;
        Ok(read
            .map(|mut g| {
                g.on_disk.legacy = true;
                g
            })
            .unwrap_or_default())
    }

    /// Each file written atomically (a temporary file renamed over the old
    /// one): new generations' files first, then the index, then the files
    /// it no longer names go (and the legacy file, now converted).
    pub async fn write(
        &mut self,
        d: &Deployment,
        state_store: &Store,
    ) -> Result<(), GenerationError> {
        let dir = crate::state::dir(d);
        let err = |path: PathBuf| move |cause| GenerationError::Store { path, cause };
        let new: Vec<(PathBuf, Vec<u8>)> = self
            .kept
            .iter()
            .filter(|g| !self.on_disk.files.contains(&g.number))
            .map(|g| {
                (
                    generation_path(d, g.number),
                    serde_json::to_vec(g).expect("serializes"),
                )
            })
            .collect();
        let first = new.first().map(|(p, _)| p.clone()).unwrap_or(dir.clone());
        state_store
            .write_files(&dir, &new)
            .await
            .map_err(err(first))?;
        let index = (
            path(d),
            serde_json::to_vec(&self.index()).expect("serializes"),
        );
        state_store
            .write_files(&dir, &[index])
            .await
            .map_err(err(path(d)))?;
        let mut gone: Vec<PathBuf> = self
            .on_disk
            .files
            .iter()
            .filter(|n| !self.kept.iter().any(|g| g.number == **n))
            .map(|n| generation_path(d, *n))
            .collect();
        if self.on_disk.legacy {
            gone.push(legacy_path(d));
        }
        state_store
            .remove_files(&dir, &gone)
            .await
            .map_err(err(dir.clone()))?;
        self.on_disk.files = self.kept.iter().map(|g| g.number).collect();
        self.on_disk.legacy = false;
        let kept: Vec<u64> = self.kept.iter().map(|g| g.number).collect();
        self.on_disk.unread.retain(|n, _| kept.contains(n));
        Ok(())
    }

    /// The index of these generations.
    pub fn index(&self) -> Index {
        Index {
            installed: self.installed,
            kept: self.summaries(),
        }
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
                        path: crate::state::dir(d),
                    })
            }
        }
    }

    /// A generation read from the index alone counts the units the index
    /// says, not its (unread, empty) files.
    pub fn summaries(&self) -> Vec<Summary> {
        self.kept
            .iter()
            .map(|g| Summary {
                units: self
                    .on_disk
                    .unread
                    .get(&g.number)
                    .copied()
                    .unwrap_or(g.units.len()),
                ..g.summary()
            })
            .collect()
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

    /// A kept generation known from the index alone: no files yet.
    fn unread(s: &Summary) -> Generation {
        Generation {
            number: s.number,
            installed_at: s.installed_at.clone(),
            config_path: s.config_path.clone(),
            config_sha256: s.config_sha256.clone(),
            by: s.by.clone(),
            units: Vec::new(),
        }
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

    /// A rendered worker unit of about 1 KiB, as orch writes them.
    fn worker_unit(i: usize, generation: u64) -> RenderedUnit {
        let content = format!(
            "# Generated by orch (generation {generation}); edit the configuration instead\n\
             [Unit]\nDescription=syn worker generic-{i}\nPartOf=syn.service\n\
             After=syn.service network-online.target postgresql.service redis-server.service\n\
             Wants=network-online.target\n\n[Service]\nType=notify\nUser=matrix-synapse\n\
             WorkingDirectory=/var/lib/matrix-synapse\n\
             ExecStart=/opt/venvs/matrix-synapse/bin/python -m synapse.app.generic_worker \
             --config-path=/etc/matrix-synapse/homeserver.yaml \
             --config-path=/etc/matrix-synapse/workers/generic-{i}.yaml\n\
             ExecReload=/bin/kill -HUP $MAINPID\nRestart=on-failure\nRestartSec=3\n\
             TimeoutStopSec=30\nKillSignal=SIGTERM\nSlice=syn.slice\n\
             Environment=PYTHONUNBUFFERED=1 SYNAPSE_CACHE_FACTOR=2.0\n\
             SyslogIdentifier=syn-generic-{i}\nLimitNOFILE=65536\n\n\
             [Install]\nWantedBy=syn.service\n"
        );
        RenderedUnit {
            content: content.repeat(2),
            ..unit(&format!("syn-generic-{i}.service"), "")
        }
    }

    fn in_folder(dir: &Path) -> Deployment {
        let mut d = deployment();
        d.state_dir = dir.to_path_buf();
        d
    }

    async fn record_and_write(d: &Deployment, store: &Store, generation: u64, n: usize) {
        let mut g = Generations::read(d, store).await.expect("readable");
        let units: Vec<RenderedUnit> = (0..n).map(|i| worker_unit(i, generation)).collect();
        assert!(g.record(d, &units, (Path::new("/c.toml"), "00"), "install"));
        g.write(d, store).await.expect("written");
    }

    #[tokio::test]
    async fn generations_of_5000_workers_are_kept_one_file_each_and_status_reads_the_index() {
        let tmp = tempfile::tempdir().unwrap();
        let (d, store) = (in_folder(tmp.path()), Store::local());
        assert!(worker_unit(0, 1).content.len() > 1000, "a realistic unit");
        for generation in 1..=5 {
            record_and_write(&d, &store, generation, 5_000).await;
        }
        let g = Generations::read(&d, &store).await.expect("read back");
        let numbers: Vec<u64> = g.kept.iter().map(|g| g.number).collect();
        assert_eq!(numbers, [2, 3, 4, 5]);
        assert_eq!(g.installed().unwrap().units.len(), 5_000);
        assert_eq!(
            g.installed().unwrap().units[4_999].content,
            worker_unit(4_999, 5).content
        );
        assert!(!generation_path(&d, 1).exists(), "dropped after the index");
        let size = |p: PathBuf| std::fs::metadata(p).unwrap().len();
        let (one, index) = (size(generation_path(&d, 5)), size(path(&d)));
        let unit = worker_unit(0, 5).content.len();
        println!("units of {unit} bytes: generation file {one} bytes, index {index} bytes");
        assert!(
            one > MAX_FILE_BYTES && one < MAX_GENERATION_BYTES / 4,
            "{one}"
        );
        assert!(index < 4096, "{index}");
        // Status reads the index alone: unreadable generation files do not matter to it.
        for n in 2..=5 {
            std::fs::write(generation_path(&d, n), "not json").unwrap();
        }
        let index = Index::read(&d, &store).await.expect("the index alone");
        assert_eq!(
            index.installed().map(|s| (s.number, s.units)),
            Some((5, 5_000))
        );
        let e = Generations::read(&d, &store).await.unwrap_err().to_string();
        assert!(e.contains("generation-2.json"), "{e}");
    }

    /// install reads in full only the installed generation, rollback only
    /// the one it puts back: damaged files of the others do not stop them,
    /// are not rewritten, and keep their unit counts in the index; a
    /// damaged file they need is an error naming it.
    #[tokio::test]
    async fn install_and_rollback_read_only_the_generations_they_use() {
        let tmp = tempfile::tempdir().unwrap();
        let (d, store) = (in_folder(tmp.path()), Store::local());
        for generation in 1..=4 {
            record_and_write(&d, &store, generation, 3).await;
        }
        for n in [1, 2] {
            std::fs::write(generation_path(&d, n), "not json").unwrap();
        }
        let mut g = Generations::read_for_install(&d, &store)
            .await
            .expect("install reads generation 4 alone");
        assert_eq!(g.installed().unwrap().units, generation_units(4));
        let r = Generations::read_for_rollback(&d, &store, None)
            .await
            .expect("rollback reads generation 3 alone");
        assert_eq!(r.pick(&d, None).unwrap().units, generation_units(3));

        let units: Vec<RenderedUnit> = (0..3).map(|i| worker_unit(i, 5)).collect();
        assert!(g.record(&d, &units, (Path::new("/c.toml"), "00"), "install"));
        g.write(&d, &store).await.expect("written");
        let kept = std::fs::read_to_string(generation_path(&d, 2)).unwrap();
        assert_eq!(kept, "not json", "an unread file is not rewritten");
        assert!(!generation_path(&d, 1).exists(), "dropped");
        let index = Index::read(&d, &store).await.unwrap();
        let counts: Vec<(u64, usize)> = index.kept.iter().map(|s| (s.number, s.units)).collect();
        assert_eq!(counts, [(2, 3), (3, 3), (4, 3), (5, 3)]);

        std::fs::write(generation_path(&d, 5), "not json").unwrap();
        let e = Generations::read_for_install(&d, &store).await.unwrap_err();
        assert!(e.to_string().contains("generation-5.json"), "{e}");
        let e = Generations::read_for_rollback(&d, &store, Some(2))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("generation-2.json"), "{e}");
        std::fs::remove_file(generation_path(&d, 4)).unwrap();
        let e = Generations::read_for_rollback(&d, &store, None)
            .await
            .unwrap_err();
        assert!(
            matches!(e, GenerationError::Missing { number: 4, .. }),
            "{e}"
        );
    }

    fn generation_units(generation: u64) -> Vec<StoredUnit> {
        (0..3)
            .map(|i| StoredUnit::from(&worker_unit(i, generation)))
            .collect()
    }

    #[tokio::test]
    async fn a_generation_over_the_bound_is_refused_by_name() {
        let tmp = tempfile::tempdir().unwrap();
        let (d, store) = (in_folder(tmp.path()), Store::local());
        record_and_write(&d, &store, 1, 1).await;
        let big = vec![b' '; MAX_GENERATION_BYTES as usize + 1];
        std::fs::write(generation_path(&d, 1), big).unwrap();
        let e = Generations::read(&d, &store).await.unwrap_err().to_string();
        println!("{e}");
        assert!(
            e.contains("generation-1.json")
                && e.contains(&format!("larger than {MAX_GENERATION_BYTES} bytes")),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_legacy_single_file_is_read_and_converted_on_the_next_write() {
        let tmp = tempfile::tempdir().unwrap();
        let (d, store) = (in_folder(tmp.path()), Store::local());
        let mut old = Generations::default();
        for c in ["1", "2"] {
            record(&mut old, c);
        }
        // As earlier versions wrote it: every generation in one file.
        std::fs::create_dir_all(crate::state::dir(&d)).unwrap();
        std::fs::write(legacy_path(&d), serde_json::to_vec(&old).unwrap()).unwrap();
        let index = Index::read(&d, &store).await.expect("legacy summaries");
        assert_eq!(index.installed().map(|s| s.number), Some(2));
        let mut g = Generations::read(&d, &store).await.expect("legacy read");
        assert_eq!(g.kept, old.kept);
        assert!(record(&mut g, "3"));
        g.write(&d, &store).await.unwrap();
        assert!(!legacy_path(&d).exists(), "converted");
        for n in 1..=3 {
            assert!(generation_path(&d, n).exists(), "generation {n}");
        }
        let g = Generations::read(&d, &store).await.unwrap();
        assert_eq!(
            g.kept.iter().map(|g| g.number).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(g.pick(&d, Some(1)).unwrap().units[0].content, "1");
    }
}
