//! `mesh open kiali`: the add-on's UI on this machine. It finds the
//! add-on's pod in its home cluster (through the credentials the build
//! recorded, or the user's kubeconfig for an existing cluster), listens on
//! 127.0.0.1, prints the URL, and forwards every connection to the pod
//! through the API server (`k8s::forward`) until Ctrl-C (exit 130).

use super::{Build, Exit, fail, interrupted, load, runtime};
use crate::cache::Cache;
use std::path::Path;

/// A web UI mesh can open.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Ui {
    /// Kiali, in its home cluster (`[addons] kiali`).
    Kiali,
}

pub(super) fn run(plan_path: &Path, cache_dir: &Path, what: Ui, port: u16) -> Result<(), Exit> {
    let l = load(plan_path, Build::Live)?;
    let Ui::Kiali = what;
    let home = crate::kinds::kiali::home(&l.plan)
        .filter(|_| l.plan.addons.kiali)
        .ok_or_else(|| {
            fail(
                2,
                format!(
                    "error: {} has no Kiali: add kiali = true (and prometheus = true) to [addons], then mesh build",
                    l.plan.file
                ),
            )
        })?
        .to_string();
    let Some(cache) = Cache::open_existing(cache_dir) else {
        return Err(fail(
            1,
            "error: nothing was built yet: run mesh build first",
        ));
    };
    let access = crate::verify::access(&l.plan, &cache, &home)
        .map_err(|e| fail(1, format!("error: {e}")))?;
    let rt = runtime()?;
    rt.block_on(async {
        let client = access
            .client()
            .await
            .map_err(|e| fail(1, format!("error: {e}")))?;
        let pod = crate::k8s::running_pod(
            &client,
            "istio-system",
            "app.kubernetes.io/name=kiali",
        )
        .await
        .map_err(|e| fail(1, format!("error: Kiali in cluster {home}: {e} (run mesh build)")))?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(|e| {
                fail(
                    1,
                    format!("error: cannot listen on 127.0.0.1:{port}: {e} (--port picks another; 0 any)"),
                )
            })?;
        let local = listener
            .local_addr()
            .map_err(|e| fail(1, format!("error: {e}")))?;
        println!("Kiali (cluster {home}): http://{local}/kiali");
        eprintln!("mesh: forwarding {local} to istio-system/{pod}:20001; Ctrl-C stops");
        crate::k8s::forward(&client, "istio-system", &pod, 20001, listener, interrupted()).await;
        Err::<(), Exit>(Exit(130))
    })
}
