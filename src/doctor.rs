//! `mesh doctor`: is this machine ready for a live build of this plan?
//!
//! Checks only what the plan needs: Docker's daemon and kind when a cluster
//! is a kind cluster, helm always, and for each existing cluster its
//! kubeconfig and context. Every failed check says what is missing and how
//! to get it. `mesh build` runs the same checks first, so a missing tool
//! fails the build in milliseconds, not after half a bring-up.

use crate::plan::{Plan, Provider};
use crate::providers::{Tool, ToolError, run};
use serde::Serialize;
use std::time::Duration;

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub what: String,
    pub ok: bool,
    /// The version found, or what is wrong.
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

const QUICK: Duration = Duration::from_secs(15);

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_string()
}

async fn tool(t: Tool, args: &[&str], what: &str) -> Check {
    match run(t, args, QUICK).await {
        Ok(out) => Check {
            what: what.into(),
            ok: true,
            detail: first_line(&out),
            hint: None,
        },
        Err(e) => Check {
            what: what.into(),
            ok: false,
            hint: (!matches!(e, ToolError::NotFound { .. })).then(|| t.install_hint().into()),
            detail: e.to_string(),
        },
    }
}

/// The pre-flight of `mesh build`: the tools the plan needs are present,
/// and existing clusters' contexts exist. No process is started, so it
/// takes microseconds; `mesh doctor` checks versions and the daemon too.
pub fn preflight(plan: &Plan) -> Vec<Check> {
    let kind = plan.clusters.values().any(|c| c.provider == Provider::Kind);
    let mut tools = vec![Tool::Helm];
    if kind {
        tools.extend([Tool::Docker, Tool::Kind]);
    }
    let mut out: Vec<Check> = tools
        .into_iter()
        .map(|t| match t.locate() {
            Some(p) => Check {
                what: t.name().into(),
                ok: true,
                detail: p.display().to_string(),
                hint: None,
            },
            None => Check {
                what: t.name().into(),
                ok: false,
                detail: "not found on PATH".into(),
                hint: Some(t.install_hint().into()),
            },
        })
        .collect();
    out.extend(contexts(plan));
    out
}

/// Run every check the plan needs, in parallel.
pub async fn checks(plan: &Plan) -> Vec<Check> {
    let kind = plan.clusters.values().any(|c| c.provider == Provider::Kind);
    let mut futs: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = Check> + Send>>> =
        Vec::new();
    if kind {
        futs.push(Box::pin(async {
            let mut c = tool(Tool::Docker, &["info", "--format", "{{.ServerVersion}}"], "docker daemon").await;
            if !c.ok {
                c.hint = Some("start the Docker daemon (or install Docker: https://docs.docker.com/engine/install/)".into());
            }
            c
        }));
        futs.push(Box::pin(tool(Tool::Kind, &["version"], "kind")));
    }
    futs.push(Box::pin(tool(Tool::Helm, &["version", "--short"], "helm")));
    let mut out = futures_util::future::join_all(futs).await;
    out.extend(contexts(plan));
    out
}

/// Existing clusters: the kubeconfig is readable and holds the context.
fn contexts(plan: &Plan) -> Vec<Check> {
    let mut out = Vec::new();
    for c in plan
        .clusters
        .values()
        .filter(|c| c.provider == Provider::Kubeconfig)
    {
        let ctx = c.context.clone().unwrap_or_default();
        let target = crate::access::Target::of(c);
        let what = format!("kubeconfig context {ctx} (cluster {})", c.name);
        let check = match target.kubeconfig_text() {
            Err(e) => Check {
                what,
                ok: false,
                detail: e.message,
                hint: Some("set clusters.<name>.kubeconfig, or KUBECONFIG".into()),
            },
            Ok(text) => match crate::k8s::server_and_ca(&text, Some(&ctx)) {
                Ok((server, _)) => Check {
                    what,
                    ok: true,
                    detail: server,
                    hint: None,
                },
                Err(e) => Check {
                    what,
                    ok: false,
                    detail: e.to_string(),
                    hint: Some("kubectl config get-contexts lists the contexts you have".into()),
                },
            },
        };
        out.push(check);
    }
    out
}
