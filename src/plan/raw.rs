//! The plan as serde reads it: every value a later check may blame keeps
//! its `toml::Spanned` (file offsets, for line and column), and every table
//! denies unknown fields, so a typo is an error at its place rather than a
//! silent default. Validation (`validate`) turns these into the plan types.

use super::{Algorithm, Cni, Mode, Provider, Role, Topology};
use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPlan {
    pub(super) mesh: Spanned<RawMesh>,
    #[serde(default)]
    pub(super) pki: RawPki,
    #[serde(default)]
    pub(super) versions: RawVersions,
    pub(super) clusters: Spanned<BTreeMap<String, Spanned<RawCluster>>>,
    #[serde(default)]
    pub(super) apps: BTreeMap<String, Spanned<RawApp>>,
    #[serde(default)]
    pub(super) tasks: BTreeMap<String, Spanned<RawTask>>,
    #[serde(default)]
    pub(super) templates: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    pub(super) verify: RawVerify,
    #[serde(default)]
    pub(super) addons: RawAddons,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAddons {
    pub(super) prometheus: Option<Spanned<bool>>,
    pub(super) kiali: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMesh {
    pub(super) id: Spanned<String>,
    pub(super) istio: Spanned<String>,
    pub(super) mode: Option<Spanned<Mode>>,
    pub(super) topology: Option<Spanned<Topology>>,
    pub(super) kind_subnet: Option<Spanned<String>>,
    pub(super) lb_size: Option<Spanned<u32>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPki {
    pub(super) algorithm: Option<Spanned<Algorithm>>,
    pub(super) root_days: Option<Spanned<u32>>,
    pub(super) intermediate_days: Option<Spanned<u32>>,
    pub(super) root_cert: Option<Spanned<String>>,
    pub(super) root_key: Option<Spanned<String>>,
    /// Per-cluster intermediates an organisation's CA signed.
    pub(super) intermediates: Option<BTreeMap<String, Spanned<RawIntermediate>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIntermediate {
    pub(super) cert: Spanned<String>,
    pub(super) key: Spanned<String>,
    pub(super) chain: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVersions {
    pub(super) cilium: Option<Spanned<String>>,
    pub(super) metallb: Option<Spanned<String>>,
    pub(super) gateway_api: Option<Spanned<String>>,
    pub(super) kind_node: Option<Spanned<String>>,
    pub(super) prometheus: Option<Spanned<String>>,
    pub(super) kiali: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    pub(super) provider: Option<Spanned<Provider>>,
    pub(super) context: Option<Spanned<String>>,
    pub(super) kubeconfig: Option<Spanned<String>>,
    pub(super) network: Spanned<String>,
    pub(super) pod_subnet: Option<Spanned<String>>,
    pub(super) service_subnet: Option<Spanned<String>>,
    pub(super) workers: Option<Spanned<u32>>,
    pub(super) cni: Option<Spanned<Cni>>,
    pub(super) role: Option<Spanned<Role>>,
    pub(super) primary: Option<Spanned<String>>,
    pub(super) gateway_ip: Option<Spanned<String>>,
    pub(super) region: Option<Spanned<String>>,
    pub(super) zone: Option<Spanned<String>>,
    pub(super) ingress: Option<Spanned<bool>>,
    pub(super) api_server: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApp {
    pub(super) manifest: Spanned<String>,
    pub(super) namespace: Option<Spanned<String>>,
    pub(super) placement: Spanned<BTreeMap<String, Spanned<RawSelector>>>,
    pub(super) verify: Option<Spanned<String>>,
    pub(super) locality: Option<Spanned<bool>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVerify {
    pub(super) client: Option<Spanned<String>>,
    pub(super) requests: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawSelector {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTask {
    pub(super) cluster: Spanned<String>,
    pub(super) manifest: Option<Spanned<String>>,
    pub(super) chart: Option<Spanned<String>>,
    pub(super) repo: Option<Spanned<String>>,
    pub(super) version: Option<Spanned<String>>,
    pub(super) release: Option<Spanned<String>>,
    pub(super) namespace: Option<Spanned<String>>,
    pub(super) values: Option<Spanned<String>>,
    pub(super) command: Option<Spanned<Vec<String>>>,
    pub(super) after: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) inputs: Option<Vec<Spanned<String>>>,
}
