#!/usr/bin/env -S python3 -S
"""Fake kind, helm and docker for mesh's live tests (stdlib only).

One script, installed under three names; it acts as the tool it is called
as. State lives in $FAKE_STATE:

  config.json        knobs: {"delay": {"<tool> <verb>": seconds},
                     "version": {"helm": "...", "kind": "..."},
                     "docker_memory": bytes,
                     "fail": {"<tool> <verb> [<name>]": "message"},
                     "hang": ["<tool> <verb> [<name>]"], "garbage": [...],
                     "crash": [...] (SIGKILLs itself),
                     "subnet": "172.18.0.0/16"}
  clusters/<n>/      a kind cluster that exists (kubeconfig.json,
                     kubeconfig-internal.json are prepared by the test in
                     api/<n>/ and copied here on create)
  releases/<n>.json  helm releases per cluster; like helm, a revision is
                     recorded pending-install/pending-upgrade before the
                     work, deployed after it, failed on SIGTERM, and left
                     pending by SIGKILL, which blocks later upgrades
  log.jsonl          every invocation

Helm acts on the fake API server like the charts would: base makes the
istio-reader service account and Istio's CRDs, istiod its Deployment (not
in the remote profile), gateway its Deployment and LoadBalancer Service.
Kind sends the cluster's config to the API server, which makes its nodes
(with the labels the config gives them).
"""
import json, os, signal, sys, time

STATE = os.environ["FAKE_STATE"]
TOOL = os.path.basename(sys.argv[0])
ARGS = sys.argv[1:]


def load(path, default):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return default


def save(path, value):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with open(tmp, "w") as f:
        json.dump(value, f)
    os.replace(tmp, path)


CONFIG = load(os.path.join(STATE, "config.json"), {})


def log():
    with open(os.path.join(STATE, "log.jsonl"), "a") as f:
        f.write(json.dumps([TOOL] + ARGS) + "\n")


def knobs(verb, name=None):
    """Apply configured delay, failure, hang or garbage for this call."""
    keys = [f"{TOOL} {verb}"] + ([f"{TOOL} {verb} {name}"] if name else [])
    for k in keys:
        if k in CONFIG.get("delay", {}):
            time.sleep(CONFIG["delay"][k])
    for k in keys:
        if k in CONFIG.get("hang", []):
            time.sleep(3600)
        if k in CONFIG.get("fail", {}):
            sys.stderr.write(CONFIG["fail"][k] + "\n")
            sys.exit(1)
        if k in CONFIG.get("crash", []):
            # Killed hard mid-operation (SIGKILL, a power cut): no cleanup.
            os.kill(os.getpid(), signal.SIGKILL)
        if k in CONFIG.get("garbage", []):
            print("\x00\x01 this is not what you expected {{{")
            sys.exit(0)


def flag(name, default=None):
    if name in ARGS:
        i = ARGS.index(name)
        return ARGS[i + 1]
    return default


def die(msg, code=1):
    sys.stderr.write(msg + "\n")
    sys.exit(code)


# ------------------------------------------------------------ API access

def api_for_kubeconfig(path):
    with open(path) as f:
        kc = json.load(f)
    ctx_name = flag("--kube-context") or kc["current-context"]
    ctx = next(c["context"] for c in kc["contexts"] if c["name"] == ctx_name)
    cluster = next(c["cluster"] for c in kc["clusters"] if c["name"] == ctx["cluster"])
    user = next(u["user"] for u in kc["users"] if u["name"] == ctx["user"])
    return cluster, user, ctx["cluster"]


def request(cluster, user, method, path, body=None, missing_ok=False):
    # Imported here: only calls that reach the API pay for them.
    import base64, http.client, ssl, tempfile
    server = cluster["server"].replace("https://", "")
    host, port = server.split(":")
    ctx = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
    with tempfile.TemporaryDirectory() as d:
        cert, key = os.path.join(d, "c.pem"), os.path.join(d, "k.pem")
        with open(cert, "wb") as f:
            f.write(base64.b64decode(user["client-certificate-data"]))
        with open(key, "wb") as f:
            f.write(base64.b64decode(user["client-key-data"]))
        ctx.load_cert_chain(cert, key)
    conn = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=30)
    # Chaos (transient faults) is for mesh's own client, not for the tools.
    headers = {"x-fake-tool": TOOL}
    if body is not None:
        headers["content-type"] = "application/apply-patch+yaml"

    try:
        conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
    except (OSError, http.client.HTTPException):
        # As client-go words it.
        die(f'Error: Kubernetes cluster unreachable: {method} "https://{server}{path}": '
            f'dial tcp {server}: connect: connection refused')
    if resp.status == 404 and missing_ok:
        return None
    if resp.status >= 300:
        die(f"{TOOL}: API {method} {path}: {resp.status} {data[:200]!r}")
    return json.loads(data or b"{}")


def apply(cluster, user, api_path, obj):
    request(cluster, user, "PATCH", api_path + "?fieldManager=helm&force=true", obj)


# ------------------------------------------------------------ kind

def kubeconfig_paths():
    """kind's files: --kubeconfig alone if given, else $KUBECONFIG's list,
    else ~/.kube/config (kind's paths.go)."""
    explicit = flag("--kubeconfig")
    if explicit:
        return [explicit]
    listed = [p for p in os.environ.get("KUBECONFIG", "").split(":") if p]
    return listed or [os.path.join(os.environ.get("HOME", "/"), ".kube", "config")]


def path_for_merge():
    """Where kind create writes: the first file that exists, else the last."""
    paths = kubeconfig_paths()
    return next((p for p in paths if os.path.exists(p)), paths[-1])


class kubeconfig_lock:
    """kind (as client-go) locks a kubeconfig while it edits it by creating
    `<file>.lock` exclusively, in one attempt (kind's lock.go): a second
    kind editing the same file at that moment fails, and a kind killed
    while it holds the lock leaves it behind for every later one."""
    def __init__(self, path, verb):
        self.path, self.verb = path, verb

    def __enter__(self):
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        self.lock = self.path + ".lock"
        try:
            os.close(os.open(self.lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            die(f"ERROR: failed to {self.verb} cluster: failed to lock config file: "
                f"open {self.lock}: file exists")

    def __exit__(self, *exc):
        os.remove(self.lock)


def kubeconfig_add(name, prepared):
    """As kind create: add kind-<name>'s cluster, user and context to the
    kubeconfig and make it the current context."""
    path = path_for_merge()
    with kubeconfig_lock(path, "create"):
        # Killed here (knob `crash: kind write-kubeconfig`), it leaves the lock.
        knobs("write-kubeconfig", name)
        kc = load(path, None) or {"apiVersion": "v1", "kind": "Config", "clusters": [], "users": [], "contexts": []}
        new = load(os.path.join(prepared, "kubeconfig.json"), {})
        ctx = f"kind-{name}"
        for section in ("clusters", "users", "contexts"):
            kc[section] = [e for e in kc.get(section) or [] if e["name"] != ctx] + new.get(section, [])
        kc["current-context"] = ctx
        save(path, kc)


def kubeconfig_remove(name):
    """As kind delete: remove kind-<name> from each kubeconfig file (and
    unset the current context if it was that)."""
    for path in kubeconfig_paths():
        with kubeconfig_lock(path, "delete"):
            kc = load(path, None)
            if kc is None:
                continue
            ctx = f"kind-{name}"
            for section in ("clusters", "users", "contexts"):
                kc[section] = [e for e in kc.get(section) or [] if e["name"] != ctx]
            if kc.get("current-context") == ctx:
                kc["current-context"] = ""
            save(path, kc)


def kind():
    if ARGS[:1] == ["version"]:
        print(CONFIG.get("version", {}).get("kind", "kind v0.30.0 go1.24.6 linux/amd64"))
        return
    if ARGS[:2] == ["get", "clusters"]:
        knobs("get clusters")
        d = os.path.join(STATE, "clusters")
        names = sorted(os.listdir(d)) if os.path.isdir(d) else []
        if not names:
            sys.stderr.write("No kind clusters found.\n")
        for n in names:
            print(n)
        return
    name = flag("--name", "kind")
    here = os.path.join(STATE, "clusters", name)
    prepared = os.path.join(STATE, "api", name)
    if ARGS[:2] == ["create", "cluster"]:
        knobs("create", name)
        if os.path.isdir(here):
            die(f'ERROR: failed to create cluster: node(s) already exist for a cluster with the name "{name}"')
        config = flag("--config")
        if not config or not os.path.isfile(config):
            die("ERROR: no --config file")
        if not os.path.isdir(prepared):
            die(f"fake kind: the test prepared no API server for {name}")
        os.makedirs(here)
        with open(config) as f, open(os.path.join(here, "config.yaml"), "w") as g:
            g.write(f.read())
        # Like real kind, a new cluster has new credentials: count creations.
        gen_path = os.path.join(STATE, "generations", name)
        os.makedirs(os.path.dirname(gen_path), exist_ok=True)
        gen = int(load(gen_path, 0)) + 1
        save(gen_path, gen)
        cluster, user, _ = api_for_kubeconfig(os.path.join(prepared, "kubeconfig.json"))
        with open(config) as f:
            request(cluster, user, "POST", "/fake/reset", {"config": f.read()})
        kubeconfig_add(name, prepared)
        return
    if ARGS[:2] == ["delete", "cluster"]:
        knobs("delete", name)
        if os.path.isdir(prepared):
            cluster, user, _ = api_for_kubeconfig(os.path.join(prepared, "kubeconfig.json"))
            request(cluster, user, "POST", "/fake/down")
        if os.path.isdir(here):
            for f in os.listdir(here):
                os.remove(os.path.join(here, f))
            os.rmdir(here)
        rel = os.path.join(STATE, "releases", f"kind-{name}.json")
        if os.path.exists(rel):
            os.remove(rel)
        kubeconfig_remove(name)
        return
    if ARGS[:2] == ["get", "kubeconfig"]:
        knobs("get kubeconfig", name)
        if not os.path.isdir(here):
            die(f'ERROR: could not locate any control plane nodes for cluster named "{name}"')
        internal = "--internal" in ARGS
        with open(os.path.join(prepared, "kubeconfig-internal.json" if internal else "kubeconfig.json")) as f:
            kc = json.load(f)
        gen = load(os.path.join(STATE, "generations", name), 0)
        kc["preferences"] = {"extensions": [{"name": "fake-kind", "extension": {"generation": gen}}]}
        print(json.dumps(kc, indent=2))
        return
    die(f"fake kind: unsupported: {ARGS}")


# ------------------------------------------------------------ docker

def docker():
    if ARGS[:1] == ["info"]:
        knobs("info")
        # --format "{{.ServerVersion}} {{.MemTotal}}"
        print("28.2.2-fake %d" % CONFIG.get("docker_memory", 16 << 30))
        return
    if ARGS[:3] == ["network", "inspect", "kind"]:
        knobs("network inspect")
        d = os.path.join(STATE, "clusters")
        if not (os.path.isdir(d) and os.listdir(d)):
            die("Error response from daemon: network kind not found")
        subnet = CONFIG.get("subnet", "172.18.0.0/16")
        print(json.dumps([{"Subnet": "fc00:f853:ccd:e793::/64"}, {"Subnet": subnet, "Gateway": subnet.split("/")[0][:-1] + "1"}]))
        return
    die(f"fake docker: unsupported: {ARGS}")


# ------------------------------------------------------------ helm

# The top-level keys istio/gateway's values.schema.json allows (it sets
# additionalProperties false): helm refuses any other before rendering.
GATEWAY_KEYS = {
    "_internal_defaults_do_not_set", "global", "profile", "revision", "pilot", "affinity",
    "securityContext", "containerSecurityContext", "kind", "annotations", "autoscaling", "env",
    "strategy", "minReadySeconds", "readinessProbe", "labels", "name", "nodeSelector",
    "podAnnotations", "replicaCount", "resources", "compatibilityVersion", "runAsRoot",
    "unprivilegedPort", "service", "serviceAccount", "rbac", "tolerations",
    "topologySpreadConstraints", "networkGateway", "imagePullPolicy", "imagePullSecrets",
    "podDisruptionBudget", "terminationGracePeriodSeconds", "volumes", "volumeMounts",
    "priorityClassName", "lifecycle",
}


def check_schema(chart, values):
    """Reject values the chart's schema forbids, as helm does."""
    if chart != "gateway":
        return
    bad = sorted(k for k in values if k not in GATEWAY_KEYS)
    if bad:
        die("Error: values don't meet the specifications of the schema(s) in the following chart(s):\ngateway:\n"
            + "".join(f"- (root): Additional property {k} is not allowed\n" for k in bad))
    if values.get("kind", "Deployment") not in ("Deployment", "DaemonSet"):
        die("Error: values don't meet the specifications of the schema(s) in the following chart(s):\ngateway:\n"
            "- kind: kind must be one of the following: \"Deployment\", \"DaemonSet\"\n")


# The CRDs the real charts install (a few of each; kinds mesh uses).
CHART_CRDS = {
    "base": [("networking.istio.io", "gateways", "Gateway"),
             ("networking.istio.io", "virtualservices", "VirtualService"),
             ("networking.istio.io", "destinationrules", "DestinationRule")],
    "metallb": [("metallb.io", "ipaddresspools", "IPAddressPool"),
                ("metallb.io", "l2advertisements", "L2Advertisement")],
}


def chart_objects(chart, release, ns, values):
    """What the real chart would create that mesh waits on."""
    objs = []
    for group, plural, kind in CHART_CRDS.get(chart, []):
        name = f"{plural}.{group}"
        objs.append((f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}",
                     {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                      "spec": {"group": group, "names": {"plural": plural, "kind": kind}, "scope": "Namespaced"}}))
    if chart == "base":
        objs.append(("/api/v1/namespaces/%s/serviceaccounts/istio-reader-service-account" % ns,
                     {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "istio-reader-service-account"}}))
    if chart == "istiod" and values.get("profile") != "remote":
        objs.append(("/apis/apps/v1/namespaces/%s/deployments/istiod" % ns,
                     {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "istiod", "labels": {"app": "istiod"}},
                      "spec": {"replicas": 1, "template": {"metadata": {"labels": {"app": "istiod"}}}}}))
    # The operators, controllers and servers the real charts run.
    deployments = {"metallb": "metallb-controller", "cilium": "cilium-operator",
                   "prometheus": f"{release}-server"}
    if chart in deployments:
        name = deployments[chart]
        objs.append(("/apis/apps/v1/namespaces/%s/deployments/%s" % (ns, name),
                     {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
                      "spec": {"replicas": 1}}))
    # DaemonSets the real charts run on every node.
    daemonsets = {"cilium": "cilium", "cni": "istio-cni-node", "ztunnel": "ztunnel", "metallb": "metallb-speaker"}
    if chart in daemonsets:
        name = daemonsets[chart]
        objs.append(("/apis/apps/v1/namespaces/%s/daemonsets/%s" % (ns, name),
                     {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": name, "labels": {"k8s-app": name}},
                      "spec": {"selector": {"matchLabels": {"k8s-app": name}},
                               "template": {"metadata": {"labels": {"k8s-app": name}}}}}))
    if chart == "kiali-server":
        # Its service account (and role) everywhere; the server only where
        # it is not asked for the remote cluster's resources alone.
        objs.append(("/api/v1/namespaces/%s/serviceaccounts/kiali" % ns,
                     {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "kiali"}}))
        if not values.get("deployment", {}).get("remote_cluster_resources_only"):
            objs.append(("/apis/apps/v1/namespaces/%s/deployments/kiali" % ns,
                         {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "kiali", "labels": {"app": "kiali"}},
                          "spec": {"replicas": 1, "template": {"metadata": {"labels": {
                              "app": "kiali", "app.kubernetes.io/name": "kiali", "app.kubernetes.io/instance": "kiali"}}}}}))
            objs.append(("/api/v1/namespaces/%s/services/kiali" % ns,
                         {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kiali"},
                          "spec": {"type": "ClusterIP", "ports": [{"name": "http", "port": 20001}]}}))
    if chart == "prometheus":
        # Like the chart: the server's Service on port 80, nothing else
        # (the values turn the bundled exporters off: the fake checks it).
        for sub in ("alertmanager", "kube-state-metrics", "prometheus-node-exporter", "prometheus-pushgateway"):
            if values.get(sub, {}).get("enabled", True):
                die(f"fake helm: the prometheus chart would install {sub}: mesh turns it off")
        objs.append(("/api/v1/namespaces/%s/services/%s-server" % (ns, release),
                     {"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"{release}-server"},
                      "spec": {"type": "ClusterIP", "ports": [{"name": "http", "port": 80, "targetPort": 9090}]}}))
    if chart == "gateway":
        name = values.get("name", release)
        svc = values.get("service", {})
        labels = dict(values.get("labels", {}))
        env = dict(values.get("env", {}))
        ports = svc.get("ports", [])
        net = values.get("networkGateway")
        if net:
            # What the chart derives from networkGateway; given again in the
            # values it renders duplicate keys, which Helm 4 rejects.
            if "ISTIO_META_REQUESTED_NETWORK_VIEW" in env:
                die('Error: UPGRADE FAILED: failed to create typed patch object: .spec.template.spec.containers[name="istio-proxy"].env: '
                    'duplicate entries for key [name="ISTIO_META_REQUESTED_NETWORK_VIEW"]')
            if "topology.istio.io/network" in labels:
                die('Error: UPGRADE FAILED: YAML parse error: mapping key "topology.istio.io/network" already defined')
            labels["topology.istio.io/network"] = net
            env["ISTIO_META_REQUESTED_NETWORK_VIEW"] = net
            ports = [{"name": n, "port": p, "targetPort": p}
                     for n, p in [("status-port", 15021), ("tls", 15443), ("tls-istiod", 15012), ("tls-webhook", 15017)]]
        objs.append(("/apis/apps/v1/namespaces/%s/deployments/%s" % (ns, name),
                     {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
                      "spec": {"replicas": 1, "template": {"metadata": {"labels": dict(labels, **{"sidecar.istio.io/inject": "true"})}, "spec": {"containers": [
                          {"name": "istio-proxy", "image": "auto",
                           "env": [{"name": k, "value": v} for k, v in env.items()]}]}}}}))
        objs.append(("/api/v1/namespaces/%s/services/%s" % (ns, name),
                     {"apiVersion": "v1", "kind": "Service",
                      "metadata": {"name": name, "labels": labels, "annotations": svc.get("annotations", {})},
                      "spec": {"type": svc.get("type", "LoadBalancer"), "ports": ports}}))
    return objs


def latest_status(cluster, user, ns, release):
    """The status of a release's latest revision, from its Secrets (as
    helm reads it); "" when it has none."""
    got = request(cluster, user, "GET",
                  f"/api/v1/namespaces/{ns}/secrets?labelSelector=owner%3Dhelm%2Cname%3D{release}",
                  missing_ok=True) or {}
    best = (-1, "")
    for item in got.get("items", []):
        labels = item.get("metadata", {}).get("labels", {})
        try:
            version = int(labels.get("version", ""))
        except ValueError:
            continue
        if version > best[0]:
            best = (version, labels.get("status", ""))
    return best[1]


def update_releases(path, key, r):
    """Set (or, with None, drop) one release in the cluster's state file,
    under a lock: helm processes for one cluster run in parallel, and real
    helm keeps each release in its own Secrets, so none loses another's."""
    import fcntl
    os.makedirs(os.path.dirname(path), exist_ok=True)
    # SIGTERM/SIGINT wait until the lock is released: their handler
    # records the release failed, through here, and a second flock of the
    # file in one process waits for the first forever (a helm told to stop
    # mid-update hung, and every later helm on its cluster with it).
    stop = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)
    try:
        with open(path + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            current = load(path, {})
            if r is None:
                current.pop(key, None)
            else:
                current[key] = r
            save(path, current)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, stop)


def set_release(cluster, user, path, releases, ns, release, r):
    """Record revision r["revision"] of a release, as helm does: in the
    state file, and as a Secret in the release's namespace (earlier
    revisions superseded)."""
    import base64
    releases[f"{ns}/{release}"] = r
    rev = r["revision"]

    def record(n, status):
        apply(cluster, user, f"/api/v1/namespaces/{ns}/secrets/sh.helm.release.v1.{release}.v{n}",
              {"apiVersion": "v1", "kind": "Secret", "type": "helm.sh/release.v1",
               "metadata": {"labels": {"owner": "helm", "name": release, "status": status, "version": str(n)}},
               "data": {"release": base64.b64encode(json.dumps({"chart": r["chart"]}).encode()).decode()}})
    if rev > 1:
        record(rev - 1, "superseded")
    record(rev, r["status"])
    update_releases(path, f"{ns}/{release}", r)


def ensure_namespace(cluster, user, ns):
    """helm's --create-namespace; without it, a missing namespace fails
    the install as the API server refuses the first object."""
    if request(cluster, user, "GET", f"/api/v1/namespaces/{ns}", missing_ok=True) is not None:
        return
    if "--create-namespace" not in ARGS:
        die(f'Error: INSTALLATION FAILED: create: failed to create: namespaces "{ns}" not found')
    apply(cluster, user, f"/api/v1/namespaces/{ns}", {"apiVersion": "v1", "kind": "Namespace"})


def ready(obj):
    """Ready as `helm --wait` judges it: Deployments with their replicas
    ready for the current generation, DaemonSets on every node,
    LoadBalancer Services with an address."""
    kind, st = obj.get("kind"), obj.get("status") or {}
    gen = obj.get("metadata", {}).get("generation")
    if kind == "Deployment":
        want = obj.get("spec", {}).get("replicas", 1)
        return st.get("observedGeneration") == gen and st.get("updatedReplicas", 0) >= want \
            and st.get("readyReplicas", 0) >= want
    if kind == "DaemonSet":
        want = st.get("desiredNumberScheduled", 0)
        return st.get("observedGeneration") == gen and want > 0 and st.get("numberReady") == want \
            and st.get("updatedNumberScheduled") == want
    if kind == "Service" and obj.get("spec", {}).get("type") == "LoadBalancer":
        return bool(st.get("loadBalancer", {}).get("ingress"))
    return True


def wait_ready(cluster, user, paths, timeout):
    """helm --wait: poll what the chart made until all of it is ready."""
    deadline = time.time() + timeout
    while True:
        pending = [p for p in paths if not ready(request(cluster, user, "GET", p, missing_ok=True) or {})]
        if not pending:
            return None
        if time.time() > deadline:
            return pending[0]
        time.sleep(0.1)


def duration(s):
    """A helm --timeout: 10m, 90s, 1m30s."""
    total, num = 0, ""
    for ch in s:
        if ch.isdigit():
            num += ch
        else:
            total += int(num or 0) * {"h": 3600, "m": 60, "s": 1}[ch]
            num = ""
    return total + int(num or 0)


def helm():
    if ARGS[:1] == ["version"]:
        print(CONFIG.get("version", {}).get("helm", "v3.19.0-fake+g0000000"))
        return
    kubeconfig = flag("--kubeconfig")
    ns = flag("--namespace", "default")
    if not kubeconfig:
        die("fake helm: --kubeconfig is required")
    cluster, user, cluster_name = api_for_kubeconfig(kubeconfig)
    path = os.path.join(STATE, "releases", f"{cluster_name}.json")
    releases = load(path, {})
    verb = ARGS[0]
    if verb == "upgrade":
        release, chart = ARGS[2], ARGS[3]
        key = f"{ns}/{release}"
        old = releases.get(key, {})
        # Like helm: a release whose last operation never finished blocks
        # every later one. Helm reads that from the release's Secrets (the
        # record mesh also reads), not from this file, which a helm killed
        # between the two writes leaves behind.
        if latest_status(cluster, user, ns, release).startswith("pending-"):
            die("Error: UPGRADE FAILED: another operation (install/upgrade/rollback) is in progress")
        values = {}
        if flag("--values"):
            with open(flag("--values")) as f:
                values = json.load(f)
        check_schema(chart, values)
        rev = old.get("revision", 0) + 1
        pending = "pending-upgrade" if old else "pending-install"

        def on_term(signum, frame):
            # helm >= 3.7 marks the revision failed on SIGTERM/SIGINT
            # (retryable); a SIGKILL leaves it pending.
            if releases.get(key, {}).get("revision") == rev:
                releases[key]["status"] = "failed"
                set_release(cluster, user, path, releases, ns, release, releases[key])
            sys.stderr.write(f"Error: UPGRADE FAILED: release {release} failed: context canceled\n")
            os._exit(1)
        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        ensure_namespace(cluster, user, ns)
        # The new revision is recorded pending before any work is done.
        set_release(cluster, user, path, releases, ns, release,
                    {"chart": chart, "version": flag("--version"), "repo": flag("--repo"),
                     "values": values, "status": pending, "revision": rev,
                     "deployed": old.get("deployed")})
        knobs("upgrade", release)
        objs = chart_objects(chart, release, ns, values)
        for api_path, obj in objs:
            apply(cluster, user, api_path, obj)
        if "--wait" in ARGS:
            stuck = wait_ready(cluster, user, [p for p, _ in objs], duration(flag("--timeout", "5m")))
            if stuck:
                # As helm: a wait that times out marks the revision failed.
                releases[key]["status"] = "failed"
                set_release(cluster, user, path, releases, ns, release, releases[key])
                die(f"Error: UPGRADE FAILED: context deadline exceeded (waiting for {stuck})")
        releases[key]["status"] = "deployed"
        releases[key]["deployed"] = rev
        set_release(cluster, user, path, releases, ns, release, releases[key])
        print(f'Release "{release}" has been upgraded. Happy Helming!')
        return
    if verb == "rollback":
        release = ARGS[1]
        knobs("rollback", release)
        key = f"{ns}/{release}"
        old = releases.get(key)
        if not old or not old.get("deployed"):
            die(f'Error: release: "{release}" has no deployed revision to roll back to')
        r = dict(old)
        r["revision"] = old["revision"] + 1
        r["status"] = "deployed"
        r["deployed"] = r["revision"]
        set_release(cluster, user, path, releases, ns, release, r)
        print("Rollback was a success! Happy Helming!")
        return
    if verb == "status":
        knobs("status", ARGS[1])
        r = releases.get(f"{ns}/{ARGS[1]}")
        if r is None:
            die("Error: release: not found")
        print(json.dumps({"name": ARGS[1], "namespace": ns, "version": r["revision"], "info": {"status": r["status"]}}))
        return
    if verb == "list":
        knobs("list")
        print(json.dumps([{"name": k.split("/", 1)[1], "namespace": k.split("/", 1)[0], "revision": str(r["revision"]),
                           "status": r["status"], "chart": r["chart"]} for k, r in sorted(releases.items())]))
        return
    if verb == "get" and ARGS[1] == "values":
        knobs("get values", ARGS[2])
        r = releases.get(f"{ns}/{ARGS[2]}")
        if r is None:
            die("Error: release: not found")
        print(json.dumps(r["values"] or None))
        return
    if verb == "uninstall":
        knobs("uninstall", ARGS[1])
        gone = releases.pop(f"{ns}/{ARGS[1]}", None)
        update_releases(path, f"{ns}/{ARGS[1]}", None)
        if gone:
            # As helm: what the chart made goes (CRDs stay: Istio's carry
            # helm.sh/resource-policy: keep, and mesh never deletes kinds).
            for api_path, obj in chart_objects(gone["chart"], ARGS[1], ns, gone.get("values") or {}):
                if obj.get("kind") != "CustomResourceDefinition":
                    request(cluster, user, "DELETE", api_path, missing_ok=True)
            for rev in range(1, gone["revision"] + 1):
                try:
                    request(cluster, user, "DELETE", f"/api/v1/namespaces/{ns}/secrets/sh.helm.release.v1.{ARGS[1]}.v{rev}")
                except SystemExit:
                    pass
        print(f'release "{ARGS[1]}" uninstalled')
        return
    die(f"fake helm: unsupported: {ARGS}")


if __name__ == "__main__":
    log()
    {"kind": kind, "docker": docker, "helm": helm}[TOOL]()
