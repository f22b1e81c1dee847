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
//!   and the plan's context. Seen from inside and outside alike. Files it
//!   names (`certificate-authority`, `client-certificate`, `client-key`,
//!   `tokenFile`; relative to the kubeconfig's directory) are read in and
//!   inlined as data, so the copy tools get in a temp file still works, and
//!   the CA reaches the remote secrets other clusters read.

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
    /// An existing cluster's API server as the other clusters reach it,
    /// when its kubeconfig's address is only this machine's.
    pub api_server: Option<String>,
}

/// Reads a file `cluster:<c>` recorded (`KUBECONFIG` or
/// `KUBECONFIG_INTERNAL`).
pub type Recorded<'a> = &'a dyn Fn(&str) -> Result<String, TaskError>;

/// Credentials for one cluster. Never printed.
pub struct Access {
    /// The cluster's name in the plan (for errors and `-v`).
    cluster: String,
    kubeconfig: String,
    context: Option<String>,
}

impl Access {
    pub async fn client(&self) -> Result<k8s::Conn, TaskError> {
        Ok(k8s::connect(&self.kubeconfig, self.context.as_deref(), &self.cluster).await?)
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

/// The kubeconfig the plan names, else the user's: every file of
/// `$KUBECONFIG` that exists, merged as kubectl merges them (else
/// `~/.kube/config`).
fn user_kubeconfig(path: Option<&str>) -> Result<String, TaskError> {
    if let Some(p) = path {
        return read_kubeconfig(&PathBuf::from(p));
    }
    let files: Vec<PathBuf> = crate::providers::kubeconfig::paths()
        .into_iter()
        .filter(|p| p.exists())
        .collect();
    match files.as_slice() {
        [] => read_kubeconfig(&crate::providers::kubeconfig::path_for_merge()),
        [one] => read_kubeconfig(one),
        many => merge_kubeconfigs(many),
    }
}

/// One kubeconfig file, with the files it names read in.
fn read_kubeconfig(path: &std::path::Path) -> Result<String, TaskError> {
    let text = crate::cache::read_input_text(path)
        .map_err(|e| TaskError::new(format!("cannot read kubeconfig {}: {e}", path.display())))?;
    inline_files(&text, path)
}

/// Several kubeconfig files as one, by kubectl's rules: the first file that
/// names a cluster, user or context wins it, and the first current context
/// set is the current one. JSON out; a file that is not YAML is named, its
/// text never quoted (it holds keys).
fn merge_kubeconfigs(files: &[PathBuf]) -> Result<String, TaskError> {
    use serde_json::{Value, json};
    let mut merged = json!({"apiVersion": "v1", "kind": "Config",
                            "clusters": [], "users": [], "contexts": []});
    let mut current: Option<String> = None;
    for path in files {
        let kc: Value = serde_saphyr::from_str(&read_kubeconfig(path)?).map_err(|_| {
            TaskError::new(format!(
                "kubeconfig {} is not YAML (run `kubectl config view --kubeconfig {0}` to see where)",
                path.display()
            ))
        })?;
        for section in ["clusters", "users", "contexts"] {
            for entry in kc[section].as_array().into_iter().flatten() {
                let list = merged[section].as_array_mut().expect("made as an array");
                if !list.iter().any(|e| e["name"] == entry["name"]) {
                    list.push(entry.clone());
                }
            }
        }
        if current.is_none() {
            current = kc["current-context"]
                .as_str()
                .filter(|c| !c.is_empty())
                .map(str::to_string);
        }
    }
    merged["current-context"] = json!(current.unwrap_or_default());
    Ok(merged.to_string())
}

/// A kubeconfig with every file it names read in as data (base64), paths
/// relative to the kubeconfig's directory; unchanged when it names none.
/// The result is JSON, which every kubeconfig reader takes.
pub fn inline_files(text: &str, path: &std::path::Path) -> Result<String, TaskError> {
    use base64::Engine;
    // (section, item key, file key, data key, base64?)
    const FILES: &[(&str, &str, &str, &str, bool)] = &[
        (
            "clusters",
            "cluster",
            "certificate-authority",
            "certificate-authority-data",
            true,
        ),
        (
            "users",
            "user",
            "client-certificate",
            "client-certificate-data",
            true,
        ),
        ("users", "user", "client-key", "client-key-data", true),
        ("users", "user", "tokenFile", "token", false),
    ];
    let names_a_file = FILES.iter().any(|f| text.contains(f.2));
    if !names_a_file {
        return Ok(text.to_string());
    }
    let mut kc: serde_json::Value = serde_saphyr::from_str(text).map_err(|_| {
        // The parser's message may quote the text, and a kubeconfig holds
        // keys and tokens: say only which file.
        TaskError::new(format!(
            "kubeconfig {} is not YAML (run `kubectl config view --kubeconfig {0}` to see where)",
            path.display()
        ))
    })?;
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    let mut changed = false;
    for (section, item, file_key, data_key, b64) in FILES {
        let Some(entries) = kc.get_mut(*section).and_then(|v| v.as_array_mut()) else {
            continue;
        };
        for entry in entries {
            let Some(body) = entry.get_mut(*item).and_then(|v| v.as_object_mut()) else {
                continue;
            };
            let Some(file) = body.get(*file_key).and_then(|v| v.as_str()) else {
                continue;
            };
            let full = dir.join(file);
            let bytes = crate::cache::read_input(&full).map_err(|e| {
                TaskError::new(format!(
                    "cannot read {file_key} {} named by kubeconfig {}: {e}",
                    full.display(),
                    path.display()
                ))
            })?;
            let data = if *b64 {
                base64::engine::general_purpose::STANDARD.encode(&bytes)
            } else {
                String::from_utf8_lossy(&bytes).trim().to_string()
            };
            body.remove(*file_key);
            body.insert(data_key.to_string(), serde_json::Value::String(data));
            changed = true;
        }
    }
    Ok(if changed {
        serde_json::to_string(&kc).expect("a kubeconfig serializes")
    } else {
        text.to_string()
    })
}

impl Target {
    pub fn of(c: &Cluster) -> Target {
        Target {
            name: c.name.clone(),
            provider: c.provider,
            context: c.context.clone(),
            kubeconfig: c.kubeconfig.clone(),
            api_server: c.api_server.clone(),
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
                cluster: self.name.clone(),
                kubeconfig: recorded(file)?,
                context: None,
            }),
            Provider::Kubeconfig => Ok(Access {
                cluster: self.name.clone(),
                kubeconfig: self.kubeconfig_text()?,
                context: self.context.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn kubeconfig_files_merge_as_kubectl_merges_them() {
        let d = tempfile::tempdir().unwrap();
        let one = d.path().join("one");
        let two = d.path().join("two");
        std::fs::write(&one, "apiVersion: v1\nkind: Config\ncurrent-context: a\nclusters:\n- name: a\n  cluster: {server: https://one:6443}\nusers:\n- name: a\n  user: {token: t1}\ncontexts:\n- name: a\n  context: {cluster: a, user: a}\n").unwrap();
        std::fs::write(&two, "{\"apiVersion\": \"v1\", \"kind\": \"Config\", \"current-context\": \"b\", \"clusters\": [{\"name\": \"a\", \"cluster\": {\"server\": \"https://shadowed:6443\"}}, {\"name\": \"b\", \"cluster\": {\"server\": \"https://two:6443\"}}], \"users\": [{\"name\": \"b\", \"user\": {\"token\": \"t2\"}}], \"contexts\": [{\"name\": \"b\", \"context\": {\"cluster\": \"b\", \"user\": \"b\"}}]}").unwrap();
        let kc = super::merge_kubeconfigs(&[one, two]).unwrap();
        // A context only the second file has is found…
        let (server, _) = crate::k8s::server_and_ca(&kc, Some("b")).unwrap();
        assert_eq!(server, "https://two:6443");
        // …the first file wins a name both have, and its current context.
        let (server, _) = crate::k8s::server_and_ca(&kc, None).unwrap();
        assert_eq!(server, "https://one:6443");
        let err = crate::k8s::server_and_ca(&kc, Some("c"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no context \"c\""), "{err}");
    }

    use super::*;

    #[test]
    fn files_a_kubeconfig_names_are_inlined_relative_to_it() {
        use base64::Engine;
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("pki")).unwrap();
        std::fs::write(d.path().join("pki/ca.crt"), "CA PEM\n").unwrap();
        std::fs::write(d.path().join("pki/c.crt"), "CERT PEM\n").unwrap();
        std::fs::write(d.path().join("pki/c.key"), "KEY PEM\n").unwrap();
        std::fs::write(d.path().join("token"), "tok\n").unwrap();
        let text = "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://api.example.com:6443\n    certificate-authority: pki/ca.crt\nusers:\n- name: u\n  user:\n    client-certificate: pki/c.crt\n    client-key: pki/c.key\n    tokenFile: token\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\n";
        let path = d.path().join("config");
        let inlined = inline_files(text, &path).unwrap();
        let (server, ca) = k8s::server_and_ca(&inlined, None).unwrap();
        assert_eq!(server, "https://api.example.com:6443");
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        assert_eq!(ca.as_deref(), Some(b64("CA PEM\n").as_str()));
        let v: serde_json::Value = serde_json::from_str(&inlined).unwrap();
        let user = &v["users"][0]["user"];
        assert_eq!(user["client-certificate-data"], b64("CERT PEM\n"));
        assert_eq!(user["client-key-data"], b64("KEY PEM\n"));
        assert_eq!(user["token"], "tok");
        assert!(user.get("client-key").is_none() && user.get("tokenFile").is_none());
        // A file that is not there: named, with the kubeconfig.
        std::fs::remove_file(d.path().join("pki/c.key")).unwrap();
        let e = inline_files(text, &path).unwrap_err().to_string();
        assert!(e.contains("client-key") && e.contains("pki/c.key"), "{e}");
        // Not YAML: the error names the file and quotes nothing of it.
        let secret = "client-key: pki/c.key\nclient-key-data: SECRETKEYBYTES\n  : [";
        let e = inline_files(secret, &path).unwrap_err().to_string();
        assert!(
            e.contains("is not YAML") && !e.contains("SECRETKEYBYTES"),
            "{e}"
        );
        // Nothing named: the text as it was.
        let plain = "apiVersion: v1\nclusters: []\n";
        assert_eq!(inline_files(plain, &path).unwrap(), plain);
    }
}
