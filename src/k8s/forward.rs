//! Port-forwarding through the API server, as `kubectl port-forward`: a
//! local TCP listener whose every connection becomes one `portforward`
//! stream (a websocket, kube-rs's [`kube::api::Portforwarder`]) to a port
//! of a pod, bytes copied both ways until either side closes.

use super::*;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;

/// The first running pod in `ns` with label `selector` (`key=value`).
pub async fn running_pod(client: &Client, ns: &str, selector: &str) -> Result<String, String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().labels(selector);
    let list = bounded(|| pods.list(&lp))
        .await
        .map_err(|e| format!("cannot list pods in {ns}: {e}"))?;
    list.items
        .into_iter()
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .is_none_or(|ph| ph == "Running")
        })
        .find_map(|p| p.metadata.name)
        .ok_or_else(|| format!("no running pod with {selector} in {ns}"))
}

/// Serve `listener` until `stop` completes: each connection is forwarded
/// to `port` of pod `ns/pod`. A connection whose forward fails is closed
/// and said on stderr; the others go on.
pub async fn forward(
    client: &Client,
    ns: &str,
    pod: &str,
    port: u16,
    listener: tokio::net::TcpListener,
    stop: impl std::future::Future<Output = ()>,
) {
    let mut stop = std::pin::pin!(stop);
    loop {
        let (mut conn, _) = tokio::select! {
            got = listener.accept() => match got {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("mesh: accept: {e}");
                    continue;
                }
            },
            _ = &mut stop => return,
        };
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        let (pod, ns) = (pod.to_string(), ns.to_string());
        tokio::spawn(async move {
            let mut pf = match pods.portforward(&pod, &[port]).await {
                Ok(pf) => pf,
                Err(e) => {
                    eprintln!("mesh: cannot forward to {ns}/{pod}:{port}: {e}");
                    return;
                }
            };
            let Some(mut upstream) = pf.take_stream(port) else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(&mut conn, &mut upstream).await;
            drop(upstream);
            let _ = pf.join().await;
        });
    }
}
