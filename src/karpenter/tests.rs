use super::*;
use crate::engine::PrefixDelegationMode;

fn req(key: &str, operator: &str, values: &[&str]) -> Requirement {
    Requirement {
        key: key.to_owned(),
        operator: operator.to_owned(),
        values: values.iter().map(|v| (*v).to_owned()).collect(),
    }
}

fn allowed(pools: &[&[Requirement]]) -> Vec<String> {
    allowed_types(&InstanceCatalog::embedded(), pools)
        .expect("valid requirements")
        .into_iter()
        .map(|f| f.instance_type.to_owned())
        .collect()
}

fn request(prefix: bool) -> TuningRequest {
    TuningRequest {
        prefix_delegation: if prefix {
            PrefixDelegationMode::Enabled
        } else {
            PrefixDelegationMode::Disabled
        },
        ..TuningRequest::default()
    }
}

#[test]
fn gt_and_lt_on_cpu_and_generation() {
    let types = allowed(&[&[
        req(labels::INSTANCE_CATEGORY, "In", &["c"]),
        req(labels::INSTANCE_GENERATION, "Gt", &["6"]),
        req(labels::INSTANCE_CPU, "Lt", &["3"]),
        req(labels::ARCH, "In", &["arm64"]),
    ]]);
    assert!(types.contains(&"c7g.medium".to_owned()), "{types:?}");
    assert!(types.contains(&"c7g.large".to_owned()));
    assert!(
        !types.contains(&"c7g.xlarge".to_owned()),
        "4 vCPUs is not < 3"
    );
    assert!(
        !types.contains(&"c6g.medium".to_owned()),
        "generation 6 is not > 6"
    );
    assert!(!types.contains(&"c7i.large".to_owned()), "amd64");
    assert!(types.iter().all(|t| t.starts_with('c')));
    // Gte / Lte include the bound.
    let types = allowed(&[&[
        req(labels::INSTANCE_FAMILY, "In", &["m5"]),
        req(labels::INSTANCE_CPU, "Gte", &["8"]),
        req(labels::INSTANCE_CPU, "Lte", &["16"]),
    ]]);
    assert_eq!(types, ["m5.2xlarge", "m5.4xlarge"]);
}

#[test]
fn not_in_families_exists_and_does_not_exist() {
    let types = allowed(&[&[
        req(labels::INSTANCE_CATEGORY, "In", &["t"]),
        req(
            labels::INSTANCE_FAMILY,
            "NotIn",
            &["t1", "t2", "t3a", "t4g"],
        ),
        req(labels::INSTANCE_HYPERVISOR, "Exists", &[]),
    ]]);
    let families: std::collections::BTreeSet<&str> =
        types.iter().filter_map(|t| t.split('.').next()).collect();
    assert_eq!(families, ["t3", "t8i"].into(), "{types:?}");
    assert!(types.contains(&"t3.nano".to_owned()));
    // Mac types have no arch label; DoesNotExist picks exactly those.
    let types = allowed(&[&[req(labels::ARCH, "DoesNotExist", &[])]]);
    assert!(!types.is_empty() && types.iter().all(|t| t.starts_with("mac")));
    // Keys that do not describe the instance type (zone, capacity type) narrow nothing here.
    let types = allowed(&[&[
        req(labels::INSTANCE_TYPE, "In", &["m5.large", "zz9.none"]),
        req("karpenter.sh/capacity-type", "In", &["spot"]),
        req("topology.kubernetes.io/zone", "In", &["us-west-2a"]),
    ]]);
    assert_eq!(types, ["m5.large"]);
}

#[test]
fn several_node_pools_allow_the_union() {
    let types = allowed(&[
        &[req(labels::INSTANCE_TYPE, "In", &["m5.large"])],
        &[req(labels::INSTANCE_TYPE, "In", &["c7g.medium"])],
    ]);
    assert_eq!(types, ["c7g.medium", "m5.large"]);
}

#[test]
fn bad_requirements_name_the_fix() {
    let catalog = InstanceCatalog::embedded();
    let err = allowed_types(&catalog, &[&[req(labels::INSTANCE_CPU, "Gt", &["four"])]])
        .expect_err("not an integer");
    assert!(err.to_string().contains("one integer value"), "{err}");
    let err = allowed_types(&catalog, &[&[req(labels::INSTANCE_CPU, "Above", &["4"])]])
        .expect_err("unknown operator");
    assert!(err.to_string().contains("In, NotIn"), "{err}");
}

#[test]
fn prefix_delegation_lifts_the_smallest_type() {
    let catalog = InstanceCatalog::embedded();
    let types = allowed_types(
        &catalog,
        &[&[req(
            labels::INSTANCE_TYPE,
            "In",
            &["c7g.medium", "c7g.4xlarge"],
        )]],
    )
    .expect("valid");
    // Karpenter's own number for c7g.medium: 2 ENIs x (4 - 1) + 2 = 8.
    let off = choose_max_pods(&request(false), &types).expect("choice");
    assert_eq!(off.max_pods, 8);
    assert_eq!(off.bounding_type, "c7g.medium");
    assert_eq!(off.largest_type, "c7g.4xlarge");
    assert_eq!(
        off.largest_max_pods, 110,
        "234 IPs, capped at 110 for 16 vCPUs"
    );
    assert_eq!(off.pods_lost_on_largest(), 102);
    assert!(off.spread_is_large());
    assert_eq!(off.lowest_ip_limit, Some(("c7g.medium".to_owned(), 8)));
    // With prefixes: 2 ENIs x (4 - 1) x 16 + 2 = 98.
    let on = choose_max_pods(&request(true), &types).expect("choice");
    assert_eq!(on.max_pods, 98);
    assert_eq!(on.pods_lost_on_largest(), 12);
    assert!(!on.spread_is_large());
}
