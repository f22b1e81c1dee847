//! Renders: templates → files, the shared machinery of every `render.*`
//! task.
//!
//! A render is "these templates, this context, these output files". The
//! context is the plan slice the kind hashed into the task's key (so the
//! key covers exactly what the template can read), enriched at run time with
//! data from dependencies ([`Enrich`]: LoadBalancer ranges from `net.alloc`,
//! PEM from `pki.intermediate:<c>`), which the key covers through their
//! output digests. Templates render in a strict minijinja environment (an
//! undefined variable is an error naming the template and line, never an
//! empty string), and the result must parse as YAML.

use super::{net, pki};
use crate::graph::{Ctx, OutFile, TaskError};
use crate::yaml::yaml_docs;
use serde_json::Value;
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
    /// `lb`, `gateway_ip` and `ingress_ip` of this cluster from `net.alloc`.
    Lb { cluster: String },
    /// `remote_pilot_address` = the primary's gateway address from `net.alloc`.
    RemotePilot { primary: String },
    /// `pem` from `pki.intermediate:<cluster>`.
    Pem { cluster: String },
}

fn enrich(
    ctx: &Ctx,
    how: &[Enrich],
    v: &mut serde_json::Map<String, Value>,
) -> Result<(), TaskError> {
    for e in how {
        match e {
            Enrich::Lb { cluster } => {
                let r = net::read_range(ctx, cluster)?;
                v.insert("gateway_ip".into(), Value::String(r.gateway_ip.to_string()));
                v.insert(
                    "ingress_ip".into(),
                    Value::String(r.ingress_ip().to_string()),
                );
                v.insert(
                    "lb".into(),
                    serde_json::to_value(r).expect("range serializes"),
                );
            }
            Enrich::RemotePilot { primary } => {
                let r = net::read_range(ctx, primary)?;
                v.insert(
                    "remote_pilot_address".into(),
                    Value::String(r.gateway_ip.to_string()),
                );
            }
            Enrich::Pem { cluster } => {
                let dep = pki::intermediate_id(cluster);
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

/// Render template `name` (its text given) with `ctx`; the output must be
/// valid YAML.
pub fn render_template(
    name: &str,
    text: &str,
    ctx: &serde_json::Value,
) -> Result<String, TaskError> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    env.add_template(name, text)
        .map_err(|e| TaskError::tool("template", describe(name, &e)))?;
    let out = env
        .get_template(name)
        .and_then(|t| t.render(ctx))
        .map_err(|e| TaskError::tool("template", describe(name, &e)))?;
    yaml_docs(&out)
        .map_err(|e| TaskError::tool("template", format!("{name} rendered invalid YAML: {e}")))?;
    Ok(out)
}

fn describe(name: &str, e: &minijinja::Error) -> String {
    let mut s = match e.line() {
        Some(l) => format!("{name}:{l}: {}", e.kind()),
        None => format!("{name}: {}", e.kind()),
    };
    if let Some(d) = e.detail() {
        s.push_str(": ");
        s.push_str(d);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_templates_name_the_template_and_line() {
        let err =
            render_template("t.j2", "a: 1\nb: {{ nope }}\n", &serde_json::json!({})).unwrap_err();
        assert!(err.to_string().contains("t.j2:2"), "{err}");
        let err = render_template("t.j2", "a: [\n", &serde_json::json!({})).unwrap_err();
        assert!(err.to_string().contains("invalid YAML"), "{err}");
    }
}
