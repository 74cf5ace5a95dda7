//! The /28 computation on hand-built layouts, and against a brute-force reference over random
//! layouts.

use proptest::prelude::*;

use super::*;

fn cidr(s: &str) -> Cidr {
    s.parse().expect("a CIDR")
}

fn ip(s: &str) -> u32 {
    parse_address(s).expect("an address")
}

#[test]
fn an_empty_subnet_loses_only_the_aws_addresses() {
    // /24: 256 addresses, 5 reserved; blocks 0 (.0-.3 reserved) and 15 (.255) are not free.
    let f = figures(cidr("10.0.1.0/24"), &Allocations::default()).unwrap();
    assert_eq!((f.total, f.free, f.free_aligned_prefixes), (256, 251, 14));
    assert_eq!(f.fragmented, 251 - 14 * 16);
    // The largest free aligned block: a /26 (.64/26 and .128/26 are clean, .0/26 holds .0-.3).
    assert_eq!(f.largest_free_block, Some(cidr("10.0.1.64/26")));
}

#[test]
fn one_address_in_every_block_fragments_everything() {
    let base = ip("10.0.0.0");
    let addresses = (0..16).map(|b| base + b * 16 + 7).collect();
    let f = figures(
        cidr("10.0.0.0/24"),
        &Allocations {
            addresses,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(f.free_aligned_prefixes, 0);
    assert_eq!(f.free, 251 - 16);
    assert_eq!(f.fragmented, f.free, "every free address is fragmented");
    assert_eq!(f.largest_free_block, None);
}

#[test]
fn contiguous_allocations_leave_whole_blocks() {
    // 32 addresses from .16 up: blocks 1 and 2 taken, the rest of the /24 as when empty.
    let base = ip("10.0.0.16");
    let f = figures(
        cidr("10.0.0.0/24"),
        &Allocations {
            addresses: (0..32).map(|i| base + i).collect(),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(f.free_aligned_prefixes, 12);
    assert_eq!(f.free, 251 - 32);
}

#[test]
fn delegated_prefixes_and_reservations() {
    let f = figures(
        cidr("10.0.0.0/24"),
        &Allocations {
            prefixes: vec![cidr("10.0.0.32/28")],
            reservations: vec![
                (cidr("10.0.0.128/26"), true), // prefix reservation: 4 blocks kept for prefixes
                (cidr("10.0.0.64/28"), false), // explicit: neither
            ],
            ..Default::default()
        },
    )
    .unwrap();
    // Blocks 1..15: 2 delegated, 4 explicit-reserved, 15 holds .255; 8..11 are kept but free
    // for prefixes.
    assert_eq!(f.free_aligned_prefixes, 14 - 2);
    // One by one: not the prefix, not either reservation.
    assert_eq!(f.free, 251 - 16 - 64 - 16);
    assert_eq!(f.largest_free_block, Some(cidr("10.0.0.96/27")));
}

#[test]
fn edges_and_sizes() {
    // A /28 subnet: its one block holds the reserved addresses.
    let f = figures(cidr("10.0.0.16/28"), &Allocations::default()).unwrap();
    assert_eq!(
        (f.total, f.free, f.free_aligned_prefixes, f.fragmented),
        (16, 11, 0, 11)
    );
    // A /16: 4,096 blocks, the first and last hold reserved addresses.
    let f = figures(cidr("10.1.0.0/16"), &Allocations::default()).unwrap();
    assert_eq!(f.free_aligned_prefixes, 4094);
    assert_eq!(f.largest_free_block, Some(cidr("10.1.64.0/18")));
    // AWS allows neither a /29 nor a /15; addresses outside the subnet do not count.
    assert_eq!(figures(cidr("10.0.0.0/29"), &Allocations::default()), None);
    assert_eq!(figures(cidr("10.0.0.0/15"), &Allocations::default()), None);
    let outside = Allocations {
        addresses: vec![ip("10.0.9.9")],
        prefixes: vec![cidr("10.0.9.0/28")],
        ..Default::default()
    };
    assert_eq!(
        figures(cidr("10.0.0.0/24"), &outside),
        figures(cidr("10.0.0.0/24"), &Allocations::default())
    );
}

#[test]
fn cidrs_parse_and_print() {
    assert_eq!(cidr("10.0.1.7/24").to_string(), "10.0.1.0/24");
    assert!("10.0.0.0".parse::<Cidr>().is_err());
    assert!("10.0.0.0/33".parse::<Cidr>().is_err());
    assert!("2600::/64".parse::<Cidr>().is_err(), "IPv6 does not apply");
}

#[test]
fn footprints_follow_the_warm_settings() {
    let t = |eni, ip, min, prefix| WarmPoolTargets {
        warm_eni_target: eni,
        warm_ip_target: ip,
        minimum_ip_target: min,
        warm_prefix_target: prefix,
    };
    // m5.large (3 ENIs x 10): WARM_ENI_TARGET=1 fills one ENI: 9 secondaries and its own.
    assert_eq!(
        NodeFootprint::of(&t(Some(1), None, None, None), 10, 3, false),
        NodeFootprint {
            addresses: 10,
            prefixes: 0
        }
    );
    // WARM_IP_TARGET=3, MINIMUM_IP_TARGET=5: 5 secondaries and the ENI's address.
    assert_eq!(
        NodeFootprint::of(&t(None, Some(3), Some(5), None), 10, 3, false),
        NodeFootprint {
            addresses: 6,
            prefixes: 0
        }
    );
    // Prefix delegation, WARM_PREFIX_TARGET=1: one /28 and the ENI's address.
    assert_eq!(
        NodeFootprint::of(&t(None, None, None, Some(1)), 10, 3, true),
        NodeFootprint {
            addresses: 1,
            prefixes: 1
        }
    );
    // WARM_IP_TARGET=20 with prefixes: two /28s.
    assert_eq!(
        NodeFootprint::of(&t(None, Some(20), None, Some(1)), 10, 3, true).prefixes,
        2
    );
}

#[test]
fn headroom_counts_nodes_and_pods() {
    let empty = figures(cidr("10.0.1.0/24"), &Allocations::default()).unwrap();
    // 251 free, 10 a node: 25 nodes.
    let secondary = NodeFootprint {
        addresses: 10,
        prefixes: 0,
    };
    assert_eq!(nodes_that_fit(&empty, secondary), 25);
    // 14 prefixes; the ENI addresses come from the 27 fragmented ones first.
    let pd = NodeFootprint {
        addresses: 1,
        prefixes: 1,
    };
    assert_eq!(nodes_that_fit(&empty, pd), 14);
    assert_eq!(pods_that_fit(&empty, true), 14 * 16);
    assert_eq!(pods_that_fit(&empty, false), 251);
    // Fully fragmented: no node with prefix delegation fits, though addresses remain.
    let base = ip("10.0.0.0");
    let fragmented = figures(
        cidr("10.0.0.0/24"),
        &Allocations {
            addresses: (0..16).map(|b| base + b * 16 + 7).collect(),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(nodes_that_fit(&fragmented, pd), 0);
    assert_eq!(nodes_that_fit(&fragmented, secondary), 23);
}

/// The reference: every figure by looking at each address and block on its own.
fn brute_force(cidr: Cidr, a: &Allocations) -> Figures {
    let size = cidr.size() as u32;
    let in_block = |b: &Cidr, x: u32| x >= b.base && u64::from(x - b.base) < b.size();
    let taken = |x: u32| {
        let offset = x - cidr.base;
        offset < 4
            || offset == size - 1
            || a.addresses.contains(&x)
            || a.prefixes.iter().any(|p| in_block(p, x))
            || a.reservations.iter().any(|(r, p)| !p && in_block(r, x))
    };
    let kept = |x: u32| a.reservations.iter().any(|(r, p)| *p && in_block(r, x));
    let block_free = |start: u32| (start..start + 16).all(|x| !taken(x));
    let free_addresses: Vec<u32> = (cidr.base..cidr.base + size)
        .filter(|x| !taken(*x) && !kept(*x))
        .collect();
    let blocks = (0..size / 16)
        .filter(|b| block_free(cidr.base + b * 16))
        .count() as u32;
    let fragmented = free_addresses
        .iter()
        .filter(|x| !block_free(cidr.base + (**x - cidr.base) / 16 * 16))
        .count() as u32;
    let largest = (cidr.len..=28).find_map(|len| {
        let block = 1u32 << (32 - u32::from(len));
        (0..size / block)
            .map(|i| cidr.base + i * block)
            .find(|start| (*start..*start + block).all(|x| !taken(x) && !kept(x)))
            .map(|start| Cidr::new(start, len))
    });
    Figures {
        total: size,
        free: free_addresses.len() as u32,
        free_aligned_prefixes: blocks,
        fragmented,
        largest_free_block: largest,
    }
}

fn layout() -> impl Strategy<Value = (Cidr, Allocations)> {
    (22u8..=28).prop_flat_map(|len| {
        let size = 1u32 << (32 - u32::from(len));
        let base = 0x0a00_0000u32;
        let address = (0..size + 64).prop_map(move |o| base + o);
        let prefix = (0..size / 16 + 2).prop_map(move |b| Cidr::new(base + b * 16, 28));
        let reservation = ((0..size + 32), (len..=30), any::<bool>())
            .prop_map(move |(o, l, p)| (Cidr::new(base + o, l), p));
        (
            prop::collection::vec(address, 0..96),
            prop::collection::vec(prefix, 0..8),
            prop::collection::vec(reservation, 0..3),
        )
            .prop_map(move |(addresses, prefixes, reservations)| {
                (
                    Cidr::new(base, len),
                    Allocations {
                        addresses,
                        prefixes,
                        reservations,
                    },
                )
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn figures_match_the_brute_force_reference((cidr, allocations) in layout()) {
        let fast = figures(cidr, &allocations).expect("a /22 to /28");
        prop_assert_eq!(fast, brute_force(cidr, &allocations));
        prop_assert!(fast.fragmented <= fast.free);
    }

    #[test]
    fn headroom_never_overcommits((cidr, allocations) in layout(), addresses in 1u32..12, prefixes in 0u32..4) {
        let f = figures(cidr, &allocations).expect("a /22 to /28");
        let footprint = NodeFootprint { addresses, prefixes };
        let n = nodes_that_fit(&f, footprint);
        prop_assert!(n * prefixes <= f.free_aligned_prefixes);
        prop_assert!(n * addresses <= f.free);
        // One more never fits: n + 1 nodes' worth as one node does not.
        let more = NodeFootprint { addresses: addresses * (n + 1), prefixes: prefixes * (n + 1) };
        prop_assert_eq!(nodes_that_fit(&f, more), 0);
    }
}
