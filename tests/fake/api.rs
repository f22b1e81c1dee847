//! A fake Kubernetes API server for the live tests: one per cluster, on
//! 127.0.0.1, over TLS with client-certificate auth (certificates made with
//! rcgen), as a kind kubeconfig expects.
//!
//! It serves what kube-rs and the fake tools use: `/version`, discovery
//! (`/api/v1`, `/apis/<group>/<version>`), get, list (with a
//! `metadata.name` field selector), watch (newline-delimited events, replayed
//! from the requested resourceVersion), server-side apply (a deep merge of the
//! patch into the object), delete, and the `/status` subresource. Tiny
//! controllers then act like the real ones: a Deployment becomes ready after
//! `ready_delay` (unless its name is in `never_ready`), a LoadBalancer
//! Service gets the address its LB-IPAM annotation asks for (or the next from
//! a pool), a Gateway of class `istio-east-west` gets one the same way, and a
//! service-account token Secret gets its token.
//!
//! Nodes are those of the kind config the fake kind sends (names and
//! labels as kind gives them); a Deployment's pod is scheduled on the first
//! worker, and its `/scale` subresource scales it (to zero: the pod goes).
//! Requests `mesh verify` sends through a pod (`simulate`) are routed as
//! the mesh would, including Istio's locality load balancing when a
//! DestinationRule turns it on.
//!
//! `/fake/reset` empties the cluster and brings it up (kind create);
//! `/fake/down` empties it and makes every other request fail (kind delete).
//! Deleting a namespace deletes every object in it, as a real server does.
//! Every mutating request is counted, so tests can assert a no-op rerun
//! changed nothing.
#![allow(dead_code)]

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;

type Body = BoxBody<Bytes, Infallible>;

/// (group, version, plural, kind, namespaced)
const RESOURCES: &[(&str, &str, &str, &str, bool)] = &[
    ("", "v1", "namespaces", "Namespace", false),
    ("", "v1", "secrets", "Secret", true),
    ("", "v1", "services", "Service", true),
    ("", "v1", "serviceaccounts", "ServiceAccount", true),
    ("", "v1", "configmaps", "ConfigMap", true),
    ("", "v1", "pods", "Pod", true),
    ("", "v1", "nodes", "Node", false),
    ("apps", "v1", "deployments", "Deployment", true),
    ("apps", "v1", "daemonsets", "DaemonSet", true),
    ("networking.istio.io", "v1", "gateways", "Gateway", true),
    (
        "networking.istio.io",
        "v1",
        "destinationrules",
        "DestinationRule",
        true,
    ),
    (
        "networking.istio.io",
        "v1",
        "virtualservices",
        "VirtualService",
        true,
    ),
    (
        "gateway.networking.k8s.io",
        "v1",
        "gateways",
        "Gateway",
        true,
    ),
    (
        "cilium.io",
        "v2alpha1",
        "ciliumloadbalancerippools",
        "CiliumLoadBalancerIPPool",
        false,
    ),
    (
        "cilium.io",
        "v2",
        "ciliumloadbalancerippools",
        "CiliumLoadBalancerIPPool",
        false,
    ),
    (
        "cilium.io",
        "v2alpha1",
        "ciliuml2announcementpolicies",
        "CiliumL2AnnouncementPolicy",
        false,
    ),
    (
        "metallb.io",
        "v1beta1",
        "ipaddresspools",
        "IPAddressPool",
        true,
    ),
    (
        "metallb.io",
        "v1beta1",
        "l2advertisements",
        "L2Advertisement",
        true,
    ),
    (
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        false,
    ),
];

/// Groups whose kinds exist only through CRDs someone installs: Gateway
/// API (mesh, in ambient), Istio's (its base chart), MetalLB's (its chart).
/// Cilium's are registered by its operator (see `State::serves`).
const CRD_GROUPS: &[&str] = &[
    "gateway.networking.k8s.io",
    "networking.istio.io",
    "metallb.io",
];

/// (group, plural, namespace, name)
type Key = (String, String, String, String);

/// Per field manager, the leaf paths it set.
type Owners = BTreeMap<String, BTreeSet<Vec<String>>>;

#[derive(Clone, Debug)]
struct Event {
    kind: &'static str,
    key: Key,
    object: Value,
}

/// Settings the tests can change while the server runs.
#[derive(Default)]
pub struct Knobs {
    /// How long a watch lives before the server ends it (a real API server:
    /// 5–10 minutes, time-compressed here). `None`: until the client goes.
    pub watch_life: Mutex<Option<Duration>>,
    /// How often a watch that asked for them gets a BOOKMARK (real: about a
    /// minute). `None`: never, so an idle watch is silent.
    pub bookmark_every: Mutex<Option<Duration>>,
    pub ready_delay: Mutex<Duration>,
    /// Per-namespace readiness delays (override `ready_delay`).
    pub ready_delay_in: Mutex<BTreeMap<String, Duration>>,
    pub never_ready: Mutex<HashSet<String>>,
    /// Chaos: one in this many API requests (not watches) fails as a
    /// loaded server's do (429, 503, 500 from a webhook that timed out,
    /// alternating). 0: none.
    pub fault_every: AtomicUsize,
    /// How long istiod takes to sync a remote cluster after its secret
    /// appears (real: seconds, while it lists the remote's services).
    pub sync_delay: Mutex<Duration>,
    /// How long a new CRD takes to be Established.
    pub crd_delay: Mutex<Duration>,
}

pub struct State {
    pub name: String,
    objects: Mutex<BTreeMap<Key, Value>>,
    /// Server-side apply's field ownership: per object, per field manager,
    /// the leaf paths it set last time.
    owners: Mutex<BTreeMap<Key, Owners>>,
    /// When each object was created.
    born: Mutex<BTreeMap<Key, std::time::Instant>>,
    rv: AtomicU64,
    /// Resource versions below this are compacted away: a watch from one
    /// gets 410 Gone, as from a real API server after etcd compaction.
    compacted: AtomicU64,
    events: broadcast::Sender<Event>,
    pub mutations: AtomicUsize,
    requests: AtomicUsize,
    /// Every request mesh itself made (not a fake tool), as
    /// `METHOD /path?query STATUS`, in the order they were answered.
    pub calls: Mutex<Vec<String>>,
    /// TLS connections that carried a request of mesh's own: each one a
    /// handshake mesh paid for.
    pub mesh_connections: AtomicUsize,
    /// Transient faults injected so far (chaos).
    pub faults: AtomicUsize,
    pub down: AtomicBool,
    /// The cluster exists (kind lists it, its objects are kept) but its API
    /// server does not answer: Docker restarting, a laptop asleep.
    pub asleep: AtomicBool,
    pub knobs: Knobs,
    next_ip: AtomicU64,
    /// Every cluster of the world, for exec's routing.
    pub peers: std::sync::OnceLock<BTreeMap<String, Arc<State>>>,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn resource(group: &str, version: &str, plural: &str) -> Option<(&'static str, bool)> {
    RESOURCES
        .iter()
        .find(|r| r.0 == group && r.1 == version && r.2 == plural)
        .map(|r| (r.3, r.4))
}

fn json_response(code: StatusCode, v: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(v).unwrap())).boxed())
        .unwrap()
}

fn status(code: u16, reason: &str, message: &str) -> Response<Body> {
    json_response(
        StatusCode::from_u16(code).unwrap(),
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": message, "reason": reason, "code": code}),
    )
}

fn query(req: &Request<Incoming>) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for pair in req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        m.insert(decode(k), decode(v));
    }
    m
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(x) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(x);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Deep merge: maps merge, everything else is replaced.
fn merge(into: &mut Value, patch: &Value) {
    match (into, patch) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(k) {
                    Some(x) if x.is_object() && v.is_object() => merge(x, v),
                    _ => {
                        a.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (a, b) => *a = b.clone(),
    }
}

/// The leaf paths an apply sets: every scalar or list, skipping the
/// object's identity and what the server owns.
fn leaves(v: &Value, path: &mut Vec<String>, out: &mut BTreeSet<Vec<String>>) {
    const SERVER: &[&str] = &[
        "apiVersion",
        "kind",
        "status",
        "metadata.name",
        "metadata.namespace",
        "metadata.resourceVersion",
        "metadata.uid",
        "metadata.generation",
        "metadata.creationTimestamp",
        "metadata.managedFields",
    ];
    if SERVER.contains(&path.join(".").as_str()) {
        return;
    }
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, x) in m {
                path.push(k.clone());
                leaves(x, path, out);
                path.pop();
            }
        }
        Value::Object(_) => {}
        _ => {
            out.insert(path.clone());
        }
    }
}

fn at<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

fn remove_at(v: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for k in parents {
        match cur.get_mut(k) {
            Some(x) => cur = x,
            None => return,
        }
    }
    if let Some(m) = cur.as_object_mut() {
        m.remove(last);
    }
}

impl State {
    pub fn new(name: &str) -> Arc<State> {
        let (events, _) = broadcast::channel(4096);
        Arc::new(State {
            name: name.into(),
            objects: Mutex::new(BTreeMap::new()),
            owners: Mutex::new(BTreeMap::new()),
            born: Mutex::new(BTreeMap::new()),
            rv: AtomicU64::new(1),
            compacted: AtomicU64::new(0),
            events,
            mutations: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
            calls: Mutex::new(Vec::new()),
            mesh_connections: AtomicUsize::new(0),
            faults: AtomicUsize::new(0),
            down: AtomicBool::new(false),
            asleep: AtomicBool::new(false),
            // Real API servers end watches and compact history; here it
            // happens in seconds, so every long wait meets it.
            knobs: Knobs {
                watch_life: Mutex::new(Some(Duration::from_secs(3))),
                bookmark_every: Mutex::new(Some(Duration::from_millis(700))),
                sync_delay: Mutex::new(Duration::from_millis(1500)),
                crd_delay: Mutex::new(Duration::from_millis(200)),
                ..Knobs::default()
            },
            next_ip: AtomicU64::new(0),
            peers: std::sync::OnceLock::new(),
        })
    }

    /// Every object of a kind (tests).
    pub fn list(&self, group: &str, plural: &str) -> Vec<Value> {
        self.objects
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.0 == group && k.1 == plural)
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn get(&self, group: &str, plural: &str, ns: &str, name: &str) -> Option<Value> {
        self.objects
            .lock()
            .unwrap()
            .get(&(group.into(), plural.into(), ns.into(), name.into()))
            .cloned()
    }

    pub fn remove(&self, group: &str, plural: &str, ns: &str, name: &str) -> bool {
        let key: Key = (group.into(), plural.into(), ns.into(), name.into());
        let removed = self.objects.lock().unwrap().remove(&key);
        self.owners.lock().unwrap().remove(&key);
        if group == "apps" && plural == "deployments" {
            self.remove("", "pods", ns, &format!("{name}-fake"));
        }
        if removed.is_some() && group.is_empty() && plural == "namespaces" {
            // As a real API server's namespace controller does: deleting a
            // namespace deletes everything in it.
            let inside: Vec<Key> = self
                .objects
                .lock()
                .unwrap()
                .keys()
                .filter(|k| k.2 == name)
                .cloned()
                .collect();
            for k in inside {
                self.remove(&k.0, &k.1, &k.2, &k.3);
            }
        }
        if let Some(o) = removed {
            let _ = self.events.send(Event {
                kind: "DELETED",
                key,
                object: o,
            });
            true
        } else {
            false
        }
    }

    /// The nodes a kind config declares (`None`: one control plane), as
    /// kind names and labels them: `<c>-control-plane`, `<c>-worker`,
    /// `<c>-worker2`…, each with the `labels` its entry gives.
    pub fn make_nodes(&self, config: Option<&str>) {
        let cfg: Value = config
            .and_then(|t| serde_saphyr::from_str(t).ok())
            .unwrap_or(Value::Null);
        let nodes = cfg["nodes"]
            .as_array()
            .cloned()
            .unwrap_or_else(|| vec![json!({"role": "control-plane"})]);
        let mut workers = 0;
        for n in nodes {
            let cp = n["role"] != "worker";
            let name = if cp {
                format!("{}-control-plane", self.name)
            } else {
                workers += 1;
                match workers {
                    1 => format!("{}-worker", self.name),
                    k => format!("{}-worker{k}", self.name),
                }
            };
            let mut labels = n["labels"].as_object().cloned().unwrap_or_default();
            labels.insert("kubernetes.io/hostname".into(), json!(name));
            if cp {
                labels.insert("node-role.kubernetes.io/control-plane".into(), json!(""));
            }
            self.put(
                "",
                "nodes",
                "",
                &name,
                json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels},
                       "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
            );
        }
    }

    /// The node a new pod is scheduled on: the first worker, else the
    /// control plane (kind's control plane takes workloads when alone).
    fn schedule(&self) -> String {
        let nodes: Vec<String> = self
            .list("", "nodes")
            .iter()
            .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_string))
            .collect();
        nodes
            .iter()
            .find(|n| n.contains("-worker"))
            .or(nodes.first())
            .cloned()
            .unwrap_or_default()
    }

    /// A pod's locality: its node's region and zone labels.
    fn locality_of(&self, pod: &Value) -> (String, String) {
        let node = pod["spec"]["nodeName"].as_str().unwrap_or("");
        let n = self.get("", "nodes", "", node).unwrap_or(Value::Null);
        let l = |k: &str| {
            n["metadata"]["labels"][format!("topology.kubernetes.io/{k}")]
                .as_str()
                .unwrap_or("")
                .to_string()
        };
        (l("region"), l("zone"))
    }

    /// Does this cluster's configuration turn locality load balancing on
    /// for a caller in `client_ns` of Service `svc.svc_ns`? As Istio
    /// decides it: the DestinationRule for the host found first in the
    /// caller's namespace, then the Service's, then the root namespace;
    /// on when it sets `outlierDetection` and does not turn
    /// `localityLbSetting` off (the mesh-wide default is on, and Istio
    /// ignores locality without outlier detection).
    fn locality_lb(&self, svc: &str, svc_ns: &str, client_ns: &str) -> bool {
        let fqdn = format!("{svc}.{svc_ns}.svc.cluster.local");
        let rules = self.list("networking.istio.io", "destinationrules");
        let matches = |r: &Value, ns: &str| {
            let host = r["spec"]["host"].as_str().unwrap_or("");
            r["metadata"]["namespace"] == ns
                && (host == fqdn
                    || host == format!("{svc}.{svc_ns}")
                    || host == format!("{svc}.{svc_ns}.svc")
                    || (host == svc && ns == svc_ns))
        };
        for ns in [client_ns, svc_ns, "istio-system"] {
            if let Some(r) = rules.iter().find(|r| matches(r, ns)) {
                let tp = &r["spec"]["trafficPolicy"];
                return tp["outlierDetection"].is_object()
                    && tp["loadBalancer"]["localityLbSetting"]["enabled"] != false;
            }
        }
        false
    }

    /// Write an object as it is (tests acting behind mesh's back).
    pub fn put(&self, group: &str, plural: &str, ns: &str, name: &str, obj: Value) {
        self.write(
            (group.into(), plural.into(), ns.into(), name.into()),
            obj,
            "MODIFIED",
        );
    }

    pub fn clear(&self) {
        self.objects.lock().unwrap().clear();
        self.owners.lock().unwrap().clear();
        self.rv.fetch_add(1, Ordering::SeqCst);
    }

    /// A new cluster, as `kind create` leaves it: empty but for the
    /// namespaces every cluster has.
    pub fn reset(&self) {
        self.clear();
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            self.put(
                "",
                "namespaces",
                "",
                ns,
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns},
                       "status": {"phase": "Active"}}),
            );
        }
        self.down.store(false, Ordering::SeqCst);
    }

    fn write(&self, key: Key, mut obj: Value, kind: &'static str) -> Value {
        let rv = self.rv.fetch_add(1, Ordering::SeqCst) + 1;
        obj["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        let new = self
            .objects
            .lock()
            .unwrap()
            .insert(key.clone(), obj.clone())
            .is_none();
        if new {
            self.born
                .lock()
                .unwrap()
                .insert(key.clone(), std::time::Instant::now());
        }
        let _ = self.events.send(Event {
            kind,
            key,
            object: obj.clone(),
        });
        obj
    }

    /// Server-side apply, as the API server does it: the fields this
    /// manager set last time and no longer sets are removed (unless another
    /// manager owns them too); a field another manager owns with another
    /// value is a conflict (409) unless the apply forces, which takes the
    /// field over. Lists are atomic here (the real server merges some by
    /// key).
    fn apply(
        self: &Arc<Self>,
        key: Key,
        (gv, kind, namespaced): (&str, &str, bool),
        manager: &str,
        force: bool,
        mut patch: Value,
    ) -> Result<Value, Box<Response<Body>>> {
        // Secrets: stringData lands in data.
        if kind == "Secret"
            && let Some(sd) = patch.as_object_mut().and_then(|o| o.remove("stringData"))
        {
            for (k, v) in sd.as_object().cloned().unwrap_or_default() {
                patch["data"][k] = json!(b64(v.as_str().unwrap_or("").as_bytes()));
            }
        }
        let mut set = BTreeSet::new();
        leaves(&patch, &mut Vec::new(), &mut set);
        let existing = self.objects.lock().unwrap().get(&key).cloned();
        let mut owners = self.owners.lock().unwrap();
        let owned = owners.entry(key.clone()).or_default();
        if let Some(o) = &existing {
            let conflicts: Vec<String> = owned
                .iter()
                .filter(|(m, _)| m.as_str() != manager)
                .flat_map(|(m, paths)| {
                    paths
                        .intersection(&set)
                        .filter(|p| at(o, p) != at(&patch, p))
                        .map(move |p| format!("conflict with \"{m}\": .{}", p.join(".")))
                })
                .collect();
            if !conflicts.is_empty() && !force {
                return Err(Box::new(status(
                    409,
                    "Conflict",
                    &format!(
                        "Apply failed with {} conflict{}: {}",
                        conflicts.len(),
                        if conflicts.len() == 1 { "" } else { "s" },
                        conflicts.join("\n")
                    ),
                )));
            }
        }
        let dropped: Vec<Vec<String>> = owned
            .get(manager)
            .map(|mine| {
                mine.difference(&set)
                    .filter(|p| {
                        !owned
                            .iter()
                            .any(|(m, ps)| m.as_str() != manager && ps.contains(*p))
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for (m, ps) in owned.iter_mut() {
            if m.as_str() != manager {
                ps.retain(|p| !set.contains(p));
            }
        }
        owned.insert(manager.to_string(), set);
        drop(owners);
        let (mut obj, event) = match existing {
            Some(mut o) => {
                let old_spec = o.get("spec").cloned();
                for p in &dropped {
                    remove_at(&mut o, p);
                }
                merge(&mut o, &patch);
                if o.get("spec").cloned() != old_spec {
                    let g = o["metadata"]["generation"].as_i64().unwrap_or(1);
                    o["metadata"]["generation"] = json!(g + 1);
                }
                (o, "MODIFIED")
            }
            None => {
                let mut o = patch.clone();
                o["metadata"]["uid"] = json!(format!(
                    "uid-{}-{}",
                    self.name,
                    self.rv.load(Ordering::SeqCst)
                ));
                o["metadata"]["generation"] = json!(1);
                o["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
                (o, "ADDED")
            }
        };
        obj["apiVersion"] = json!(gv);
        obj["kind"] = json!(kind);
        obj["metadata"]["name"] = json!(key.3);
        if namespaced {
            obj["metadata"]["namespace"] = json!(key.2);
        }
        let obj = self.write(key.clone(), obj, event);
        self.react(key, obj.clone());
        Ok(obj)
    }

    /// A namespaced write into a namespace that does not exist is refused,
    /// as a real API server refuses it.
    fn missing_namespace(&self, namespaced: bool, ns: &str) -> Option<Response<Body>> {
        (namespaced && self.get("", "namespaces", "", ns).is_none())
            .then(|| status(404, "NotFound", &format!("namespaces \"{ns}\" not found")))
    }

    fn pool_ip(&self) -> String {
        let n = self.next_ip.fetch_add(1, Ordering::SeqCst);
        format!("172.30.{}.{}", 200 + (n / 250), 1 + n % 250)
    }

    /// The controllers.
    /// Is this API group served yet? Cilium's CRDs are registered by its
    /// operator after it starts, not by the chart: here they appear once
    /// the operator's Deployment and the agent DaemonSet are ready (an
    /// agent becomes ready only after it has seen them).
    fn serves(&self, group: &str) -> bool {
        if CRD_GROUPS.contains(&group) {
            // Served once a CRD of the group is Established, as a real API
            // server serves a new kind only then.
            return self
                .list("apiextensions.k8s.io", "customresourcedefinitions")
                .iter()
                .any(|c| {
                    c["spec"]["group"] == group
                        && c["status"]["conditions"].as_array().is_some_and(|cs| {
                            cs.iter()
                                .any(|x| x["type"] == "Established" && x["status"] == "True")
                        })
                });
        }
        if group != "cilium.io" {
            return true;
        }
        let operator = self
            .get("apps", "deployments", "kube-system", "cilium-operator")
            .is_some_and(|d| d["status"]["readyReplicas"].as_i64().unwrap_or(0) > 0);
        let agents = self
            .get("apps", "daemonsets", "kube-system", "cilium")
            .is_some_and(|d| {
                let want = d["status"]["desiredNumberScheduled"].as_i64().unwrap_or(0);
                want > 0 && d["status"]["numberReady"].as_i64() == Some(want)
            });
        operator && agents
    }

    /// Would the injection webhook refuse this Deployment's pods? On a
    /// remote (istio-system annotated with its control plane cluster) it has
    /// no CA bundle until the primary holds this cluster's remote secret, so
    /// every injected pod (a gateway's, or one in an injection-labelled
    /// namespace) is refused until then.
    fn injection_refused(&self, key: &Key) -> bool {
        let Some(ns) = self.get("", "namespaces", "", "istio-system") else {
            return false;
        };
        let Some(primary) =
            ns["metadata"]["annotations"]["topology.istio.io/controlPlaneClusters"].as_str()
        else {
            return false;
        };
        let Some(d) = self.get(&key.0, &key.1, &key.2, &key.3) else {
            return false;
        };
        let injected = d["spec"]["template"]["metadata"]["labels"]["sidecar.istio.io/inject"]
            == "true"
            || self
                .get("", "namespaces", "", &key.2)
                .is_some_and(|n| n["metadata"]["labels"]["istio-injection"] == "enabled");
        let secret = format!("istio-remote-secret-{}", self.name);
        let known = self
            .peers
            .get()
            .and_then(|p| p.get(primary))
            .is_some_and(|p| p.get("", "secrets", "istio-system", &secret).is_some());
        injected && !known
    }

    /// A transient fault for this request, when chaos is on.
    fn chaos(&self, req: &Request<Incoming>) -> Option<Response<Body>> {
        let every = self.knobs.fault_every.load(Ordering::SeqCst);
        let watch = req
            .uri()
            .query()
            .is_some_and(|q| q.contains("watch=true") || q.contains("watch=1"));
        if every == 0 || watch || req.headers().contains_key("x-fake-tool") {
            return None;
        }
        let n = self.requests.fetch_add(1, Ordering::SeqCst);
        if n % every != every - 1 {
            return None;
        }
        let k = self.faults.fetch_add(1, Ordering::SeqCst);
        Some(match k % 3 {
            0 => status(
                429,
                "TooManyRequests",
                "the server has received too many requests and has asked us to try again later",
            ),
            1 => status(
                503,
                "ServiceUnavailable",
                "the server is currently unable to handle the request",
            ),
            _ => status(
                500,
                "InternalError",
                "Internal error occurred: failed calling webhook \"validation.istio.io\": context deadline exceeded",
            ),
        })
    }

    /// MetalLB's validating webhook: its resources are refused until the
    /// MetalLB controller (which serves the webhook) is ready.
    fn webhook_refuses(&self, group: &str) -> Option<Response<Body>> {
        if group != "metallb.io" {
            return None;
        }
        let ready = self
            .get(
                "apps",
                "deployments",
                "metallb-system",
                "metallb-controller",
            )
            .is_some_and(|d| d["status"]["readyReplicas"].as_i64().unwrap_or(0) > 0);
        (!ready).then(|| {
            status(
                500,
                "InternalError",
                "Internal error occurred: failed calling webhook \"ipaddresspoolvalidationwebhook.metallb.io\": no endpoints available for service \"metallb-webhook-service\"",
            )
        })
    }

    fn ready_delay(&self, ns: &str) -> Duration {
        self.knobs
            .ready_delay_in
            .lock()
            .unwrap()
            .get(ns)
            .copied()
            .unwrap_or(*self.knobs.ready_delay.lock().unwrap())
    }

    /// Roll a Deployment out again (as `kubectl rollout restart` would):
    /// its pods are replaced after the ready delay.
    pub fn rollout(self: &Arc<Self>, ns: &str, name: &str) {
        let key: Key = ("apps".into(), "deployments".into(), ns.into(), name.into());
        let Some(mut o) = self.objects.lock().unwrap().get(&key).cloned() else {
            return;
        };
        let g = o["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
        o["metadata"]["generation"] = json!(g);
        let o = self.write(key.clone(), o, "MODIFIED");
        self.react(key, o);
    }

    fn react(self: &Arc<Self>, key: Key, obj: Value) {
        let kind = obj["kind"].as_str().unwrap_or("").to_string();
        let group = key.0.clone();
        match (group.as_str(), kind.as_str()) {
            ("apps", "Deployment") => {
                // As the real controller: observedGeneration at once, the old
                // pods still counted ready while the new ones start; the
                // rollout completes after the delay.
                let gen_ = obj["metadata"]["generation"].as_i64().unwrap_or(1);
                if obj["status"]["observedGeneration"].as_i64() == Some(gen_) {
                    return;
                }
                let replicas = obj["spec"]["replicas"].as_i64().unwrap_or(1);
                let old_ready = obj["status"]["readyReplicas"].as_i64().unwrap_or(0);
                let mut o = obj.clone();
                o["status"] = json!({"observedGeneration": gen_, "replicas": old_ready + replicas,
                                     "readyReplicas": old_ready, "availableReplicas": old_ready,
                                     "updatedReplicas": 0});
                self.write(key.clone(), o, "MODIFIED");
                if self.knobs.never_ready.lock().unwrap().contains(&key.3) {
                    return;
                }
                let delay = self.ready_delay(&key.2);
                let me = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    // Injected pods are refused while the injection webhook
                    // cannot serve them; the ReplicaSet controller retries.
                    while me.injection_refused(&key) {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    let cur = me.objects.lock().unwrap().get(&key).cloned();
                    let Some(mut o) = cur else { return };
                    if o["metadata"]["generation"].as_i64() != Some(gen_)
                        || me.knobs.never_ready.lock().unwrap().contains(&key.3)
                    {
                        return; // a newer rollout took over
                    }
                    let pod_key: Key = (
                        String::new(),
                        "pods".into(),
                        key.2.clone(),
                        format!("{}-fake", key.3),
                    );
                    // Its workload certificate as istiod issues it when the
                    // pod starts: signed under the cluster's cacerts, and
                    // trusting the roots cacerts lists then (kept until
                    // the pod is replaced).
                    let (trusts, root) = me.cacerts_identity();
                    if replicas == 0 {
                        // Scaled to zero: its pod is gone.
                        me.remove(&pod_key.0, &pod_key.1, &pod_key.2, &pod_key.3);
                    } else {
                        let pod = json!({"apiVersion": "v1", "kind": "Pod",
                            "metadata": {"name": pod_key.3, "namespace": key.2,
                                         "labels": o["spec"]["template"]["metadata"]["labels"].clone(),
                                         "annotations": {"fake.mesh/trusts": trusts, "fake.mesh/root": root}},
                            "spec": {"nodeName": me.schedule(),
                                     "containers": o["spec"]["template"]["spec"]["containers"].clone()},
                            "status": {"phase": "Running"}});
                        me.write(pod_key, pod, "ADDED");
                    }
                    o["status"] = json!({"observedGeneration": gen_, "replicas": replicas,
                                         "readyReplicas": replicas, "availableReplicas": replicas, "updatedReplicas": replicas});
                    me.write(key, o, "MODIFIED");
                });
            }
            ("apps", "DaemonSet") => {
                // One pod per node (here: two); ready after the delay.
                let gen_ = obj["metadata"]["generation"].as_i64().unwrap_or(1);
                if obj["status"]["observedGeneration"].as_i64() == Some(gen_) {
                    return;
                }
                let nodes = (self.list("", "nodes").len() as i64).max(1);
                let old_ready = obj["status"]["numberReady"].as_i64().unwrap_or(0);
                let mut o = obj.clone();
                o["status"] = json!({"observedGeneration": gen_, "desiredNumberScheduled": nodes,
                                     "currentNumberScheduled": nodes, "numberReady": old_ready,
                                     "numberAvailable": old_ready, "updatedNumberScheduled": 0});
                self.write(key.clone(), o, "MODIFIED");
                let delay = self.ready_delay(&key.2);
                let me = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let cur = me.objects.lock().unwrap().get(&key).cloned();
                    let Some(mut o) = cur else { return };
                    if o["metadata"]["generation"].as_i64() != Some(gen_) {
                        return;
                    }
                    o["status"] = json!({"observedGeneration": gen_, "desiredNumberScheduled": nodes,
                                         "currentNumberScheduled": nodes, "numberReady": nodes,
                                         "numberAvailable": nodes, "updatedNumberScheduled": nodes});
                    me.write(key, o, "MODIFIED");
                });
            }
            ("", "Service") => {
                if obj["spec"]["type"] != "LoadBalancer"
                    || obj["status"]["loadBalancer"]["ingress"].is_array()
                {
                    return;
                }
                let ann = &obj["metadata"]["annotations"];
                let ip = ann["lbipam.cilium.io/ips"]
                    .as_str()
                    .or(ann["metallb.io/loadBalancerIPs"].as_str())
                    .map(str::to_string)
                    .unwrap_or_else(|| self.pool_ip());
                let mut o = obj.clone();
                o["status"] = json!({"loadBalancer": {"ingress": [{"ip": ip}]}});
                self.write(key, o, "MODIFIED");
            }
            ("gateway.networking.k8s.io", "Gateway") => {
                if obj["spec"]["gatewayClassName"] != "istio-east-west"
                    || obj["status"]["addresses"].is_array()
                {
                    return;
                }
                let ann = &obj["spec"]["infrastructure"]["annotations"];
                let ip = ann["lbipam.cilium.io/ips"]
                    .as_str()
                    .or(ann["metallb.io/loadBalancerIPs"].as_str())
                    .map(str::to_string)
                    .unwrap_or_else(|| self.pool_ip());
                // As Istio does: while the LoadBalancer is pending, the
                // Gateway lists its in-cluster hostname; the IP comes later.
                let host = format!("{}.{}.svc.cluster.local", key.3, key.2);
                let mut o = obj.clone();
                o["status"] = json!({"addresses": [{"type": "Hostname", "value": host}],
                    "conditions": [{"type": "Programmed", "status": "False", "reason": "AddressNotAssigned"}]});
                self.write(key.clone(), o, "MODIFIED");
                let (me, delay) = (self.clone(), self.ready_delay(&key.2));
                tokio::spawn(async move {
                    tokio::time::sleep(delay.max(Duration::from_millis(300))).await;
                    let Some(mut o) = me.objects.lock().unwrap().get(&key).cloned() else {
                        return;
                    };
                    o["status"] = json!({"addresses": [{"type": "Hostname", "value": host},
                                                       {"type": "IPAddress", "value": ip}],
                        "conditions": [{"type": "Programmed", "status": "True", "reason": "Programmed"}]});
                    me.write(key, o, "MODIFIED");
                });
            }
            ("apiextensions.k8s.io", "CustomResourceDefinition") => {
                if obj["status"]["conditions"].is_array() {
                    return;
                }
                // Names accepted, then Established after a moment.
                let (me, delay) = (self.clone(), *self.knobs.crd_delay.lock().unwrap());
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let Some(mut o) = me.objects.lock().unwrap().get(&key).cloned() else {
                        return;
                    };
                    o["status"] = json!({"conditions": [
                        {"type": "NamesAccepted", "status": "True"},
                        {"type": "Established", "status": "True"}]});
                    me.write(key, o, "MODIFIED");
                });
            }
            ("", "Secret") => {
                if obj["type"] != "kubernetes.io/service-account-token"
                    || obj["data"]["token"].is_string()
                {
                    return;
                }
                // As the token controller: a moment later, the token for an
                // existing service account; a Secret naming one that does
                // not exist is deleted.
                let me = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    let Some(mut o) = me.objects.lock().unwrap().get(&key).cloned() else {
                        return;
                    };
                    let sa = o["metadata"]["annotations"]["kubernetes.io/service-account.name"]
                        .as_str()
                        .unwrap_or("")
                        .to_string();
                    if me.get("", "serviceaccounts", &key.2, &sa).is_none() {
                        me.remove(&key.0, &key.1, &key.2, &key.3);
                        return;
                    }
                    o["data"]["token"] =
                        json!(b64(format!("fake-token-{}-{}", me.name, key.3).as_bytes()));
                    o["data"]["ca.crt"] = json!(b64(b"fake-ca"));
                    me.write(key, o, "MODIFIED");
                });
            }
            _ => {}
        }
    }
}

/// A request's body as JSON, if it is JSON.
async fn json_body(req: Request<Incoming>) -> Option<Value> {
    let body = req.into_body().collect().await.ok()?.to_bytes();
    serde_json::from_slice(&body).ok()
}

/// `/apis`: every group the server serves now, as an APIGroupList (no
/// aggregated discovery: clients fall back to this, as against an older
/// server).
fn api_groups(st: &State) -> Value {
    let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
    for r in RESOURCES
        .iter()
        .filter(|r| !r.0.is_empty() && st.serves(r.0))
    {
        match groups.iter_mut().find(|g| g.0 == r.0) {
            Some(g) if !g.1.contains(&r.1) => g.1.push(r.1),
            Some(_) => {}
            None => groups.push((r.0, vec![r.1])),
        }
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(g, mut vs)| {
            vs.sort_by_key(|v| v.contains("alpha") || v.contains("beta"));
            let versions: Vec<Value> = vs
                .iter()
                .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                .collect();
            json!({"name": g, "versions": versions, "preferredVersion": versions[0]})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/openapi/v3` and its per-group-version documents, as much as a client
/// reads: each kind's PATCH path with its group-version-kind and the
/// `fieldValidation` query parameter, so kubectl validates on the server.
fn openapi_v3(st: &State, gv_path: &str) -> Response<Body> {
    let served = RESOURCES
        .iter()
        .filter(|r| r.0.is_empty() || st.serves(r.0));
    let prefix = |r: &(&str, &str, &str, &str, bool)| {
        if r.0.is_empty() {
            format!("api/{}", r.1)
        } else {
            format!("apis/{}/{}", r.0, r.1)
        }
    };
    if gv_path.is_empty() {
        let paths: serde_json::Map<String, Value> = served
            .map(|r| {
                let p = prefix(r);
                let url = json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash=fake")});
                (p, url)
            })
            .collect();
        return json_response(StatusCode::OK, &json!({"paths": paths}));
    }
    let paths: serde_json::Map<String, Value> = served
        .filter(|r| prefix(r) == gv_path)
        .map(|r| {
            let item = if r.4 {
                format!("/{}/namespaces/{{namespace}}/{}/{{name}}", prefix(r), r.2)
            } else {
                format!("/{}/{}/{{name}}", prefix(r), r.2)
            };
            let op = json!({"patch": {
                "x-kubernetes-group-version-kind": {"group": r.0, "version": r.1, "kind": r.3},
                "parameters": [
                    {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
                    {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
                    {"name": "force", "in": "query", "schema": {"type": "boolean"}}
                ],
                "responses": {"200": {"description": "OK"}}}});
            (item, op)
        })
        .collect();
    if paths.is_empty() {
        return status(
            404,
            "NotFound",
            &format!("no OpenAPI document for {gv_path}"),
        );
    }
    json_response(
        StatusCode::OK,
        &json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.34.0-fake"},
                "paths": paths, "components": {}}),
    )
}

struct Route {
    group: String,
    version: String,
    plural: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

fn route(path: &str) -> Option<Route> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match *segs.first()? {
        "api" => ("", *segs.get(1)?, &segs[2..]),
        "apis" => (*segs.get(1)?, *segs.get(2)?, &segs[3.min(segs.len())..]),
        _ => return None,
    };
    let s = |i: usize| rest.get(i).map(|x| x.to_string());
    Some(if rest.len() >= 3 && rest[0] == "namespaces" {
        Route {
            group: group.into(),
            version: version.into(),
            plural: s(2),
            namespace: s(1),
            name: s(3),
            sub: s(4),
        }
    } else {
        Route {
            group: group.into(),
            version: version.into(),
            plural: s(0),
            namespace: None,
            name: s(1),
            sub: s(2),
        }
    })
}

pub async fn handle(st: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    if let Some(op) = path.strip_prefix("/fake/") {
        match op {
            "reset" => {
                // The fake kind sends the cluster's kind config: its nodes.
                let config = json_body(req)
                    .await
                    .and_then(|b| b["config"].as_str().map(str::to_string));
                st.reset();
                st.make_nodes(config.as_deref());
            }
            "down" => {
                st.clear();
                st.down.store(true, Ordering::SeqCst);
            }
            _ => return Ok(status(404, "NotFound", "no such fake endpoint")),
        }
        return Ok(json_response(StatusCode::OK, &json!({"ok": true})));
    }
    if st.down.load(Ordering::SeqCst) {
        return Ok(status(
            503,
            "ServiceUnavailable",
            "this cluster was deleted",
        ));
    }
    if let Some(fault) = st.chaos(&req) {
        return Ok(fault);
    }
    if path == "/version" {
        return Ok(json_response(
            StatusCode::OK,
            &json!({"major": "1", "minor": "34", "gitVersion": "v1.34.0-fake", "platform": "linux/amd64"}),
        ));
    }
    if path == "/api" {
        return Ok(json_response(
            StatusCode::OK,
            &json!({"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}]}),
        ));
    }
    if path == "/apis" {
        return Ok(json_response(StatusCode::OK, &api_groups(&st)));
    }
    if let Some(gv) = path.strip_prefix("/openapi/v3") {
        return Ok(openapi_v3(&st, gv.trim_start_matches('/')));
    }
    let Some(r) = route(&path) else {
        return Ok(status(404, "NotFound", &format!("no route {path}")));
    };
    let gv = if r.group.is_empty() {
        r.version.clone()
    } else {
        format!("{}/{}", r.group, r.version)
    };
    if !st.serves(&r.group) {
        return Ok(status(
            404,
            "NotFound",
            &format!(
                "the server could not find the requested resource (group {gv} is not served yet)"
            ),
        ));
    }
    let Some(plural) = r.plural.clone() else {
        // Discovery of a group/version.
        let resources: Vec<Value> = RESOURCES
            .iter()
            .filter(|x| x.0 == r.group && x.1 == r.version)
            .map(|x| {
                let short: &[&str] = match x.2 {
                    "customresourcedefinitions" => &["crd", "crds"],
                    "namespaces" => &["ns"],
                    "services" => &["svc"],
                    "configmaps" => &["cm"],
                    "deployments" => &["deploy"],
                    "daemonsets" => &["ds"],
                    "serviceaccounts" => &["sa"],
                    _ => &[],
                };
                json!({"name": x.2, "singularName": x.3.to_lowercase(), "namespaced": x.4, "kind": x.3,
                       "shortNames": short,
                       "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]})
            })
            .collect();
        if resources.is_empty() {
            return Ok(status(404, "NotFound", &format!("no group version {gv}")));
        }
        return Ok(json_response(
            StatusCode::OK,
            &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
        ));
    };
    let Some((kind, namespaced)) = resource(&r.group, &r.version, &plural) else {
        return Ok(status(
            404,
            "NotFound",
            &format!("the server could not find the requested resource {gv}/{plural}"),
        ));
    };
    let ns = if namespaced {
        r.namespace.clone().unwrap_or_else(|| "default".into())
    } else {
        String::new()
    };
    if plural == "pods" && r.sub.as_deref() == Some("proxy") {
        let target = r.name.clone().unwrap_or_default();
        let rest = path.split_once("/proxy").map_or("", |(_, p)| p).to_string();
        return Ok(st.pod_proxy(&ns, &target, &rest));
    }
    if plural == "pods" && r.sub.as_deref() == Some("exec") {
        return Ok(exec(st, req, ns, r.name.clone().unwrap_or_default()));
    }
    if plural == "pods" && r.sub.as_deref() == Some("portforward") {
        return Ok(portforward(st, req, ns, r.name.clone().unwrap_or_default()));
    }
    let q = query(&req);
    match (method, &r.name) {
        (Method::GET, None) if q.get("watch").is_some_and(|w| w == "true" || w == "1") => {
            Ok(watch(
                st,
                (r.group.clone(), plural, gv.clone(), kind),
                namespaced.then_some(ns),
                &q,
            ))
        }
        (Method::GET, None) => {
            // kube's `list_metadata`: metadata only, as a real API server
            // answers that Accept header.
            let metadata_only = req
                .headers()
                .get("accept")
                .and_then(|a| a.to_str().ok())
                .is_some_and(|a| a.contains("as=PartialObjectMetadataList"));
            let name = q
                .get("fieldSelector")
                .and_then(|f| f.strip_prefix("metadata.name=").map(str::to_string));
            let items: Vec<Value> = st
                .objects
                .lock()
                .unwrap()
                .iter()
                .filter(|(k, _)| {
                    k.0 == r.group
                        && k.1 == plural
                        && (!namespaced || r.namespace.is_none() || k.2 == ns)
                })
                .filter(|(k, _)| name.as_ref().is_none_or(|n| &k.3 == n))
                .filter(|(_, v)| {
                    q.get("labelSelector").is_none_or(|sel| {
                        sel.is_empty()
                            || sel.split(',').all(|kv| {
                            let (k, want) = kv.split_once('=').unwrap_or((kv, ""));
                            v["metadata"]["labels"][k].as_str() == Some(want)
                        })
                    })
                })
                .map(|(_, v)| {
                    if metadata_only {
                        json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": v["metadata"]})
                    } else {
                        v.clone()
                    }
                })
                .collect();
            let rv = st.rv.load(Ordering::SeqCst).to_string();
            let (kind, gv) = if metadata_only {
                (
                    "PartialObjectMetadataList".to_string(),
                    "meta.k8s.io/v1".to_string(),
                )
            } else {
                (format!("{kind}List"), gv.clone())
            };
            Ok(json_response(
                StatusCode::OK,
                &json!({"kind": kind, "apiVersion": gv, "metadata": {"resourceVersion": rv}, "items": items}),
            ))
        }
        (Method::GET, Some(name)) => match st.get(&r.group, &plural, &ns, name) {
            Some(o) => Ok(json_response(StatusCode::OK, &o)),
            None => Ok(status(
                404,
                "NotFound",
                &format!("{plural} \"{name}\" not found"),
            )),
        },
        (Method::PATCH, Some(name)) => {
            if let Some(refused) = st.webhook_refuses(&r.group) {
                return Ok(refused);
            }
            let Some(patch) = json_body(req).await else {
                return Ok(status(
                    400,
                    "BadRequest",
                    "the fake API server takes JSON patches only",
                ));
            };
            let key = (r.group.clone(), plural.clone(), ns.clone(), name.clone());
            if r.sub.as_deref() == Some("scale") && plural == "deployments" {
                // `kubectl scale`: a merge patch of the Scale's replicas.
                let Some(mut o) = st.get(&r.group, &plural, &ns, name) else {
                    return Ok(status(
                        404,
                        "NotFound",
                        &format!("deployments.apps \"{name}\" not found"),
                    ));
                };
                let Some(n) = patch["spec"]["replicas"].as_i64() else {
                    return Ok(status(422, "Invalid", "spec.replicas: Required value"));
                };
                st.mutations.fetch_add(1, Ordering::SeqCst);
                if o["spec"]["replicas"].as_i64().unwrap_or(1) != n {
                    o["spec"]["replicas"] = json!(n);
                    let g = o["metadata"]["generation"].as_i64().unwrap_or(1);
                    o["metadata"]["generation"] = json!(g + 1);
                    let o = st.write(key.clone(), o, "MODIFIED");
                    st.react(key, o);
                }
                return Ok(json_response(
                    StatusCode::OK,
                    &json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
                            "metadata": {"name": name, "namespace": ns},
                            "spec": {"replicas": n}, "status": {"replicas": n}}),
                ));
            }
            if r.sub.as_deref() == Some("status") {
                let Some(mut o) = st.get(&r.group, &plural, &ns, name) else {
                    return Ok(status(404, "NotFound", "not found"));
                };
                st.mutations.fetch_add(1, Ordering::SeqCst);
                o["status"] = patch["status"].clone();
                return Ok(json_response(StatusCode::OK, &st.write(key, o, "MODIFIED")));
            }
            if let Some(missing) = st.missing_namespace(namespaced, &ns) {
                return Ok(missing);
            }
            let Some(manager) = q.get("fieldManager") else {
                return Ok(status(
                    422,
                    "Invalid",
                    "PATCH is not supported: fieldManager is required for apply patch",
                ));
            };
            let force = q.get("force").is_some_and(|f| f == "true");
            st.mutations.fetch_add(1, Ordering::SeqCst);
            match st.apply(key, (&gv, kind, namespaced), manager, force, patch) {
                Ok(o) => Ok(json_response(StatusCode::OK, &o)),
                Err(refused) => Ok(*refused),
            }
        }
        (Method::POST, None) => {
            let ctype = req
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let Some(obj) = json_body(req).await else {
                return Ok(status(
                    415,
                    "UnsupportedMediaType",
                    &format!("the fake API server takes JSON only, not {ctype}"),
                ));
            };
            let Some(name) = obj["metadata"]["name"].as_str().map(str::to_string) else {
                return Ok(status(422, "Invalid", "metadata.name: Required value"));
            };
            if let Some(missing) = st.missing_namespace(namespaced, &ns) {
                return Ok(missing);
            }
            if st.get(&r.group, &plural, &ns, &name).is_some() {
                return Ok(status(
                    409,
                    "AlreadyExists",
                    &format!("{plural} \"{name}\" already exists"),
                ));
            }
            st.mutations.fetch_add(1, Ordering::SeqCst);
            let key = (r.group.clone(), plural.clone(), ns.clone(), name);
            let manager = q
                .get("fieldManager")
                .cloned()
                .unwrap_or("kubectl-create".into());
            match st.apply(key, (&gv, kind, namespaced), &manager, true, obj) {
                Ok(o) => Ok(json_response(StatusCode::CREATED, &o)),
                Err(refused) => Ok(*refused),
            }
        }
        (Method::DELETE, Some(name)) => {
            st.mutations.fetch_add(1, Ordering::SeqCst);
            match st.get(&r.group, &plural, &ns, name) {
                Some(o) => {
                    st.remove(&r.group, &plural, &ns, name);
                    Ok(json_response(StatusCode::OK, &o))
                }
                None => Ok(status(
                    404,
                    "NotFound",
                    &format!("{plural} \"{name}\" not found"),
                )),
            }
        }
        (m, _) => Ok(status(
            405,
            "MethodNotAllowed",
            &format!("the fake API server does not do {m} here"),
        )),
    }
}

/// A watch as a real API server serves it: what changed since the
/// client's resourceVersion, then events as they happen; BOOKMARK events
/// (the current resourceVersion) when asked for; an end after the watch's
/// life, when history is compacted, so that a client resuming from an older
/// resourceVersion gets an ERROR event with 410 Gone and must list again.
fn watch(
    st: Arc<State>,
    (group, plural, gv, kind): (String, String, String, &'static str),
    ns: Option<String>,
    q: &BTreeMap<String, String>,
) -> Response<Body> {
    let since: u64 = q
        .get("resourceVersion")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let name = q
        .get("fieldSelector")
        .and_then(|f| f.strip_prefix("metadata.name=").map(str::to_string));
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|s| s.parse().ok())
        .unwrap_or(290u64);
    let life = *st.knobs.watch_life.lock().unwrap();
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|b| b == "true");
    let bookmark_every = (*st.knobs.bookmark_every.lock().unwrap()).filter(|_| bookmarks);
    let frame = |v: Value| -> Result<Frame<Bytes>, Infallible> {
        let mut b = serde_json::to_vec(&v).unwrap();
        b.push(b'\n');
        Ok(Frame::data(Bytes::from(b)))
    };
    if since > 0 && since < st.compacted.load(Ordering::SeqCst) {
        let gone = json!({"type": "ERROR", "object": {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("too old resource version: {since} ({})", st.compacted.load(Ordering::SeqCst)),
            "reason": "Expired", "code": 410}});
        let stream = futures_util::stream::iter(vec![frame(gone)]);
        return Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .body(BodyExt::boxed(StreamBody::new(stream)))
            .unwrap();
    }
    let matches = {
        let (group, plural, ns, name) = (group.clone(), plural.clone(), ns.clone(), name.clone());
        move |k: &Key| {
            k.0 == group
                && k.1 == plural
                && ns.as_ref().is_none_or(|n| &k.2 == n)
                && name.as_ref().is_none_or(|n| &k.3 == n)
        }
    };
    let mut rx = st.events.subscribe();
    let (tx, out) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(256);
    // Replay what changed since the client's resourceVersion (everything,
    // as ADDED, for a watch from nothing or a watch-list asking for its
    // initial events, which then end with a marked BOOKMARK), then follow.
    let initial = q.get("sendInitialEvents").is_some_and(|v| v == "true");
    let since = if initial { 0 } else { since };
    let replay_kind = if since == 0 { "ADDED" } else { "MODIFIED" };
    let replay: Vec<Value> = st
        .objects
        .lock()
        .unwrap()
        .iter()
        .filter(|(k, _)| matches(k))
        .filter(|(_, v)| {
            v["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0)
                > since
        })
        .map(|(_, v)| v.clone())
        .collect();
    tokio::spawn(async move {
        let line = |t: &str, o: &Value| frame(json!({"type": t, "object": o}));
        for o in replay {
            if tx.send(line(replay_kind, &o)).await.is_err() {
                return;
            }
        }
        if initial {
            let rv = st.rv.load(Ordering::SeqCst).to_string();
            let mark = json!({"kind": kind, "apiVersion": gv, "metadata": {"resourceVersion": rv,
                "annotations": {"k8s.io/initial-events-end": "true"}}});
            if tx.send(line("BOOKMARK", &mark)).await.is_err() {
                return;
            }
        }
        let client_deadline = Duration::from_secs(timeout);
        let ends_by_life = life.is_some_and(|l| l < client_deadline);
        let deadline = tokio::time::sleep(life.map_or(client_deadline, |l| l.min(client_deadline)));
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(bookmark_every.unwrap_or(Duration::from_secs(3600)));
        tick.tick().await;
        // An API server that goes to sleep (or away) drops its watches.
        let mut alive = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = alive.tick() => {
                    if st.asleep.load(Ordering::SeqCst) || st.down.load(Ordering::SeqCst) {
                        return;
                    }
                }
                ev = rx.recv() => match ev {
                    Ok(ev) if matches(&ev.key) => {
                        if tx.send(line(ev.kind, &ev.object)).await.is_err() { return; }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return,
                },
                _ = tick.tick(), if bookmark_every.is_some() => {
                    let rv = st.rv.load(Ordering::SeqCst).to_string();
                    let mark = json!({"kind": kind, "apiVersion": gv, "metadata": {"resourceVersion": rv}});
                    if tx.send(line("BOOKMARK", &mark)).await.is_err() { return; }
                }
                () = &mut deadline => {
                    if ends_by_life {
                        // The server moves on: history up to now is compacted.
                        let now = st.rv.fetch_add(1, Ordering::SeqCst) + 1;
                        st.compacted.fetch_max(now, Ordering::SeqCst);
                    }
                    return;
                }
                () = tx.closed() => return,
            }
        }
    });
    let stream =
        futures_util::stream::unfold(
            out,
            |mut rx| async move { rx.recv().await.map(|f| (f, rx)) },
        );
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap()
}

fn all_values(req: &Request<Incoming>, key: &str) -> Vec<String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|p| p.split_once('='))
        .filter(|(k, _)| decode(k) == key)
        .map(|(_, v)| decode(v))
        .collect()
}

/// `pods/<name>/exec` over a websocket (v4.channel.k8s.io): runs the
/// simulated command and sends its stdout on channel 1, then a Success
/// status on channel 3.
fn exec(st: Arc<State>, mut req: Request<Incoming>, ns: String, pod: String) -> Response<Body> {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return status(400, "BadRequest", "exec needs a websocket upgrade");
    };
    if st.get("", "pods", &ns, &pod).is_none() {
        return status(404, "NotFound", &format!("pods \"{pod}\" not found"));
    }
    let command = all_values(&req, "command");
    let output = st.simulate(&ns, &pod, &command);
    let ws = server_websocket(&mut req);
    tokio::spawn(async move {
        let Some(mut ws) = ws.await else { return };
        let mut out = vec![1u8];
        out.extend_from_slice(output.as_bytes());
        let _ = ws.send(Message::Binary(out.into())).await;
        let mut done = vec![3u8];
        done.extend_from_slice(br#"{"metadata":{},"status":"Success"}"#);
        let _ = ws.send(Message::Binary(done.into())).await;
        let _ = ws.close(None).await;
    });
    switching_protocols(&key)
}

/// The server side of the websocket `req` asks to be upgraded to, once the
/// upgrade is done (`None` if it never is): what exec and portforward
/// speak.
fn server_websocket(
    req: &mut Request<Incoming>,
) -> impl std::future::Future<
    Output = Option<
        tokio_tungstenite::WebSocketStream<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>,
    >,
> + use<> {
    let upgrade = hyper::upgrade::on(req);
    async move {
        let upgraded = upgrade.await.ok()?;
        Some(
            tokio_tungstenite::WebSocketStream::from_raw_socket(
                hyper_util::rt::TokioIo::new(upgraded),
                tokio_tungstenite::tungstenite::protocol::Role::Server,
                None,
            )
            .await,
        )
    }
}

/// `pods/<name>/portforward` over a websocket (v4.channel.k8s.io), as the
/// kubelet serves it: for the port asked, channel 0 carries data and
/// channel 1 errors, each opened by a frame naming the port (2 bytes, little
/// endian). What listens: Kiali's server on 20001 of a Kiali pod, which
/// answers one HTTP request; anything else is refused on the error channel.
fn portforward(
    st: Arc<State>,
    mut req: Request<Incoming>,
    ns: String,
    pod: String,
) -> Response<Body> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return status(400, "BadRequest", "portforward needs a websocket upgrade");
    };
    let Some(p) = st.get("", "pods", &ns, &pod) else {
        return status(404, "NotFound", &format!("pods \"{pod}\" not found"));
    };
    let port: u16 = query(&req)
        .get("ports")
        .and_then(|x| x.parse().ok())
        .unwrap_or(0);
    let kiali = p["metadata"]["labels"]["app.kubernetes.io/name"] == "kiali" && port == 20001;
    let ws = server_websocket(&mut req);
    tokio::spawn(async move {
        let Some(mut ws) = ws.await else { return };
        let [lo, hi] = port.to_le_bytes();
        for ch in [0u8, 1] {
            let _ = ws.send(Message::Binary(vec![ch, lo, hi].into())).await;
        }
        if !kiali {
            let msg = format!(
                "error forwarding port {port} to pod {pod}: dial tcp4 127.0.0.1:{port}: connect: connection refused"
            );
            let mut frame = vec![1u8];
            frame.extend_from_slice(msg.as_bytes());
            let _ = ws.send(Message::Binary(frame.into())).await;
            let _ = ws.close(None).await;
            return;
        }
        let mut request = Vec::new();
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Binary(b) = m
                && b.first() == Some(&0)
            {
                request.extend_from_slice(&b[1..]);
                if request.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        }
        let line = String::from_utf8_lossy(&request)
            .lines()
            .next()
            .unwrap_or("")
            .to_string();
        let body = format!("<title>Kiali</title> fake Kiali in pod {pod}: {line}\n");
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let mut frame = vec![0u8];
        frame.extend_from_slice(resp.as_bytes());
        let _ = ws.send(Message::Binary(frame.into())).await;
        let _ = ws.close(None).await;
    });
    switching_protocols(&key)
}

/// The 101 answer to a websocket upgrade in the binary channel protocol
/// (exec, portforward).
fn switching_protocols(key: &hyper::header::HeaderValue) -> Response<Body> {
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .header("sec-websocket-accept", derive_accept_key(key.as_bytes()))
        .header("sec-websocket-protocol", "v4.channel.k8s.io")
        .body(Full::new(Bytes::new()).boxed())
        .unwrap()
}

/// Mutual TLS between two sidecar workloads: each trusts the root the
/// other's certificate chains to. Without cacerts (istiod self-signs), a
/// workload's root is its own cluster's, trusted nowhere else.
fn mtls_ok(a: &Value, b: &Value) -> bool {
    let get = |p: &Value, k: &str| {
        p["metadata"]["annotations"][k]
            .as_str()
            .unwrap_or("")
            .trim()
            .to_string()
    };
    let trusts = |p: &Value, q: &Value| {
        let root = get(q, "fake.mesh/root");
        !root.is_empty() && get(p, "fake.mesh/trusts").contains(&root)
    };
    trusts(a, b) && trusts(b, a)
}

impl State {
    /// The roots this cluster's `cacerts` trusts (`root-cert.pem`) and the
    /// root its intermediate chains to (the last certificate of
    /// `cert-chain.pem`); empty without cacerts.
    fn cacerts_identity(&self) -> (String, String) {
        let Some(sec) = self.get("", "secrets", "istio-system", "cacerts") else {
            return (String::new(), String::new());
        };
        let field = |k: &str| -> String {
            use base64::Engine;
            sec["data"][k]
                .as_str()
                .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok())
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .or_else(|| sec["stringData"][k].as_str().map(str::to_string))
                .unwrap_or_default()
        };
        let chain = field("cert-chain.pem");
        let marker = "-----BEGIN CERTIFICATE-----";
        let root = chain
            .rfind(marker)
            .map(|i| chain[i..].trim().to_string())
            .unwrap_or_default();
        (field("root-cert.pem"), root)
    }

    /// The cluster whose istiod configures this one's proxies.
    fn control_plane(&self) -> String {
        if self
            .get("apps", "deployments", "istio-system", "istiod")
            .is_some()
        {
            return self.name.clone();
        }
        self.get("", "namespaces", "", "istio-system")
            .and_then(|n| {
                n["metadata"]["annotations"]["topology.istio.io/controlPlaneClusters"]
                    .as_str()
                    .map(str::to_string)
            })
            .unwrap_or_else(|| self.name.clone())
    }

    /// How this cluster's istiod sees remote cluster `name`: unknown
    /// without its secret, "syncing" until it has listed the remote,
    /// "timeout" while the remote's API server does not answer.
    fn remote_status(&self, name: &str) -> Option<&'static str> {
        let key: Key = (
            String::new(),
            "secrets".into(),
            "istio-system".into(),
            format!("istio-remote-secret-{name}"),
        );
        if !self.objects.lock().unwrap().contains_key(&key) {
            return None;
        }
        let born = self.born.lock().unwrap().get(&key).copied()?;
        let peer = self.peers.get().and_then(|p| p.get(name).cloned());
        let answers = peer
            .is_some_and(|p| !p.asleep.load(Ordering::SeqCst) && !p.down.load(Ordering::SeqCst));
        Some(if !answers {
            "timeout"
        } else if born.elapsed() < *self.knobs.sync_delay.lock().unwrap() {
            "syncing"
        } else {
            "synced"
        })
    }

    /// The API server's proxy to a pod's port: istiod's debug endpoint
    /// `/debug/clusterz` on 15014 (what `istioctl remote-clusters` reads):
    /// this cluster and every remote cluster it has a secret for, with its
    /// sync status.
    fn pod_proxy(&self, ns: &str, target: &str, path: &str) -> Response<Body> {
        let (pod, port) = target.split_once(':').unwrap_or((target, "80"));
        if self.get("", "pods", ns, pod).is_none() {
            return status(404, "NotFound", &format!("pods \"{pod}\" not found"));
        }
        let is_istiod = pod.starts_with("istiod");
        if !(is_istiod && port == "15014" && path == "/debug/clusterz") {
            return status(
                503,
                "ServiceUnavailable",
                &format!(
                    "error trying to reach service: dial tcp {pod}:{port}: connect: connection refused"
                ),
            );
        }
        let mut clusters = vec![json!({"id": self.name, "secretName": "", "syncStatus": "synced"})];
        for sec in self.list("", "secrets") {
            if sec["metadata"]["namespace"] != "istio-system"
                || sec["metadata"]["labels"]["istio/multiCluster"] != "true"
            {
                continue;
            }
            let secret = sec["metadata"]["name"].as_str().unwrap_or("").to_string();
            for id in sec["data"]
                .as_object()
                .map(|m| m.keys().cloned().collect::<Vec<_>>())
                .unwrap_or_default()
            {
                let state = self.remote_status(&id).unwrap_or("syncing");
                clusters.push(json!({"id": id, "secretName": format!("istio-system/{secret}"), "syncStatus": state}));
            }
        }
        json_response(StatusCode::OK, &Value::Array(clusters))
    }

    fn has_eastwest_address(&self) -> bool {
        self.get("", "services", "istio-system", "istio-eastwestgateway")
            .is_some_and(|s| s["status"]["loadBalancer"]["ingress"][0]["ip"].is_string())
            || self
                .get(
                    "gateway.networking.k8s.io",
                    "gateways",
                    "istio-system",
                    "istio-eastwestgateway",
                )
                .is_some_and(|g| {
                    g["status"]["addresses"]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|a| a["type"] == "IPAddress"))
                })
    }

    /// Simulate `sh -c 'for i in $(seq 1 N); do curl -s -m 5 URL; echo; done'`
    /// as the mesh would route it: endpoints of this cluster, plus those of
    /// clusters the controlling istiod has a remote secret for, whose
    /// east-west gateway has an address, and whose pods and the client pod
    /// trust each other's roots ([`mtls_ok`]).
    pub fn simulate(&self, ns: &str, pod: &str, command: &[String]) -> String {
        let client = self.get("", "pods", ns, pod).unwrap_or(Value::Null);
        let script = command.join(" ");
        let n: usize = script
            .split("seq 1 ")
            .nth(1)
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|d| d.parse().ok())
            .unwrap_or(1);
        let Some(url) = script.split_whitespace().find(|w| w.starts_with("http://")) else {
            return "sh: usage\n".into();
        };
        let url = url.trim_end_matches(';');
        let host = url
            .trim_start_matches("http://")
            .split(['/', ':'])
            .next()
            .unwrap_or("");
        let (svc, svc_ns) = host.split_once('.').unwrap_or((host, "default"));
        let peers = self.peers.get().cloned().unwrap_or_default();
        let cp = peers.get(&self.control_plane()).cloned();
        let local = self.locality_of(&client);
        let by_locality = cp.as_ref().is_some_and(|k| k.locality_lb(svc, svc_ns, ns));
        let mut endpoints = Vec::new();
        for (name, x) in &peers {
            let visible = cp
                .as_ref()
                .is_some_and(|k| &k.name == name || k.remote_status(name) == Some("synced"));
            let reachable = name == &self.name || x.has_eastwest_address();
            if !(visible && reachable) {
                continue;
            }
            for p in x.list("", "pods") {
                if p["metadata"]["namespace"] == svc_ns && p["metadata"]["labels"]["app"] == svc {
                    // Across clusters, sidecars must trust each other's
                    // certificates (a pod keeps those it started with).
                    if name != &self.name && !mtls_ok(&client, &p) {
                        continue;
                    }
                    let v = p["metadata"]["labels"]["version"]
                        .as_str()
                        .unwrap_or("none")
                        .to_string();
                    // Istio's locality priorities: same region and zone,
                    // same region, anywhere.
                    let l = x.locality_of(&p);
                    let priority = if l == local {
                        0
                    } else if l.0 == local.0 {
                        1
                    } else {
                        2
                    };
                    // What the pod's server says: http-echo its -text, as
                    // is (no instance name); helloworld its version and pod.
                    let echo = p["spec"]["containers"][0]["args"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find_map(|a| a.as_str()?.strip_prefix("-text=").map(str::to_string));
                    let name = p["metadata"]["name"].as_str().unwrap_or("");
                    let says =
                        echo.unwrap_or_else(|| format!("Hello version: {v}, instance: {name}"));
                    endpoints.push((says, priority));
                }
            }
        }
        if by_locality && let Some(best) = endpoints.iter().map(|e| e.1).min() {
            endpoints.retain(|e| e.1 == best);
        }
        let mut out = String::new();
        for i in 0..n {
            match endpoints.get(i % endpoints.len().max(1)) {
                Some((says, _)) if !endpoints.is_empty() => {
                    out.push_str(says);
                    out.push('\n');
                }
                _ => out.push_str("upstream connect error or disconnect/reset before headers\n"),
            }
        }
        out
    }
}
