//! Built-in task implementations.
//!
//! Owns what each pure task computes: `pki` (the plug-in CA: one root, one
//! intermediate per cluster) and `render` (every manifest and Helm values file
//! of the offline bundle, from the minijinja templates in `tasks/`). Shared
//! here: splitting multi-document YAML, and rendering one template with a
//! strict environment (an undefined variable is an error naming the template
//! and line, never an empty string), checking the result parses as YAML.

pub mod pki;
pub mod render;

use crate::graph::TaskError;

/// One document of a multi-document YAML file: its original text and its
/// parsed value.
#[derive(Debug, Clone)]
pub struct YamlDoc {
    pub text: String,
    pub value: serde_json::Value,
}

/// Split `---`-separated YAML into its non-empty documents, parsing each.
pub fn yaml_docs(text: &str) -> Result<Vec<YamlDoc>, String> {
    let mut docs = Vec::new();
    let mut cur = String::new();
    let mut flush = |cur: &mut String, line_no: usize| -> Result<(), String> {
        let meaningful = cur
            .lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
        if meaningful {
            let value: serde_json::Value = serde_saphyr::from_str(cur)
                .map_err(|e| format!("document ending at line {line_no}: {e}"))?;
            docs.push(YamlDoc {
                text: cur.trim_end().to_string() + "\n",
                value,
            });
        }
        cur.clear();
        Ok(())
    };
    let mut line_no = 0;
    for line in text.lines() {
        line_no += 1;
        if line == "---" || line.starts_with("--- ") || line.starts_with("---#") {
            flush(&mut cur, line_no)?;
        } else {
            cur.push_str(line);
            cur.push('\n');
        }
    }
    flush(&mut cur, line_no)?;
    Ok(docs)
}

/// `metadata.labels.version` of a Kubernetes object.
pub fn doc_version(v: &serde_json::Value) -> Option<String> {
    v.pointer("/metadata/labels/version")?
        .as_str()
        .map(str::to_string)
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
    fn splits_documents_and_skips_empty_ones() {
        let docs = yaml_docs("# c\n---\na: 1\n---\n\n---\nmetadata:\n  labels:\n    version: v2\n")
            .unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(doc_version(&docs[1].value).as_deref(), Some("v2"));
        assert!(yaml_docs("a: [1\n").is_err());
    }

    #[test]
    fn strict_templates_name_the_template_and_line() {
        let err =
            render_template("t.j2", "a: 1\nb: {{ nope }}\n", &serde_json::json!({})).unwrap_err();
        assert!(err.to_string().contains("t.j2:2"), "{err}");
        let err = render_template("t.j2", "a: [\n", &serde_json::json!({})).unwrap_err();
        assert!(err.to_string().contains("invalid YAML"), "{err}");
    }
}
