//! Table-driven tests of the engine against published values. Facts are spelled out here (not
//! read from the generated table) so these tests pin the formulas; `tests/instance_table.rs`
//! checks the same values through the embedded table.

use super::*;

const fn nitro(vcpus: u32, max_enis: u32, ipv4_per_eni: u32) -> InstanceLimits {
    InstanceLimits::nitro(vcpus, max_enis, ipv4_per_eni)
}

const T3_MEDIUM: InstanceFacts<'static> = InstanceFacts {
    instance_type: "t3.medium",
    limits: nitro(2, 3, 6),
};
const M5_LARGE: InstanceFacts<'static> = InstanceFacts {
    instance_type: "m5.large",
    limits: nitro(2, 3, 10),
};
const M5_24XLARGE: InstanceFacts<'static> = InstanceFacts {
    instance_type: "m5.24xlarge",
    limits: nitro(96, 15, 50),
};
const M4_LARGE: InstanceFacts<'static> = InstanceFacts {
    instance_type: "m4.large",
    limits: InstanceLimits {
        hypervisor: Hypervisor::Xen,
        ..nitro(2, 2, 10)
    },
};
const C5_METAL: InstanceFacts<'static> = InstanceFacts {
    instance_type: "c5.metal",
    limits: InstanceLimits::metal(96, 15, 50),
};

fn request(prefix: PrefixDelegationMode) -> TuningRequest {
    TuningRequest {
        prefix_delegation: prefix,
        ..TuningRequest::default()
    }
}

fn one(request: &TuningRequest, facts: InstanceFacts<'_>) -> InstanceRecommendation {
    let mut rec = recommend(request, &[facts]).expect("valid request");
    rec.instance_types.remove(0)
}

#[test]
fn published_max_pods_per_type() {
    use PrefixDelegationMode::{Disabled, Enabled};
    let custom = TuningRequest {
        eni: EniOptions {
            custom_networking: true,
            ..Default::default()
        },
        ..request(Disabled)
    };
    // (request, type, ip limit, maxPods): EKS user guide (m5.large 29 / 20 custom / 110 prefix),
    // eni-max-pods.txt (t3.medium 17, m5.24xlarge 737), max-pods-calculator.sh (250 cap > 30 vCPU).
    let cases = [
        (request(Disabled), T3_MEDIUM, Some(17), 17),
        (request(Enabled), T3_MEDIUM, Some(242), 110),
        (request(Disabled), M5_LARGE, Some(29), 29),
        (custom.clone(), M5_LARGE, Some(20), 20),
        (request(Enabled), M5_LARGE, Some(434), 110),
        (request(Disabled), M5_24XLARGE, Some(737), 250),
        (request(Enabled), M5_24XLARGE, Some(11762), 250),
        (request(Disabled), M4_LARGE, Some(20), 20),
        // Xen: prefix delegation falls back to secondary IPs.
        (request(Enabled), M4_LARGE, Some(20), 20),
        (request(Enabled), C5_METAL, Some(11762), 250),
    ];
    for (req, facts, ip_limit, max_pods) in cases {
        let got = one(&req, facts);
        assert_eq!(
            (got.max_pods_ip_limit, got.max_pods),
            (ip_limit, max_pods),
            "{} {:?}",
            facts.instance_type,
            req.prefix_delegation
        );
        assert_eq!(got.kube_reserved_memory_mib, 11 * max_pods + 255);
    }
}

#[test]
fn auto_enables_prefix_delegation_only_when_it_raises_max_pods() {
    let auto = request(PrefixDelegationMode::Auto);
    let cases: [(&[InstanceFacts<'_>], bool); 6] = [
        (&[T3_MEDIUM], true),
        (&[M5_24XLARGE], false),
        (&[C5_METAL], false),
        (&[M4_LARGE], false),
        (&[M4_LARGE, T3_MEDIUM], true),
        (&[M5_24XLARGE, M5_LARGE], true),
    ];
    for (types, want) in cases {
        let rec = recommend(&auto, types).expect("valid");
        assert_eq!(rec.prefix_delegation, want, "{types:?}");
        assert_eq!(rec.env["ENABLE_PREFIX_DELEGATION"], want.to_string());
    }
    let old_cni = TuningRequest {
        cni_version: CniVersion::new(1, 8, 0),
        ..auto
    };
    assert!(
        !recommend(&old_cni, &[T3_MEDIUM])
            .expect("valid")
            .prefix_delegation
    );
}

#[test]
fn ip_limit_policy_makes_auto_enable_even_above_the_cap() {
    let req = TuningRequest {
        max_pods: MaxPodsPolicy::IpLimit,
        ..request(PrefixDelegationMode::Auto)
    };
    let rec = recommend(&req, &[M5_24XLARGE]).expect("valid");
    assert!(rec.prefix_delegation);
    assert_eq!(rec.max_pods, 11762);
}

#[test]
fn group_max_pods_is_the_minimum_and_xen_members_fall_back() {
    let rec =
        recommend(&request(PrefixDelegationMode::Auto), &[M5_LARGE, M4_LARGE]).expect("valid");
    assert!(rec.prefix_delegation);
    assert_eq!(rec.max_pods, 20);
    assert_eq!(rec.kube_reserved_memory_mib, 11 * 20 + 255);
    let m4 = &rec.instance_types[1];
    assert!(!m4.prefix_delegation && !m4.prefix_delegation_capable);
    assert!(rec.warnings.iter().any(|w| w.contains("m4.large (xen)")));
}

#[test]
fn enabled_with_an_old_cni_is_an_error_that_says_so() {
    let req = TuningRequest {
        cni_version: CniVersion::new(1, 8, 0),
        ..request(PrefixDelegationMode::Enabled)
    };
    let err = recommend(&req, &[T3_MEDIUM]).expect_err("must fail");
    assert!(matches!(
        err,
        TuningError::PrefixDelegationUnsupportedCni { .. }
    ));
    assert!(err.to_string().contains("1.9.0"), "{err}");
    assert!(err.to_string().contains("1.8.0"), "{err}");
}

#[test]
fn eni_options_stack() {
    let req = TuningRequest {
        eni: EniOptions {
            max_eni: Some(2),
            custom_networking: true,
            security_groups_for_pods: true,
        },
        ..request(PrefixDelegationMode::Disabled)
    };
    let got = one(&req, M5_LARGE);
    assert_eq!((got.enis, got.pod_enis, got.max_pods), (3, 0, 2));
    let rec = recommend(&req, &[M5_LARGE]).expect("valid");
    assert!(rec.warnings.iter().any(|w| w.contains("no ENI left")));
    let zero = TuningRequest {
        eni: EniOptions {
            max_eni: Some(0),
            ..Default::default()
        },
        ..TuningRequest::default()
    };
    assert_eq!(recommend(&zero, &[M5_LARGE]), Err(TuningError::ZeroMaxEni));
}

#[test]
fn ipv6_uses_the_cap_and_rejects_xen() {
    let v6 = TuningRequest {
        ip_family: IpFamily::Ipv6,
        ..TuningRequest::default()
    };
    let rec = recommend(&v6, &[T3_MEDIUM, M5_24XLARGE]).expect("valid");
    assert!(rec.prefix_delegation);
    assert_eq!(rec.instance_types[0].max_pods_ip_limit, None);
    assert_eq!(rec.instance_types[0].max_pods, 110);
    assert_eq!(rec.instance_types[1].max_pods, 250);
    assert_eq!(rec.max_pods, 110);
    assert_eq!(
        rec.env.keys().collect::<Vec<_>>(),
        vec!["ENABLE_PREFIX_DELEGATION"]
    );

    assert!(matches!(
        recommend(&v6, &[M4_LARGE]),
        Err(TuningError::Ipv6UnsupportedInstanceType { .. })
    ));
    let disabled = TuningRequest {
        prefix_delegation: PrefixDelegationMode::Disabled,
        ..v6.clone()
    };
    assert_eq!(
        recommend(&disabled, &[T3_MEDIUM]),
        Err(TuningError::Ipv6RequiresPrefixDelegation)
    );
    let old = TuningRequest {
        cni_version: CniVersion::new(1, 10, 0),
        ..v6
    };
    assert!(matches!(
        recommend(&old, &[T3_MEDIUM]),
        Err(TuningError::Ipv6UnsupportedCni { .. })
    ));
}

#[test]
fn fixed_and_ceiling_policies() {
    let fixed = |value| TuningRequest {
        max_pods: MaxPodsPolicy::Fixed(value),
        ..request(PrefixDelegationMode::Disabled)
    };
    assert_eq!(one(&fixed(15), T3_MEDIUM).max_pods, 15);
    let err = recommend(&fixed(110), &[T3_MEDIUM]).expect_err("above IP limit");
    assert!(err.to_string().contains("17"), "{err}");
    // Auto turns prefix delegation on when a fixed value needs it.
    let auto_fixed = TuningRequest {
        prefix_delegation: PrefixDelegationMode::Auto,
        ..fixed(110)
    };
    assert_eq!(
        recommend(&auto_fixed, &[T3_MEDIUM])
            .expect("valid")
            .max_pods,
        110
    );
    let capped = TuningRequest {
        max_pods_ceiling: Some(64),
        ..request(PrefixDelegationMode::Enabled)
    };
    assert_eq!(one(&capped, M5_LARGE).max_pods, 64);
    assert_eq!(
        recommend(&fixed(0), &[T3_MEDIUM]),
        Err(TuningError::ZeroMaxPods)
    );
}

#[test]
fn env_per_profile() {
    let with = |profile, prefix| TuningRequest {
        warm_pool: WarmPoolSpec {
            profile,
            explicit: WarmPoolTargets::default(),
        },
        ..request(prefix)
    };
    let env = |req: &TuningRequest, types: &[InstanceFacts<'_>]| {
        recommend(req, types)
            .expect("valid")
            .env
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    use PrefixDelegationMode::{Disabled, Enabled};
    use WarmPoolProfile::*;
    assert_eq!(
        env(&with(Balanced, Enabled), &[T3_MEDIUM]),
        "ENABLE_PREFIX_DELEGATION=true,WARM_PREFIX_TARGET=1"
    );
    assert_eq!(
        env(&with(Balanced, Disabled), &[T3_MEDIUM]),
        "ENABLE_PREFIX_DELEGATION=false,WARM_ENI_TARGET=1"
    );
    assert_eq!(
        env(&with(ConserveIps, Disabled), &[T3_MEDIUM, M5_LARGE]),
        "ENABLE_PREFIX_DELEGATION=false,MINIMUM_IP_TARGET=5,WARM_IP_TARGET=3"
    );
    assert_eq!(
        env(&with(ConserveIps, Enabled), &[M5_LARGE]),
        "ENABLE_PREFIX_DELEGATION=true,MINIMUM_IP_TARGET=16,WARM_IP_TARGET=5"
    );
    assert_eq!(
        env(&with(FastScaling, Enabled), &[M5_LARGE]),
        "ENABLE_PREFIX_DELEGATION=true,WARM_PREFIX_TARGET=2"
    );
}

#[test]
fn minimum_ip_target_above_capacity_names_the_type() {
    let req = TuningRequest {
        warm_pool: WarmPoolSpec {
            profile: WarmPoolProfile::Balanced,
            explicit: WarmPoolTargets {
                warm_ip_target: Some(5),
                minimum_ip_target: Some(40),
                ..Default::default()
            },
        },
        ..request(PrefixDelegationMode::Disabled)
    };
    let err = recommend(&req, &[M5_LARGE, T3_MEDIUM]).expect_err("too high");
    assert_eq!(
        err.to_string(),
        "MINIMUM_IP_TARGET=40 is more than t3.medium can hold (15 pod IPs); lower it to 15 or less"
    );
}

#[test]
fn json_contract_names() {
    let rec = recommend(&request(PrefixDelegationMode::Auto), &[T3_MEDIUM]).expect("valid");
    let json = serde_json::to_value(&rec).expect("serializable");
    assert_eq!(json["prefixDelegation"], true);
    assert_eq!(json["maxPods"], 110);
    assert_eq!(json["env"]["ENABLE_PREFIX_DELEGATION"], "true");
    let t = &json["instanceTypes"][0];
    assert_eq!(t["instanceType"], "t3.medium");
    assert_eq!(t["vcpus"], 2);
    assert_eq!(t["enis"], 3);
    assert_eq!(t["ipv4PerEni"], 6);
    assert_eq!(t["prefixDelegationCapable"], true);
    assert_eq!(t["prefixDelegation"], true);
    assert_eq!(t["maxPodsIpLimit"], 242);
    assert_eq!(t["maxPods"], 110);
    assert_eq!(t["kubeReservedMemoryMiB"], 1465);
}

#[test]
fn same_inputs_same_output() {
    let types = [M5_LARGE, M4_LARGE, T3_MEDIUM, C5_METAL];
    let req = request(PrefixDelegationMode::Auto);
    assert_eq!(recommend(&req, &types), recommend(&req, &types));
}

/// A fixed maxPods above the IP limit: the fix offered fits the settings in effect (no "enable
/// prefix delegation" where it is on, or where it cannot work or would not be enough).
#[test]
fn fixed_max_pods_above_the_ip_limit_suggests_only_what_helps() {
    let message = |facts: InstanceFacts<'_>, prefix: PrefixDelegationMode, value: u32, cni| {
        let request = TuningRequest {
            max_pods: MaxPodsPolicy::Fixed(value),
            cni_version: cni,
            ..request(prefix)
        };
        recommend(&request, &[facts]).unwrap_err().to_string()
    };
    let newest = CniVersion::NEWEST_KNOWN;
    // Prefix delegation is already on (Auto turned it on): lower it, nothing else.
    let on = message(T3_MEDIUM, PrefixDelegationMode::Auto, 500, newest);
    assert!(on.ends_with("lower it to 242 or less"), "{on}");
    // Off, and it would be enough.
    let off = message(T3_MEDIUM, PrefixDelegationMode::Disabled, 200, newest);
    assert!(
        off.contains("lower it to 17 or less, or enable prefix delegation")
            && off.ends_with("t3.medium then carries 242"),
        "{off}"
    );
    // Off, but not enough even with it.
    let short = message(T3_MEDIUM, PrefixDelegationMode::Disabled, 500, newest);
    assert!(short.contains("still fewer than 500"), "{short}");
    assert!(!short.contains("or enable"), "{short}");
    // Xen: it cannot work there.
    let xen = message(M4_LARGE, PrefixDelegationMode::Auto, 100, newest);
    assert!(xen.contains("prefix delegation does not work"), "{xen}");
    assert!(!xen.contains("or enable"), "{xen}");
    // A CNI without it: upgrade first.
    let old = message(
        T3_MEDIUM,
        PrefixDelegationMode::Auto,
        200,
        CniVersion::new(1, 8, 0),
    );
    assert!(
        old.contains("upgrade the VPC CNI to 1.9.0 or later"),
        "{old}"
    );
}
