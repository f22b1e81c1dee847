//! What every API call of one client does, seen from outside the client:
//! a tower layer around kube's HTTP stack.
//!
//! It knows which cluster the client is for and the server's address
//! ([`Endpoint`]), which kube's errors do not. Two jobs:
//!
//! - with `-v`, each call is a line once its answer's head arrives (a
//!   watch's too, before its stream): the cluster, the method, the path
//!   and query, percent-decoded (never headers or bodies: the token is a
//!   header, an object a body), the status and the time it took;
//! - a call that gets no answer at all (refused, reset, no route: the
//!   errors of the connection, not the API) comes back as an
//!   [`Unanswered`] naming the cluster and the server, so that the error a
//!   user finally reads says "cluster east: the API server at https://…
//!   does not answer" rather than "client error (Connect)". An error the
//!   inner stack made itself (kube's auth layer, as `kube::Error`) passes
//!   through unchanged.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A cluster's API server as the plan knows it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// The cluster's name in the plan.
    pub cluster: Arc<str>,
    /// The server URL from its kubeconfig.
    pub server: Arc<str>,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cluster {}: the API server at {}",
            self.cluster, self.server
        )
    }
}

/// A call the API server did not answer, with where it was sent.
#[derive(Debug, thiserror::Error)]
#[error("{at} does not answer: {source}")]
pub struct Unanswered {
    pub at: Endpoint,
    #[source]
    pub source: BoxError,
}

/// The endpoint an error from a client made by `connect` carries, if the
/// call went unanswered.
pub fn unanswered(e: &kube::Error) -> Option<&Endpoint> {
    match e {
        kube::Error::Service(b) => b.downcast_ref::<Unanswered>().map(|u| &u.at),
        _ => None,
    }
}

/// The layer: wraps kube's service stack for one cluster.
#[derive(Clone)]
pub struct Observe(pub Endpoint);

impl<S> tower::Layer<S> for Observe {
    type Service = Observed<S>;
    fn layer(&self, inner: S) -> Observed<S> {
        Observed {
            inner,
            at: self.0.clone(),
        }
    }
}

/// The service [`Observe`] makes.
#[derive(Clone)]
pub struct Observed<S> {
    inner: S,
    at: Endpoint,
}

impl<S, B> tower::Service<http::Request<kube::client::Body>> for Observed<S>
where
    S: tower::Service<http::Request<kube::client::Body>, Response = http::Response<B>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: http::Request<kube::client::Body>) -> Self::Future {
        let call = crate::events::verbose().then(|| {
            // Decoded: `%3D` would make a plain name look like key
            // material to the redactor.
            let pq = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            let path = percent_encoding::percent_decode_str(pq).decode_utf8_lossy();
            (
                format!("{}: {} {path}", self.at.cluster, req.method()),
                std::time::Instant::now(),
            )
        });
        let at = self.at.clone();
        let answer = self.inner.call(req);
        Box::pin(async move {
            let r = answer.await.map_err(Into::into);
            if let Some((call, began)) = call {
                let ms = began.elapsed().as_secs_f64() * 1e3;
                match &r {
                    Ok(resp) => crate::events::say(&format!(
                        "{call} -> {} ({ms:.1} ms)",
                        resp.status().as_u16()
                    )),
                    Err(e) => crate::events::say(&format!("{call} -> no answer: {e}")),
                }
            }
            r.map_err(|e| {
                if e.is::<kube::Error>() {
                    e
                } else {
                    Box::new(Unanswered { at, source: e }) as BoxError
                }
            })
        })
    }
}
