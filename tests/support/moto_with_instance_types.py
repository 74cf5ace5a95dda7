"""moto_server, taught extra EC2 instance types.

Test double note: moto answers DescribeInstanceTypes from a static catalog, and the embedded
table is generated from that same catalog, so moto knows no type the table lacks. This wrapper
adds the types in TYPES_JSON (DescribeInstanceTypes records, keyed by name) to moto's catalog and
then runs moto_server unchanged: the operator's live lookup gets a type the server knows and the
table does not, over the real EC2 wire protocol. Everything else is plain moto.

  moto_with_instance_types.py TYPES_JSON [moto_server args...]
"""

import json
import sys

from moto.ec2.models import instance_types
from moto.server import main

with open(sys.argv[1], encoding="utf-8") as handle:
    extra = json.load(handle)
for name, info in extra.items():
    instance_types.INSTANCE_TYPES[name] = info
    instance_types.InstanceTypeBackend.instance_types.append(instance_types.InstanceType(name))
sys.exit(main(sys.argv[2:]))
