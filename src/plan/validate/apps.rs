//! `[apps.*]`, `[verify]` and `[tasks.*]`.

use super::*;

impl Validator {
    /// `[apps.*]`.
    pub(super) fn apps(
        &mut self,
        raw: &BTreeMap<String, Spanned<RawApp>>,
        clusters: &BTreeMap<String, Cluster>,
    ) -> BTreeMap<String, App> {
        let mut apps = BTreeMap::new();
        for (name, ra) in raw {
            let ra_span = ra.span();
            let ra = ra.get_ref();
            if !is_dns_label(name) {
                self.err(
                    Diag::new(format!("bad app name {name:?}"))
                        .at(ra_span.clone(), "not a DNS label"),
                );
            }
            let namespace = ra
                .namespace
                .as_ref()
                .map_or(name.clone(), |n| n.get_ref().clone());
            if let Some(n) = &ra.namespace
                && !is_dns_label(n.get_ref())
            {
                self.err(
                    Diag::new(format!("bad namespace {:?}", n.get_ref()))
                        .at(n.span(), "not a DNS label"),
                );
            }
            let manifest = ra.manifest.get_ref().clone();
            let facts = if self.load_manifest(&manifest, ra.manifest.span()) {
                match ManifestFacts::of(&self.files[&manifest].text) {
                    Ok(f) => Some(f),
                    Err(e) => {
                        self.err(
                            Diag::new(format!("manifest {manifest} is not valid YAML: {e}"))
                                .at(ra.manifest.span(), "this file"),
                        );
                        None
                    }
                }
            } else {
                None
            };
            let versions = facts.as_ref().map(|f| &f.versions);
            let mut placement = BTreeMap::new();
            if ra.placement.get_ref().is_empty() {
                self.err(
                Diag::new(format!("app {name} is placed nowhere"))
                    .at(ra.placement.span(), "empty placement")
                    .hint("placement = { east = \"v1\", west = \"v2\" }, or \"*\" for every document"),
            );
            }
            for (cluster, sel) in ra.placement.get_ref() {
                if !clusters.contains_key(cluster) {
                    self.err(
                        Diag::new(format!(
                            "app {name} is placed on unknown cluster {cluster:?}"
                        ))
                        .at(sel.span(), "no such cluster")
                        .hint(format!(
                            "clusters: {}",
                            clusters.keys().cloned().collect::<Vec<_>>().join(", ")
                        )),
                    );
                    continue;
                }
                let selector = match sel.get_ref() {
                    RawSelector::One(s) if s == "*" => Selector::All(s.clone()),
                    RawSelector::One(s) => Selector::Versions(vec![s.clone()]),
                    RawSelector::Many(v) => Selector::Versions(v.clone()),
                };
                if let (Selector::Versions(wanted), Some(have)) = (&selector, &versions) {
                    for w in wanted {
                        if !have.contains(w) {
                            self.err(
                                Diag::new(format!(
                                    "no document of {manifest} has label version={w}"
                                ))
                                .at(sel.span(), "unknown version")
                                .hint(format!(
                                    "versions in {manifest}: {}; \"*\" places every document",
                                    list_or_none(have)
                                )),
                            );
                        }
                    }
                }
                placement.insert(cluster.clone(), selector);
            }
            let service = facts.as_ref().and_then(|f| f.service(name));
            let locality = ra.locality.as_ref().is_some_and(|l| *l.get_ref());
            if let Some(l) = ra.locality.as_ref().filter(|l| *l.get_ref()) {
                if versions.is_some() && service.is_none() {
                    self.err(
                        Diag::new(format!(
                            "app {name}: locality needs a Service in {manifest}"
                        ))
                        .at(l.span(), "no Service with a port to route")
                        .hint("the DestinationRule mesh writes is for the app's first Service"),
                    );
                }
                for c in clusters.values().filter(|c| c.region.is_none()) {
                    self.err(
                        Diag::new(format!(
                            "app {name}: locality needs every cluster's region; cluster {} has none",
                            c.name
                        ))
                        .at(l.span(), "locality load balancing")
                        .hint(format!(
                            "set region (and zone) under [clusters.{}]: without it every endpoint is in one locality",
                            c.name
                        )),
                    );
                }
            }
            apps.insert(
                name.clone(),
                App {
                    name: name.clone(),
                    manifest,
                    namespace,
                    placement,
                    verify: ra.verify.as_ref().map(|v| v.get_ref().clone()),
                    locality,
                    service,
                },
            );
        }

        apps
    }

    /// `[verify]`.
    pub(super) fn verify(
        &mut self,
        rv: &RawVerify,
        raw_apps: &BTreeMap<String, Spanned<RawApp>>,
        apps: &BTreeMap<String, App>,
    ) -> Verify {
        let client = rv
            .client
            .as_ref()
            .map_or("curl".to_string(), |c| c.get_ref().clone());
        if let Some(c) = &rv.client
            && !apps.contains_key(c.get_ref())
        {
            self.err(
            Diag::new(format!("verify client {:?} is not an app of this plan", c.get_ref()))
                .at(c.span(), "no such app")
                .hint("name the app whose pods send the requests (it needs sh and curl), e.g. \"curl\""),
        );
        }
        for (name, ra) in raw_apps {
            if let Some(v) = &ra.get_ref().verify
                && !v.get_ref().starts_with('/')
            {
                self.err(
                    Diag::new(format!("app {name}: verify must be an HTTP path"))
                        .at(v.span(), "does not start with /")
                        .hint("for example verify = \"/hello\""),
                );
            }
        }
        let requests = rv.requests.as_ref().map_or(20, |r| *r.get_ref());
        if let Some(r) = &rv.requests
            && !(1..=1000).contains(r.get_ref())
        {
            self.err(Diag::new("verify requests must be 1..=1000").at(r.span(), "out of range"));
        }
        Verify { client, requests }
    }

    /// `[tasks.*]`.
    pub(super) fn tasks(
        &mut self,
        raw: &BTreeMap<String, Spanned<RawTask>>,
        clusters: &BTreeMap<String, Cluster>,
    ) -> BTreeMap<String, UserTask> {
        let mut tasks = BTreeMap::new();
        for (name, rt) in raw {
            let rt_span = rt.span();
            let rt = rt.get_ref();
            if !is_dns_label(name) {
                self.err(
                    Diag::new(format!("bad task name {name:?}"))
                        .at(rt_span.clone(), "not a DNS label"),
                );
            }
            if !clusters.contains_key(rt.cluster.get_ref()) {
                self.err(
                    Diag::new(format!(
                        "task {name} targets unknown cluster {:?}",
                        rt.cluster.get_ref()
                    ))
                    .at(rt.cluster.span(), "no such cluster"),
                );
            }
            let kinds = [
                rt.manifest.is_some(),
                rt.chart.is_some(),
                rt.command.is_some(),
            ];
            if kinds.iter().filter(|k| **k).count() != 1 {
                self.err(
                Diag::new(format!("task {name} must have exactly one of manifest, chart or command"))
                    .at(rt_span.clone(), "this task")
                    .hint("manifest = \"path.yaml\" | chart = \"repo/chart\" | command = [\"argv\", …]"),
            );
            }
            let action = if let Some(m) = &rt.manifest {
                self.load_file(m.get_ref(), Some(m.span()), "manifest");
                UserAction::Manifest {
                    path: m.get_ref().clone(),
                }
            } else if let Some(c) = &rt.chart {
                if let Some(vf) = &rt.values {
                    self.load_file(vf.get_ref(), Some(vf.span()), "values file");
                }
                UserAction::Chart {
                    chart: c.get_ref().clone(),
                    repo: rt.repo.as_ref().map(|s| s.get_ref().clone()),
                    version: rt.version.as_ref().map(|s| s.get_ref().clone()),
                    release: rt
                        .release
                        .as_ref()
                        .map_or(name.clone(), |s| s.get_ref().clone()),
                    namespace: rt
                        .namespace
                        .as_ref()
                        .map_or("default".into(), |s| s.get_ref().clone()),
                    values: rt.values.as_ref().map(|s| s.get_ref().clone()),
                }
            } else if let Some(c) = &rt.command {
                if c.get_ref().is_empty() || c.get_ref()[0].is_empty() {
                    self.err(
                        Diag::new(format!("task {name} has an empty command"))
                            .at(c.span(), "empty"),
                    );
                }
                UserAction::Command {
                    argv: c.get_ref().clone(),
                }
            } else {
                UserAction::Command { argv: Vec::new() }
            };
            let after = rt
                .after
                .as_ref()
                .map(|a| {
                    a.get_ref()
                        .iter()
                        .map(|s| (s.get_ref().clone(), s.span()))
                        .collect()
                })
                .unwrap_or_default();
            let mut inputs = Vec::new();
            for i in rt.inputs.iter().flatten() {
                if self.load_tree(i.get_ref(), i.span()) {
                    inputs.push(i.get_ref().clone());
                }
            }
            tasks.insert(
                name.clone(),
                UserTask {
                    name: name.clone(),
                    cluster: rt.cluster.get_ref().clone(),
                    action,
                    inputs,
                    after,
                },
            );
        }

        tasks
    }
}
