//! The one place secret bytes are taken out of text mesh shows: every task
//! failure reason, retry event, top-level error, JSON document and trace
//! passes through [`text`] (or [`json`]) before it is printed or written.
//!
//! Code that handles secrets already avoids quoting them (a kubeconfig that
//! does not parse is named, never quoted; YAML errors give a line and column
//! without the snippet); this is the net under that, for what reaches an
//! error from outside mesh's control: a tool's stderr, a template override,
//! a message from an API server.
//!
//! The algorithm is a single left-to-right scan that replaces, in order:
//! 1. PEM blocks (`-----BEGIN …-----` through the matching `-----END …-----`,
//!    or to the end of the text when the end is missing) with
//!    `[redacted PEM]`;
//! 2. the value after a credential key (`token`, `password`, `client-key-data`,
//!    `Authorization: Bearer`, … followed by `:` or `=`) with `[redacted]`;
//! 3. any run of 32 or more characters of one base64 alphabet (standard or
//!    URL-safe) that mixes upper and lower case letters and digits (key
//!    bodies, JWTs, certificate data) with `[redacted]`.
//!
//! Hex digests (blake3 keys, fingerprints) are lowercase only and survive,
//! as do ordinary words, paths and URLs.

use std::borrow::Cow;

/// Keys whose value is a credential, matched case-insensitively.
const KEYS: &[&str] = &[
    "client-key-data",
    "client-key",
    "token",
    "id-token",
    "refresh-token",
    "password",
    "passwd",
    "secret",
    "private-key",
    "private_key",
    "bearer",
    "api-key",
    "apikey",
];

/// `s` with secret-looking content replaced; borrowed when nothing was.
pub fn text(s: &str) -> Cow<'_, str> {
    if !suspicious(s) {
        return Cow::Borrowed(s);
    }
    let s = pem_blocks(s);
    let s = key_values(&s);
    let s = base64_runs(&s);
    Cow::Owned(s)
}

/// Every string in a JSON document passed through [`text`], in place.
pub fn json(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) => {
            if let Cow::Owned(r) = text(s) {
                *s = r;
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(json),
        serde_json::Value::Object(o) => o.values_mut().for_each(json),
        _ => {}
    }
}

/// A cheap pre-check: most text has no PEM armour, no credential key and
/// no long base64 run, and is returned untouched without allocating.
fn suspicious(s: &str) -> bool {
    if s.contains("-----BEGIN") {
        return true;
    }
    let b = s.as_bytes();
    if KEYS.iter().any(|k| {
        b.windows(k.len())
            .any(|w| w.eq_ignore_ascii_case(k.as_bytes()))
    }) {
        return true;
    }
    let mut run = 0;
    for b in s.bytes() {
        if is_b64(b) {
            run += 1;
            if run >= 32 {
                return true;
            }
        } else {
            run = 0;
        }
    }
    false
}

fn is_b64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_')
}

fn pem_blocks(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("-----BEGIN") {
        out.push_str(&rest[..i]);
        out.push_str("[redacted PEM]");
        let after = &rest[i..];
        match after.find("-----END") {
            Some(j) => {
                // Past the END line's closing dashes.
                let tail = &after[j + "-----END".len()..];
                let close = tail.find("-----").map_or(tail.len(), |k| k + "-----".len());
                rest = &tail[close..];
            }
            None => rest = "",
        }
    }
    out.push_str(rest);
    out
}

fn key_values(s: &str) -> String {
    // Byte-wise: keys and delimiters are ASCII, so every index cut at is a
    // char boundary whatever the text around them.
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    let mut copied = 0;
    while i < s.len() {
        let hit = KEYS.iter().find(|k| {
            bytes
                .get(i..i + k.len())
                .is_some_and(|w| w.eq_ignore_ascii_case(k.as_bytes()))
                // A word of its own, not part of a name (`remote-secret:`).
                && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || matches!(bytes[i - 1], b'-' | b'_' | b'.')))
                && !bytes
                    .get(i + k.len())
                    .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        });
        let Some(k) = hit else {
            i += 1;
            continue;
        };
        let mut j = i + k.len();
        // `key: value`, `key=value`, `"key": "value"`, `Bearer value`.
        while j < s.len() && matches!(bytes[j], b'"' | b'\'' | b' ' | b'\t') {
            j += 1;
        }
        let bearer = *k == "bearer";
        if !bearer {
            if j < s.len() && matches!(bytes[j], b':' | b'=') {
                j += 1;
            } else {
                i += k.len();
                continue;
            }
            while j < s.len() && matches!(bytes[j], b'"' | b'\'' | b' ' | b'\t') {
                j += 1;
            }
        }
        let start = j;
        while j < s.len() && !matches!(bytes[j], b'"' | b'\'' | b' ' | b'\t' | b'\n' | b',' | b'}')
        {
            j += 1;
        }
        if j > start && s[start..j] != *"[redacted]" && !s[start..j].starts_with("[redacted") {
            out.push_str(&s[copied..start]);
            out.push_str("[redacted]");
            copied = j;
        }
        i = j.max(i + 1);
    }
    out.push_str(&s[copied..]);
    out
}

/// Runs over the standard base64 alphabet (PEM bodies, `*-data` fields),
/// then over the URL-safe one (JWTs, most tokens). Splitting on the other
/// alphabet's extra characters keeps paths and kebab-case names short.
fn base64_runs(s: &str) -> String {
    let std = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=');
    let url = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_');
    runs(&runs(s, std), url)
}

fn runs(s: &str, alphabet: impl Fn(u8) -> bool) -> String {
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        if !alphabet(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && alphabet(bytes[i]) {
            i += 1;
        }
        let run = &s[start..i];
        let has = |f: fn(&u8) -> bool| run.as_bytes().iter().any(f);
        if run.len() >= 32
            && has(u8::is_ascii_uppercase)
            && has(u8::is_ascii_lowercase)
            && has(u8::is_ascii_digit)
        {
            out.push_str(&s[copied..start]);
            out.push_str("[redacted]");
            copied = i;
        }
    }
    out.push_str(&s[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_LINE: &str = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgk3vJm1xQeP2";

    /// PEM armour around a fake key body, `kind` "" / "EC " / "RSA " (built
    /// here so no key-shaped block sits in the source).
    fn armour(kind: &str) -> (String, String) {
        let label = format!("{kind}PRIVATE KEY");
        (
            format!("-----BEGIN {label}-----"),
            format!("-----END {label}-----"),
        )
    }

    #[test]
    fn pem_blocks_whole_cut_or_unterminated_are_removed() {
        let (begin, end) = armour("");
        let whole = format!("bad YAML near:\n{begin}\n{KEY_LINE}\n{end}\nafter");
        let r = text(&whole);
        assert_eq!(r, "bad YAML near:\n[redacted PEM]\nafter");
        let cut = format!("5 | {}\n6 | {KEY_LINE}\n7 |   bad: [", armour("EC ").0);
        let r = text(&cut);
        assert!(
            !r.contains(KEY_LINE) && r.starts_with("5 | [redacted PEM]"),
            "{r}"
        );
        // A snippet holding only the middle of a key.
        let middle = format!("6 |     {KEY_LINE}\n7 |    bad: [");
        let r = text(&middle);
        assert!(!r.contains("MIGH") && r.contains("bad: ["), "{r}");
    }

    #[test]
    fn credential_values_and_tokens_are_removed() {
        for (s, gone) in [
            ("Error: token: abc.def.ghi rejected", "abc.def.ghi"),
            ("client-key-data=c2VjcmV0 x", "c2VjcmV0"),
            (r#"{"password": "hunter2"}"#, "hunter2"),
            ("Authorization: Bearer sk-12345 denied", "sk-12345"),
            (
                "got eyJhbGciOiJSUzI1NiIsImtpZCI6IkFCQyJ9.eyJzdWIiOiJzeXN0ZW0ifQ.c2ln from server",
                "eyJhbGciOiJSUzI1NiIsImtpZCI6IkFCQyJ9",
            ),
        ] {
            let r = text(s);
            assert!(!r.contains(gone), "{s} -> {r}");
            assert!(r.contains("[redacted"), "{s} -> {r}");
        }
    }

    #[test]
    fn ordinary_text_digests_paths_and_urls_survive_untouched() {
        for s in [
            "task cluster:east failed: kind: `kind create cluster --name east` exited with status 1",
            "key af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262 changed",
            "cannot read /home/user/.kube/config: No such file or directory (os error 2)",
            "GET https://127.0.0.1:6443/apis/apps/v1/namespaces/istio-system/deployments/istiod",
            "the secret cacerts in istio-system is missing",
            "the token controller has not filled istio-reader-service-account-istio-remote-secret-token yet",
            "cannot read /tmp/mesh-kind-kubeconfig-AbCdEf9/kubeconfig: gone",
            "[24/41] ran remote-secret:east->west and remote-secret:west->east",
            "task remote-secret:east->west failed: reader-token: not yet",
            "ISTIO_META_REQUESTED_NETWORK_VIEW is set twice in istio-eastwestgateway",
        ] {
            assert!(
                matches!(text(s), Cow::Borrowed(_)) || text(s) == s,
                "{s} -> {}",
                text(s)
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn any_text_is_scanned_without_panicking_and_loses_an_embedded_key(
            before in "\\PC{0,40}",
            after in "\\PC{0,40}",
            key in proptest::sample::select(KEYS),
            sep in proptest::sample::select(vec![": ", "=", "\": \"", " "]),
        ) {
            let _ = text(&before);
            let (begin, end) = armour("");
            let s = format!("{before} {begin}\n{KEY_LINE}\n{end} {after}");
            proptest::prop_assert!(!text(&s).contains(KEY_LINE));
            let s = format!("{before} {KEY_LINE} {after}");
            proptest::prop_assert!(!text(&s).contains(KEY_LINE));
            let s = format!("{before} {key}{sep}{KEY_LINE} {after}");
            proptest::prop_assert!(!text(&s).contains(KEY_LINE));
        }
    }

    #[test]
    fn json_documents_are_redacted_in_every_string() {
        let (begin, end) = armour("RSA ");
        let reason = format!("{begin}\n{KEY_LINE}\n{end}");
        let mut v = serde_json::json!({
            "tasks": [{"reason": reason}],
            "n": 3
        });
        json(&mut v);
        assert_eq!(v["tasks"][0]["reason"], "[redacted PEM]");
        assert_eq!(v["n"], 3);
    }
}
