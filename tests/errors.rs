//! How the world's errors read once they reach a task: each provider's and
//! the Kubernetes layer's error values, converted at the kind boundary into
//! the task's error, rendered as the user sees them (stderr, the `--json`
//! reason). Pinned so a wording change is a reviewed change.

use mesh::graph::TaskError;
use mesh::k8s::KubeError;
use mesh::providers::ToolError;

fn shown(e: impl Into<TaskError>) -> String {
    e.into().to_string()
}

#[test]
fn tool_and_kubernetes_errors_as_tasks_report_them() {
    let lines = [
        shown(ToolError::NotFound {
            tool: "kind",
            hint: "install kind (or set MESH_KIND)",
        }),
        shown(ToolError::Spawn {
            tool: "helm",
            cmd: "helm version".into(),
            reason: "Permission denied (os error 13)".into(),
        }),
        shown(ToolError::Timeout {
            tool: "kind",
            cmd: "kind create cluster --name east".into(),
            secs: 600,
        }),
        shown(ToolError::Failed {
            tool: "helm",
            cmd: "helm upgrade --install istiod".into(),
            status: "exited with status 1".into(),
            stderr_tail: vec![
                "Error: UPGRADE FAILED".into(),
                "another operation is in progress".into(),
            ],
        }),
        shown(ToolError::Failed {
            tool: "kind",
            cmd: "kind delete cluster --name east".into(),
            status: "was killed by a signal".into(),
            stderr_tail: vec![],
        }),
        shown(ToolError::NotUtf8 {
            tool: "docker",
            cmd: "docker network inspect kind".into(),
        }),
        shown(ToolError::BadOutput {
            tool: "docker",
            message: "the kind network has no IPv4 subnet".into(),
        }),
        shown(ToolError::Download {
            url: "http://127.0.0.1:1/crds.yaml".into(),
            reason: "HTTP 404 Not Found".into(),
        }),
        shown(ToolError::CommandSpawn {
            program: "./seed.sh".into(),
            cmd: "./seed.sh east".into(),
            reason: "No such file or directory (os error 2)".into(),
        }),
        shown(ToolError::CommandFailed {
            program: "kubectl".into(),
            cmd: "kubectl apply -k overlays/east".into(),
            status: "exit status: 1".into(),
            stderr_tail: vec!["error: no objects passed to apply".into()],
        }),
        shown(KubeError::Failed {
            what: "cannot apply Secret istio-system/cacerts".into(),
            reason: "ApiError: admission webhook denied the request".into(),
        }),
        shown(KubeError::Timeout {
            what: "Deployment sample/helloworld-v1 to be ready".into(),
            secs: 300,
        }),
    ];
    insta::assert_snapshot!(lines.join("\n"));
}
