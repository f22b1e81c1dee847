//! Helm steps of a live task: the values handed to helm (parsed and
//! checked here), a release left `pending-*` finished first, the upgrade,
//! and the revision helm recorded (read back from its release Secrets, so
//! probes spawn no tool).

use super::step::{Src, temp_file};
use crate::access::Access;
use crate::graph::{Ctx, ProbeError, TaskError};
use crate::hash::Digest;
use crate::k8s;
use crate::providers::helm;

pub(crate) fn release_key(r: &helm::Release) -> String {
    format!("{}/{}", r.namespace, r.name)
}

/// Values YAML as JSON (what `helm get values -o json` prints back). An
/// empty file is no values; YAML that does not parse, or that is not a
/// mapping, is an error naming `what` and the place (never quoting the
/// text: values may hold credentials).
pub fn values_json(yaml: &str, what: &str) -> Result<serde_json::Value, TaskError> {
    let v: serde_json::Value = serde_saphyr::from_str(yaml).map_err(|e| {
        let place = e
            .to_string()
            .split_once(" at line ")
            .map(|(_, at)| format!(" at line {}", at.split_whitespace().next().unwrap_or("?")))
            .unwrap_or_default();
        TaskError::tool(
            "helm",
            format!("the values of {what} are not valid YAML{place}"),
        )
    })?;
    match v {
        serde_json::Value::Null => Ok(serde_json::json!({})),
        v @ serde_json::Value::Object(_) => Ok(v),
        _ => Err(TaskError::tool(
            "helm",
            format!("the values of {what} are not a mapping of keys to values"),
        )),
    }
}

/// A Helm step of a task: release + its values.
#[derive(Clone, Debug)]
pub struct Chart {
    pub release: helm::Release,
    pub values: Option<Src>,
}

pub(crate) async fn install_charts(
    ctx: &Ctx,
    access: &Access,
    charts: &[Chart],
) -> Result<Vec<(helm::Release, Digest, u64)>, TaskError> {
    let kc = access.file()?;
    let mut done = Vec::new();
    for c in charts {
        let (file, digest) = match &c.values {
            Some(src) => {
                let text = src.read(ctx)?;
                let digest = Digest::of_bytes(text.as_bytes());
                // Helm reads YAML, and JSON is YAML: hand it the values as
                // parsed (and so validated) here.
                let what = format!("release {}/{}", c.release.namespace, c.release.name);
                let json = serde_json::to_string_pretty(&values_json(&text, &what)?)
                    .expect("values serialize");
                (Some(temp_file(&json, "mesh-values-")?), digest)
            }
            None => (None, Digest::of_bytes(b"")),
        };
        recover_pending(&c.release, access, kc.path()).await?;
        helm::upgrade(
            &c.release,
            file.as_ref().map(|f| f.path()),
            kc.path(),
            access.context(),
        )
        .await?;
        let client = access.client().await?;
        let revision =
            match k8s::release_record(&client, &c.release.namespace, &c.release.name).await? {
                Some((rev, _)) => rev,
                None => {
                    return Err(TaskError::tool(
                        "helm",
                        format!(
                            "installed {} but it keeps no release record",
                            c.release.name
                        ),
                    ));
                }
            };
        done.push((c.release.clone(), digest, revision));
    }
    Ok(done)
}

/// A release whose last operation never finished (`pending-*`: its helm
/// was killed hard) blocks every later upgrade ("another operation is in
/// progress"). Mesh owns it, so it finishes it the way helm documents: an
/// interrupted first install is uninstalled, an interrupted upgrade or
/// rollback is rolled back to the last deployed revision. Then the upgrade
/// proceeds as usual.
async fn recover_pending(
    r: &helm::Release,
    access: &Access,
    kubeconfig: &std::path::Path,
) -> Result<(), TaskError> {
    let client = access.client().await?;
    let state = k8s::release_record(&client, &r.namespace, &r.name).await?;
    match state {
        Some((_, status)) if status == "pending-install" => {
            helm::uninstall(r, kubeconfig, access.context()).await?
        }
        Some((_, status)) if status.starts_with("pending-") => {
            helm::rollback(r, kubeconfig, access.context()).await?
        }
        _ => {}
    }
    Ok(())
}

/// A release's latest revision and status (see [`k8s::release_state`]).
pub(crate) async fn release_state(
    client: &k8s::Conn,
    r: &helm::Release,
) -> Result<Option<(u64, String)>, ProbeError> {
    k8s::release_state(client, &r.namespace, &r.name).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_that_do_not_parse_are_an_error_that_quotes_nothing() {
        assert_eq!(values_json("", "r").unwrap(), serde_json::json!({}));
        assert_eq!(
            values_json("a: 1\n", "r").unwrap(),
            serde_json::json!({"a": 1})
        );
        let e = values_json(
            "token: s3cr3t\nkey: [unclosed\n",
            "release istio-system/istiod",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("release istio-system/istiod"), "{e}");
        assert!(e.contains("not valid YAML"), "{e}");
        assert!(!e.contains("s3cr3t") && !e.contains("unclosed"), "{e}");
        assert!(values_json("- a\n- b\n", "r").is_err());
    }
}
