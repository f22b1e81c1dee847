//! Plain words for the errors the TOML parser and serde give about a plan.
//!
//! serde speaks Rust (`invalid value: integer `-1`, expected u32`,
//! `unknown field `wokers`, expected one of …`); a user of mesh writes TOML.
//! [`plain`] reads serde's message (its wording is stable: serde's
//! `de::Error` constructors and `Unexpected`'s `Display`), and says the same
//! in the plan's terms, with a hint: "did you mean `workers`?" for a key or
//! value a typo away from a valid one (strsim's Damerau–Levenshtein
//! distance, at most a third of the word), the valid ones otherwise, and
//! what to write for a type error. A message it does not recognise is a
//! TOML syntax error: kept as the parser words it, with a hint on TOML.

/// A message in plain words: the headline, the label at the span, a hint.
#[derive(Debug, PartialEq, Eq)]
pub struct Plain {
    pub headline: String,
    pub label: &'static str,
    pub hint: Option<String>,
}

/// The first `` `word` `` of `s`, and what follows it.
fn ticked(s: &str) -> Option<(&str, &str)> {
    let (_, rest) = s.split_once('`')?;
    let (word, after) = rest.split_once('`')?;
    Some((word, after))
}

/// Every `` `word` `` of `s`.
fn all_ticked(mut s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    while let Some((w, rest)) = ticked(s) {
        out.push(w);
        s = rest;
    }
    out
}

/// The valid word closest to `word`, if a typo away.
pub fn closest<'a>(word: &str, valid: &[&'a str]) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    valid
        .iter()
        .map(|v| (strsim::damerau_levenshtein(word, v), *v))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, v)| v)
}

fn list(valid: &[&str]) -> String {
    valid
        .iter()
        .map(|v| format!("`{v}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// serde's name of an expected type, in TOML's words.
fn expected(t: &str) -> String {
    let t = t.trim();
    let range = |lo: &str, hi: &str| format!("a whole number from {lo} to {hi}");
    match t {
        "u8" => range("0", "255"),
        "u16" => range("0", "65535"),
        "u32" | "u64" | "usize" => "a whole number, 0 or more".into(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number".into(),
        "f32" | "f64" => "a number".into(),
        "a boolean" => "true or false".into(),
        "a string" | "a borrowed string" => "a string in double quotes".into(),
        "a sequence" => "a list, [\"…\", …]".into(),
        "a map" => "a table".into(),
        t if t.starts_with("struct ") || t.starts_with("a map") => "a table".into(),
        t if t.starts_with("enum ") => "one of the values listed in README.md".into(),
        t => t.to_string(),
    }
}

/// serde's `Unexpected` (what was found), in TOML's words.
fn found(u: &str) -> String {
    let u = u.trim();
    let quoted = |kind: &str| ticked(u).map(|(w, _)| format!("{kind}{w}"));
    if u.starts_with("integer") || u.starts_with("floating point") {
        quoted("").unwrap_or_else(|| u.to_string())
    } else if u.starts_with("boolean") {
        quoted("").unwrap_or_else(|| u.to_string())
    } else if let Some(s) = u.strip_prefix("string ") {
        format!("the string {s}")
    } else if u == "sequence" {
        "a list".into()
    } else if u == "map" {
        "a table".into()
    } else {
        u.to_string()
    }
}

/// `msg` (serde's or the TOML parser's first line) in plain words.
pub fn plain(msg: &str) -> Plain {
    let p = |headline: String, label, hint: Option<String>| Plain {
        headline,
        label,
        hint,
    };
    if let Some(rest) = msg.strip_prefix("unknown field ") {
        let (word, after) = ticked(rest).unwrap_or((rest, ""));
        let valid = all_ticked(after);
        let hint = match closest(word, &valid) {
            Some(v) => format!("did you mean `{v}`?"),
            None if valid.is_empty() => "this table takes no keys".into(),
            None => format!("the keys here are {}", list(&valid)),
        };
        return p(
            format!("unknown key `{word}`"),
            "not a key here",
            Some(hint),
        );
    }
    if let Some(rest) = msg.strip_prefix("unknown variant ") {
        let (word, after) = ticked(rest).unwrap_or((rest, ""));
        let valid = all_ticked(after);
        let hint = match closest(word, &valid) {
            Some(v) => format!("did you mean `{v}`?"),
            None => format!("use one of {}", list(&valid)),
        };
        return p(
            format!("unknown value `{word}`"),
            "not a valid value",
            Some(hint),
        );
    }
    if let Some(rest) = msg.strip_prefix("missing field ") {
        let word = ticked(rest).map_or(rest, |(w, _)| w);
        return p(
            format!("missing key `{word}`"),
            "in this table",
            Some(format!(
                "add `{word} = …`; README.md lists the required keys"
            )),
        );
    }
    for prefix in ["invalid type: ", "invalid value: ", "invalid length "] {
        let Some(rest) = msg.strip_prefix(prefix) else {
            continue;
        };
        let Some((got, want)) = rest.rsplit_once(", expected ") else {
            break;
        };
        let (got, want_words) = (found(got), expected(want));
        let hint = if want_words.starts_with("a string") && !got.starts_with("the string") {
            Some("put the value in double quotes".to_string())
        } else if want_words.contains("number") && got.starts_with("the string") {
            Some("write the number without quotes".to_string())
        } else if want_words.contains("0 or more") || want_words.contains("from 0") {
            Some(format!("use {want_words}"))
        } else if want_words == "true or false" {
            Some("write true or false, without quotes".to_string())
        } else {
            None
        };
        return p(
            format!("expected {want_words}, found {got}"),
            "this value",
            hint,
        );
    }
    if msg == "duplicate key" || msg.starts_with("duplicate key") {
        return p(
            msg.to_string(),
            "here",
            Some("each cluster, app and task name may appear once".into()),
        );
    }
    // The TOML parser's own words: syntax.
    p(
        msg.to_string(),
        "here",
        Some(
            "this is TOML syntax: `key = \"string\"`, `key = 1`, `[table]`, a string closed on \
             its line (https://toml.io)"
                .into(),
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_messages_read_as_plain_words_with_a_hint() {
        let cases = [
            (
                "unknown field `wokers`, expected one of `provider`, `network`, `workers`, `cni`",
                "unknown key `wokers`",
                Some("did you mean `workers`?"),
            ),
            (
                "unknown field `zzz`, expected one of `provider`, `cni`",
                "unknown key `zzz`",
                Some("the keys here are `provider`, `cni`"),
            ),
            (
                "unknown variant `sidecars`, expected `sidecar` or `ambient`",
                "unknown value `sidecars`",
                Some("did you mean `sidecar`?"),
            ),
            (
                "unknown variant `mesh`, expected `sidecar` or `ambient`",
                "unknown value `mesh`",
                Some("use one of `sidecar`, `ambient`"),
            ),
            (
                "missing field `istio`",
                "missing key `istio`",
                Some("add `istio = …`; README.md lists the required keys"),
            ),
            (
                "invalid value: integer `-1`, expected u32",
                "expected a whole number, 0 or more, found -1",
                Some("use a whole number, 0 or more"),
            ),
            (
                "invalid value: integer `300`, expected u8",
                "expected a whole number from 0 to 255, found 300",
                Some("use a whole number from 0 to 255"),
            ),
            (
                "invalid type: string \"2\", expected u8",
                "expected a whole number from 0 to 255, found the string \"2\"",
                Some("write the number without quotes"),
            ),
            (
                "invalid type: integer `1`, expected a string",
                "expected a string in double quotes, found 1",
                Some("put the value in double quotes"),
            ),
            (
                "invalid type: string \"yes\", expected a boolean",
                "expected true or false, found the string \"yes\"",
                Some("write true or false, without quotes"),
            ),
        ];
        for (msg, headline, hint) in cases {
            let got = plain(msg);
            assert_eq!(got.headline, headline, "{msg}");
            assert_eq!(got.hint.as_deref(), hint, "{msg}");
        }
        let syntax = plain("invalid basic string, expected `\"`");
        assert_eq!(syntax.headline, "invalid basic string, expected `\"`");
        assert!(syntax.hint.unwrap().contains("TOML syntax"));
    }

    #[test]
    fn closest_takes_only_a_typo_away() {
        let valid = ["workers", "network", "provider"];
        assert_eq!(closest("wokers", &valid), Some("workers"));
        assert_eq!(closest("netwrok", &valid), Some("network"));
        assert_eq!(closest("cni", &valid), None);
        assert_eq!(closest("x", &["y"]), Some("y"), "one edit is always close");
    }
}
