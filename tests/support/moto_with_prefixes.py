"""moto_server, taught delegated IPv4 prefixes on network interfaces, at the wire level.

Test double note. moto 5 keeps an ENI's private IPv4 addresses but no delegated prefixes, which
is what prefix delegation (ipamd's AssignPrivateIpAddresses with Ipv4PrefixCount) puts on a
node's ENIs. This wrapper adds them to moto's own ENI model, then runs moto_server unchanged:

- AssignPrivateIpAddresses takes `Ipv4Prefix.N` (given /28s) and `Ipv4PrefixCount` (EC2 picks
  the lowest free /28 on a /28 boundary of the ENI's subnet: no address of any ENI of the
  subnet in it, none of the 5 AWS reserves, not in an `explicit` subnet CIDR reservation; a
  `prefix` reservation is used first, as EC2 does) and answers `AssignedIpv4Prefixes`; with no
  such block left it fails with InsufficientCidrBlocks, as EC2 does.
- DescribeNetworkInterfaces answers each ENI's `Ipv4Prefixes`.
- CreateSubnetCidrReservation keeps the `Description` and GetSubnetCidrReservations answers it,
  as EC2 does (moto 5 drops it).

What it does not simulate: UnassignPrivateIpAddresses of prefixes, IPv6 prefixes, the per-ENI
prefix limit of the instance type, prefixes on CreateNetworkInterface, SigV4, IAM.

  moto_with_prefixes.py [moto_server args...]
"""

import ipaddress
import sys

from moto.core.exceptions import ServiceException
from moto.core.responses import ActionResult
from moto.ec2.models.elastic_network_interfaces import NetworkInterface
from moto.ec2.responses.elastic_network_interfaces import ElasticNetworkInterfaces
from moto.ec2.responses.subnets import Subnets
from moto.server import main

NetworkInterface.ipv4_prefixes = property(lambda self: self.__dict__.setdefault("_prefixes", []))


class InsufficientCidrBlocks(ServiceException):
    code = "InsufficientCidrBlocks"


def taken_in(backend, subnet):
    """The addresses and blocks of `subnet` no new prefix may overlap."""
    network = ipaddress.ip_network(subnet.cidr_block)
    taken = set()
    for eni in backend.enis.values():
        if eni.subnet.id != subnet.id:
            continue
        for item in eni.private_ip_addresses:
            taken.add(ipaddress.ip_address(item["PrivateIpAddress"]))
        for prefix in eni.ipv4_prefixes:
            taken.update(ipaddress.ip_network(prefix["Ipv4Prefix"]))
    explicit, kept = [], []
    for reservation in backend.get_subnet_cidr_reservations(subnet.id).get(
        "SubnetIpv4CidrReservations", []
    ):
        block = ipaddress.ip_network(reservation.cidr)
        (kept if reservation.reservation_type == "prefix" else explicit).append(block)
    addresses = list(network)
    taken.update(addresses[:4])
    taken.add(addresses[-1])
    return network, taken, explicit, kept


def free_block(backend, subnet):
    network, taken, explicit, kept = taken_in(backend, subnet)
    candidates = [b for b in network.subnets(new_prefix=28)]
    # Prefix reservations first, as EC2 does.
    candidates.sort(key=lambda b: (not any(b.subnet_of(k) for k in kept), int(b.network_address)))
    for block in candidates:
        if any(block.overlaps(e) for e in explicit):
            continue
        if any(a in taken for a in block):
            continue
        return str(block)
    raise InsufficientCidrBlocks(
        "There are not enough free cidr blocks in the specified subnet to satisfy the request."
    )


original_assign = ElasticNetworkInterfaces.assign_private_ip_addresses


def assign_private_ip_addresses(self):
    given = self._get_param("Ipv4Prefixes", []) or []
    count = self._get_int_param("Ipv4PrefixCount", 0)
    if not given and not count:
        return original_assign(self)
    eni_id = self._get_param("NetworkInterfaceId")
    eni = self.ec2_backend.get_network_interface(eni_id)
    assigned = []
    for prefix in given:
        eni.ipv4_prefixes.append({"Ipv4Prefix": prefix})
        assigned.append({"Ipv4Prefix": prefix})
    for _ in range(count):
        block = free_block(self.ec2_backend, eni.subnet)
        eni.ipv4_prefixes.append({"Ipv4Prefix": block})
        assigned.append({"Ipv4Prefix": block})
    return ActionResult({"NetworkInterfaceId": eni.id, "AssignedIpv4Prefixes": assigned})


ElasticNetworkInterfaces.assign_private_ip_addresses = assign_private_ip_addresses

original_create_reservation = Subnets.create_subnet_cidr_reservation


def create_subnet_cidr_reservation(self):
    result = original_create_reservation(self)
    description = self._get_param("Description")
    if description:
        subnet = self.ec2_backend.get_subnet(self._get_param("SubnetId"))
        subnet._cidr_reservations[-1].description = description
    return result


Subnets.create_subnet_cidr_reservation = create_subnet_cidr_reservation

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
