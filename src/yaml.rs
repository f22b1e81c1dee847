//! Multi-document YAML: split a `---`-separated file into its documents,
//! each kept as text and parsed (serde-saphyr) into JSON values, and read
//! the `version` label apps select on. Shared by plan validation, the
//! renders and the Kubernetes layer.

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
                // The first line only: the parser's snippet quotes the text,
                // which may be a Secret's key.
                .map_err(|e| {
                    let e = e.to_string();
                    let first = e.lines().next().unwrap_or("");
                    let first = first
                        .trim_start_matches("Error: ")
                        .trim_start_matches("error: ");
                    format!("document ending at line {line_no}: {first}")
                })?;
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
}
