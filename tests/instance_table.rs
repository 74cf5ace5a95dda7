//! Invariants of the embedded instance table, and published max-pods values checked through it.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use vpc_cni_tuner::engine::{
    self, EniOptions, InstanceFacts, MaxPodsPolicy, PrefixDelegationMode, TuningRequest,
};
use vpc_cni_tuner::instance::{FactSource, Hypervisor, InstanceCatalog, is_metal_name};

/// Lookups binary-search by name: the entries must be sorted and unique.
fn assert_sorted_unique<T>(entries: &[(&str, T)], what: &str) {
    for pair in entries.windows(2) {
        assert!(
            pair[0].0 < pair[1].0,
            "{what}: not sorted/unique: {} then {}",
            pair[0].0,
            pair[1].0
        );
    }
}

#[test]
fn generated_table_is_sorted_unique_and_has_no_zero_limits() {
    let catalog = InstanceCatalog::embedded();
    let generated = catalog.generated_entries();
    assert!(generated.len() > 1000, "only {} types", generated.len());
    assert_sorted_unique(generated, "the generated table");
    for (name, limits) in generated {
        assert!(limits.vcpus > 0, "{name}: zero vCPUs");
        assert!(limits.max_enis > 0, "{name}: zero ENIs");
        assert!(limits.ipv4_per_eni > 1, "{name}: fewer than 2 IPv4 per ENI");
        assert!(limits.network_cards > 0, "{name}: zero network cards");
        assert_eq!(name.trim(), *name);
        assert_eq!(name.to_ascii_lowercase(), *name);
    }
}

#[test]
fn every_metal_type_is_bare_metal_and_prefix_capable() {
    let catalog = InstanceCatalog::embedded();
    let metal: Vec<_> = catalog
        .iter()
        .filter(|(name, _)| is_metal_name(name))
        .collect();
    assert!(metal.len() > 100, "only {} metal types", metal.len());
    for (name, limits) in metal {
        assert!(limits.bare_metal, "{name} is not marked bare metal");
        assert!(limits.supports_prefix_delegation(), "{name}");
    }
    for (name, limits) in catalog.iter() {
        if limits.bare_metal {
            assert!(
                is_metal_name(name),
                "{name} is bare metal but not named .metal"
            );
        }
        if limits.hypervisor == Hypervisor::None {
            assert!(
                limits.bare_metal,
                "{name} has no hypervisor but is not bare metal"
            );
        }
    }
}

#[test]
fn overrides_are_sorted_and_not_stale() {
    let catalog = InstanceCatalog::embedded();
    let overrides = catalog.override_entries();
    assert_sorted_unique(overrides, "the overrides");
    for (name, limits) in overrides {
        let generated = catalog
            .generated_entries()
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, l)| l);
        assert_ne!(
            generated,
            Some(limits),
            "override for {name} repeats the generated table: remove it"
        );
        assert_eq!(
            catalog.lookup_with_source(name),
            Some((*limits, FactSource::Override))
        );
    }
}

#[test]
fn known_types_present_with_default_card_enis() {
    let catalog = InstanceCatalog::embedded();
    // (type, vCPUs, default-card ENIs, IPv4 per ENI, network cards)
    let cases = [
        ("t3.medium", 2, 3, 6, 1),
        ("m5.large", 2, 3, 10, 1),
        ("m5.24xlarge", 96, 15, 50, 1),
        ("c6in.32xlarge", 128, 8, 50, 2),
        ("p5.48xlarge", 192, 2, 50, 32),
        ("trn1.32xlarge", 128, 5, 50, 8),
        ("m4.large", 2, 2, 10, 1),
    ];
    for (name, vcpus, enis, ips, cards) in cases {
        let limits = catalog.lookup(name).expect(name);
        assert_eq!(
            (
                limits.vcpus,
                limits.max_enis,
                limits.ipv4_per_eni,
                limits.network_cards
            ),
            (vcpus, enis, ips, cards),
            "{name}"
        );
    }
    assert_eq!(
        catalog.lookup("m4.large").expect("m4").hypervisor,
        Hypervisor::Xen
    );
}

#[test]
fn unknown_type_is_a_typed_error_with_close_names() {
    let catalog = InstanceCatalog::embedded();
    let err = catalog.lookup("m5.larg").expect_err("unknown");
    assert_eq!(err.instance_type, "m5.larg");
    assert_eq!(
        err.suggestions.first().map(String::as_str),
        Some("m5.large")
    );
    assert!(err.to_string().contains("did you mean m5.large"), "{err}");
    let nothing_close = catalog.lookup("zzzzzzzzzz").expect_err("unknown");
    assert!(nothing_close.suggestions.is_empty());
}

fn secondary_and_custom(name: &str) -> (u32, u32) {
    let catalog = InstanceCatalog::embedded();
    let limits = catalog.lookup(name).expect(name);
    let facts = [InstanceFacts {
        instance_type: name,
        limits,
    }];
    let ip_limit = |custom_networking| {
        let request = TuningRequest {
            prefix_delegation: PrefixDelegationMode::Disabled,
            max_pods: MaxPodsPolicy::IpLimit,
            eni: EniOptions {
                custom_networking,
                ..Default::default()
            },
            ..TuningRequest::default()
        };
        let rec = engine::recommend(&request, &facts).expect(name);
        rec.instance_types[0].max_pods_ip_limit.expect("ipv4")
    };
    (ip_limit(false), ip_limit(true))
}

/// amazon-vpc-cni-k8s `misc/eni-max-pods.txt`: max pods, and max pods with custom networking,
/// for a spread of families: burstable, Xen, Graviton, multi-card, metal, previous generation.
#[test]
fn matches_published_eni_max_pods() {
    let published = [
        ("t3.nano", 4, 3),
        ("t3.medium", 17, 12),
        ("t3a.small", 8, 5),
        ("t2.large", 35, 24),
        ("t1.micro", 4, 3),
        ("m1.small", 8, 5),
        ("m2.2xlarge", 118, 89),
        ("m4.large", 20, 11),
        ("m5.large", 29, 20),
        ("m5.xlarge", 58, 44),
        ("m5.4xlarge", 234, 205),
        ("m5.24xlarge", 737, 688),
        ("c5.18xlarge", 737, 688),
        ("a1.medium", 8, 5),
        ("c6g.medium", 8, 5),
        ("c6in.32xlarge", 394, 345),
        ("c6in.metal", 394, 345),
        ("m6idn.metal", 394, 345),
        ("p5.48xlarge", 100, 51),
        ("p5en.48xlarge", 198, 149),
        ("hpc7g.16xlarge", 198, 149),
        ("g6e.12xlarge", 292, 263),
        ("g6e.24xlarge", 492, 443),
        ("i4i.24xlarge", 437, 408),
        ("d3en.12xlarge", 89, 60),
        ("g4dn.16xlarge", 58, 44),
        ("g5.48xlarge", 345, 296),
        ("inf1.24xlarge", 321, 292),
        ("mac1.metal", 234, 205),
        ("c7a.metal-48xl", 737, 688),
        ("r7iz.metal-16xl", 737, 688),
        ("u-6tb1.56xlarge", 737, 688),
        ("u-6tb1.metal", 147, 118),
        ("cr1.8xlarge", 234, 205),
        ("x1e.xlarge", 29, 20),
    ];
    for (name, max_pods, custom) in published {
        assert_eq!(secondary_and_custom(name), (max_pods, custom), "{name}");
    }
}

/// Every type in the table gets an answer in every prefix-delegation mode, and the answers
/// respect the formulas' bounds.
#[test]
fn whole_table_answers_within_bounds() {
    let catalog = InstanceCatalog::embedded();
    let mut answered = 0;
    for (name, limits) in catalog.iter() {
        let facts = [InstanceFacts {
            instance_type: name,
            limits,
        }];
        for mode in [
            PrefixDelegationMode::Auto,
            PrefixDelegationMode::Enabled,
            PrefixDelegationMode::Disabled,
        ] {
            let request = TuningRequest {
                prefix_delegation: mode,
                ..TuningRequest::default()
            };
            let rec = engine::recommend(&request, &facts).unwrap_or_else(|e| panic!("{name}: {e}"));
            let t = &rec.instance_types[0];
            let ip_limit = t.max_pods_ip_limit.expect("ipv4");
            let cap = if limits.vcpus > 30 { 250 } else { 110 };
            assert_eq!(t.max_pods, ip_limit.min(cap), "{name} {mode:?}");
            assert_eq!(rec.max_pods, t.max_pods);
            assert_eq!(t.kube_reserved_memory_mib, 11 * t.max_pods + 255);
            assert_eq!(
                t.prefix_delegation,
                rec.prefix_delegation && limits.supports_prefix_delegation()
            );
            let secondary = limits.max_enis * (limits.ipv4_per_eni - 1) + 2;
            if t.prefix_delegation {
                assert_eq!(
                    ip_limit,
                    limits.max_enis * (limits.ipv4_per_eni - 1) * 16 + 2
                );
            } else {
                assert_eq!(ip_limit, secondary, "{name} {mode:?}");
            }
            if mode == PrefixDelegationMode::Auto {
                // Auto enables prefixes exactly when they raise this type's maxPods.
                assert_eq!(
                    rec.prefix_delegation,
                    limits.supports_prefix_delegation() && secondary < cap,
                    "{name}"
                );
            }
            assert!(rec.env.contains_key("ENABLE_PREFIX_DELEGATION"));
        }
        answered += 1;
    }
    assert_eq!(answered, catalog.len());
}

/// Where ipamd's built-in limits (amazon-vpc-cni-k8s `pkg/vpc/vpc_ip_resource_limit.go`, August
/// 2026) disagree with `DescribeInstanceTypes` or list types the table lacks, the catalog follows
/// ipamd: the secondary-IP max pods below are that file's `ENILimit * (IPv4Limit - 1) + 2`.
#[test]
fn vpc_cni_builtin_limits_win() {
    let catalog = InstanceCatalog::embedded();
    // (type, vCPUs, ENIs, IPv4 per ENI, network cards, secondary-IP max pods)
    let cases = [
        ("i7ie.48xlarge", 192, 15, 50, 1, 737),
        ("i7ie.metal-48xl", 192, 15, 50, 1, 737),
        ("i8ge.48xlarge", 192, 24, 50, 1, 1178),
        ("i8ge.metal-48xl", 192, 24, 50, 1, 1178),
        ("g4ad.xlarge", 4, 2, 4, 1, 8),
        ("g4ad.2xlarge", 8, 2, 4, 1, 8),
        ("g4ad.4xlarge", 16, 3, 10, 1, 29),
        ("g4ad.8xlarge", 32, 4, 15, 1, 58),
        ("g4ad.16xlarge", 64, 8, 30, 1, 234),
        ("c7i.32xlarge", 128, 15, 50, 1, 737),
        ("dl1.24xlarge", 96, 15, 50, 4, 737),
    ];
    for (name, vcpus, enis, ipv4, cards, max_pods) in cases {
        let (limits, source) = catalog
            .lookup_with_source(name)
            .unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(source, FactSource::Override, "{name}");
        assert_eq!(
            (
                limits.vcpus,
                limits.max_enis,
                limits.ipv4_per_eni,
                limits.network_cards
            ),
            (vcpus, enis, ipv4, cards),
            "{name}"
        );
        assert!(
            limits.supports_prefix_delegation(),
            "{name} is Nitro or metal"
        );
        let pods = vpc_cni_tuner::engine::max_pods::max_pods_ip_limit(
            limits.max_enis,
            limits.ipv4_per_eni,
            false,
        );
        assert_eq!(pods, max_pods, "{name}");
    }
}

/// The committed copy of amazon-vpc-cni-k8s `misc/eni-max-pods.txt` (refreshed by
/// `scripts/refresh-eni-max-pods.sh`, which records the commit and date in
/// `tests/fixtures/upstream/eni-max-pods.source`): every type it lists is in the catalog, with
/// the max pods it publishes (`ENIs * (IPv4 per ENI - 1) + 2`, default card only). A type the
/// file lists that the catalog does not know, or a value that differs, fails here with the fix.
#[test]
fn catalog_agrees_with_the_committed_eni_max_pods_txt() {
    let text = include_str!("fixtures/upstream/eni-max-pods.txt");
    let catalog = InstanceCatalog::embedded();
    let mut problems = Vec::new();
    let mut checked = 0;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(name), Some(published)) = (words.next(), words.next()) else {
            panic!("not `TYPE MAX_PODS`: {line}");
        };
        let published: u32 = published.parse().expect("a number");
        checked += 1;
        match catalog.lookup(name) {
            Ok(limits) => {
                let pods = vpc_cni_tuner::engine::max_pods::max_pods_ip_limit(
                    limits.max_enis,
                    limits.ipv4_per_eni,
                    false,
                );
                if pods != published {
                    problems.push(format!(
                        "{name}: eni-max-pods.txt {published}, catalog {pods} ({} ENIs x {} IPv4)",
                        limits.max_enis, limits.ipv4_per_eni
                    ));
                }
            }
            Err(_) if KNOWN_GAPS.contains(&name) => {}
            Err(_) => problems.push(format!("{name}: in eni-max-pods.txt, not in the catalog")),
        }
    }
    assert!(checked > 1000, "{checked} entries read");
    assert!(
        problems.is_empty(),
        "{} disagreements; regenerate the table (README, Instance data) or add a reviewed \
         override:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// Types eni-max-pods.txt lists that the catalog leaves out on purpose.
const KNOWN_GAPS: &[&str] = &[
    // Its vCPU count is not published (src/instance/overrides.rs).
    "bmn-sf1.metal",
    // Retired: no region offers them; the live lookup serves them where one still does.
    "f1.2xlarge",
    "f1.4xlarge",
    "f1.16xlarge",
    "p3.2xlarge",
    "p3.8xlarge",
    "p3.16xlarge",
];

/// Every override that cites eni-max-pods.txt as its source is still in the committed copy, with
/// the value the comment quotes: an override whose source upstream removed must be re-sourced
/// or removed.
#[test]
fn overrides_citing_eni_max_pods_txt_are_still_in_it() {
    let text = include_str!("fixtures/upstream/eni-max-pods.txt");
    let published: std::collections::BTreeMap<&str, &str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(' '))
        .collect();
    let overrides = include_str!("../src/instance/overrides.rs");
    let mut cited = 0;
    let mut lines = overrides.lines().map(str::trim).peekable();
    while let Some(line) = lines.next() {
        let Some(claim) = line.strip_prefix("// eni-max-pods.txt: ") else {
            continue;
        };
        let value = claim.split_whitespace().next().unwrap_or_default();
        let entry = lines.next().unwrap_or_default();
        let name = entry
            .split('"')
            .nth(1)
            .expect("(\"type\", ...) after the comment");
        cited += 1;
        assert_eq!(
            published.get(name).map(|v| v.trim()),
            Some(value),
            "{name}: the override cites eni-max-pods.txt {value}, the committed copy says \
             otherwise; re-source or remove it"
        );
    }
    assert!(cited > 5, "{cited} overrides cite eni-max-pods.txt");
}
