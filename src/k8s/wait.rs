//! Waits: watch one object until a condition holds, bounded by a timeout
//! whose error names the object and what was awaited.
//!
//! A watch is not forever: an API server ends it after minutes, a
//! connection breaks, and a resume from a compacted resourceVersion gets
//! 410 Gone. None of that ends a wait: it starts over (a fresh list, then a
//! watch) after a short backoff, until its own deadline. The client has no
//! read timeout (an idle watch is legitimate), so only the deadline bounds
//! it; its error names what was awaited and the last watch error seen.

use super::*;

async fn wait<K, F>(
    api: Api<K>,
    name: &str,
    what: &str,
    timeout: Duration,
    cond: F,
) -> Result<K, KubeError>
where
    K: Clone + std::fmt::Debug + Send + serde::de::DeserializeOwned + kube::Resource + 'static,
    F: Fn(&K) -> bool + Send + Sync + Clone + 'static,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut backoff = Duration::from_millis(100);
    let mut last_error: Option<String> = None;
    // Since when the API server has not answered at all (None: it has).
    let mut silent_since: Option<tokio::time::Instant> = None;
    // Where the unanswered calls went.
    let mut at: Option<Endpoint> = None;
    loop {
        let c = cond.clone();
        let attempt = await_condition(api.clone(), name, move |o: Option<&K>| o.is_some_and(&c));
        match tokio::time::timeout_at(deadline, attempt).await {
            Ok(Ok(Some(o))) => return Ok(o),
            Ok(Ok(None)) => return Err(kerr(what, "deleted while waiting")),
            Ok(Err(e)) => {
                let unanswered = match &e {
                    kube::runtime::wait::Error::ProbeFailed(
                        kube::runtime::watcher::Error::InitialListFailed(k)
                        | kube::runtime::watcher::Error::WatchStartFailed(k)
                        | kube::runtime::watcher::Error::WatchFailed(k),
                    ) => {
                        at = observe::unanswered(k).cloned().or(at.take());
                        connection_failed(k)
                    }
                    _ => false,
                };
                let now = tokio::time::Instant::now();
                silent_since = unanswered.then(|| silent_since.unwrap_or(now));
                if silent_since.is_some_and(|t| now.duration_since(t) >= retry_budget()) {
                    return Err(KubeError::Unreachable {
                        what: format!("waiting for {what}"),
                        secs: retry_budget().as_secs(),
                        at,
                    });
                }
                last_error = Some(e.to_string());
            }
            Err(_) => break,
        }
        if tokio::time::Instant::now() + backoff >= deadline {
            break;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
    if silent_since.is_some() {
        return Err(KubeError::Unreachable {
            what: format!("waiting for {what}"),
            secs: timeout.as_secs(),
            at,
        });
    }
    Err(KubeError::Timeout {
        what: match last_error {
            Some(e) => format!("{what} (the last watch error: {e})"),
            None => what.to_string(),
        },
        secs: timeout.as_secs(),
    })
}

/// Wait until every CustomResourceDefinition among `refs` is Established:
/// only then does the API server serve its kind (before, a create of that
/// kind is a 404).
pub async fn wait_crds_established(
    client: &Client,
    refs: &[ObjRef],
    timeout: Duration,
) -> Result<(), KubeError> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for r in refs.iter().filter(|r| r.kind == "CustomResourceDefinition") {
        wait(
            api.clone(),
            &r.name,
            &format!("CustomResourceDefinition {} to be Established", r.name),
            timeout,
            |c: &CustomResourceDefinition| {
                c.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| {
                        cs.iter()
                            .any(|x| x.type_ == "Established" && x.status == "True")
                    })
            },
        )
        .await?;
    }
    Ok(())
}

/// Wait until a Deployment's rollout is complete, as `kubectl rollout
/// status` decides: the controller has seen the latest spec, every replica
/// is updated, no old replica is left, and every updated one is available.
/// (observedGeneration alone is not enough: the controller sets it at once,
/// while the old pods still count as ready.)
pub async fn wait_deployment(
    client: &Client,
    ns: &str,
    name: &str,
    timeout: Duration,
) -> Result<(), KubeError> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    wait(
        api,
        name,
        &format!("Deployment {ns}/{name} to be ready"),
        timeout,
        |d: &Deployment| {
            let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let Some(s) = d.status.as_ref() else {
                return false;
            };
            let updated = s.updated_replicas.unwrap_or(0);
            s.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
                && updated >= want
                && s.replicas.unwrap_or(0) <= updated
                && s.available_replicas.unwrap_or(0) >= updated
        },
    )
    .await
    .map(|_| ())
}

/// Wait until a DaemonSet's rollout is complete (`kubectl rollout status`):
/// the latest spec seen, a pod updated and available on every node it
/// should run on.
pub async fn wait_daemonset(
    client: &Client,
    ns: &str,
    name: &str,
    timeout: Duration,
) -> Result<(), KubeError> {
    let api: Api<DaemonSet> = Api::namespaced(client.clone(), ns);
    wait(
        api,
        name,
        &format!("DaemonSet {ns}/{name} to be ready"),
        timeout,
        |d: &DaemonSet| {
            let Some(s) = d.status.as_ref() else {
                return false;
            };
            s.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
                && s.desired_number_scheduled > 0
                && s.updated_number_scheduled.unwrap_or(0) >= s.desired_number_scheduled
                && s.number_available.unwrap_or(0) >= s.desired_number_scheduled
        },
    )
    .await
    .map(|_| ())
}

/// Wait until a LoadBalancer Service has an address; return it.
pub async fn wait_lb_ip(
    client: &Client,
    ns: &str,
    name: &str,
    timeout: Duration,
) -> Result<String, KubeError> {
    let api: Api<Service> = Api::namespaced(client.clone(), ns);
    let ip = |s: &Service| -> Option<String> {
        s.status
            .as_ref()?
            .load_balancer
            .as_ref()?
            .ingress
            .as_ref()?
            .iter()
            .find_map(|i| i.ip.clone())
    };
    let svc = wait(
        api,
        name,
        &format!("Service {ns}/{name} to get a LoadBalancer address"),
        timeout,
        move |s: &Service| ip(s).is_some(),
    )
    .await?;
    Ok(ip(&svc).expect("condition holds"))
}

/// Wait until a Secret holds `key`; return its bytes. Never logged.
pub async fn wait_secret_key(
    client: &Client,
    ns: &str,
    name: &str,
    key: &str,
    timeout: Duration,
) -> Result<Vec<u8>, KubeError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let k = key.to_string();
    let s = wait(
        api,
        name,
        &format!("Secret {ns}/{name} to hold {key}"),
        timeout,
        move |s: &Secret| {
            s.data
                .as_ref()
                .is_some_and(|d| d.get(&k).is_some_and(|v| !v.0.is_empty()))
        },
    )
    .await?;
    Ok(s.data
        .and_then(|mut d| d.remove(key))
        .map(|b| b.0)
        .unwrap_or_default())
}

/// Wait until a Gateway API `Gateway` has its LoadBalancer address; return
/// it. While the LoadBalancer is pending Istio already reports other
/// addresses (a hostname, the ClusterIP), so the first address is not it:
/// with `expect` (the address mesh pinned), wait until that one is listed;
/// without, wait until the Gateway is Programmed and take its first IP
/// address.
pub async fn wait_gateway_address(
    client: &Client,
    ns: &str,
    name: &str,
    expect: Option<&str>,
    timeout: Duration,
) -> Result<String, KubeError> {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "gateway.networking.k8s.io",
        "v1",
        "Gateway",
    ));
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let expect = expect.map(str::to_string);
    let pick = move |o: &DynamicObject| -> Option<String> {
        let addrs = o.data.pointer("/status/addresses")?.as_array()?;
        let value = |a: &serde_json::Value| a["value"].as_str().map(str::to_string);
        match &expect {
            Some(ip) => addrs.iter().filter_map(value).find(|v| v == ip),
            None => {
                let programmed = o
                    .data
                    .pointer("/status/conditions")
                    .and_then(|c| c.as_array())
                    .is_some_and(|c| {
                        c.iter()
                            .any(|c| c["type"] == "Programmed" && c["status"] == "True")
                    });
                let ip = addrs
                    .iter()
                    .filter(|a| a["type"].as_str().is_none_or(|t| t == "IPAddress"))
                    .find_map(value);
                ip.filter(|_| programmed)
            }
        }
    };
    let p = pick.clone();
    let o = wait(
        api,
        name,
        &format!("Gateway {ns}/{name} to get its LoadBalancer address"),
        timeout,
        move |o: &DynamicObject| p(o).is_some(),
    )
    .await?;
    Ok(pick(&o).expect("condition holds"))
}
