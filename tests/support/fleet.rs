//! Fleet fixtures shared by the benchmarks: Nodes as kubelet writes them.

use serde_json::{Value, json};

/// Node pools the fixtures spread nodes over (`pool` and `eks.amazonaws.com/nodegroup` labels).
pub const POOLS: usize = 10;

/// A Node as kubelet writes it: labels, annotations, conditions, images, managedFields.
pub fn realistic_node(i: usize, instance_type: &str) -> Value {
    let images: Vec<Value> = (0..40)
        .map(|j| {
            json!({"names": [
                format!("123456789012.dkr.ecr.us-west-2.amazonaws.com/team-{j}/service-{j}@sha256:{:064x}", i * 1000 + j),
                format!("123456789012.dkr.ecr.us-west-2.amazonaws.com/team-{j}/service-{j}:v1.{j}.{i}")
            ], "sizeBytes": 123_456_789 + j})
        })
        .collect();
    let conditions: Vec<Value> = ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"]
        .iter()
        .map(|t| json!({"type": t, "status": if *t == "Ready" {"True"} else {"False"},
            "lastHeartbeatTime": "2026-11-22T00:00:00Z", "lastTransitionTime": "2026-11-01T00:00:00Z",
            "reason": format!("Kubelet{t}"), "message": format!("kubelet reports {t} as expected on this node")}))
        .collect();
    json!({
        "metadata": {
            "name": format!("ip-10-0-{}-{}.us-west-2.compute.internal", i / 250, i % 250),
            "uid": format!("{:08x}-0000-0000-0000-{:012x}", i, i),
            "resourceVersion": format!("{}", 1000 + i),
            "creationTimestamp": "2026-11-01T00:00:00Z",
            "labels": {
                "beta.kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64", "kubernetes.io/os": "linux",
                "kubernetes.io/hostname": format!("ip-10-0-{}-{}", i / 250, i % 250),
                "node.kubernetes.io/instance-type": instance_type,
                "beta.kubernetes.io/instance-type": instance_type,
                "topology.kubernetes.io/region": "us-west-2",
                "topology.kubernetes.io/zone": format!("us-west-2{}", ["a", "b", "c"][i % 3]),
                "eks.amazonaws.com/nodegroup": format!("pool-{}", i % POOLS),
                "eks.amazonaws.com/capacityType": "ON_DEMAND",
                "pool": format!("pool-{}", i % POOLS)
            },
            "annotations": {
                "alpha.kubernetes.io/provided-node-ip": format!("10.0.{}.{}", i / 250, i % 250),
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true"
            },
            "managedFields": [
                {"manager": "kubelet", "operation": "Update", "apiVersion": "v1", "time": "2026-11-22T00:00:00Z",
                 "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {"f:conditions": {}, "f:images": {}, "f:nodeInfo": {}}}},
                {"manager": "aws-cloud-controller-manager", "operation": "Update", "apiVersion": "v1",
                 "time": "2026-11-01T00:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:providerID": {}}}}
            ]
        },
        "spec": {"providerID": format!("aws:///us-west-2a/i-{i:017x}")},
        "status": {
            "capacity": {"cpu": "2", "memory": "3926888Ki", "pods": "110", "ephemeral-storage": "83873772Ki"},
            "allocatable": {"cpu": "1930m", "memory": "3371880Ki", "pods": "110", "ephemeral-storage": "76224326324"},
            "conditions": conditions,
            "addresses": [{"type": "InternalIP", "address": format!("10.0.{}.{}", i / 250, i % 250)}],
            "nodeInfo": {"machineID": format!("{i:032x}"), "systemUUID": format!("{i:032x}"), "bootID": format!("{i:032x}"),
                "kernelVersion": "6.1.112-124.190.amzn2023.x86_64", "osImage": "Amazon Linux 2023.6.20241031",
                "containerRuntimeVersion": "containerd://1.7.22", "kubeletVersion": "v1.31.2-eks-7f9249a",
                "kubeProxyVersion": "v1.31.2-eks-7f9249a", "operatingSystem": "linux", "architecture": "amd64"},
            "images": images
        }
    })
}
