//! The operator's grants, `STATE_DIR/authorization.toml`: which framework principals may run on
//! the cluster, under which role, weight, priority and guarantee, and as which Unix users their
//! tasks may run (see [`bramble_master_core::authz`]). Without the file the cluster is open:
//! frameworks' claims stand. Read when the master starts.
//!
//! ```toml
//! [frameworks.pi]                 # principal framework-pi (client name pi)
//! role = "science"
//! weight = 2.0
//! priority = 1
//! guarantee = { cpu_millis = 1000, mem_mib = 256, disk_mib = 0 }
//! run_as = ["sensors"]            # besides the agent's default task user
//!
//! [frameworks."bramble-run-*"]    # every `bramble run` (an operator's)
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use agent_nostd_core::Resources;
use bramble_master_core::authz::{Authorization, Grant};
use serde::Deserialize;

/// The grants file's name in the state directory.
pub const FILE_NAME: &str = "authorization.toml";

/// Why the grants file could not be taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GrantsError {
    /// It could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It is not a grants file.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the field.
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    frameworks: BTreeMap<String, GrantFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantFile {
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    weight: Option<f64>,
    #[serde(default)]
    priority: Option<u32>,
    #[serde(default)]
    guarantee: Option<Resources>,
    #[serde(default)]
    run_as: Vec<String>,
}

/// The grants in `state_dir`, or `None` when there is no grants file (an open cluster).
pub fn load(state_dir: &Path) -> Result<Option<Authorization>, GrantsError> {
    let path = state_dir.join(FILE_NAME);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(GrantsError::Io { path, source }),
    };
    parse(&text, &path).map(Some)
}

/// The grants `text` (the file at `path`) holds.
pub fn parse(text: &str, path: &Path) -> Result<Authorization, GrantsError> {
    let invalid = |message: String| GrantsError::Invalid {
        path: path.to_owned(),
        message,
    };
    let file: File =
        toml::from_str(text).map_err(|e| invalid(e.to_string().trim_end().replace('\n', " ")))?;
    let mut authorization = Authorization::new();
    for (name, g) in file.frameworks {
        let defaults = Grant::default();
        let weight = g.weight.unwrap_or(defaults.weight);
        if !(weight.is_finite() && weight > 0.0 && weight <= bramble_proto::MAX_WEIGHT) {
            return Err(invalid(format!(
                "frameworks.{name}.weight: must be above 0 and at most {}",
                bramble_proto::MAX_WEIGHT
            )));
        }
        authorization.grant(
            name,
            Grant {
                role: g.role.unwrap_or(defaults.role),
                weight,
                priority: g.priority.unwrap_or(defaults.priority),
                guarantee: g.guarantee,
                run_as: g.run_as,
            },
        );
    }
    Ok(authorization)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grants_file_names_each_principal_with_its_role_weight_guarantee_and_users() {
        let text = r#"
            [frameworks.pi]
            role = "science"
            weight = 2.0
            priority = 1
            guarantee = { cpu_millis = 1000, mem_mib = 256, disk_mib = 0 }
            run_as = ["sensors"]

            [frameworks."bramble-run-*"]
        "#;
        let a = parse(text, Path::new("authorization.toml")).unwrap();
        let pi = a.get("pi").unwrap();
        assert_eq!(
            (pi.role.as_str(), pi.weight, pi.priority),
            ("science", 2.0, 1)
        );
        assert_eq!(pi.guarantee, Some(Resources::new(1000, 256, 0)));
        assert_eq!(pi.run_as, ["sensors"]);
        let run = a
            .get("bramble-run-4242")
            .expect("the pattern grants every bramble run");
        assert_eq!(*run, Grant::default());
        assert!(a.get("wordcount").is_none(), "no grant: refused");
    }

    #[test]
    fn a_bad_grants_file_is_refused_naming_what_is_wrong() {
        for (text, needle) in [
            ("[frameworks.pi]\nweight = 0.0\n", "frameworks.pi.weight"),
            ("[frameworks.pi]\nwieght = 2.0\n", "wieght"),
            ("[frameworks.pi]\nrun_as = \"root\"\n", "run_as"),
        ] {
            let e = parse(text, Path::new("a.toml")).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn no_grants_file_is_an_open_cluster() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_none());
        std::fs::write(dir.path().join(FILE_NAME), "[frameworks.pi]\n").unwrap();
        assert!(load(dir.path()).unwrap().is_some());
    }
}
