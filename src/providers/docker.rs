//! The docker CLI: only to read the kind network.
use super::{Tool, ToolError, run};
use std::time::Duration;

/// The IPv4 subnet of the `kind` Docker network.
pub async fn kind_subnet() -> Result<ipnet::Ipv4Net, ToolError> {
    let args = [
        "network",
        "inspect",
        "kind",
        "--format",
        "{{json .IPAM.Config}}",
    ];
    let out = run(Tool::Docker, &args, Duration::from_secs(30)).await?;
    let v: serde_json::Value =
        serde_json::from_str(out.trim()).map_err(|_| ToolError::BadOutput {
            tool: "docker",
            message: format!(
                "`docker {}` printed {:?}, not JSON",
                args.join(" "),
                out.chars().take(120).collect::<String>()
            ),
        })?;
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("Subnet")?.as_str()?.parse::<ipnet::Ipv4Net>().ok())
        .next()
        .ok_or_else(|| ToolError::BadOutput {
            tool: "docker",
            message: "the kind network has no IPv4 subnet".into(),
        })
}
