//! Every plan validation error, one test each: exit code 2, nothing run,
//! and the message (file:line:col, the offending text, a hint) pinned by an
//! insta snapshot.

mod common;
use common::Project;

const BASE: &str = r#"[mesh]
id = "mesh1"
istio = "1.28.0"
mode = "sidecar"
topology = "multi-primary"

[clusters.east]
network = "network1"
pod_subnet = "10.11.0.0/16"
service_subnet = "172.21.0.0/16"

[clusters.west]
network = "network2"
pod_subnet = "10.21.0.0/16"
service_subnet = "172.22.0.0/16"

[apps.helloworld]
manifest = "tasks/apps/helloworld.yaml"
namespace = "sample"
placement = { east = "v1", west = "v2" }
"#;

/// Run `mesh plan` on `plan`; it must fail with exit 2 and touch nothing.
fn error_of(plan: &str) -> String {
    let p = Project::with_plan(plan);
    let o = p.run(&["build", "--offline"]);
    assert_eq!(o.code, 2, "stdout:\n{}\nstderr:\n{}", o.stdout, o.stderr);
    assert!(
        !p.path("cache").exists(),
        "a bad plan must not touch the cache"
    );
    assert!(o.stderr.contains("plan.toml"), "{}", o.stderr);
    o.stderr
}

fn edit(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "{from}");
    BASE.replacen(from, to, 1)
}

#[test]
fn a_validity_past_year_9999() {
    insta::assert_snapshot!(error_of(&format!("{BASE}\n[pki]\nroot_days = 3000000\n")));
}

#[test]
fn a_plan_that_is_not_utf8() {
    let p = Project::with_plan("");
    let mut bytes = BASE.as_bytes().to_vec();
    let at = BASE.find("network2").unwrap();
    bytes[at + 3] = 0xe9; // "netw\xe9rk2", as Latin-1 would write it
    std::fs::write(p.path("plan.toml"), bytes).unwrap();
    let o = p.run(&["build", "--offline"]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(!p.path("cache").exists());
    insta::assert_snapshot!(o.stderr);
}

#[test]
fn base_plan_is_valid() {
    let p = Project::with_plan(BASE);
    assert_eq!(p.run(&["plan"]).code, 0);
}

#[test]
fn unknown_key() {
    insta::assert_snapshot!(error_of(&BASE.replace(
        "network = \"network2\"",
        "network = \"network2\"\nwokers = 2"
    )));
}

#[test]
fn unknown_top_level_table() {
    insta::assert_snapshot!(error_of(&format!("{BASE}\n[extras]\nfoo = 1\n")));
}

#[test]
fn bad_enum_value() {
    insta::assert_snapshot!(error_of(&edit("mode = \"sidecar\"", "mode = \"sidecars\"")));
}

#[test]
fn a_negative_number_where_a_count_goes() {
    insta::assert_snapshot!(error_of(&BASE.replace(
        "network = \"network2\"",
        "network = \"network2\"\nworkers = -1"
    )));
}

#[test]
fn a_quoted_number() {
    insta::assert_snapshot!(error_of(&BASE.replace(
        "network = \"network2\"",
        "network = \"network2\"\nworkers = \"2\""
    )));
}

#[test]
fn a_bare_number_where_a_string_goes() {
    insta::assert_snapshot!(error_of(&edit("id = \"mesh1\"", "id = 1")));
}

#[test]
fn a_value_far_from_every_valid_one_lists_them() {
    insta::assert_snapshot!(error_of(&edit("mode = \"sidecar\"", "mode = \"proxy\"")));
}

#[test]
fn toml_syntax_error() {
    insta::assert_snapshot!(error_of(&edit("id = \"mesh1\"", "id = \"mesh1")));
}

#[test]
fn duplicate_cluster_name() {
    insta::assert_snapshot!(error_of(&format!(
        "{BASE}\n[clusters.east]\nnetwork = \"network3\"\n"
    )));
}

#[test]
fn missing_required_key() {
    insta::assert_snapshot!(error_of(&edit("istio = \"1.28.0\"\n", "")));
}

#[test]
fn overlapping_cidrs_between_clusters() {
    insta::assert_snapshot!(error_of(&edit(
        "pod_subnet = \"10.21.0.0/16\"",
        "pod_subnet = \"10.11.128.0/17\""
    )));
}

#[test]
fn overlapping_pod_and_service_cidr_in_one_cluster() {
    insta::assert_snapshot!(error_of(&edit(
        "service_subnet = \"172.21.0.0/16\"",
        "service_subnet = \"10.11.0.0/20\""
    )));
}

#[test]
fn cidr_inside_the_kind_network() {
    insta::assert_snapshot!(error_of(&edit(
        "pod_subnet = \"10.11.0.0/16\"",
        "pod_subnet = \"172.18.0.0/20\""
    )));
}

#[test]
fn bad_cidr_syntax() {
    insta::assert_snapshot!(error_of(&edit(
        "pod_subnet = \"10.11.0.0/16\"",
        "pod_subnet = \"10.11.0.0/33\""
    )));
}

#[test]
fn cidr_with_host_bits() {
    insta::assert_snapshot!(error_of(&edit(
        "pod_subnet = \"10.11.0.0/16\"",
        "pod_subnet = \"10.11.3.0/16\""
    )));
}

#[test]
fn duplicate_network_names() {
    insta::assert_snapshot!(error_of(&edit(
        "network = \"network2\"",
        "network = \"network1\""
    )));
}

#[test]
fn remote_without_a_primary() {
    let plan = edit(
        "topology = \"multi-primary\"",
        "topology = \"primary-remote\"",
    )
    .replace(
        "network = \"network1\"",
        "network = \"network1\"\nrole = \"remote\"",
    )
    .replace(
        "network = \"network2\"",
        "network = \"network2\"\nrole = \"remote\"",
    );
    insta::assert_snapshot!(error_of(&plan));
}

#[test]
fn remote_in_a_multi_primary_mesh() {
    insta::assert_snapshot!(error_of(&edit(
        "network = \"network2\"",
        "network = \"network2\"\nrole = \"remote\""
    )));
}

#[test]
fn remote_naming_a_missing_primary() {
    let plan = edit(
        "topology = \"multi-primary\"",
        "topology = \"primary-remote\"",
    )
    .replace(
        "network = \"network2\"",
        "network = \"network2\"\nrole = \"remote\"\nprimary = \"north\"",
    );
    insta::assert_snapshot!(error_of(&plan));
}

#[test]
fn ambient_with_primary_remote_is_rejected_with_the_reason() {
    let plan = edit("mode = \"sidecar\"", "mode = \"ambient\"")
        .replace(
            "topology = \"multi-primary\"",
            "topology = \"primary-remote\"",
        )
        .replace(
            "network = \"network2\"",
            "network = \"network2\"\nrole = \"remote\"",
        );
    insta::assert_snapshot!(error_of(&plan));
}

#[test]
fn missing_manifest() {
    insta::assert_snapshot!(error_of(&edit(
        "tasks/apps/helloworld.yaml",
        "tasks/apps/nowhere.yaml"
    )));
}

#[test]
fn missing_template_override() {
    insta::assert_snapshot!(error_of(&format!(
        "{BASE}\n[templates]\n\"tasks/kind/cluster.yaml.j2\" = \"my/kind.yaml.j2\"\n"
    )));
}

#[test]
fn unknown_template_name() {
    insta::assert_snapshot!(error_of(&format!(
        "{BASE}\n[templates]\n\"tasks/kind/clusters.yaml.j2\" = \"plan.toml\"\n"
    )));
}

#[test]
fn placement_version_not_in_manifest() {
    insta::assert_snapshot!(error_of(&edit("west = \"v2\"", "west = \"v3\"")));
}

#[test]
fn placement_on_unknown_cluster() {
    insta::assert_snapshot!(error_of(&edit("west = \"v2\"", "north = \"v2\"")));
}

#[test]
fn bad_istio_version() {
    insta::assert_snapshot!(error_of(&edit("istio = \"1.28.0\"", "istio = \"1.28\"")));
}

#[test]
fn istio_version_with_a_leading_v() {
    insta::assert_snapshot!(error_of(&edit("istio = \"1.28.0\"", "istio = \"v1.28.0\"")));
}

#[test]
fn pre_release_and_build_suffixes_are_not_releases() {
    insta::assert_snapshot!(error_of(&format!(
        "{}\n[versions]\ncilium = \"1.18.3+build.7\"\n",
        edit("istio = \"1.28.0\"", "istio = \"1.28.0-beta.1\"")
    )));
}

#[test]
fn kind_node_is_an_image_tag_with_its_v() {
    insta::assert_snapshot!(error_of(&format!(
        "{BASE}\n[versions]\nkind_node = \"1.34.0\"\n"
    )));
}

#[test]
fn a_manifest_that_is_a_device_or_a_directory() {
    // /dev/zero never ends: read unbounded, it exhausted memory.
    insta::assert_snapshot!(error_of(&edit(
        "manifest = \"tasks/apps/helloworld.yaml\"",
        "manifest = \"/dev/zero\"",
    )));
    insta::assert_snapshot!(error_of(&edit(
        "manifest = \"tasks/apps/helloworld.yaml\"",
        "manifest = \"/\"",
    )));
}

#[test]
fn istio_too_old() {
    insta::assert_snapshot!(error_of(&edit("istio = \"1.28.0\"", "istio = \"1.19.3\"")));
}

#[test]
fn ambient_needs_a_newer_istio() {
    let plan = edit("istio = \"1.28.0\"", "istio = \"1.25.2\"")
        .replace("mode = \"sidecar\"", "mode = \"ambient\"");
    insta::assert_snapshot!(error_of(&plan));
}

#[test]
fn bad_addon_version() {
    insta::assert_snapshot!(error_of(&format!(
        "{BASE}\n[versions]\ncilium = \"latest\"\n"
    )));
}

#[test]
fn cycle_in_user_after_edges() {
    insta::assert_snapshot!(error_of(&format!(
        "{BASE}
[tasks.a]
cluster = \"east\"
command = [\"true\"]
after = [\"task:c\"]

[tasks.b]
cluster = \"east\"
command = [\"true\"]
after = [\"task:a\"]

[tasks.c]
cluster = \"east\"
command = [\"true\"]
after = [\"task:b\", \"istiod:east\"]
"
    )));
}

#[test]
fn after_an_unknown_task() {
    insta::assert_snapshot!(error_of(&format!(
        "{BASE}
[tasks.kiali]
cluster = \"east\"
chart = \"kiali/kiali-server\"
after = [\"istiod:eats\"]
"
    )));
}

#[test]
fn user_task_with_two_actions() {
    insta::assert_snapshot!(error_of(&format!(
        "{BASE}
[tasks.x]
cluster = \"east\"
chart = \"a/b\"
command = [\"true\"]
"
    )));
}

#[test]
fn kind_cluster_without_subnets() {
    insta::assert_snapshot!(error_of(&edit("pod_subnet = \"10.21.0.0/16\"\n", "")));
}

#[test]
fn existing_cluster_without_context() {
    insta::assert_snapshot!(error_of(&edit(
        "network = \"network2\"",
        "provider = \"kubeconfig\"\nnetwork = \"network2\""
    )));
}

#[test]
fn intermediate_outlives_root() {
    insta::assert_snapshot!(error_of(&format!(
        "{BASE}\n[pki]\nroot_days = 365\nintermediate_days = 730\n"
    )));
}

#[test]
fn bad_cluster_name() {
    insta::assert_snapshot!(error_of(&edit("[clusters.west]", "[clusters.West_1]")));
}

#[test]
fn several_errors_are_reported_together() {
    let plan = edit("network = \"network2\"", "network = \"network1\"")
        .replace("istio = \"1.28.0\"", "istio = \"one\"");
    let e = error_of(&plan);
    assert!(e.contains("bad Istio version"), "{e}");
    assert!(e.contains("share network"), "{e}");
}

#[test]
fn missing_plan_file() {
    let dir = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args(["build", "--offline"])
        .current_dir(dir.path())
        .env_remove("MESH_PLAN")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    insta::with_settings!({filters => vec![(r"/tmp/\.tmp[A-Za-z0-9]+", "[dir]")]}, {
        insta::assert_snapshot!(String::from_utf8_lossy(&o.stderr));
    });
}

#[test]
fn bad_flag_is_exit_2() {
    let p = Project::with_plan(BASE);
    let o = p.run(&["build", "--offline", "-j", "0"]);
    assert_eq!(o.code, 2, "{}", o.stderr);
}

#[test]
fn locality_without_every_clusters_region() {
    let plan = edit(
        "network = \"network1\"\n",
        "network = \"network1\"\nregion = \"us-east\"\n",
    )
    .replace(
        "placement = { east = \"v1\", west = \"v2\" }",
        "placement = { east = \"v1\", west = \"v2\" }\nlocality = true",
    );
    insta::assert_snapshot!(error_of(&plan));
}

#[test]
fn a_zone_without_a_region_and_a_bad_region() {
    let plan = edit(
        "network = \"network1\"\n",
        "network = \"network1\"\nzone = \"us-east-1a\"\n",
    )
    .replace(
        "network = \"network2\"\n",
        "network = \"network2\"\nregion = \"us west\"\n",
    );
    insta::assert_snapshot!(error_of(&plan));
}

#[test]
fn an_empty_manifest_directory() {
    let p = Project::with_plan(&edit(
        "manifest = \"tasks/apps/helloworld.yaml\"",
        "manifest = \"apps\"",
    ));
    std::fs::create_dir_all(p.path("apps/sub")).unwrap();
    std::fs::write(p.path("apps/README.md"), "not a manifest\n").unwrap();
    let o = p.run(&["build", "--offline"]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(
        o.stderr
            .contains("manifest directory apps has no .yaml or .yml file"),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("plan.toml:"), "{}", o.stderr);
}

#[test]
fn kiali_without_prometheus() {
    insta::assert_snapshot!(error_of(&format!("{BASE}\n[addons]\nkiali = true\n")));
}
