//! Subnet capacity for the VPC CNI: how many addresses a subnet has left, how many of them form
//! free **aligned /28 blocks** (what prefix delegation needs: EC2 hands out a prefix only on a
//! /28 boundary, and one allocated address anywhere in a block makes it unusable), how much free
//! space is fragmented, and how many more nodes and pods of an instance type fit at given warm
//! settings. Pure: the caller passes what EC2 holds (every allocated address, every delegated
//! prefix, every subnet CIDR reservation). IPv4 only: an IPv6 cluster's pods take /80 prefixes
//! from a /64, which does not run out.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use crate::engine::WarmPoolTargets;

/// A /28: the size of one delegated prefix.
pub const PREFIX_SIZE: u32 = 16;
/// Addresses AWS reserves in every subnet: the first four and the last.
pub const AWS_RESERVED: u32 = 5;
/// The largest subnet AWS allows (/16), so a layout never needs more than 65,536 bits.
pub const MIN_PREFIX_LEN: u8 = 16;

/// An IPv4 CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    pub base: u32,
    pub len: u8,
}

impl Cidr {
    pub fn new(base: u32, len: u8) -> Self {
        let mask = if len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(len))
        };
        Self {
            base: base & mask,
            len,
        }
    }

    pub fn size(self) -> u64 {
        1u64 << (32 - u32::from(self.len))
    }

    pub fn contains(self, address: u32) -> bool {
        u64::from(address.wrapping_sub(self.base)) < self.size() && address >= self.base
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.len)
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (address, len) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR (a.b.c.d/n)"))?;
        let address: Ipv4Addr = address
            .parse()
            .map_err(|e| format!("{s:?} is not an IPv4 CIDR: {e}"))?;
        let len: u8 = len
            .parse()
            .ok()
            .filter(|l| *l <= 32)
            .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to 32"))?;
        Ok(Self::new(u32::from(address), len))
    }
}

/// What is allocated in a subnet, as EC2 describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allocations {
    /// Every ENI's primary and secondary private IPv4 addresses.
    pub addresses: Vec<u32>,
    /// Delegated prefixes (/28).
    pub prefixes: Vec<Cidr>,
    /// Subnet CIDR reservations: `prefix` ones (`true`) keep space for delegated prefixes,
    /// `explicit` ones (`false`) for addresses assigned by hand; EC2 assigns no secondary IP
    /// from either.
    pub reservations: Vec<(Cidr, bool)>,
}

/// A subnet's figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Figures {
    /// Addresses in the CIDR.
    pub total: u32,
    /// Addresses EC2 can still assign one by one: not allocated, not in a delegated prefix, not
    /// in a reservation, not reserved by AWS.
    pub free: u32,
    /// /28 blocks on /28 boundaries EC2 can still delegate: nothing allocated in them, not
    /// reserved by AWS, not in an `explicit` reservation (a `prefix` reservation keeps them for
    /// exactly this).
    pub free_aligned_prefixes: u32,
    /// Free addresses in no such /28: no prefix can be made of them.
    pub fragmented: u32,
    /// The largest block of free addresses on its own boundary (a /28 or larger), outside
    /// every reservation: where a prefix reservation keeps future prefixes contiguous.
    pub largest_free_block: Option<Cidr>,
}

/// Which addresses of a subnet are taken (bit set: taken).
struct Bitmap {
    cidr: Cidr,
    words: Vec<u64>,
}

impl Bitmap {
    fn new(cidr: Cidr) -> Self {
        let size = usize::try_from(cidr.size()).unwrap_or(usize::MAX);
        Self {
            cidr,
            words: vec![0; size.div_ceil(64)],
        }
    }

    fn take(&mut self, offset: u64) {
        if let Ok(offset) = usize::try_from(offset)
            && let Some(word) = self.words.get_mut(offset / 64)
        {
            *word |= 1 << (offset % 64);
        }
    }

    fn take_address(&mut self, address: u32) {
        if self.cidr.contains(address) {
            self.take(u64::from(address - self.cidr.base));
        }
    }

    /// Marks the part of `block` inside the subnet.
    fn take_block(&mut self, block: Cidr) {
        let start = u64::from(block.base.max(self.cidr.base));
        let end = (u64::from(block.base) + block.size())
            .min(u64::from(self.cidr.base) + self.cidr.size());
        for address in start..end {
            self.take(address - u64::from(self.cidr.base));
        }
    }

    fn taken(&self, offset: u64) -> bool {
        let offset = usize::try_from(offset).unwrap_or(usize::MAX);
        self.words
            .get(offset / 64)
            .is_some_and(|w| w & (1 << (offset % 64)) != 0)
    }

    /// Whether `len` addresses from `offset` (aligned, a power of two) are all free.
    fn block_free(&self, offset: u64, len: u64) -> bool {
        if len >= 64 {
            let (first, count) = (offset / 64, len / 64);
            return (first..first + count).all(|w| self.words[w as usize] == 0);
        }
        let word = self.words[(offset / 64) as usize];
        let mask = ((1u64 << len) - 1) << (offset % 64);
        word & mask == 0
    }
}

/// The figures of subnet `cidr` given what is allocated in it. `None` for a subnet smaller than
/// a /28 or larger than a /16 (AWS allows neither).
pub fn figures(cidr: Cidr, allocations: &Allocations) -> Option<Figures> {
    if !(MIN_PREFIX_LEN..=28).contains(&cidr.len) {
        return None;
    }
    // `taken`: nothing can be assigned there. `kept`: a prefix reservation (prefixes only).
    let mut taken = Bitmap::new(cidr);
    let mut kept = Bitmap::new(cidr);
    let size = cidr.size();
    for offset in [0, 1, 2, 3, size - 1] {
        taken.take(offset);
    }
    for address in &allocations.addresses {
        taken.take_address(*address);
    }
    for prefix in &allocations.prefixes {
        taken.take_block(*prefix);
    }
    for (block, for_prefixes) in &allocations.reservations {
        if *for_prefixes {
            kept.take_block(*block);
        } else {
            taken.take_block(*block);
        }
    }
    let prefix = u64::from(PREFIX_SIZE);
    let prefix_free = |block: u64| taken.block_free(block * prefix, prefix);
    let free_aligned_prefixes = (0..size / prefix).filter(|b| prefix_free(*b)).count() as u32;
    let (mut free, mut fragmented) = (0u32, 0u32);
    for offset in (0..size).filter(|o| !taken.taken(*o) && !kept.taken(*o)) {
        free += 1;
        if !prefix_free(offset / prefix) {
            fragmented += 1;
        }
    }
    let largest_free_block = (u32::from(cidr.len)..=28).find_map(|len| {
        let block = 1u64 << (32 - len);
        (0..size / block)
            .find(|i| taken.block_free(i * block, block) && kept.block_free(i * block, block))
            .map(|i| Cidr::new(cidr.base + (i * block) as u32, len as u8))
    });
    Some(Figures {
        total: size as u32,
        free,
        free_aligned_prefixes,
        fragmented,
        largest_free_block,
    })
}

/// What a node of one instance type takes from a subnet when it joins, before any pod: the ENI's
/// primary address and what ipamd keeps warm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeFootprint {
    /// Individual addresses (ENI primaries; secondary IPs without prefix delegation).
    pub addresses: u32,
    /// Aligned /28 prefixes (prefix delegation).
    pub prefixes: u32,
}

impl NodeFootprint {
    /// What ipamd takes on a new node of a type with `ipv4_per_eni` addresses per ENI (at most
    /// `max_enis`) before its first pod, at these warm settings (unset ones at the VPC CNI's
    /// defaults). Secondary IPs: `WARM_IP_TARGET` / `MINIMUM_IP_TARGET` free IPs, else
    /// `WARM_ENI_TARGET` (default 1) ENIs filled with IPs; each ENI also has its own address.
    /// Prefix delegation: `WARM_IP_TARGET` / `MINIMUM_IP_TARGET` rounded up to /28s, else
    /// `WARM_PREFIX_TARGET` (default 1) prefixes.
    pub fn of(
        targets: &WarmPoolTargets,
        ipv4_per_eni: u32,
        max_enis: u32,
        prefix_delegation: bool,
    ) -> Self {
        let slots = ipv4_per_eni.saturating_sub(1).max(1);
        let ip_target = match (targets.warm_ip_target, targets.minimum_ip_target) {
            (None, None) => None,
            (warm, minimum) => Some(warm.unwrap_or(0).max(minimum.unwrap_or(0))),
        };
        let max_enis = max_enis.max(1);
        if prefix_delegation {
            let prefixes = match ip_target {
                Some(ips) => ips.div_ceil(PREFIX_SIZE).max(1),
                None => targets.warm_prefix_target.unwrap_or(1).max(1),
            };
            let prefixes = prefixes.min(slots * max_enis);
            return Self {
                addresses: prefixes.div_ceil(slots).max(1),
                prefixes,
            };
        }
        let secondaries = match ip_target {
            Some(ips) => ips,
            None => targets.warm_eni_target.unwrap_or(1).max(1) * slots,
        };
        let secondaries = secondaries.min(slots * max_enis);
        Self {
            addresses: secondaries + secondaries.div_ceil(slots).max(1),
            prefixes: 0,
        }
    }
}

/// How many more nodes with `footprint` fit in a subnet with `figures`: each prefix takes a free
/// aligned /28; each address takes a fragmented address first, then breaks a free /28.
pub fn nodes_that_fit(figures: &Figures, footprint: NodeFootprint) -> u32 {
    let fits = |n: u64| {
        let prefixes = n * u64::from(footprint.prefixes);
        let addresses = n * u64::from(footprint.addresses);
        let free_prefixes = u64::from(figures.free_aligned_prefixes);
        if prefixes > free_prefixes {
            return false;
        }
        let loose = addresses.saturating_sub(u64::from(figures.fragmented));
        prefixes + loose.div_ceil(u64::from(PREFIX_SIZE)) <= free_prefixes
            && addresses <= u64::from(figures.free)
    };
    // Binary search: `fits` is monotone.
    let (mut low, mut high) = (0u64, u64::from(figures.free) + 1);
    while low + 1 < high {
        let mid = (low + high) / 2;
        if fits(mid) {
            low = mid;
        } else {
            high = mid;
        }
    }
    u32::try_from(low).unwrap_or(u32::MAX)
}

/// How many more pods the subnet's free space can address: a /28 carries 16 pods with prefix
/// delegation; without it each free address is one pod.
pub fn pods_that_fit(figures: &Figures, prefix_delegation: bool) -> u32 {
    if prefix_delegation {
        figures.free_aligned_prefixes * PREFIX_SIZE
    } else {
        figures.free
    }
}

/// A subnet as `DescribeSubnets` describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubnetInfo {
    pub id: String,
    /// The IPv4 CIDR (`None`: an IPv6-only subnet).
    pub cidr: Option<String>,
    pub availability_zone: Option<String>,
    pub vpc_id: Option<String>,
    /// EC2's `AvailableIpAddressCount`.
    pub available: Option<u32>,
}

/// A network interface as `DescribeNetworkInterfaces` describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterfaceInfo {
    pub id: String,
    pub subnet_id: String,
    /// The instance it is attached to.
    pub instance_id: Option<String>,
    /// Primary and secondary private IPv4 addresses.
    pub addresses: Vec<String>,
    /// Delegated IPv4 prefixes (`10.0.1.16/28`).
    pub prefixes: Vec<String>,
}

/// A subnet CIDR reservation (`GetSubnetCidrReservations`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReservationInfo {
    pub id: String,
    pub cidr: String,
    /// `prefix` (kept for delegated prefixes) rather than `explicit`.
    pub prefix: bool,
    /// Who made it and why, as its creator wrote it (`Description`; may be empty).
    pub description: String,
}

/// The allocations of subnet `subnet` from what EC2 described (entries that do not parse, or
/// belong to another subnet, are left out).
pub fn allocations(
    subnet: &str,
    interfaces: &[InterfaceInfo],
    reservations: &[ReservationInfo],
) -> Allocations {
    let mine = interfaces.iter().filter(|i| i.subnet_id == subnet);
    let mut allocations = Allocations::default();
    for interface in mine {
        allocations
            .addresses
            .extend(interface.addresses.iter().filter_map(|a| parse_address(a)));
        allocations.prefixes.extend(
            interface
                .prefixes
                .iter()
                .filter_map(|p| p.parse::<Cidr>().ok()),
        );
    }
    allocations.reservations = reservations
        .iter()
        .filter_map(|r| r.cidr.parse().ok().map(|c| (c, r.prefix)))
        .collect();
    allocations
}

/// Parses an IPv4 address as EC2 writes it.
pub fn parse_address(address: &str) -> Option<u32> {
    address.parse::<Ipv4Addr>().ok().map(u32::from)
}

#[cfg(test)]
#[path = "subnet_tests.rs"]
mod tests;
