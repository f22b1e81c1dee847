//! `[clusters.*]` and the checks across clusters: names, networks,
//! providers' keys, roles and primaries, CIDR overlaps, LoadBalancer
//! capacity.

use super::*;

impl Validator {
    /// `[clusters.*]`, and the CIDR blocks they declare (for [`Self::cidrs`]).
    pub(super) fn clusters(
        &mut self,
        raw_clusters: &BTreeMap<String, Spanned<RawCluster>>,
        clusters_span: Range<usize>,
        ctx: &MeshCtx,
    ) -> (BTreeMap<String, Cluster>, Vec<Net>) {
        if raw_clusters.is_empty() {
            self.err(
                Diag::new("the plan declares no cluster")
                    .at(clusters_span, "empty")
                    .hint("add [clusters.<name>] tables"),
            );
        }
        let primaries: BTreeSet<String> = raw_clusters
            .iter()
            .filter(|(_, c)| {
                c.get_ref()
                    .role
                    .as_ref()
                    .is_none_or(|r| *r.get_ref() == Role::Primary)
            })
            .map(|(n, _)| n.clone())
            .collect();
        let mut clusters = BTreeMap::new();
        let mut networks: BTreeMap<String, (String, Range<usize>)> = BTreeMap::new();
        let mut nets: Vec<Net> = Vec::new();
        for (name, rc) in raw_clusters {
            let c = self.cluster(name, rc, &primaries, ctx, &mut networks, &mut nets);
            clusters.insert(name.clone(), c);
        }
        (clusters, nets)
    }

    /// One `[clusters.<name>]`.
    pub(super) fn cluster(
        &mut self,
        name: &String,
        rc: &Spanned<RawCluster>,
        primaries: &BTreeSet<String>,
        ctx: &MeshCtx,
        networks: &mut BTreeMap<String, (String, Range<usize>)>,
        nets: &mut Vec<Net>,
    ) -> Cluster {
        let span = rc.span();
        let rc = rc.get_ref();
        if !is_dns_label(name) || name.len() > 40 {
            self.err(
                Diag::new(format!("bad cluster name {name:?}"))
                    .at(span.clone(), "this cluster")
                    .hint("lowercase letters, digits and '-', at most 40 characters (kind names containers after it)"),
            );
        }
        let provider = rc
            .provider
            .as_ref()
            .map_or(Provider::Kind, |p| *p.get_ref());
        let network = rc.network.get_ref().clone();
        if !is_label_value(&network) {
            self.err(
                Diag::new(format!("bad network name {network:?}"))
                    .at(rc.network.span(), "not a Kubernetes label value")
                    .hint("letters, digits, '-', '_' and '.', at most 63 characters"),
            );
        }
        if let Some((other, other_span)) = networks.get(&network) {
            self.err(
                Diag::new(format!(
                    "clusters {other} and {name} share network {network:?}"
                ))
                .at(rc.network.span(), "used again here")
                .also(other_span.clone(), "first used here")
                .hint("mesh builds multi-network meshes: give each cluster its own network"),
            );
        } else {
            networks.insert(network.clone(), (name.clone(), rc.network.span()));
        }
        let mut subnet = |v: &Option<Spanned<String>>, key: &'static str| -> Option<Ipv4Net> {
            let s = v.as_ref()?;
            match s.get_ref().parse::<Ipv4Net>() {
                Ok(n) if n.trunc() == n => {
                    nets.push((name.clone(), key, n, s.span()));
                    Some(n)
                }
                Ok(n) => {
                    self.diags.push(
                        Diag::new(format!("{key} {:?} has host bits set", s.get_ref()))
                            .at(s.span(), format!("did you mean {}?", n.trunc())),
                    );
                    None
                }
                Err(_) => {
                    self.diags.push(
                        Diag::new(format!("bad {key} {:?}", s.get_ref()))
                            .at(s.span(), "not an IPv4 CIDR")
                            .hint("for example \"10.11.0.0/16\""),
                    );
                    None
                }
            }
        };
        let pod_subnet = subnet(&rc.pod_subnet, "pod_subnet");
        let service_subnet = subnet(&rc.service_subnet, "service_subnet");
        self.provider_keys(name, rc, &span, provider);
        let workers = rc.workers.as_ref().map_or(0, |w| *w.get_ref());
        if workers > 16 {
            self.err(
                Diag::new(format!(
                    "{workers} workers is more than mesh will create on one host"
                ))
                .at(rc.workers.as_ref().unwrap().span(), "at most 16"),
            );
        }
        let role = rc.role.as_ref().map_or(Role::Primary, |r| *r.get_ref());
        let primary = self.primary_of(name, rc, primaries, ctx);
        let gateway_ip =
            rc.gateway_ip
                .as_ref()
                .and_then(|s| match s.get_ref().parse::<Ipv4Addr>() {
                    Ok(ip) => Some(ip),
                    Err(_) => {
                        self.diags.push(
                            Diag::new(format!("bad gateway_ip {:?}", s.get_ref()))
                                .at(s.span(), "not an IPv4 address"),
                        );
                        None
                    }
                });
        for (v, key) in [(&rc.region, "region"), (&rc.zone, "zone")] {
            if let Some(v) = v
                && !is_label_value(v.get_ref())
            {
                self.err(
                    Diag::new(format!("bad {key} {:?}", v.get_ref()))
                        .at(v.span(), "not a label value")
                        .hint(format!("it becomes the nodes' topology.kubernetes.io/{key} label: letters, digits, '-', '_' and '.', at most 63")),
                );
            }
        }
        if let (Some(z), None) = (&rc.zone, &rc.region) {
            self.err(
                Diag::new(format!("cluster {name} has a zone but no region"))
                    .at(z.span(), "zone without region")
                    .hint("a locality is region, then zone: set region too"),
            );
        }
        Cluster {
            name: name.clone(),
            provider,
            context: rc.context.as_ref().map(|s| s.get_ref().clone()),
            kubeconfig: rc.kubeconfig.as_ref().map(|s| s.get_ref().clone()),
            network,
            pod_subnet,
            service_subnet,
            workers,
            cni: rc.cni.as_ref().map_or(Cni::Cilium, |c| *c.get_ref()),
            role,
            primary,
            gateway_ip,
            region: rc.region.as_ref().map(|s| s.get_ref().clone()),
            zone: rc.zone.as_ref().map(|s| s.get_ref().clone()),
            ingress: rc.ingress.as_ref().is_some_and(|i| *i.get_ref()),
            api_server: rc.api_server.as_ref().map(|s| s.get_ref().clone()),
        }
    }

    /// Keys that apply to one provider only.
    pub(super) fn provider_keys(
        &mut self,
        name: &str,
        rc: &RawCluster,
        span: &Range<usize>,
        provider: Provider,
    ) {
        match provider {
            Provider::Kind => {
                for (v, key) in [
                    (&rc.pod_subnet, "pod_subnet"),
                    (&rc.service_subnet, "service_subnet"),
                ] {
                    if v.is_none() {
                        self.err(
                            Diag::new(format!("kind cluster {name} needs a {key}"))
                                .at(span.clone(), format!("no {key}"))
                                .hint("each kind cluster gets its own pod and service ranges, distinct from the others'"),
                        );
                    }
                }
                for (v, key) in [(&rc.context, "context"), (&rc.kubeconfig, "kubeconfig")] {
                    if let Some(s) = v {
                        self.err(
                            Diag::new(format!("{key} applies to provider = \"kubeconfig\" only"))
                                .at(s.span(), "not used by kind clusters")
                                .hint("set provider = \"kubeconfig\" to install into an existing cluster"),
                        );
                    }
                }
                if let Some(s) = &rc.api_server {
                    self.err(
                        Diag::new("api_server applies to provider = \"kubeconfig\" only").at(
                            s.span(),
                            "kind clusters' internal address comes from kind get kubeconfig --internal",
                        ),
                    );
                }
                if let Some(s) = &rc.gateway_ip {
                    self.err(
                        Diag::new("gateway_ip applies to provider = \"kubeconfig\" only").at(
                            s.span(),
                            "kind clusters get theirs from the LoadBalancer range mesh allocates",
                        ),
                    );
                }
            }
            Provider::Kubeconfig => {
                if let Some(s) = &rc.api_server
                    && !(s.get_ref().starts_with("https://") && s.get_ref().len() > 8)
                {
                    self.err(
                        Diag::new(format!("bad api_server {:?}", s.get_ref()))
                            .at(s.span(), "not an https:// URL")
                            .hint("the address the other clusters reach, e.g. \"https://cluster1-control-plane:6443\""),
                    );
                }
                if rc.context.is_none() {
                    self.err(
                        Diag::new(format!("existing cluster {name} needs a context"))
                            .at(span.clone(), "no context")
                            .hint("context = \"<kubeconfig context name>\" (kubectl config get-contexts)"),
                    );
                }
                for (present, key) in [
                    (rc.workers.as_ref().map(|w| w.span()), "workers"),
                    (rc.cni.as_ref().map(|c| c.span()), "cni"),
                ] {
                    if let Some(s) = present {
                        self.err(
                            Diag::new(format!("{key} applies to provider = \"kind\" only"))
                                .at(s, "mesh does not create existing clusters"),
                        );
                    }
                }
            }
        }
    }

    /// The primary a cluster with `role = "remote"` uses.
    pub(super) fn primary_of(
        &mut self,
        name: &str,
        rc: &RawCluster,
        primaries: &BTreeSet<String>,
        ctx: &MeshCtx,
    ) -> Option<String> {
        let role = rc.role.as_ref().map_or(Role::Primary, |r| *r.get_ref());
        let mut primary = None;
        if role == Role::Remote {
            let role_span = rc.role.as_ref().unwrap().span();
            if ctx.topology != Topology::PrimaryRemote {
                self.err(
                    Diag::new(format!(
                        "cluster {name} is a remote but the topology is multi-primary"
                    ))
                    .at(role_span, "remote")
                    .also(ctx.topo_span.clone(), "topology")
                    .hint("set [mesh] topology = \"primary-remote\", or drop role = \"remote\""),
                );
            } else if let Some(p) = &rc.primary {
                if primaries.contains(p.get_ref()) {
                    primary = Some(p.get_ref().clone());
                } else {
                    self.err(
                        Diag::new(format!(
                            "remote {name} names primary {:?}, which is not a primary cluster",
                            p.get_ref()
                        ))
                        .at(p.span(), "not a primary")
                        .hint(format!("primaries: {}", list_or_none(primaries))),
                    );
                }
            } else if primaries.len() == 1 {
                primary = primaries.iter().next().cloned();
            } else if primaries.is_empty() {
                self.err(
                    Diag::new(format!("remote cluster {name} has no primary"))
                        .at(role_span, "remote")
                        .hint("a remote runs no istiod: declare a cluster with role = \"primary\" for it to use"),
                );
            } else {
                self.err(
                    Diag::new(format!(
                        "remote cluster {name} does not say which primary it uses"
                    ))
                    .at(role_span, "remote")
                    .hint(format!(
                        "add primary = \"<name>\"; primaries: {}",
                        list_or_none(primaries)
                    )),
                );
            }
        } else if let Some(p) = &rc.primary {
            self.err(
                Diag::new("primary = … applies to role = \"remote\" clusters only")
                    .at(p.span(), "this cluster is a primary"),
            );
        }
        primary
    }

    /// A remote's install points at its primary's east-west gateway address.
    pub(super) fn remote_gateways(
        &mut self,
        clusters: &BTreeMap<String, Cluster>,
        raw_clusters: &BTreeMap<String, Spanned<RawCluster>>,
    ) {
        for c in clusters.values() {
            if let Some(p) = c.primary.as_ref().and_then(|p| clusters.get(p))
                && p.provider == Provider::Kubeconfig
                && p.gateway_ip.is_none()
            {
                self.err(
                Diag::new(format!(
                    "remote {} needs the address of primary {}'s east-west gateway",
                    c.name, p.name
                ))
                .at(raw_clusters[&p.name].span(), "existing cluster, no gateway_ip")
                .hint("set gateway_ip on the primary (its istio-eastwestgateway LoadBalancer address)"),
            );
            }
        }
    }

    /// CIDRs: no two blocks of the mesh may overlap, nor sit inside the
    /// Docker network the nodes and LoadBalancer ranges live in.
    pub(super) fn cidrs(
        &mut self,
        nets: &[Net],
        clusters: &BTreeMap<String, Cluster>,
        kind_subnet: Ipv4Net,
    ) {
        for (i, j) in overlapping_pairs(nets, 20) {
            let (ca, ka, na, sa) = &nets[i];
            let (cb, kb, nb, sb) = &nets[j];
            {
                {
                    let whose = if ca == cb {
                        format!("{ca}'s own {ka}")
                    } else {
                        format!("clusters.{ca}.{ka}")
                    };
                    self.err(
                    Diag::new(format!("overlapping CIDRs: clusters.{cb}.{kb} {nb} overlaps {whose} {na}"))
                        .at(sb.clone(), "overlaps")
                        .also(sa.clone(), "this range")
                        .hint("give every cluster its own pod and service ranges; routes between clusters need them distinct"),
                );
                }
            }
        }
        for (ca, ka, na, sa) in nets {
            if clusters
                .get(ca)
                .is_some_and(|c| c.provider == Provider::Kind)
                && overlaps(na, &kind_subnet)
            {
                self.err(
                    Diag::new(format!(
                        "clusters.{ca}.{ka} {na} overlaps the kind network {kind_subnet}"
                    ))
                    .at(sa.clone(), "overlaps the Docker network")
                    .hint("pick a range outside the kind Docker network (mesh.kind_subnet)"),
                );
            }
        }
    }
}

/// Pairs `(i, j)`, `i < j`, of ranges in `nets` that overlap (every one,
/// up to `cap`), sorted. CIDR blocks either nest or are apart, so a
/// sweep in address order (a block before the blocks inside it) with a
/// stack of the blocks still open finds every block's containers on the
/// stack: O(N log N) plus the pairs reported, where comparing every pair
/// was O(N²) (12% of validation at 1,000 clusters).
pub(super) fn overlapping_pairs(nets: &[Net], cap: usize) -> Vec<(usize, usize)> {
    let mut order: Vec<usize> = (0..nets.len()).collect();
    order.sort_by_key(|&i| (u32::from(nets[i].2.network()), nets[i].2.prefix_len(), i));
    let mut open: Vec<usize> = Vec::new();
    let mut pairs = Vec::new();
    for &i in &order {
        let start = u32::from(nets[i].2.network());
        while open
            .last()
            .is_some_and(|&o| u32::from(nets[o].2.broadcast()) < start)
        {
            open.pop();
        }
        for &o in &open {
            if pairs.len() < cap {
                pairs.push((o.min(i), o.max(i)));
            }
        }
        open.push(i);
    }
    pairs.sort_unstable();
    pairs
}

impl Validator {
    /// LoadBalancer ranges are carved from the top half of kind_subnet.
    pub(super) fn lb_capacity(
        &mut self,
        clusters: &BTreeMap<String, Cluster>,
        mesh: &Mesh,
        ctx: &MeshCtx,
    ) {
        let (kind_subnet, lb_size) = (mesh.kind_subnet, mesh.lb_size);
        let kind_count = clusters
            .values()
            .filter(|c| c.provider == Provider::Kind)
            .count() as u64;
        let half = 1u64 << (31 - kind_subnet.prefix_len().min(31));
        if kind_count * lb_size as u64 > half {
            let span = ctx.kind_subnet_span.clone();
            self.err(
            Diag::new(format!(
                "kind_subnet {kind_subnet} is too small: {kind_count} clusters × lb_size {lb_size} addresses do not fit in its upper half ({half})"
            ))
            .at(span, "too small")
            .hint("use a larger kind network, or a smaller [mesh] lb_size"),
        );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn the_sweep_finds_exactly_the_overlapping_pairs(
            blocks in proptest::collection::vec((0u32..64, 24u8..=30), 0..40)
        ) {
            // Small addresses and prefixes: plenty of nesting and repeats.
            let nets: Vec<Net> = blocks
                .iter()
                .map(|&(a, p)| {
                    let n = Ipv4Net::new(std::net::Ipv4Addr::from(0x0a00_0000 + (a << 6)), p)
                        .unwrap()
                        .trunc();
                    ("c".to_string(), "pod_subnet", n, 0..0)
                })
                .collect();
            let mut brute = Vec::new();
            for i in 0..nets.len() {
                for j in i + 1..nets.len() {
                    if overlaps(&nets[i].2, &nets[j].2) {
                        brute.push((i, j));
                    }
                }
            }
            prop_assert_eq!(overlapping_pairs(&nets, usize::MAX), brute.clone());
            let capped = overlapping_pairs(&nets, 20);
            prop_assert_eq!(capped.len(), brute.len().min(20));
            prop_assert!(capped.iter().all(|p| brute.contains(p)));
        }
    }
}
