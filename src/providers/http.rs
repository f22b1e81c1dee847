//! HTTP downloads: GET a URL as text, over rustls with the system roots,
//! following up to five redirects (relative ones resolved against the
//! current URL), each request bounded by 60 s. Used for the Gateway API CRDs.

use super::ToolError;
use std::time::Duration;

/// GET a URL (following up to five redirects), as text.
pub async fn fetch(url: &str) -> Result<String, ToolError> {
    use http_body_util::{BodyExt, Empty};
    let err = |reason: String| ToolError::Download {
        url: url.to_string(),
        reason,
    };
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| err(format!("no TLS roots: {e}")))?
        .https_or_http()
        .enable_http1()
        .build();
    let client: hyper_util::client::legacy::Client<_, Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(https);
    let mut at = url.to_string();
    for _ in 0..6 {
        let uri: hyper::Uri = at.parse().map_err(|e| err(format!("bad URL {at}: {e}")))?;
        let resp = tokio::time::timeout(Duration::from_secs(60), client.get(uri.clone()))
            .await
            .map_err(|_| err("no answer in 60s".into()))?
            .map_err(|e| err(e.to_string()))?;
        if resp.status().is_redirection() {
            let loc = resp
                .headers()
                .get(hyper::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .ok_or_else(|| err("a redirect without a location".into()))?;
            // A relative location resolves against the current URL.
            at = if loc.starts_with('/') {
                match (uri.scheme_str(), uri.authority()) {
                    (Some(sc), Some(au)) => format!("{sc}://{au}{loc}"),
                    _ => return Err(err(format!("cannot resolve the redirect to {loc}"))),
                }
            } else {
                loc.to_string()
            };
            continue;
        }
        if !resp.status().is_success() {
            return Err(err(format!("HTTP {}", resp.status())));
        }
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| err(e.to_string()))?
            .to_bytes();
        return String::from_utf8(body.to_vec()).map_err(|_| err("not UTF-8 text".into()));
    }
    Err(err("too many redirects".into()))
}
