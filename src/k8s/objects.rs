//! Particular objects: helm's release records, a Service's LoadBalancer
//! address, the reader service account's token, a Secret applied whole, a
//! Deployment's scale, the pods of a namespace, and a command run in an
//! app's pod.

use super::*;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{AttachParams, ListParams};
use tokio::io::AsyncReadExt;

/// A release's latest revision and its status, from the release Secrets
/// helm keeps in the release's namespace (`sh.helm.release.v1.<name>.v<n>`,
/// labelled owner=helm, name, status, version): the same state `helm
/// status` reads, without starting a process. For a probe: retried only
/// briefly, and an unanswered call is "unreachable".
pub async fn release_state(
    conn: &Conn,
    namespace: &str,
    release: &str,
) -> Result<Option<(u64, String)>, ProbeError> {
    // Every release of the namespace in one list, shared by the probes.
    let api: Api<Secret> = Api::namespaced(conn.client.clone(), namespace);
    let all = listed(conn, &api, "owner=helm")
        .await
        .map_err(|e| probe_error(&format!("release {namespace}/{release}"), &e))?;
    Ok(latest_of(all.iter(), release))
}

/// [`release_state`] for an action: retried for the whole retry budget.
pub async fn release_record(
    client: &Client,
    namespace: &str,
    release: &str,
) -> Result<Option<(u64, String)>, KubeError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let lp = ListParams::default().labels(&format!("owner=helm,name={release}"));
    let list = bounded_for(retry_budget(), || api.list_metadata(&lp))
        .await
        .map_err(|e| call_error(format!("cannot read release {namespace}/{release}"), e))?;
    Ok(latest_of(list.items.iter().map(|o| &o.metadata), release))
}

/// The highest revision of `release` among release Secrets' metadata (their
/// labels say name, version and status), and its status.
fn latest_of<'a>(
    metas: impl Iterator<Item = &'a kube::api::ObjectMeta>,
    release: &str,
) -> Option<(u64, String)> {
    metas
        .filter_map(|m| {
            let l = m.labels.as_ref()?;
            if l.get("owner").map(String::as_str) != Some("helm")
                || l.get("name").map(String::as_str) != Some(release)
            {
                return None;
            }
            Some((
                l.get("version")?.parse::<u64>().ok()?,
                l.get("status").cloned().unwrap_or_default(),
            ))
        })
        .max_by_key(|(v, _)| *v)
}

/// The LoadBalancer address a Service has now, if any.
pub async fn lb_ip(client: &Client, ns: &str, name: &str) -> Result<Option<String>, ProbeError> {
    let api: Api<Service> = Api::namespaced(client.clone(), ns);
    let svc = bounded_for(PROBE_RETRY_BUDGET, || api.get_opt(name))
        .await
        .map_err(|e| probe_error(&format!("Service {ns}/{name}"), &e))?;
    Ok(svc.and_then(|s| {
        s.status?
            .load_balancer?
            .ingress?
            .into_iter()
            .find_map(|i| i.ip)
    }))
}

/// A long-lived token of service account `sa` in `ns`: the token Secret
/// `secret` (type kubernetes.io/service-account-token) applied, then its
/// `token` key awaited (the token controller fills it). Never logged.
pub async fn reader_token(
    client: &Client,
    ns: &str,
    sa: &str,
    secret: &str,
    timeout: Duration,
) -> Result<String, KubeError> {
    use kube::api::ObjectMeta;
    let token_secret = Secret {
        metadata: ObjectMeta {
            name: Some(secret.into()),
            namespace: Some(ns.into()),
            annotations: Some(
                [(
                    "kubernetes.io/service-account.name".to_string(),
                    sa.to_string(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        type_: Some("kubernetes.io/service-account-token".into()),
        ..Default::default()
    };
    apply_secret(client, &token_secret).await?;
    let token = wait_secret_key(client, ns, secret, "token", timeout).await?;
    String::from_utf8(token)
        .map_err(|_| kerr(format!("Secret {ns}/{secret}"), "the token is not UTF-8"))
}

/// Server-side apply of a whole Secret (its namespace and name from its
/// metadata). The error names the Secret, never its data.
pub async fn apply_secret(client: &Client, secret: &Secret) -> Result<(), KubeError> {
    let ns = secret.metadata.namespace.clone().unwrap_or_default();
    let name = secret.metadata.name.clone().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let (pp, patch) = (
        PatchParams::apply(FIELD_MANAGER).force(),
        Patch::Apply(secret),
    );
    bounded(|| api.patch(&name, &pp, &patch))
        .await
        .map_err(|e| call_error(format!("cannot apply Secret {ns}/{name}"), e))?;
    Ok(())
}

/// `kubectl rollout restart`: stamp the Deployment's pod template with
/// the time (field manager `mesh-restart`, owning only that annotation),
/// then wait for the rollout. An absent Deployment is fine (`false`).
pub async fn restart_deployment(
    client: &Client,
    ns: &str,
    name: &str,
    timeout: Duration,
) -> Result<bool, KubeError> {
    use k8s_openapi::api::apps::v1::Deployment;
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let what = format!("Deployment {ns}/{name}");
    let found = bounded(|| api.get_opt(name))
        .await
        .map_err(|e| call_error(format!("cannot read {what}"), e))?;
    if found.is_none() {
        return Ok(false);
    }
    stamp(client, "Deployment", ns, name).await?;
    wait_deployment(client, ns, name, timeout).await?;
    Ok(true)
}

/// Stamp a workload's pod template with the time, as `kubectl rollout
/// restart` does: its controller replaces every pod.
async fn stamp(client: &Client, kind: &str, ns: &str, name: &str) -> Result<(), KubeError> {
    use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let patch = serde_json::json!({
        "apiVersion": "apps/v1", "kind": kind,
        "metadata": {"name": name, "namespace": ns},
        "spec": {"template": {"metadata": {"annotations": {
            "kubectl.kubernetes.io/restartedAt": now}}}},
    });
    let (pp, apply) = (
        PatchParams::apply("mesh-restart").force(),
        Patch::Apply(&patch),
    );
    let what = format!("cannot restart {kind} {ns}/{name}");
    if kind == "DaemonSet" {
        let api: Api<DaemonSet> = Api::namespaced(client.clone(), ns);
        bounded(|| api.patch(name, &pp, &apply))
            .await
            .map_err(|e| call_error(what, e))?;
    } else {
        let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
        bounded(|| api.patch(name, &pp, &apply))
            .await
            .map_err(|e| call_error(what, e))?;
    }
    Ok(())
}

/// Restart the Deployments and DaemonSets of namespace `ns` that `keep`
/// selects (by kind and name), all at once, then wait for every rollout;
/// the `Kind/name`s restarted. A namespace that does not exist (yet) has
/// none.
pub async fn restart_workloads(
    client: &Client,
    ns: &str,
    keep: impl Fn(&str, &str) -> bool,
    timeout: Duration,
) -> Result<Vec<String>, KubeError> {
    use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
    let lp = ListParams::default();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), ns);
    let names = |items: Vec<Option<String>>, kind: &str| -> Vec<(String, String)> {
        items
            .into_iter()
            .flatten()
            .filter(|n| keep(kind, n))
            .map(|n| (kind.to_string(), n))
            .collect()
    };
    let mut found = names(
        bounded(|| deployments.list(&lp))
            .await
            .map_err(|e| call_error(format!("cannot list Deployments in {ns}"), e))?
            .items
            .into_iter()
            .map(|d| d.metadata.name)
            .collect(),
        "Deployment",
    );
    found.extend(names(
        bounded(|| daemonsets.list(&lp))
            .await
            .map_err(|e| call_error(format!("cannot list DaemonSets in {ns}"), e))?
            .items
            .into_iter()
            .map(|d| d.metadata.name)
            .collect(),
        "DaemonSet",
    ));
    for (kind, name) in &found {
        stamp(client, kind, ns, name).await?;
    }
    for (kind, name) in &found {
        if kind == "DaemonSet" {
            wait_daemonset(client, ns, name, timeout).await?;
        } else {
            wait_deployment(client, ns, name, timeout).await?;
        }
    }
    Ok(found.into_iter().map(|(k, n)| format!("{k}/{n}")).collect())
}

/// A cluster as an istiod sees it: its `/debug/clusterz` entries, what
/// `istioctl remote-clusters` prints.
#[derive(Clone, Debug, serde::Deserialize, serde::Serialize, PartialEq, Eq)]
pub struct ClusterView {
    pub id: String,
    #[serde(rename = "secretName", default)]
    pub secret_name: String,
    #[serde(rename = "syncStatus", default)]
    pub sync_status: String,
}

/// The clusters the istiod in `ns` reads and how far it has synced each:
/// its debug endpoint (`:15014/debug/clusterz`) reached through the API
/// server's pod proxy, from the first running istiod pod.
pub async fn istiod_clusters(client: &Client, ns: &str) -> Result<Vec<ClusterView>, KubeError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().labels("app=istiod");
    let list = bounded(|| pods.list(&lp))
        .await
        .map_err(|e| call_error(format!("cannot list istiod pods in {ns}"), e))?;
    let pod = list
        .items
        .iter()
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .is_some_and(|ph| ph == "Running")
        })
        .find_map(|p| p.metadata.name.clone())
        .ok_or_else(|| kerr(format!("istiod in {ns}"), "no running istiod pod"))?;
    let path = format!("/api/v1/namespaces/{ns}/pods/{pod}:15014/proxy/debug/clusterz");
    let text = bounded(|| {
        let req = hyper::Request::get(&path)
            .body(Vec::new())
            .expect("a GET request builds");
        client.request_text(req)
    })
    .await
    .map_err(|e| call_error(format!("istiod {ns}/{pod} /debug/clusterz"), e))?;
    serde_json::from_str(&text).map_err(|e| {
        kerr(
            format!("istiod {ns}/{pod} /debug/clusterz"),
            format!("not the list of clusters expected: {e}"),
        )
    })
}

/// Run `sh -c script` in the first pod labelled `app=<app>` in `ns`;
/// return its stdout.
pub async fn exec_sh(client: &Client, ns: &str, app: &str, script: &str) -> Result<String, String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().labels(&format!("app={app}"));
    let list = bounded(|| pods.list(&lp))
        .await
        .map_err(|e| format!("cannot list pods: {e}"))?;
    let pod = list
        .items
        .iter()
        .find_map(|p| p.metadata.name.clone())
        .ok_or_else(|| format!("no {app} pod in namespace {ns}"))?;
    let mut proc = pods
        .exec(
            &pod,
            ["sh", "-c", script],
            &AttachParams::default()
                .stdin(false)
                .stdout(true)
                .stderr(false),
        )
        .await
        .map_err(|e| format!("cannot exec in {ns}/{pod}: {e}"))?;
    let mut out = String::new();
    if let Some(mut stdout) = proc.stdout() {
        stdout
            .read_to_string(&mut out)
            .await
            .map_err(|e| format!("exec output: {e}"))?;
    }
    let _ = proc.join().await;
    Ok(out)
}

/// A Deployment's desired replicas (`spec.replicas`, 1 when unset).
pub async fn deployment_replicas(client: &Client, ns: &str, name: &str) -> Result<i32, KubeError> {
    use k8s_openapi::api::apps::v1::Deployment;
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let d = bounded(|| api.get(name))
        .await
        .map_err(|e| call_error(format!("cannot read Deployment {ns}/{name}"), e))?;
    Ok(d.spec.and_then(|s| s.replicas).unwrap_or(1))
}

/// `kubectl scale`: set a Deployment's replicas through its `scale`
/// subresource (a merge patch, field manager `mesh-verify`).
pub async fn scale_deployment(
    client: &Client,
    ns: &str,
    name: &str,
    replicas: i32,
) -> Result<(), KubeError> {
    use k8s_openapi::api::apps::v1::Deployment;
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let patch = serde_json::json!({"spec": {"replicas": replicas}});
    let pp = PatchParams {
        field_manager: Some("mesh-verify".into()),
        ..PatchParams::default()
    };
    let merge = Patch::Merge(&patch);
    bounded(|| api.patch_scale(name, &pp, &merge))
        .await
        .map_err(|e| {
            call_error(
                format!("cannot scale Deployment {ns}/{name} to {replicas}"),
                e,
            )
        })?;
    Ok(())
}

/// The names of the pods in a namespace.
pub async fn pod_names(client: &Client, ns: &str) -> Result<Vec<String>, String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default();
    let list = bounded(|| pods.list(&lp))
        .await
        .map_err(|e| format!("cannot list pods in {ns}: {e}"))?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect())
}
