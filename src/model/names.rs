//! Worker names that never shift. Synapse keeps worker names in
//! `instance_map` and `stream_writers`, and stores stream positions under
//! them, so adding, removing, resizing or reordering worker kinds must never
//! rename a worker that exists. The allocation is derived from the worker
//! units already installed (read by `ops` from the unit folders, the files
//! carrying this deployment's marker) and passed in: resolving stays pure.

use std::collections::BTreeSet;

use serde::Serialize;

/// How worker units are named (`[deployment] naming`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Naming {
    /// `NAME-worker-I-KIND`, `I` counted across kinds; stable because a new
    /// worker takes an index above every installed one.
    #[default]
    Sequential,
    /// `NAME-worker-KIND-I`, `I` counted within the kind: stable by construction.
    PerKind,
}

impl Naming {
    pub const CHOICES: &'static [&'static str] = &["sequential", "per-kind"];

    pub fn parse(s: &str) -> Option<Naming> {
        match s {
            "sequential" => Some(Naming::Sequential),
            "per-kind" => Some(Naming::PerKind),
            _ => None,
        }
    }

    /// The unit name (without `.service`) of worker `number` of `kind`.
    pub fn name(self, deployment: &str, kind: &str, number: usize) -> String {
        match self {
            Naming::Sequential => format!("{deployment}-worker-{number}-{kind}"),
            Naming::PerKind => format!("{deployment}-worker-{kind}-{number}"),
        }
    }
}

/// The names of this deployment's worker units found installed (any host),
/// without `.service`. Empty when nothing is installed or the folders could
/// not be read: then the allocation is the fresh one, in file order.
#[derive(Debug, Clone, Default)]
pub struct Installed {
    names: BTreeSet<String>,
}

impl Installed {
    /// Keeps the names of `deployment`'s worker units among `units`
    /// (`*.service` names; others are ignored).
    pub fn new<'a>(deployment: &str, units: impl IntoIterator<Item = &'a str>) -> Installed {
        let prefix = format!("{deployment}-worker-");
        let names = units
            .into_iter()
            .filter_map(|u| u.strip_suffix(".service"))
            .filter(|n| n.starts_with(&prefix))
            .map(str::to_string)
            .collect();
        Installed { names }
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The part after `NAME-worker-`.
    fn tails<'a>(&'a self, deployment: &'a str) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let prefix = format!("{deployment}-worker-");
        self.names
            .iter()
            .filter_map(move |n| n.strip_prefix(&prefix).map(|t| (n.as_str(), t)))
    }

    /// Installed workers of `kind` named with `naming`: (number, unit name), by number.
    fn of_kind(&self, deployment: &str, kind: &str, naming: Naming) -> Vec<(usize, String)> {
        let mut found: Vec<(usize, String)> = self
            .tails(deployment)
            .filter_map(|(name, tail)| {
                let digits = match naming {
                    Naming::Sequential => tail.strip_suffix(kind)?.strip_suffix('-')?,
                    Naming::PerKind => tail.strip_prefix(kind)?.strip_prefix('-')?,
                };
                Some((number(digits)?, name.to_string()))
            })
            .collect();
        found.sort();
        found
    }
}

/// `0`, `17`: decimal digits without a leading zero.
fn number(s: &str) -> Option<usize> {
    let ok =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    ok.then(|| s.parse().ok()).flatten()
}

/// One worker's place: the number in its name, its rank within its kind
/// (the `i` of `port_base + i`), and the installed unit it renames, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub number: usize,
    pub kind_index: usize,
    pub previous: Option<String>,
}

/// The slots of every kind (`(kind, count)` in file order). Sequential:
/// each kind keeps its installed indexes (the lowest ones when it shrinks),
/// and new workers take the lowest indexes no kept worker has, in file
/// order. Per-kind: `0..count`. A worker that is new under this naming but
/// whose kind has installed units under the other one renames them, in
/// order of their numbers (so it keeps their ports too).
pub fn allocate(
    deployment: &str,
    naming: Naming,
    kinds: &[(&str, usize)],
    installed: &Installed,
) -> Vec<Vec<Slot>> {
    let other = match naming {
        Naming::Sequential => Naming::PerKind,
        Naming::PerKind => Naming::Sequential,
    };
    let kept: Vec<Vec<usize>> = kinds
        .iter()
        .map(|&(kind, count)| match naming {
            Naming::Sequential => installed
                .of_kind(deployment, kind, naming)
                .into_iter()
                .map(|(n, _)| n)
                .take(count)
                .collect(),
            Naming::PerKind => (0..count).collect(),
        })
        .collect();
    // A new worker takes the lowest number no kept worker has: a deployment
    // resized back and forth (or an install cut short) converges on the
    // same names as a fresh one, and a number freed by one kind serves
    // another under a different unit name.
    let mut taken: std::collections::BTreeSet<usize> = match naming {
        Naming::Sequential => kept.iter().flatten().copied().collect(),
        Naming::PerKind => Default::default(),
    };
    // Numbers are only ever added to `taken`, so the lowest free one never
    // goes down: the search resumes where the last one stopped, and the
    // whole allocation stays linear in the worker count (a search from 0
    // each time was quadratic: 1 s at 4,000 workers).
    let mut next_free = 0;
    let mut fresh_number = || {
        let n = (next_free..)
            .find(|n| !taken.contains(n))
            .expect("a free number");
        taken.insert(n);
        next_free = n + 1;
        n
    };
    let mut out: Vec<Vec<Slot>> = Vec::with_capacity(kinds.len());
    for (&(kind, count), kept) in kinds.iter().zip(&kept) {
        let mut renamed = installed.of_kind(deployment, kind, other).into_iter();
        let mut slots = Vec::with_capacity(count);
        for kind_index in 0..count {
            let (number, fresh) = match kept.get(kind_index) {
                Some(&n) => (
                    n,
                    naming == Naming::PerKind && !has(installed, deployment, kind, n),
                ),
                None => (fresh_number(), true),
            };
            let previous = fresh.then(|| renamed.next()).flatten().map(|(_, n)| n);
            slots.push(Slot {
                number,
                kind_index,
                previous,
            });
        }
        // In number order, whatever filled a gap: the master's Wants= (and
        // the start order) are then those of a fresh install of the same set.
        slots.sort_by_key(|s| s.number);
        out.push(slots);
    }
    out
}

/// The renames among whole unit files (a kept generation put back, whose
/// names are in its files): each worker unit to create (`created`,
/// `*.service` names) that has no counterpart under its own naming renames
/// the installed one to remove (`removed`) of the same kind under the other
/// naming, paired in order of their numbers as [`allocate`] pairs them, so
/// the rank (and the port) is the one the worker had. `(old, new)` unit
/// names; each unit in one pair at most.
pub fn renames_by_name(
    deployment: &str,
    kinds: &[&str],
    created: &[&str],
    removed: &[&str],
) -> Vec<(String, String)> {
    let created = Installed::new(deployment, created.iter().copied());
    let removed = Installed::new(deployment, removed.iter().copied());
    let mut used = BTreeSet::new();
    let mut pairs = Vec::new();
    for kind in kinds {
        for (new_naming, old_naming) in [
            (Naming::Sequential, Naming::PerKind),
            (Naming::PerKind, Naming::Sequential),
        ] {
            let new = created.of_kind(deployment, kind, new_naming);
            let old = removed.of_kind(deployment, kind, old_naming);
            let free = |v: Vec<(usize, String)>, used: &BTreeSet<String>| {
                v.into_iter()
                    .map(|(_, n)| n)
                    .filter(|n| !used.contains(n))
                    .collect::<Vec<_>>()
            };
            let (new, old) = (free(new, &used), free(old, &used));
            for (o, n) in old.into_iter().zip(new) {
                used.insert(o.clone());
                used.insert(n.clone());
                pairs.push((format!("{o}.service"), format!("{n}.service")));
            }
        }
    }
    pairs
}

fn has(installed: &Installed, deployment: &str, kind: &str, n: usize) -> bool {
    installed
        .names
        .contains(&Naming::PerKind.name(deployment, kind, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn installed(units: &[&str]) -> Installed {
        let names: Vec<String> = units.iter().map(|u| format!("{u}.service")).collect();
        Installed::new("app", names.iter().map(String::as_str))
    }

    fn names(naming: Naming, kinds: &[(&str, usize)], inst: &Installed) -> Vec<String> {
        allocate("app", naming, kinds, inst)
            .iter()
            .zip(kinds)
            .flat_map(|(slots, (k, _))| slots.iter().map(|s| naming.name("app", k, s.number)))
            .collect()
    }

    #[test]
    fn fresh_sequential_is_file_order() {
        let got = names(
            Naming::Sequential,
            &[("a", 2), ("b", 1)],
            &Installed::default(),
        );
        assert_eq!(got, ["app-worker-0-a", "app-worker-1-a", "app-worker-2-b"]);
    }

    #[test]
    fn a_kind_added_in_front_takes_new_indexes() {
        let inst = installed(&["app-worker-0-b", "app-worker-1-b", "app-worker-2-c"]);
        let got = names(Naming::Sequential, &[("a", 2), ("b", 2), ("c", 1)], &inst);
        assert_eq!(
            got,
            [
                "app-worker-3-a",
                "app-worker-4-a",
                "app-worker-0-b",
                "app-worker-1-b",
                "app-worker-2-c"
            ]
        );
    }

    #[test]
    fn gaps_left_by_an_interrupted_install_are_filled_in_number_order() {
        let mut left: Vec<String> = (0..16).map(|i| format!("app-worker-{i}-w")).collect();
        left.extend(["app-worker-17-w".into(), "app-worker-19-w".into()]);
        let refs: Vec<&str> = left.iter().map(String::as_str).collect();
        let got = names(Naming::Sequential, &[("w", 24)], &installed(&refs));
        let fresh: Vec<String> = (0..24).map(|i| format!("app-worker-{i}-w")).collect();
        assert_eq!(
            got, fresh,
            "the same names, in the same order, as a fresh install"
        );
    }

    #[test]
    fn resizing_and_removing_keep_the_others() {
        let inst = installed(&["app-worker-0-b", "app-worker-1-b", "app-worker-2-c"]);
        // b grows: its new worker takes the lowest free index; c untouched.
        let got = names(Naming::Sequential, &[("b", 3), ("c", 1)], &inst);
        assert_eq!(
            got,
            [
                "app-worker-0-b",
                "app-worker-1-b",
                "app-worker-3-b",
                "app-worker-2-c"
            ]
        );
        // b shrinks: its highest index goes, and its ranks (ports) stay.
        let slots = allocate("app", Naming::Sequential, &[("b", 1), ("c", 1)], &inst);
        assert_eq!((slots[0][0].number, slots[0][0].kind_index), (0, 0));
        assert_eq!((slots[1][0].number, slots[1][0].kind_index), (2, 0));
        // b removed, order swapped: c keeps 2.
        assert_eq!(
            names(Naming::Sequential, &[("c", 1)], &inst),
            ["app-worker-2-c"]
        );
        // Other deployments' units and foreign names do not count.
        let foreign = Installed::new(
            "app",
            [
                "other-worker-9-b.service",
                "app-worker-x-b.service",
                "app-worker-07-b.service",
            ],
        );
        assert_eq!(
            names(Naming::Sequential, &[("b", 1)], &foreign),
            ["app-worker-0-b"]
        );
    }

    #[test]
    fn per_kind_counts_within_the_kind_and_renames_in_order() {
        let got = names(
            Naming::PerKind,
            &[("a", 1), ("b", 2)],
            &Installed::default(),
        );
        assert_eq!(got, ["app-worker-a-0", "app-worker-b-0", "app-worker-b-1"]);
        let inst = installed(&["app-worker-0-b", "app-worker-5-b", "app-worker-1-a-x"]);
        let slots = allocate("app", Naming::PerKind, &[("b", 3), ("a-x", 1)], &inst);
        let prev: Vec<Option<&str>> = slots
            .iter()
            .flatten()
            .map(|s| s.previous.as_deref())
            .collect();
        assert_eq!(
            prev,
            [
                Some("app-worker-0-b"),
                Some("app-worker-5-b"),
                None,
                Some("app-worker-1-a-x")
            ]
        );
        // Already per-kind: nothing renamed.
        let inst = installed(&["app-worker-b-0", "app-worker-0-b"]);
        let slots = allocate("app", Naming::PerKind, &[("b", 1)], &inst);
        assert_eq!(slots[0][0].previous, None);
    }

    #[test]
    fn renames_by_name_pair_a_kind_across_namings_in_number_order() {
        let created = [
            "app-worker-0-b.service",
            "app-worker-3-b.service",
            "app-worker-4-b.service",
            "app-worker-1-a.service",
        ];
        let removed = [
            "app-worker-b-1.service",
            "app-worker-b-0.service",
            "app-worker-7-b.service",
            "app-worker-c-0.service",
        ];
        let got = renames_by_name("app", &["a", "b", "c"], &created, &removed);
        let pair = |o: &str, n: &str| {
            (
                format!("app-worker-{o}.service"),
                format!("app-worker-{n}.service"),
            )
        };
        // b: two per-kind units go, the two lowest sequential ones take
        // their ranks; the third is a plain create, 7-b (same naming) a
        // plain removal. a and c have nothing on the other side.
        assert_eq!(got, [pair("b-0", "0-b"), pair("b-1", "3-b")]);
        assert!(renames_by_name("app", &["b"], &created[..1], &removed[2..3]).is_empty());
    }

    #[test]
    fn back_to_sequential_renames_per_kind_units() {
        let inst = installed(&["app-worker-b-0", "app-worker-b-1"]);
        let slots = allocate("app", Naming::Sequential, &[("a", 1), ("b", 2)], &inst);
        let got: Vec<(usize, Option<&str>)> = slots
            .iter()
            .flatten()
            .map(|s| (s.number, s.previous.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                (0, None),
                (1, Some("app-worker-b-0")),
                (2, Some("app-worker-b-1"))
            ]
        );
    }
}
