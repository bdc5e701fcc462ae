"""The embedded cluster is a real one: GPU fleet, scheduling, controllers, kubectl."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from conftest import wait_for

pytestmark = pytest.mark.e2e


def test_fleet_has_gpu_cpu_and_edge_nodes(kubectl):
    nodes = kubectl.get_json("nodes")["items"]
    labels = {n["metadata"]["name"]: n["metadata"]["labels"] for n in nodes}
    products = {node_labels.get("nvidia.com/gpu.product") for node_labels in labels.values()} - {None}
    assert {"NVIDIA-H100-80GB-HBM3", "NVIDIA-L4", "NVIDIA-A10", "NVIDIA-Jetson-AGX-Orin"} <= products
    h100 = labels["gpu-h100-0"]
    assert (h100["nvidia.com/gpu.compute.major"], h100["nvidia.com/gpu.compute.minor"]) == ("9", "0")
    assert {"nvidia.com/gpu.memory", "nvidia.com/gpu.count"} <= set(h100)
    edge = [n for n, node_labels in labels.items() if "node-role.kubernetes.io/edge" in node_labels]
    assert edge and all("apps.kubeedge.io/belonging-to" in labels[n] for n in edge)
    assert any("nvidia.com/gpu.product" not in node_labels for node_labels in labels.values()), "no plain CPU node"
    for node in nodes:
        ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
        assert ready == "True", node["metadata"]["name"]
    out = kubectl("get", "nodes", "-L", "nvidia.com/gpu.product").stdout
    assert "NVIDIA-L4" in out and "GPU.PRODUCT" in out


def _deployment(name: str, gpu: bool, replicas: int = 2) -> dict:
    container = {"name": "main", "image": "registry.k8s.io/pause:3.10"}
    pod_spec = {"containers": [container]}
    if gpu:
        container["resources"] = {"limits": {"nvidia.com/gpu": "1"}}
        pod_spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec}}}


def test_gpu_pod_lands_only_on_gpu_nodes_and_becomes_ready(kubectl, namespace):
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(_deployment("gpu-consumer", gpu=True, replicas=4)))
    kubectl("rollout", "status", "-n", namespace, "deployment/gpu-consumer", "--timeout=60s")
    nodes = {n["metadata"]["name"]: n["metadata"]["labels"] for n in kubectl.get_json("nodes")["items"]}
    pods = kubectl.get_json("pods", "-n", namespace, "-l", "app=gpu-consumer")["items"]
    assert len(pods) == 4
    for pod in pods:
        labels = nodes[pod["spec"]["nodeName"]]
        assert "nvidia.com/gpu.product" in labels, f"GPU pod on non-GPU node {pod['spec']['nodeName']}"
        assert "node-role.kubernetes.io/edge" not in labels  # edge taint keeps it off edge nodes
        assert pod["status"]["podIP"].startswith("127.244.0.")


def test_job_pods_complete(kubectl, namespace):
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "once"},
           "spec": {"template": {"spec": {"restartPolicy": "Never",
                                          "containers": [{"name": "c", "image": "busybox:1.36"}]}}}}
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(job))
    kubectl("wait", "-n", namespace, "--for=condition=Complete", "job/once", "--timeout=60s")


def test_readiness_and_crash_faults_on_demand(kubectl, namespace):
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(_deployment("faulty", gpu=False, replicas=1)))
    kubectl("rollout", "status", "-n", namespace, "deployment/faulty", "--timeout=60s")
    pod = kubectl.get_json("pods", "-n", namespace, "-l", "app=faulty")["items"][0]["metadata"]["name"]
    kubectl("annotate", "-n", namespace, f"pod/{pod}", "fault.autoglm.io/readiness=fail")
    kubectl("wait", "-n", namespace, "--for=condition=Ready=false", f"pod/{pod}", "--timeout=30s")
    kubectl("annotate", "-n", namespace, f"pod/{pod}", "fault.autoglm.io/readiness-")
    kubectl("wait", "-n", namespace, "--for=condition=Ready", f"pod/{pod}", "--timeout=30s")
    kubectl("annotate", "-n", namespace, f"pod/{pod}", "fault.autoglm.io/crash=loop")

    def restarted_twice():
        p = kubectl.get_json("pods", "-n", namespace, pod)
        status = p["status"]["containerStatuses"][0]
        return status["restartCount"] >= 2 and status["state"].get("waiting", {}).get("reason") == "CrashLoopBackOff"
    wait_for(restarted_twice, 30, what="crash loop")


def test_kubectl_on_path_works_with_written_kubeconfig(cluster):
    # The machine's own (older) kubectl works against the cluster with the kubeconfig `up` wrote.
    out = subprocess.run(["kubectl", "--kubeconfig", str(cluster.kubeconfig), "get", "nodes", "-o", "name"],
                         capture_output=True, text=True, check=True).stdout
    assert "node/gpu-h100-0" in out
