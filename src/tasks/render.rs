//! The render tasks: every manifest and Helm values file of the offline
//! bundle.
//!
//! A render is "these templates, this context, these output files". The
//! context is the plan slice the planner hashed into the task's key (so the
//! key covers exactly what the template can read), enriched at run time with
//! data from dependencies (LoadBalancer ranges from `net.alloc`, PEM from
//! `pki.intermediate:<c>`), which the key covers through their output digests.
//!
//! `net.alloc` carves one LoadBalancer range per kind cluster out of the top
//! half of the kind Docker network (the bottom half is where Docker puts the
//! nodes). Each cluster, in name order, takes the slot blake3(name) selects,
//! probing forward past taken slots: adding or removing a cluster leaves the
//! others' ranges, and therefore their renders, unchanged unless a probe
//! collides. The east-west gateway of a cluster asks for the first address of
//! its range, which makes a primary's gateway address, and so its remotes'
//! `remotePilotAddress`, known before anything runs.
//!
//! App renders split the app manifest into documents, keep those whose
//! `version` label the placement selects (plus unversioned ones), prepend the
//! enrolled namespace, and in ambient mode label Services `istio.io/global`.

use super::{render_template, yaml_docs};
use crate::graph::{Ctx, OutFile, TaskError};
use crate::plan::Selector;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

/// A template and its text.
#[derive(Clone)]
pub struct Tmpl {
    pub name: String,
    pub text: Arc<str>,
}

/// One output of a render: template → file.
#[derive(Clone)]
pub struct Output {
    pub template: Tmpl,
    pub file: String,
    pub export: String,
    pub secret: bool,
}

/// Data a render pulls from its dependencies before rendering.
#[derive(Clone, Debug)]
pub enum Enrich {
    /// `lb` and `gateway_ip` of this cluster from `net.alloc`.
    Lb { cluster: String },
    /// `remote_pilot_address` = the primary's gateway address from `net.alloc`.
    RemotePilot { primary: String },
    /// `pem` from `pki.intermediate:<cluster>`.
    Pem { cluster: String },
}

/// A LoadBalancer range.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LbRange {
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
    pub gateway_ip: Ipv4Addr,
}

pub const ALLOC_FILE: &str = "lb-ranges.json";

/// Allocate one range of `size` addresses per name from the top half of
/// `subnet` (see the module doc).
pub fn allocate(
    subnet: Ipv4Net,
    size: u32,
    names: &[String],
) -> Result<BTreeMap<String, LbRange>, String> {
    let base = u32::from(subnet.network()) as u64;
    let total = 1u64 << (32 - subnet.prefix_len() as u64);
    let first = base + total / 2;
    let slots = ((total / 2).saturating_sub(1) / size as u64) as usize;
    if names.len() > slots {
        return Err(format!(
            "{} clusters need {} ranges of {size} addresses; the top half of {subnet} holds {slots}",
            names.len(),
            names.len()
        ));
    }
    let mut sorted: Vec<&String> = names.iter().collect();
    sorted.sort();
    let mut taken = vec![false; slots];
    let mut out = BTreeMap::new();
    for name in sorted {
        let h = blake3::hash(name.as_bytes());
        let mut s = (u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
            % slots as u64) as usize;
        while taken[s] {
            s = (s + 1) % slots;
        }
        taken[s] = true;
        let start = first + (s as u64) * size as u64;
        let ip = |x: u64| Ipv4Addr::from(x as u32);
        out.insert(
            name.clone(),
            LbRange {
                start: ip(start),
                end: ip(start + size as u64 - 1),
                gateway_ip: ip(start),
            },
        );
    }
    Ok(out)
}

/// Allocate and write the ranges.
pub fn net_alloc(subnet: Ipv4Net, size: u32, names: &[String]) -> Result<Vec<OutFile>, TaskError> {
    let ranges = allocate(subnet, size, names).map_err(TaskError::new)?;
    let json =
        serde_json::to_string_pretty(&serde_json::json!({ "subnet": subnet, "ranges": ranges }))
            .expect("ranges serialize");
    // The whole allocation for the bundle, and one small file per cluster
    // for the renders: each reads its own range, not all of them (reading
    // the whole file made a 1,000-cluster build quadratic).
    let mut files = vec![OutFile::new(ALLOC_FILE, json + "\n").export(format!("net/{ALLOC_FILE}"))];
    for (name, r) in &ranges {
        files.push(OutFile::new(
            range_file(name),
            serde_json::to_vec(r).expect("range serializes"),
        ));
    }
    Ok(files)
}

fn range_file(cluster: &str) -> String {
    format!("range/{cluster}.json")
}

/// The range `net.alloc` gave `cluster` (for a task depending on it).
pub fn read_range(ctx: &Ctx, cluster: &str) -> Result<LbRange, TaskError> {
    let bytes = ctx.read("net.alloc", &range_file(cluster))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| TaskError::new(format!("net.alloc range of {cluster}: {e}")))
}

fn enrich(
    ctx: &Ctx,
    how: &[Enrich],
    v: &mut serde_json::Map<String, Value>,
) -> Result<(), TaskError> {
    for e in how {
        match e {
            Enrich::Lb { cluster } => {
                let r = read_range(ctx, cluster)?;
                v.insert("gateway_ip".into(), Value::String(r.gateway_ip.to_string()));
                v.insert(
                    "lb".into(),
                    serde_json::to_value(r).expect("range serializes"),
                );
            }
            Enrich::RemotePilot { primary } => {
                let r = read_range(ctx, primary)?;
                v.insert(
                    "remote_pilot_address".into(),
                    Value::String(r.gateway_ip.to_string()),
                );
            }
            Enrich::Pem { cluster } => {
                let dep = format!("pki.intermediate:{cluster}");
                let mut pem = serde_json::Map::new();
                for (k, f) in [
                    ("ca_cert", "ca-cert.pem"),
                    ("ca_key", "ca-key.pem"),
                    ("root_cert", "root-cert.pem"),
                    ("cert_chain", "cert-chain.pem"),
                ] {
                    pem.insert(k.into(), Value::String(ctx.read_string(&dep, f)?));
                }
                v.insert("pem".into(), Value::Object(pem));
            }
        }
    }
    Ok(())
}

/// Render each output's template with the (enriched) context.
pub fn render(
    ctx: &Ctx,
    base: &serde_json::Map<String, Value>,
    how: &[Enrich],
    outputs: &[Output],
) -> Result<Vec<OutFile>, TaskError> {
    let mut v = base.clone();
    enrich(ctx, how, &mut v)?;
    let v = Value::Object(v);
    outputs
        .iter()
        .map(|o| {
            let text = render_template(&o.template.name, &o.template.text, &v)?;
            let f = OutFile::new(o.file.clone(), text).export(o.export.clone());
            Ok(if o.secret { f.secret() } else { f })
        })
        .collect()
}

/// `render.app:<app>:<cluster>`: namespace + the selected documents.
pub struct AppRender {
    /// The plan slice (`app`, `selector`, `mode`).
    pub ctx: Value,
    pub namespace_tmpl: Tmpl,
    pub manifest_name: String,
    pub manifest: Arc<str>,
    pub selector: Selector,
    pub ambient: bool,
    pub file: String,
    pub export: String,
}

impl AppRender {
    pub fn run(&self) -> Result<Vec<OutFile>, TaskError> {
        let AppRender {
            ctx: ctx_plan,
            namespace_tmpl,
            manifest_name,
            manifest,
            selector,
            ambient,
            file,
            export,
        } = self;
        let ambient = *ambient;
        let mut out = render_template(&namespace_tmpl.name, &namespace_tmpl.text, ctx_plan)?;
        let docs =
            yaml_docs(manifest).map_err(|e| TaskError::new(format!("{manifest_name}: {e}")))?;
        let namespace = ctx_plan
            .pointer("/app/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default");
        for d in docs {
            if !selector.admits(super::doc_version(&d.value).as_deref()) {
                continue;
            }
            out.push_str("---\n");
            let kind = d.value.get("kind").and_then(Value::as_str);
            let has_ns = d.value.pointer("/metadata/namespace").is_some();
            if (ambient && kind == Some("Service")) || !has_ns {
                // Rewrite the document: namespace it, and in ambient mode make
                // Services reachable across clusters.
                let mut v = d.value.clone();
                let meta = v
                    .as_object_mut()
                    .and_then(|o| o.get_mut("metadata"))
                    .and_then(Value::as_object_mut)
                    .ok_or_else(|| {
                        TaskError::new(format!("{manifest_name}: a document has no metadata"))
                    })?;
                if !has_ns {
                    meta.insert("namespace".into(), Value::String(namespace.into()));
                }
                if ambient && kind == Some("Service") {
                    let labels = meta
                        .entry("labels")
                        .or_insert_with(|| Value::Object(Default::default()));
                    if let Some(l) = labels.as_object_mut() {
                        l.insert("istio.io/global".into(), Value::String("true".into()));
                    }
                }
                let y = serde_saphyr::to_string(&v)
                    .map_err(|e| TaskError::new(format!("{manifest_name}: {e}")))?;
                out.push_str(&y);
                if !y.ends_with('\n') {
                    out.push('\n');
                }
            } else {
                out.push_str(&d.text);
            }
        }
        Ok(vec![OutFile::new(file.clone(), out).export(export.clone())])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_disjoint_inside_the_top_half_and_stable() {
        let subnet: Ipv4Net = "172.18.0.0/16".parse().unwrap();
        let names: Vec<String> = (0..300).map(|i| format!("c{i}")).collect();
        let r = allocate(subnet, 16, &names).unwrap();
        let mut spans: Vec<(u32, u32)> = r
            .values()
            .map(|x| (u32::from(x.start), u32::from(x.end)))
            .collect();
        spans.sort();
        for w in spans.windows(2) {
            assert!(w[0].1 < w[1].0, "overlap {w:?}");
        }
        for (s, e) in &spans {
            assert!(*s >= u32::from("172.18.128.0".parse::<Ipv4Addr>().unwrap()));
            assert!(*e < u32::from("172.18.255.255".parse::<Ipv4Addr>().unwrap()));
        }
        // Adding a cluster moves no one in the common case.
        let two = allocate(subnet, 16, &["east".into(), "west".into()]).unwrap();
        let three = allocate(subnet, 16, &["east".into(), "west".into(), "north".into()]).unwrap();
        assert_eq!(two["east"], three["east"]);
        assert_eq!(two["west"], three["west"]);
        assert!(allocate("10.0.0.0/28".parse().unwrap(), 16, &names).is_err());
    }
}
