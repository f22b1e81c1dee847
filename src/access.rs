//! Cluster access: how mesh reaches one cluster's API, for build, verify,
//! destroy and doctor alike.
//!
//! A [`Target`] is a cluster as the plan names it. Resolving it gives an
//! [`Access`]: a kubeconfig and a context, held in memory, never printed.
//! Where the kubeconfig comes from depends on the provider:
//!
//! - `kind`: mesh made the cluster, and `cluster:<c>` recorded two
//!   kubeconfigs as secret outputs, `kubeconfig` (as this machine reaches
//!   the cluster) and `kubeconfig-internal` (as the other clusters reach it:
//!   the control-plane container's address). The caller says how to read a
//!   recorded file ([`Recorded`]): during a build from the dependency files,
//!   in verify from the cache;
//! - `kubeconfig`: an existing cluster; the user's kubeconfig (the plan's
//!   `kubeconfig`, else `$KUBECONFIG`'s first file, else `~/.kube/config`)
//!   and the plan's context. Seen from inside and outside alike.

use crate::graph::TaskError;
use crate::k8s;
use crate::plan::{Cluster, Provider};
use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;

/// The recorded external kubeconfig of a kind cluster.
pub const KUBECONFIG: &str = "kubeconfig";
/// The recorded internal kubeconfig of a kind cluster.
pub const KUBECONFIG_INTERNAL: &str = "kubeconfig-internal";

/// A cluster as live tasks reach it.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    pub name: String,
    pub provider: Provider,
    pub context: Option<String>,
    pub kubeconfig: Option<String>,
}

/// Reads a file `cluster:<c>` recorded (`KUBECONFIG` or
/// `KUBECONFIG_INTERNAL`).
pub type Recorded<'a> = &'a dyn Fn(&str) -> Result<String, TaskError>;

/// Credentials for one cluster. Never printed.
pub struct Access {
    kubeconfig: String,
    context: Option<String>,
}

impl Access {
    pub async fn client(&self) -> Result<kube::Client, TaskError> {
        Ok(k8s::connect(&self.kubeconfig, self.context.as_deref()).await?)
    }

    /// The kubeconfig in a 0600 temp file, for tools.
    pub fn file(&self) -> Result<tempfile::NamedTempFile, TaskError> {
        let mut f = tempfile::Builder::new()
            .prefix("mesh-kubeconfig-")
            .tempfile()
            .map_err(|e| TaskError::new(format!("cannot write a temp kubeconfig: {e}")))?;
        f.write_all(self.kubeconfig.as_bytes())
            .map_err(|e| TaskError::new(format!("cannot write a temp kubeconfig: {e}")))?;
        Ok(f)
    }

    pub fn context(&self) -> Option<&str> {
        self.context.as_deref()
    }

    pub fn server_and_ca(&self) -> Result<(String, Option<String>), TaskError> {
        Ok(k8s::server_and_ca(
            &self.kubeconfig,
            self.context.as_deref(),
        )?)
    }
}

fn user_kubeconfig(path: Option<&str>) -> Result<String, TaskError> {
    let path = match path {
        Some(p) => PathBuf::from(p),
        None => match std::env::var_os("KUBECONFIG") {
            Some(k) => std::env::split_paths(&k)
                .next()
                .ok_or_else(|| TaskError::new("KUBECONFIG is empty"))?,
            None => {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".kube/config")
            }
        },
    };
    std::fs::read_to_string(&path)
        .map_err(|e| TaskError::new(format!("cannot read kubeconfig {}: {e}", path.display())))
}

impl Target {
    pub fn of(c: &Cluster) -> Target {
        Target {
            name: c.name.clone(),
            provider: c.provider,
            context: c.context.clone(),
            kubeconfig: c.kubeconfig.clone(),
        }
    }

    /// The user's kubeconfig for an existing cluster.
    pub fn kubeconfig_text(&self) -> Result<String, TaskError> {
        user_kubeconfig(self.kubeconfig.as_deref())
    }

    /// Credentials as seen from this machine.
    pub fn access(&self, recorded: Recorded) -> Result<Access, TaskError> {
        self.resolve(recorded, KUBECONFIG)
    }

    /// Credentials as seen from the other clusters.
    pub fn internal(&self, recorded: Recorded) -> Result<Access, TaskError> {
        self.resolve(recorded, KUBECONFIG_INTERNAL)
    }

    fn resolve(&self, recorded: Recorded, file: &str) -> Result<Access, TaskError> {
        match self.provider {
            Provider::Kind => Ok(Access {
                kubeconfig: recorded(file)?,
                context: None,
            }),
            Provider::Kubeconfig => Ok(Access {
                kubeconfig: self.kubeconfig_text()?,
                context: self.context.clone(),
            }),
        }
    }
}
