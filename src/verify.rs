//! `mesh verify`: prove that traffic crosses clusters.
//!
//! For every app with a `verify` path, from the client pod (the `[verify]
//! client` app) in every cluster the client is placed on, one exec (kube-rs,
//! websocket) runs a shell loop of N `curl` requests to the app's Service
//! through the mesh. The `version: <v>` each response names is counted per
//! cluster. Verify passes only if every version the plan places anywhere is
//! reached from every cluster: a v1 in east and a v2 in west must both
//! answer from both clusters, which they do only across the east-west
//! gateways.
//!
//! It also reports each remote secret as istiod itself sees it, as
//! `istioctl remote-clusters` does: the secret must be in the target
//! cluster with the content mesh installed (`missing` or `changed`
//! otherwise, `not installed` when mesh has no record of it), and the
//! target's istiod must list the source cluster in its debug endpoint
//! (`/debug/clusterz`, through the API server's pod proxy) as `synced`
//! (else its own word: `syncing`, `timeout`; or `not seen by istiod`).
//!
//! Right after a build istiod may not have synced the remote endpoints
//! yet, so verify polls: it checks every [`POLL`] until everything passes
//! or its deadline (`--wait`) has passed, saying on stderr what it still
//! waits for, and reports the last round.

use crate::access::{Access, Target};
use crate::cache::{Cache, Load};
use crate::exec;
use crate::graph::{Graph, ProbeError, TaskError};
use crate::k8s::ClusterView;
use crate::kinds;
use crate::plan::{Plan, Selector};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// How often verify checks again while it waits.
pub const POLL: Duration = Duration::from_secs(2);

#[derive(Debug, Serialize)]
pub struct AppResult {
    pub app: String,
    pub url: String,
    pub expected: BTreeSet<String>,
    /// cluster → version → responses
    pub reached: BTreeMap<String, BTreeMap<String, u32>>,
    /// cluster → versions not reached
    pub missing: BTreeMap<String, Vec<String>>,
    /// cluster → what went wrong before any response
    pub errors: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
pub struct SecretResult {
    pub from: String,
    pub to: String,
    pub status: String,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub passed: bool,
    /// Rounds of checks made, and how long verify waited for the last.
    pub rounds: u32,
    pub waited_ms: u64,
    pub requests: u32,
    pub apps: Vec<AppResult>,
    pub remote_secrets: Vec<SecretResult>,
}

/// A cluster's credentials: from the cache (kind: what `cluster:<c>`
/// recorded) or the user's kubeconfig (existing clusters).
pub(crate) fn access(plan: &Plan, cache: &Cache, cluster: &str) -> Result<Access, String> {
    let recorded = |file: &str| -> Result<String, TaskError> {
        let bytes =
            exec::recorded_file(cache, &kinds::cluster::id(cluster), file).ok_or_else(|| {
                TaskError::new(format!(
                    "cluster {cluster} has no {file} recorded (run mesh build)"
                ))
            })?;
        String::from_utf8(bytes).map_err(|_| TaskError::new(format!("{file} is not UTF-8")))
    };
    Target::of(&plan.clusters[cluster])
        .access(&recorded)
        .map_err(|e| e.to_string())
}

/// The first Service of an app's manifest: (name, port).
fn service_of(plan: &Plan, manifest: &str) -> Option<(String, u64)> {
    let docs = crate::yaml::yaml_docs(&plan.file(manifest).text).ok()?;
    docs.iter()
        .find(|d| d.value["kind"] == "Service")
        .and_then(|d| {
            Some((
                d.value.pointer("/metadata/name")?.as_str()?.to_string(),
                d.value.pointer("/spec/ports/0/port")?.as_u64()?,
            ))
        })
}

fn versions_of(plan: &Plan, manifest: &str, sel: &Selector) -> BTreeSet<String> {
    match sel {
        Selector::Versions(v) => v.iter().cloned().collect(),
        Selector::All(_) => {
            crate::plan::manifest_versions(&plan.file(manifest).text).unwrap_or_default()
        }
    }
}

/// Parse `version: v1` (helloworld's answer) out of each response line.
pub fn count_versions(out: &str) -> BTreeMap<String, u32> {
    let mut m = BTreeMap::new();
    for line in out.lines() {
        if let Some(rest) = line.split("version: ").nth(1) {
            let v: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '-' || *c == '.')
                .collect();
            if !v.is_empty() {
                *m.entry(v).or_insert(0) += 1;
            }
        }
    }
    m
}

async fn requests_from(
    access: &Access,
    namespace: &str,
    client_app: &str,
    url: &str,
    n: u32,
) -> Result<String, String> {
    let client = access.client().await.map_err(|e| e.to_string())?;
    let script = format!("for i in $(seq 1 {n}); do curl -s -m 5 {url}; echo; done");
    crate::k8s::exec_sh(&client, namespace, client_app, &script).await
}

/// Check until everything passes or `wait` has passed; `progress` hears
/// each failed round that is followed by another, with the time waited.
pub async fn run(
    plan: &Plan,
    graph: &Graph,
    cache: &Cache,
    wait: Duration,
    mut progress: impl FnMut(&Report, Duration),
) -> Result<Report, String> {
    let start = Instant::now();
    let mut rounds = 0;
    loop {
        let mut r = check(plan, graph, cache).await?;
        rounds += 1;
        r.rounds = rounds;
        r.waited_ms = start.elapsed().as_millis() as u64;
        if r.passed || start.elapsed() + POLL > wait {
            return Ok(r);
        }
        progress(&r, start.elapsed());
        tokio::time::sleep(POLL).await;
    }
}

/// What a failed round still waits for, in one line.
pub fn pending(r: &Report) -> String {
    let mut parts = Vec::new();
    for a in &r.apps {
        for (c, m) in &a.missing {
            parts.push(format!("{} from {c}: no {}", a.app, m.join(", ")));
        }
    }
    for x in r.remote_secrets.iter().filter(|x| x.status != "synced") {
        parts.push(format!("{} -> {}: {}", x.from, x.to, x.status));
    }
    parts.join("; ")
}

/// One round of checks.
async fn check(plan: &Plan, graph: &Graph, cache: &Cache) -> Result<Report, String> {
    let client = plan.apps.get(&plan.verify.client).ok_or_else(|| {
        format!(
            "the plan has no app {:?} to send requests from ([verify] client)",
            plan.verify.client
        )
    })?;
    let n = plan.verify.requests;
    let mut apps = Vec::new();
    for app in plan.apps.values().filter(|a| a.verify.is_some()) {
        let path = app.verify.clone().unwrap_or_default();
        let (svc, port) = service_of(plan, &app.manifest).ok_or_else(|| {
            format!(
                "app {} has a verify path but its manifest has no Service with a port",
                app.name
            )
        })?;
        let url = format!("http://{svc}.{}:{port}{path}", app.namespace);
        let expected: BTreeSet<String> = app
            .placement
            .values()
            .flat_map(|s| versions_of(plan, &app.manifest, s))
            .collect();
        let mut jobs = Vec::new();
        for c in client.placement.keys() {
            let (url, ns, name, c) = (
                url.clone(),
                client.namespace.clone(),
                client.name.clone(),
                c.clone(),
            );
            let acc = access(plan, cache, &c);
            jobs.push(tokio::spawn(async move {
                let out = match acc {
                    Ok(acc) => requests_from(&acc, &ns, &name, &url, n).await,
                    Err(e) => Err(e),
                };
                (c, out)
            }));
        }
        let mut r = AppResult {
            app: app.name.clone(),
            url,
            expected: expected.clone(),
            reached: BTreeMap::new(),
            missing: BTreeMap::new(),
            errors: BTreeMap::new(),
        };
        for j in jobs {
            let (c, out) = j.await.map_err(|e| e.to_string())?;
            match out {
                Ok(out) => {
                    let counts = count_versions(&out);
                    let missing: Vec<String> = expected
                        .iter()
                        .filter(|v| !counts.contains_key(*v))
                        .cloned()
                        .collect();
                    if !missing.is_empty() {
                        r.missing.insert(c.clone(), missing);
                    }
                    r.reached.insert(c, counts);
                }
                Err(e) => {
                    r.missing
                        .insert(c.clone(), expected.iter().cloned().collect());
                    r.errors.insert(c, e);
                }
            }
        }
        apps.push(r);
    }

    let mut remote_secrets = Vec::new();
    // Each target cluster's istiod view, read once per round.
    let mut views: BTreeMap<String, Result<Vec<ClusterView>, String>> = BTreeMap::new();
    for &i in graph.topo() {
        let node = graph.node(i);
        let Some((from, to)) = kinds::remote_secret::parse_id(&node.id) else {
            continue;
        };
        let status = secret_status(plan, cache, &node.id, from, to, &mut views).await;
        remote_secrets.push(SecretResult {
            from: from.into(),
            to: to.into(),
            status,
        });
    }
    let passed = !apps.is_empty()
        && apps
            .iter()
            .all(|a| a.missing.is_empty() && a.errors.is_empty())
        && remote_secrets.iter().all(|s| s.status == "synced");
    Ok(Report {
        passed,
        rounds: 1,
        waited_ms: 0,
        requests: n,
        apps,
        remote_secrets,
    })
}

/// A remote secret's state: its objects in `to` as mesh installed them,
/// then `from` as `to`'s istiod sees it.
async fn secret_status(
    plan: &Plan,
    cache: &Cache,
    id: &str,
    from: &str,
    to: &str,
    views: &mut BTreeMap<String, Result<Vec<ClusterView>, String>>,
) -> String {
    if !matches!(cache.load(id), Load::Ok(_)) {
        return "not installed".into();
    }
    let Some(receipt) = exec::recorded_file(cache, id, kinds::step::RECEIPT)
        .and_then(|b| serde_json::from_slice::<kinds::step::Receipt>(&b).ok())
    else {
        return "no receipt".into();
    };
    let client = match access(plan, cache, to) {
        Ok(acc) => match acc.client().await {
            Ok(c) => c,
            Err(e) => return format!("unreachable ({e})"),
        },
        Err(e) => return format!("unreachable ({e})"),
    };
    match crate::k8s::probe(&client, &receipt.objects).await {
        Ok(()) => {}
        Err(ProbeError::Drift(e)) if e.ends_with("is gone") => return "missing".into(),
        Err(ProbeError::Drift(e)) => return format!("changed ({e})"),
        Err(ProbeError::Unreachable(e)) => return format!("unreachable ({e})"),
    }
    if !views.contains_key(to) {
        let view = crate::k8s::istiod_clusters(&client, "istio-system")
            .await
            .map_err(|e| e.to_string());
        views.insert(to.to_string(), view);
    }
    match &views[to] {
        Err(e) => format!("istiod unreadable ({e})"),
        Ok(v) => match v.iter().find(|c| c.id == from) {
            Some(c) => c.sync_status.clone(),
            None => "not seen by istiod".into(),
        },
    }
}

/// The human rendering.
pub fn text(r: &Report) -> String {
    let mut s = String::new();
    for a in &r.apps {
        s.push_str(&format!(
            "{} ({}), {} requests from each cluster:\n",
            a.app, a.url, r.requests
        ));
        for (c, counts) in &a.reached {
            let dist: Vec<String> = counts.iter().map(|(v, n)| format!("{v} {n}")).collect();
            let verdict = match a.missing.get(c) {
                None => "ok".to_string(),
                Some(m) => format!("MISSING {}", m.join(", ")),
            };
            s.push_str(&format!(
                "  from {c:<12} {:<30} {verdict}\n",
                if dist.is_empty() {
                    "no answer".into()
                } else {
                    dist.join(", ")
                }
            ));
        }
        for (c, e) in &a.errors {
            s.push_str(&format!("  from {c:<12} FAILED: {e}\n"));
        }
    }
    if !r.remote_secrets.is_empty() {
        s.push_str("remote secrets:\n");
        for x in &r.remote_secrets {
            s.push_str(&format!("  {} -> {:<12} {}\n", x.from, x.to, x.status));
        }
    }
    s.push_str(if r.passed {
        "verify: passed\n"
    } else {
        "verify: FAILED\n"
    });
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_helloworld_answers() {
        let out = "Hello version: v1, instance: helloworld-v1-abc\n\nHello version: v2, instance: x\nHello version: v1, instance: y\ncurl: (28) timeout\n";
        let m = super::count_versions(out);
        assert_eq!(m["v1"], 2);
        assert_eq!(m["v2"], 1);
        assert_eq!(m.len(), 2);
    }
}
