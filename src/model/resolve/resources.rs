//! The resolver's part for resources: the deployment's slice and each
//! section's limits (checked by [`crate::model::resources`]).

use super::Resolver;
use crate::config::{ConfigError, RawLimit, RawResources, S};
use crate::model::resources::{self, ResourceError, Resources};

impl Resolver<'_> {
    /// `NAME.slice`. A `-` in a slice name means nesting (`a-b.slice` lives
    /// in `a.slice`), so systemd refuses an empty level: `a--b`, `a-`.
    pub(super) fn slice(&self, name: &S<String>) -> Result<String, ConfigError> {
        let n = name.get_ref();
        if n.contains("--") || n.ends_with('-') {
            return Err(self.err(
                name.span(),
                "deployment.name",
                format!("`{n}` cannot name the deployment's slice {n}.slice: systemd reads `-` in a slice name as nesting, so `--` or a trailing `-` is an empty level"),
            ));
        }
        Ok(format!("{n}.slice"))
    }

    /// `memory_max`, `memory_high`, `cpu_quota`, `cpu_weight` and `tasks_max` of a section.
    pub(super) fn resources(
        &self,
        r: &RawResources<'_>,
        section: &str,
    ) -> Result<Resources, ConfigError> {
        let at = |k: &str| format!("{section}.{k}");
        let memory_max = self.limit(r.memory_max, &at("memory_max"), resources::memory)?;
        let memory_high = self.limit(r.memory_high, &at("memory_high"), resources::memory)?;
        if let (Some(high), Some(max), Some(v)) = (&memory_high, &memory_max, r.memory_high) {
            resources::memory_pair(high, max)
                .map_err(|e| self.err(v.span(), &at("memory_high"), e.to_string()))?;
        }
        Ok(Resources {
            memory_max,
            memory_high,
            cpu_quota: self.limit(r.cpu_quota, &at("cpu_quota"), resources::cpu_quota)?,
            cpu_weight: self.limit(r.cpu_weight, &at("cpu_weight"), resources::cpu_weight)?,
            tasks_max: self.limit(r.tasks_max, &at("tasks_max"), resources::tasks_max)?,
        })
    }

    fn limit<T>(
        &self,
        v: Option<&S<RawLimit>>,
        key: &str,
        check: fn(&RawLimit) -> Result<T, ResourceError>,
    ) -> Result<Option<T>, ConfigError> {
        v.map(|v| check(v.get_ref()).map_err(|e| self.err(v.span(), key, e.to_string())))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{ConfigError, Source};
    use crate::model::Deployment;

    fn resolve(text: &str) -> Result<Deployment, ConfigError> {
        let source = Source {
            path: "t.toml".into(),
            text: text.into(),
        };
        Deployment::from_source(&source, None)
    }

    const CONFIG: &str = "[deployment]\nname = \"app\"\n[master]\nexec_start = \"/bin/m\"\nmemory_max = \"2G\"\ncpu_weight = 200\n\
        [[workers]]\nkind = \"a\"\ncount = 2\nexec_start = \"/bin/w\"\nmemory_high = \"80%\"\ncpu_quota = \"150%\"\ntasks_max = \"infinity\"\n\
        [[workers]]\nkind = \"b\"\ncount = 1\nexec_start = \"/bin/w\"\n";

    #[test]
    fn each_section_has_its_own_limits() {
        let d = resolve(CONFIG).unwrap();
        assert_eq!(d.slice, "app.slice");
        let m = &d.master.resources;
        assert_eq!(
            (
                m.memory_max.as_deref(),
                m.cpu_weight,
                m.cpu_quota.as_deref()
            ),
            (Some("2G"), Some(200), None)
        );
        for w in &d.workers[..2] {
            let r = &w.service.resources;
            assert_eq!(r.memory_high.as_deref(), Some("80%"));
            assert_eq!(r.cpu_quota.as_deref(), Some("150%"));
            assert_eq!(r.tasks_max.as_deref(), Some("infinity"));
            assert_eq!(r.memory_max, None);
        }
        assert_eq!(d.workers[2].service.resources, Default::default());
    }

    #[test]
    fn bad_values_name_their_line_and_key() {
        let cases = [
            (
                "memory_max = \"2G\"",
                "memory_max = \"lots\"",
                5,
                "master.memory_max",
                "not a size",
            ),
            (
                "cpu_weight = 200",
                "cpu_weight = 0",
                6,
                "master.cpu_weight",
                "between 1 and 10000",
            ),
            (
                "cpu_quota = \"150%\"",
                "cpu_quota = 150",
                12,
                "workers[0].cpu_quota",
                "percentage",
            ),
            (
                "tasks_max = \"infinity\"",
                "tasks_max = -1",
                13,
                "workers[0].tasks_max",
                "number of tasks",
            ),
        ];
        for (from, to, line, key, says) in cases {
            let e = resolve(&CONFIG.replace(from, to)).expect_err(to);
            assert_eq!((e.line, e.key.as_deref()), (Some(line), Some(key)), "{e}");
            assert!(e.message.contains(says), "{e}");
        }
        let above = CONFIG.replace("cpu_weight = 200", "memory_high = \"3G\"");
        let e = resolve(&above).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("master.memory_high"), "{e}");
        assert!(e.message.contains("above memory_max 2G"), "{e}");
        let e =
            resolve(&CONFIG.replace("tasks_max = \"infinity\"", "tasks_max = true")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("workers[0].tasks_max"), "{e}");
    }

    #[test]
    fn a_name_that_cannot_be_a_slice_is_refused() {
        for bad in ["a--b", "app-"] {
            let e = resolve(&CONFIG.replace("\"app\"", &format!("\"{bad}\""))).unwrap_err();
            assert_eq!(e.key.as_deref(), Some("deployment.name"), "{e}");
            assert!(e.message.contains("nesting"), "{e}");
        }
        let d = resolve(&CONFIG.replace("\"app\"", "\"matrix-synapse\"")).unwrap();
        assert_eq!(d.slice, "matrix-synapse.slice");
    }
}
