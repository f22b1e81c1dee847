//! The default `tasks/` files, embedded in the binary.
//!
//! A task that reads `tasks/<x>` looks first beside the plan (so a checkout's
//! or a user's edited copy wins), then here. Either way the bytes it used are
//! hashed into its key, so editing a template reruns exactly its readers.

macro_rules! embed {
    ($($path:literal),* $(,)?) => {
        /// (path relative to the plan directory, contents)
        pub static EMBEDDED: &[(&str, &str)] = &[$(($path, include_str!(concat!("../", $path)))),*];
    };
}

embed!(
    "tasks/kind/cluster.yaml.j2",
    "tasks/cni/cilium-values.yaml.j2",
    "tasks/cni/cilium-lb.yaml.j2",
    "tasks/cni/metallb-pool.yaml.j2",
    "tasks/istio/namespace.yaml.j2",
    "tasks/istio/cacerts.yaml.j2",
    "tasks/istio/base-values.yaml.j2",
    "tasks/istio/istiod-values.yaml.j2",
    "tasks/istio/cni-values.yaml.j2",
    "tasks/istio/ztunnel-values.yaml.j2",
    "tasks/gateway/eastwest-values.yaml.j2",
    "tasks/gateway/cross-network-gateway.yaml.j2",
    "tasks/gateway/expose-istiod.yaml.j2",
    "tasks/gateway/ambient-eastwest.yaml.j2",
    "tasks/apps/namespace.yaml.j2",
    "tasks/apps/helloworld.yaml",
    "tasks/apps/curl.yaml",
);

/// The embedded copy of a file, if there is one.
pub fn embedded(path: &str) -> Option<&'static str> {
    EMBEDDED.iter().find(|(p, _)| *p == path).map(|(_, s)| *s)
}

/// Names of the templates built-in tasks render (the keys `[templates]` may
/// override).
pub fn template_names() -> impl Iterator<Item = &'static str> {
    EMBEDDED
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| p.ends_with(".j2"))
}
