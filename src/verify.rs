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
//! An app with `locality = true` is held to what locality promises
//! instead: every answer is attributed to the cluster whose pod gave it
//! (the app's instance name is its pod's; one list of pods per cluster),
//! and from each cluster it runs in more than half of the requests must be
//! answered there. Cross-cluster reach is then what `--failover` proves:
//! for each app and each cluster it runs in, its Deployments there are
//! scaled to zero (the `scale` subresource, as `kubectl scale`), every
//! request from every cluster must be answered by the others, and once the
//! replicas are back every request is answered again; the distribution by
//! answering cluster is reported before, during and after. Ctrl-C during a
//! failover scales the replicas back before verify exits.
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
use crate::plan::{App, Plan, Selector};
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
    /// The app keeps traffic in the caller's locality (`locality = true`).
    pub locality: bool,
    /// cluster → version → responses
    pub reached: BTreeMap<String, BTreeMap<String, u32>>,
    /// cluster → cluster whose pod answered → responses
    pub answered_by: BTreeMap<String, BTreeMap<String, u32>>,
    /// With locality, for each cluster the app runs in: the share of its
    /// requests answered there.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub local_share: BTreeMap<String, f64>,
    /// cluster → versions not reached (with locality: no answer at all)
    pub missing: BTreeMap<String, Vec<String>>,
    /// With locality, cluster → how too little of its traffic stayed home.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub not_local: BTreeMap<String, String>,
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
    /// `--failover`: one entry per app and cluster taken down.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failover: Vec<Failover>,
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

fn versions_of(plan: &Plan, manifest: &str, sel: &Selector) -> BTreeSet<String> {
    match sel {
        Selector::Versions(v) => v.iter().cloned().collect(),
        Selector::All(_) => {
            crate::plan::manifest_versions(&plan.file(manifest).text).unwrap_or_default()
        }
    }
}

/// One answer of helloworld's kind: `Hello version: v1, instance: <pod>`,
/// as (version, instance); `None` for a line that is not one (curl's
/// error, an Envoy "upstream connect error", a blank line).
fn answer(line: &str) -> Option<(String, String)> {
    let word = |after: &str| -> Option<String> {
        let w: String = line
            .split(after)
            .nth(1)?
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '-' || *c == '.')
            .collect();
        (!w.is_empty()).then_some(w)
    };
    Some((word("version: ")?, word("instance: ").unwrap_or_default()))
}

/// Parse `version: v1` (helloworld's answer) out of each response line.
pub fn count_versions(out: &str) -> BTreeMap<String, u32> {
    let mut m = BTreeMap::new();
    for (v, _) in out.lines().filter_map(answer) {
        *m.entry(v).or_insert(0) += 1;
    }
    m
}

/// What one client cluster's requests got: answers per version and per
/// cluster that answered (its instance is one of that cluster's pods;
/// `?` when no cluster has it), and the requests nobody answered.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Tally {
    pub versions: BTreeMap<String, u32>,
    pub clusters: BTreeMap<String, u32>,
    pub unanswered: u32,
}

fn tally(out: &str, n: u32, owners: &BTreeMap<String, String>) -> Tally {
    let mut t = Tally::default();
    let mut answered = 0;
    for (v, instance) in out.lines().filter_map(answer) {
        answered += 1;
        *t.versions.entry(v).or_insert(0) += 1;
        let c = owners.get(&instance).cloned().unwrap_or_else(|| "?".into());
        *t.clusters.entry(c).or_insert(0) += 1;
    }
    t.unanswered = n.saturating_sub(answered);
    t
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

/// The app's URL inside the mesh: its Service and that Service's first port.
fn url_of(app: &App) -> Result<String, String> {
    let (svc, port) = app.service.clone().ok_or_else(|| {
        format!(
            "app {} has a verify path but its manifest has no Service with a port",
            app.name
        )
    })?;
    Ok(format!(
        "http://{svc}.{}:{port}{}",
        app.namespace,
        app.verify.clone().unwrap_or_default()
    ))
}

/// Which cluster each pod of the app's namespace runs in (pod names are
/// what the app answers as its instance), one list per cluster it is in.
async fn owners(plan: &Plan, cache: &Cache, app: &App) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for c in app.placement.keys() {
        let Ok(acc) = access(plan, cache, c) else {
            continue;
        };
        let Ok(client) = acc.client().await else {
            continue;
        };
        if let Ok(pods) = crate::k8s::pod_names(&client, &app.namespace).await {
            m.extend(pods.into_iter().map(|p| (p, c.clone())));
        }
    }
    m
}

/// One round of requests to `app` from the client pod in every cluster
/// the client runs in: cluster → its tally, or what went wrong first.
async fn round(
    plan: &Plan,
    cache: &Cache,
    app: &App,
) -> Result<BTreeMap<String, Result<Tally, String>>, String> {
    let client = client_app(plan)?;
    let url = url_of(app)?;
    let n = plan.verify.requests;
    let owners = owners(plan, cache, app).await;
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
    let mut m = BTreeMap::new();
    for j in jobs {
        let (c, out) = j.await.map_err(|e| e.to_string())?;
        m.insert(c, out.map(|o| tally(&o, n, &owners)));
    }
    Ok(m)
}

fn client_app(plan: &Plan) -> Result<&App, String> {
    plan.apps.get(&plan.verify.client).ok_or_else(|| {
        format!(
            "the plan has no app {:?} to send requests from ([verify] client)",
            plan.verify.client
        )
    })
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
        for (c, why) in &a.not_local {
            parts.push(format!("{} from {c}: {why}", a.app));
        }
    }
    for x in r.remote_secrets.iter().filter(|x| x.status != "synced") {
        parts.push(format!("{} -> {}: {}", x.from, x.to, x.status));
    }
    parts.join("; ")
}

/// One round of checks.
async fn check(plan: &Plan, graph: &Graph, cache: &Cache) -> Result<Report, String> {
    client_app(plan)?;
    let n = plan.verify.requests;
    let mut apps = Vec::new();
    for app in plan.apps.values().filter(|a| a.verify.is_some()) {
        let url = url_of(app)?;
        let expected: BTreeSet<String> = app
            .placement
            .values()
            .flat_map(|s| versions_of(plan, &app.manifest, s))
            .collect();
        let mut r = AppResult {
            app: app.name.clone(),
            url,
            expected: expected.clone(),
            locality: app.locality,
            reached: BTreeMap::new(),
            answered_by: BTreeMap::new(),
            local_share: BTreeMap::new(),
            missing: BTreeMap::new(),
            not_local: BTreeMap::new(),
            errors: BTreeMap::new(),
        };
        for (c, got) in round(plan, cache, app).await? {
            let t = match got {
                Ok(t) => t,
                Err(e) => {
                    r.missing
                        .insert(c.clone(), expected.iter().cloned().collect());
                    r.errors.insert(c, e);
                    continue;
                }
            };
            let answered: u32 = t.clusters.values().sum();
            if app.locality {
                // Locality keeps traffic home: what must hold is that most
                // of it stays there (where the app runs at all), and that
                // every cluster gets answers.
                if answered == 0 {
                    r.missing
                        .insert(c.clone(), expected.iter().cloned().collect());
                }
                if app.placement.contains_key(&c) {
                    let local = t.clusters.get(&c).copied().unwrap_or(0);
                    let share = f64::from(local) / f64::from(n.max(1));
                    r.local_share.insert(c.clone(), share);
                    if 2 * local <= n {
                        r.not_local.insert(
                            c.clone(),
                            format!(
                                "{local} of {n} answered in {c}: locality needs more than half"
                            ),
                        );
                    }
                }
            } else {
                let missing: Vec<String> = expected
                    .iter()
                    .filter(|v| !t.versions.contains_key(*v))
                    .cloned()
                    .collect();
                if !missing.is_empty() {
                    r.missing.insert(c.clone(), missing);
                }
            }
            r.answered_by.insert(c.clone(), t.clusters);
            r.reached.insert(c, t.versions);
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
            .all(|a| a.missing.is_empty() && a.errors.is_empty() && a.not_local.is_empty())
        && remote_secrets.iter().all(|s| s.status == "synced");
    Ok(Report {
        passed,
        rounds: 1,
        waited_ms: 0,
        requests: n,
        apps,
        remote_secrets,
        failover: Vec::new(),
    })
}

/// `--failover` for one app and one cluster it runs in: its Deployments
/// there scaled to zero, then back.
#[derive(Debug, Serialize)]
pub struct Failover {
    pub app: String,
    /// The cluster whose instances of the app were taken down.
    pub down: String,
    pub deployments: Vec<String>,
    /// Client cluster → what its requests got, before, while down, after.
    pub before: BTreeMap<String, Tally>,
    pub during: BTreeMap<String, Tally>,
    pub after: BTreeMap<String, Tally>,
    pub passed: bool,
    /// What failed, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// A round's tallies, or the first error of a client cluster.
fn tallies(
    got: BTreeMap<String, Result<Tally, String>>,
) -> Result<BTreeMap<String, Tally>, String> {
    got.into_iter()
        .map(|(c, t)| {
            t.map(|t| (c.clone(), t))
                .map_err(|e| format!("from {c}: {e}"))
        })
        .collect()
}

/// Poll rounds until `ok` holds or `wait` has passed; the last round.
async fn until(
    plan: &Plan,
    cache: &Cache,
    app: &App,
    wait: Duration,
    ok: impl Fn(&BTreeMap<String, Tally>) -> Result<(), String>,
) -> (BTreeMap<String, Tally>, Option<String>) {
    let start = Instant::now();
    loop {
        let (t, problem) = match round(plan, cache, app).await.and_then(tallies) {
            Ok(t) => {
                let p = ok(&t).err();
                (t, p)
            }
            Err(e) => (BTreeMap::new(), Some(e)),
        };
        if problem.is_none() || start.elapsed() + POLL > wait {
            return (t, problem);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The Deployments `app:<app>:<c>` applied, as its receipt lists them.
fn deployments_of(cache: &Cache, app: &str, c: &str) -> Vec<(String, String)> {
    exec::recorded_file(cache, &kinds::app::id(app, c), kinds::step::RECEIPT)
        .and_then(|b| serde_json::from_slice::<kinds::step::Receipt>(&b).ok())
        .map(|r| {
            r.objects
                .into_iter()
                .filter(|o| o.kind == "Deployment")
                .map(|o| (o.namespace.unwrap_or_else(|| "default".into()), o.name))
                .collect()
        })
        .unwrap_or_default()
}

/// Scale each Deployment to its count, then wait for the rollouts.
async fn scale_all(
    client: &kube::Client,
    to: &[(String, String, i32)],
    wait: Duration,
) -> Result<(), String> {
    for (ns, name, n) in to {
        crate::k8s::scale_deployment(client, ns, name, *n)
            .await
            .map_err(|e| e.to_string())?;
    }
    for (ns, name, _) in to {
        crate::k8s::wait_deployment(client, ns, name, wait)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// `mesh verify --failover`: for each app with a verify path and each
/// cluster it runs in, scale the app's Deployments there to zero, check
/// that every request from every client cluster is answered by the other
/// clusters, scale them back to what they were, and check that every
/// request is answered again (by that cluster too, if it answered
/// before). `stop` completing (Ctrl-C) restores the replicas before
/// returning: verify never leaves an app scaled down.
pub async fn failover(
    plan: &Plan,
    cache: &Cache,
    wait: Duration,
    stop: impl std::future::Future<Output = ()>,
) -> Result<Vec<Failover>, String> {
    let mut stop = std::pin::pin!(stop);
    let mut results = Vec::new();
    for app in plan.apps.values().filter(|a| a.verify.is_some()) {
        for down in app.placement.keys() {
            let deployments = deployments_of(cache, &app.name, down);
            if deployments.is_empty() {
                continue;
            }
            let client = access(plan, cache, down)?
                .client()
                .await
                .map_err(|e| e.to_string())?;
            let mut saved = Vec::new();
            for (ns, name) in &deployments {
                let n = crate::k8s::deployment_replicas(&client, ns, name)
                    .await
                    .map_err(|e| e.to_string())?;
                saved.push((ns.clone(), name.clone(), n));
            }
            let zero: Vec<_> = saved
                .iter()
                .map(|(ns, n, _)| (ns.clone(), n.clone(), 0))
                .collect();
            let others = app.placement.keys().any(|c| c != down);
            let all_answered = |t: &BTreeMap<String, Tally>| -> Result<(), String> {
                match t.iter().find(|(_, t)| t.unanswered > 0) {
                    Some((c, t)) => Err(format!("{} requests from {c} unanswered", t.unanswered)),
                    None => Ok(()),
                }
            };
            // Ctrl-C is heard in every phase: before the scale-down nothing
            // is to undo; from it on, the replicas are restored first.
            let scaled_back = || {
                format!(
                    "interrupted: {} in {down} scaled back to {}",
                    app.name,
                    saved
                        .iter()
                        .map(|(_, n, r)| format!("{n}={r}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            let (before, _) = tokio::select! {
                r = until(plan, cache, app, Duration::ZERO, all_answered) => r,
                _ = &mut stop => return Err("interrupted: nothing was scaled".into()),
            };
            let answered_before = before.values().any(|t| t.clusters.contains_key(down));
            // Down, checked, and back up; Ctrl-C skips to the restore.
            let trial = async {
                scale_all(&client, &zero, wait).await?;
                let (during, problem) = until(plan, cache, app, wait, |t| {
                    all_answered(t)?;
                    // An answer that names no pod cannot show where it
                    // came from: the check would pass whatever answered.
                    if let Some((c, t)) = t.iter().find(|(_, t)| t.clusters.contains_key("?")) {
                        return Err(format!(
                            "{} answers from {c} name no pod of any cluster (instance: <pod>), so which cluster answered is unknown",
                            t.clusters["?"]
                        ));
                    }
                    match t.iter().find(|(_, t)| t.clusters.contains_key(down)) {
                        Some((c, _)) => Err(format!("{c} still reached {down}")),
                        None => Ok(()),
                    }
                })
                .await;
                Ok::<_, String>((during, problem))
            };
            let outcome = tokio::select! {
                r = trial => Some(r),
                _ = &mut stop => None,
            };
            let restored = scale_all(&client, &saved, wait).await;
            let Some(outcome) = outcome else {
                restored?;
                return Err(scaled_back());
            };
            let (during, mut problem) = match outcome {
                Ok(x) => x,
                Err(e) => (BTreeMap::new(), Some(e)),
            };
            if !others {
                problem = Some(format!(
                    "{} runs only in {down}: nothing to fail over to",
                    app.name
                ));
            }
            let (after, after_problem) = match restored {
                Err(e) => (BTreeMap::new(), Some(format!("restoring: {e}"))),
                Ok(()) => {
                    let back = until(plan, cache, app, wait, |t| {
                        all_answered(t)?;
                        if answered_before && !t.values().any(|t| t.clusters.contains_key(down)) {
                            return Err(format!("{down} does not answer again"));
                        }
                        Ok(())
                    });
                    tokio::select! {
                        r = back => r,
                        _ = &mut stop => return Err(scaled_back()),
                    }
                }
            };
            let problem = problem
                .map(|p| format!("while {down} was down: {p}"))
                .or(after_problem.map(|p| format!("after {down} came back: {p}")));
            results.push(Failover {
                app: app.name.clone(),
                down: down.clone(),
                deployments: deployments.into_iter().map(|(_, n)| n).collect(),
                before,
                during,
                after,
                passed: problem.is_none(),
                problem,
            });
        }
    }
    Ok(results)
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

/// `east 12, west 8`, or `none`.
fn dist(m: &BTreeMap<String, u32>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
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
        if a.locality {
            for (c, by) in &a.answered_by {
                let share = a
                    .local_share
                    .get(c)
                    .map_or(String::new(), |x| format!(", {:.0}% local", x * 100.0));
                let verdict = a
                    .not_local
                    .get(c)
                    .map_or("ok".to_string(), |w| format!("NOT LOCAL: {w}"));
                s.push_str(&format!(
                    "  locality {c:<8} answered in {}{share}  {verdict}\n",
                    dist(by)
                ));
            }
        }
    }
    for f in &r.failover {
        s.push_str(&format!(
            "failover: {} with {} scaled to zero in {}:\n",
            f.app,
            f.deployments.join(", "),
            f.down
        ));
        let clients: BTreeSet<&String> = f
            .before
            .keys()
            .chain(f.during.keys())
            .chain(f.after.keys())
            .collect();
        for c in clients {
            let show = |m: &BTreeMap<String, Tally>| {
                m.get(c).map_or("-".to_string(), |t| {
                    let mut d = dist(&t.clusters);
                    if t.unanswered > 0 {
                        d.push_str(&format!(", unanswered {}", t.unanswered));
                    }
                    d
                })
            };
            s.push_str(&format!(
                "  from {c:<12} before: {:<20} during: {:<20} after: {}\n",
                show(&f.before),
                show(&f.during),
                show(&f.after)
            ));
        }
        s.push_str(&match &f.problem {
            None => "  ok\n".to_string(),
            Some(p) => format!("  FAILED {p}\n"),
        });
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

    #[test]
    fn tallies_answers_by_the_cluster_whose_pod_gave_them() {
        let owners: std::collections::BTreeMap<String, String> =
            [("helloworld-v1-abc", "east"), ("helloworld-v2-xyz", "west")]
                .into_iter()
                .map(|(p, c)| (p.to_string(), c.to_string()))
                .collect();
        let out = "Hello version: v1, instance: helloworld-v1-abc\n\
                   Hello version: v2, instance: helloworld-v2-xyz\n\
                   Hello version: v1, instance: helloworld-v1-abc\n\
                   product version: v3\n\
                   upstream connect error or disconnect/reset before headers\n";
        let t = super::tally(out, 6, &owners);
        assert_eq!(t.clusters["east"], 2);
        assert_eq!(t.clusters["west"], 1);
        // An answer naming no pod of any cluster is counted, as unknown.
        assert_eq!(t.clusters["?"], 1);
        assert_eq!(t.versions["v3"], 1);
        // The error line and the request that printed nothing.
        assert_eq!(t.unanswered, 2);
    }
}
