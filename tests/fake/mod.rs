//! The fake world the live tests run `mesh` against: fake `kind`, `helm` and
//! `docker` executables first on PATH (`tools.py`, stdlib Python), and one
//! fake Kubernetes API server per cluster (`api.rs`) on 127.0.0.1 over TLS
//! with client-certificate auth. Nothing here reaches any address but
//! 127.0.0.1.
//!
//! The world prepares, for each cluster name, an API server and the two
//! kubeconfigs the fake `kind` hands out: the external one (server
//! `https://127.0.0.1:<port>`) and the internal one (server
//! `https://<name>-control-plane:6443`, as `kind get kubeconfig --internal`
//! prints). The servers run on the world's own tokio runtime, so they live
//! exactly as long as the test.
#![allow(dead_code)]

pub mod api;

use base64::Engine;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const TOOLS: &str = include_str!("tools.py");

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

pub struct World {
    pub dir: tempfile::TempDir,
    pub apis: BTreeMap<String, Arc<api::State>>,
    rt: tokio::runtime::Runtime,
    extra_env: std::sync::Mutex<Vec<(String, String)>>,
}

struct Pki {
    ca_pem: String,
    server: (Vec<u8>, Vec<u8>),
    client_cert: String,
    client_key: String,
    ca_der: Vec<u8>,
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "fake-kubernetes-ca");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let mut sp = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    sp.subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let server = sp.signed_by(&server_key, &issuer).unwrap();
    let client_key = KeyPair::generate().unwrap();
    let mut cp = CertificateParams::new(Vec::<String>::new()).unwrap();
    cp.distinguished_name
        .push(DnType::CommonName, "kubernetes-admin");
    cp.distinguished_name
        .push(DnType::OrganizationName, "system:masters");
    let client = cp.signed_by(&client_key, &issuer).unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        ca_der: ca_cert.der().to_vec(),
        server: (server.der().to_vec(), server_key.serialize_der()),
        client_cert: client.pem(),
        client_key: client_key.serialize_pem(),
    }
}

fn kubeconfig(name: &str, server: &str, pki: &Pki) -> Value {
    let ctx = format!("kind-{name}");
    json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": ctx, "cluster": {"server": server, "certificate-authority-data": b64(pki.ca_pem.as_bytes())}}],
        "users": [{"name": ctx, "user": {"client-certificate-data": b64(pki.client_cert.as_bytes()),
                                         "client-key-data": b64(pki.client_key.as_bytes())}}],
        "contexts": [{"name": ctx, "context": {"cluster": ctx, "user": ctx}}],
        "current-context": ctx,
    })
}

/// The fake tools' script, started by the Python interpreter itself: a
/// `python3` found on PATH may be a version manager's shim (pyenv's is a
/// shell script that runs pyenv first), which cost 250 ms a call here, far
/// more than the Go tools it stands for; the interpreter it resolves to
/// starts in 30 ms.
fn tools_script() -> String {
    static PYTHON: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let python = PYTHON.get_or_init(|| {
        std::process::Command::new("python3")
            .args(["-S", "-c", "import sys; print(sys.executable)"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|p| !p.is_empty() && !p.contains(char::is_whitespace))
            .unwrap_or_else(|| "/usr/bin/env -S python3".into())
    });
    let (shebang, rest) = TOOLS.split_once('\n').expect("tools.py has a shebang");
    assert!(shebang.starts_with("#!"), "{shebang}");
    format!("#!{python} -S\n{rest}")
}

impl World {
    /// A world with API servers prepared for these cluster names.
    pub fn new(clusters: &[&str]) -> World {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let script = bin.join("tools.py");
        std::fs::write(&script, tools_script()).unwrap();
        for t in ["kind", "helm", "docker"] {
            std::os::unix::fs::symlink(&script, bin.join(t)).unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        // The kernel settings the pre-flight reads: as kind documents them.
        let inotify = state.join("proc-sys/fs/inotify");
        std::fs::create_dir_all(&inotify).unwrap();
        std::fs::write(inotify.join("max_user_watches"), "524288\n").unwrap();
        std::fs::write(inotify.join("max_user_instances"), "512\n").unwrap();

        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mut apis = BTreeMap::new();
        for name in clusters {
            let pki = pki();
            let st = api::State::new(name);
            st.down.store(true, std::sync::atomic::Ordering::SeqCst); // no cluster until kind creates it
            let listener = rt
                .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
                .unwrap();
            let port = listener.local_addr().unwrap().port();
            let tls = tls_config(&pki);
            let st2 = st.clone();
            rt.spawn(serve(listener, tls, st2));
            let d = state.join("api").join(name);
            std::fs::create_dir_all(&d).unwrap();
            let ext = kubeconfig(name, &format!("https://127.0.0.1:{port}"), &pki);
            let int = kubeconfig(name, &format!("https://{name}-control-plane:6443"), &pki);
            std::fs::write(
                d.join("kubeconfig.json"),
                serde_json::to_vec_pretty(&ext).unwrap(),
            )
            .unwrap();
            std::fs::write(
                d.join("kubeconfig-internal.json"),
                serde_json::to_vec_pretty(&int).unwrap(),
            )
            .unwrap();
            apis.insert(name.to_string(), st);
        }
        for a in apis.values() {
            let _ = a.peers.set(apis.clone());
        }
        World {
            dir,
            apis,
            rt,
            extra_env: std::sync::Mutex::new(Vec::new()),
        }
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Environment for a `mesh` run in this world.
    pub fn env(&self) -> Vec<(String, String)> {
        let path = format!(
            "{}:{}",
            self.dir.path().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        vec![
            ("PATH".into(), path),
            ("FAKE_STATE".into(), self.state().display().to_string()),
            ("MESH_WAIT_TIMEOUT".into(), "20".into()),
            (
                "MESH_PROC_SYS".into(),
                self.state().join("proc-sys").display().to_string(),
            ),
            (
                "KUBECONFIG".into(),
                self.dir
                    .path()
                    .join("no-such-kubeconfig")
                    .display()
                    .to_string(),
            ),
        ]
        .into_iter()
        .chain(self.extra_env.lock().unwrap().iter().cloned())
        .collect()
    }

    /// An extra environment variable for the following mesh runs.
    pub fn set_env(&self, k: &str, v: &str) {
        self.extra_env.lock().unwrap().push((k.into(), v.into()));
    }

    /// Set the fake tools' knobs (config.json).
    pub fn configure(&self, config: Value) {
        std::fs::write(
            self.state().join("config.json"),
            serde_json::to_vec(&config).unwrap(),
        )
        .unwrap();
    }

    /// Every tool invocation so far.
    pub fn tool_log(&self) -> Vec<Vec<String>> {
        std::fs::read_to_string(self.state().join("log.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Tool invocations that change something.
    pub fn mutating_tool_calls(&self) -> Vec<Vec<String>> {
        self.tool_log()
            .into_iter()
            .filter(|c| {
                matches!(
                    (c[0].as_str(), c.get(1).map(String::as_str)),
                    ("kind", Some("create"))
                        | ("kind", Some("delete"))
                        | ("helm", Some("upgrade"))
                        | ("helm", Some("uninstall"))
                )
            })
            .collect()
    }

    pub fn clear_log(&self) {
        let _ = std::fs::remove_file(self.state().join("log.jsonl"));
    }

    pub fn api(&self, cluster: &str) -> &Arc<api::State> {
        &self.apis[cluster]
    }

    /// Mutating API requests across all clusters.
    pub fn api_mutations(&self) -> usize {
        self.apis
            .values()
            .map(|a| a.mutations.load(std::sync::atomic::Ordering::SeqCst))
            .sum()
    }

    /// Helm releases the fake helm holds for a cluster.
    pub fn releases(&self, cluster: &str) -> Value {
        std::fs::read_to_string(
            self.state()
                .join("releases")
                .join(format!("kind-{cluster}.json")),
        )
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(json!({}))
    }

    pub fn kind_clusters(&self) -> Vec<String> {
        let d = self.state().join("clusters");
        let mut v: Vec<String> = std::fs::read_dir(&d)
            .map(|r| {
                r.flatten()
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Make a cluster's API server stop (or start again) answering while
    /// the cluster itself stays: kind still lists it, its objects are kept.
    pub fn set_asleep(&self, name: &str, asleep: bool) {
        self.api(name)
            .asleep
            .store(asleep, std::sync::atomic::Ordering::SeqCst);
    }

    /// Create a kind cluster behind mesh's back, as a user's own `kind
    /// create cluster --name <name>` would.
    pub fn create_cluster_behind_meshs_back(&self, name: &str) {
        let config = self.state().join(format!("foreign-{name}.yaml"));
        std::fs::write(
            &config,
            "kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\n",
        )
        .unwrap();
        let o = std::process::Command::new(self.dir.path().join("bin/kind"))
            .args(["create", "cluster", "--name", name, "--config"])
            .arg(&config)
            .env("FAKE_STATE", self.state())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        // Not mesh's doing: not in the log mesh's tests read.
        self.clear_log();
    }

    /// Delete a kind cluster behind mesh's back, as `kind delete` would.
    pub fn delete_cluster_behind_meshs_back(&self, name: &str) {
        let d = self.state().join("clusters").join(name);
        std::fs::remove_dir_all(d).unwrap();
        let _ = std::fs::remove_file(
            self.state()
                .join("releases")
                .join(format!("kind-{name}.json")),
        );
        self.api(name).clear();
        self.api(name)
            .down
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// A plain HTTP server on 127.0.0.1 serving `routes`: path → (status,
    /// body; for a 3xx status the body is the Location). Returns its base URL.
    pub fn serve_http(&self, routes: Vec<(&str, u16, String)>) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = self
            .rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let routes: Arc<BTreeMap<String, (u16, String)>> = Arc::new(
            routes
                .into_iter()
                .map(|(p, c, b)| (p.to_string(), (c, b)))
                .collect(),
        );
        self.rt.spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else { return };
                let routes = routes.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let n = sock.read(&mut buf).await.unwrap_or(0);
                    let req = String::from_utf8_lossy(&buf[..n]);
                    let path = req.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let (code, body) = routes.get(&path).cloned().unwrap_or((404, "not found".into()));
                    let resp = if (300..400).contains(&code) {
                        format!("HTTP/1.1 {code} Moved\r\nLocation: {body}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    } else {
                        format!("HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
                    };
                    let _ = sock.write_all(resp.as_bytes()).await;
                });
            }
        });
        base
    }

    /// How long workloads in namespace `ns` take to become ready, in every
    /// cluster.
    pub fn set_ready_delay_in(&self, ns: &str, d: Duration) {
        for a in self.apis.values() {
            a.knobs.ready_delay_in.lock().unwrap().insert(ns.into(), d);
        }
    }

    /// How long every istiod takes to sync a remote cluster's secret.
    /// Roll a Deployment of `cluster` out again (its pods replaced, with
    /// the certificates of the cluster's cacerts as it is now).
    pub fn rollout(&self, cluster: &str, ns: &str, name: &str) {
        let _in = self.rt.enter();
        self.api(cluster).rollout(ns, name);
    }

    pub fn set_sync_delay(&self, d: Duration) {
        for a in self.apis.values() {
            *a.knobs.sync_delay.lock().unwrap() = d;
        }
    }

    /// Bring a cluster's API server up as `kind create` does, without kind.
    pub fn bring_up(&self, name: &str) {
        self.api(name).reset();
        self.api(name).make_nodes(None);
    }

    pub fn set_ready_delay(&self, d: Duration) {
        for a in self.apis.values() {
            *a.knobs.ready_delay.lock().unwrap() = d;
        }
    }
}

fn tls_config(pki: &Pki) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    // The server picks the cipher suite by its own order, AES-128-GCM first,
    // as Go's crypto/tls does for a real API server (rustls would follow
    // the client's order, which puts AES-256 with SHA-384 first).
    use rustls::crypto::aws_lc_rs::cipher_suite as cs;
    let provider = Arc::new(rustls::crypto::CryptoProvider {
        cipher_suites: vec![
            cs::TLS13_AES_128_GCM_SHA256,
            cs::TLS13_AES_256_GCM_SHA384,
            cs::TLS13_CHACHA20_POLY1305_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        ],
        ..rustls::crypto::aws_lc_rs::default_provider()
    });
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(pki.ca_der.clone())).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from(pki.server.0.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.server.1.clone())),
        )
        .unwrap();
    cfg.ignore_client_order = true;
    tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
}

async fn serve(
    listener: tokio::net::TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    st: Arc<api::State>,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let (tls, st) = (tls.clone(), st.clone());
        tokio::spawn(async move {
            let Ok(stream) = tls.accept(tcp).await else {
                return;
            };
            // Whether this connection has carried a request of mesh's own.
            let mesh_used = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let st = st.clone();
                    let mesh_used = mesh_used.clone();
                    async move {
                        // A deleted cluster: only the fake control endpoints
                        // answer; anything else has its connection closed, as
                        // a stopped kind node refuses it.
                        // An asleep one likewise, keeping its objects.
                        let off = st.down.load(std::sync::atomic::Ordering::SeqCst)
                            || st.asleep.load(std::sync::atomic::Ordering::SeqCst);
                        if off && !req.uri().path().starts_with("/fake/") {
                            return Err(std::io::Error::other("cluster is down"));
                        }
                        let call = (!req.headers().contains_key("x-fake-tool")).then(|| {
                            let pq = req.uri().path_and_query().map(|p| p.to_string());
                            format!("{} {}", req.method(), pq.unwrap_or_default())
                        });
                        if call.is_some()
                            && !mesh_used.swap(true, std::sync::atomic::Ordering::SeqCst)
                        {
                            st.mesh_connections
                                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        let resp = api::handle(st.clone(), req).await.expect("infallible");
                        if let Some(call) = call {
                            let status = resp.status().as_u16();
                            st.calls.lock().unwrap().push(format!("{call} {status}"));
                        }
                        Ok(resp)
                    }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .with_upgrades()
                .await;
        });
    }
}

/// Write a plan into a project directory.
pub fn project(plan: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("plan.toml"), plan).unwrap();
    d
}

/// Start mesh in `dir` within `world`, its output piped, without waiting
/// for it (a test that interrupts it).
pub fn spawn_mesh(world: &World, dir: &Path, args: &[&str]) -> std::process::Child {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_mesh"));
    c.args(args).current_dir(dir);
    for (k, v) in world.env() {
        c.env(k, v);
    }
    c.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Run mesh in `dir` within `world`.
pub fn mesh(world: &World, dir: &Path, args: &[&str]) -> crate::common::Out {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_mesh"));
    c.args(args).current_dir(dir);
    for (k, v) in world.env() {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    crate::common::Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}
