"""Process-backed Triton pods: the container runtime this machine lacks, for Triton pods only.

For every pod bound to a node whose main container is `triton` (as the operator renders it) and
whose model is a Python-backend one (the CPU tritonserver here has only that backend),
this runtime does what a kubelet and a container runtime would:
  * volumes: the pod's ConfigMap becomes /model-config, its PersistentVolumeClaim's hostPath
    volume becomes /model-source, an emptyDir becomes /models: paths in the pod's own init script
    and Triton arguments are mapped onto those directories, and the init script is run;
  * the container: the real `tritonserver` (nvidia-pytriton wheel) with the pod's arguments,
    bound to the pod's IP inside the cluster's network namespace;
  * status: Ready follows Triton's own answers (`/v2/health/ready` and `/v2/models/<m>/ready`);
    a server that exits is restarted with a growing back-off and its restartCount climbs.
The API server, scheduler, controllers, Gateway, Envoy and Triton stay real.

Fault switch for tests: the server's AUTOGLM_FAULT_FILE is
`<state>/faults/<namespace>/<deployment>-<track>` (the flaky and slow models read it).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import paths
from .podnet import PodNetwork
from .triton import TritonProcess

log = logging.getLogger("pod-runtime")

TRACK_LABEL = "serving.autoglm.io/track"
OWNER_LABEL = "serving.autoglm.io/deployment"


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def fault_file(state_dir: Path, namespace: str, deployment: str, track: str) -> Path:
    return state_dir / "faults" / namespace / f"{deployment}-{track}"


class Api:
    """The few API calls the runtime makes, as the cluster's admin (client certificate)."""

    def __init__(self, state_dir: Path):
        import ssl

        from .pki import ClusterPKI

        pki = ClusterPKI(state_dir / "pki")
        self.server = yaml.safe_load((state_dir / "kubeconfig").read_text())["clusters"][0]["cluster"]["server"]
        self.context = ssl.create_default_context(cafile=str(pki.ca_cert))
        self.context.load_cert_chain(str(pki.client_cert("admin")), str(pki.client_key("admin")))

    def _request(self, method: str, path: str, body: dict | None = None, content_type: str = "application/json"):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.server + path, data=data, method=method,
                                         headers={"Content-Type": content_type, "Accept": "application/json"})
        with urllib.request.urlopen(request, context=self.context, timeout=10) as response:
            return json.loads(response.read())

    def get(self, path: str):
        return self._request("GET", path)

    def delete_now(self, namespace: str, name: str, uid: str) -> None:
        """What a kubelet does once the containers stopped: remove the pod for good."""
        try:
            self._request("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}",
                          {"gracePeriodSeconds": 0, "preconditions": {"uid": uid}})
        except urllib.error.HTTPError as e:
            if e.code not in (404, 409):
                raise

    def patch_status(self, namespace: str, name: str, status: dict) -> None:
        self._request("PATCH", f"/api/v1/namespaces/{namespace}/pods/{name}/status", {"status": status},
                      "application/strategic-merge-patch+json")


@dataclass
class PodProcess:
    namespace: str
    name: str
    uid: str
    ip: str
    model: str
    server: TritonProcess
    restarts: int = 0
    ready: bool | None = None
    started: bool = False
    next_start: float = 0.0
    last_status: str = ""
    pre_stop_seconds: float = 0.0
    stop_at: float | None = None


@dataclass
class Runtime:
    cluster: str
    kubeconfig: Path
    state_dir: Path
    network: PodNetwork
    pods: dict[str, PodProcess] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.api = Api(self.state_dir)

    # -- pod setup ------------------------------------------------------------------------------
    def _volumes(self, pod: dict, workdir: Path) -> dict[str, Path]:
        """Mount points of the pod's volumes, mapped to host directories."""
        mounts: dict[str, Path] = {}
        namespace = pod["metadata"]["namespace"]
        volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        for container in (pod["spec"].get("initContainers") or []) + pod["spec"]["containers"]:
            for m in container.get("volumeMounts") or []:
                volume = volumes.get(m["name"], {})
                target = mounts.get(m["mountPath"])
                if target is not None:
                    continue
                if "configMap" in volume:
                    data = self.api.get(f"/api/v1/namespaces/{namespace}/configmaps/{volume['configMap']['name']}")
                    target = workdir / "configmaps" / m["name"]
                    target.mkdir(parents=True, exist_ok=True)
                    for key, value in (data.get("data") or {}).items():
                        (target / key).write_text(value)
                elif "persistentVolumeClaim" in volume:
                    claim = self.api.get(f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/"
                                         f"{volume['persistentVolumeClaim']['claimName']}")
                    pv = self.api.get(f"/api/v1/persistentvolumes/{claim['spec']['volumeName']}")
                    target = Path(pv["spec"]["hostPath"]["path"])
                else:  # emptyDir and the rest: a directory of the pod's own
                    target = workdir / "volumes" / m["name"]
                    target.mkdir(parents=True, exist_ok=True)
                mounts[m["mountPath"]] = target
        return mounts

    @staticmethod
    def _map(text: str, mounts: dict[str, Path]) -> str:
        for mount in sorted(mounts, key=len, reverse=True):
            text = re.sub(rf"(?<![\w/]){re.escape(mount)}(?=/|\b|$)", str(mounts[mount]), text)
        return text

    def _start(self, pod: dict) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        key = meta["uid"]
        ip = pod["status"]["podIP"]
        workdir = self.state_dir / "pods" / key
        shutil.rmtree(workdir, ignore_errors=True)
        mounts = self._volumes(pod, workdir)
        for init in spec.get("initContainers") or []:
            script = self._map(" ".join(init.get("command", []) + init.get("args", [])).split("-c ", 1)[-1], mounts)
            result = subprocess.run(["sh", "-c", script], capture_output=True, text=True)
            if result.returncode != 0:
                log.warning("init container %s of %s/%s failed: %s", init["name"], meta["namespace"], meta["name"],
                            result.stderr.strip())
        triton = spec["containers"][0]
        args = [self._map(a, mounts) for a in triton.get("args") or []]
        repository = next(a.split("=", 1)[1] for a in args if a.startswith("--model-repository="))
        models = [a.split("=", 1)[1] for a in args if a.startswith("--load-model=")]
        extra = [a for a in args if not a.startswith(("--model-repository=", "--load-model=", "--http-port=",
                                                       "--grpc-port=", "--metrics-port=", "--model-control-mode",
                                                       "--strict-readiness", "--exit-on-error", "--allow-metrics"))]
        labels = meta.get("labels") or {}
        fault = fault_file(self.state_dir, meta["namespace"], labels.get(OWNER_LABEL, "none"), labels.get(TRACK_LABEL, "none"))
        fault.parent.mkdir(parents=True, exist_ok=True)
        self.network.add_pod_address(ip)
        server = TritonProcess(Path(repository), models, host=ip, http_port=8000, grpc_port=8001, metrics_port=8002,
                               extra_args=extra, log_file=workdir / "triton.log", netns=self.network.netns,
                               env={"AUTOGLM_FAULT_FILE": str(fault)})
        pre_stop = float(((triton.get("lifecycle") or {}).get("preStop") or {}).get("sleep", {}).get("seconds", 0))
        self.pods[key] = PodProcess(meta["namespace"], meta["name"], key, ip, models[0] if models else "", server,
                                    pre_stop_seconds=pre_stop)
        self._launch(self.pods[key])

    def _launch(self, proc: PodProcess) -> None:
        import os as _os
        log_file = proc.server.log_file
        log = open(log_file, "ab") if log_file else subprocess.DEVNULL
        proc.server.process = subprocess.Popen(
            proc.server.argv(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=_server_env(proc.server), start_new_session=True)
        proc.started = False

    def _stop(self, key: str) -> None:
        proc = self.pods.pop(key, None)
        if proc:
            proc.server.stop(timeout=5)
            self.network.remove_pod_address(proc.ip)

    # -- status ---------------------------------------------------------------------------------
    def _probe(self, proc: PodProcess) -> bool:
        try:
            base = f"http://{proc.ip}:8000"
            with urllib.request.urlopen(f"{base}/v2/health/ready", timeout=0.5) as r:
                if r.status != 200:
                    return False
            if proc.model:
                with urllib.request.urlopen(f"{base}/v2/models/{proc.model}/ready", timeout=0.5) as r:
                    return r.status == 200
            return True
        except Exception:
            return False

    def _report(self, proc: PodProcess, pod: dict) -> None:
        running = proc.server.process is not None and proc.server.process.poll() is None
        if not running and proc.server.process is not None:
            if proc.next_start == 0.0:
                proc.restarts += 1
                backoff = min(10.0, 0.5 * 2 ** min(proc.restarts, 5))
                proc.next_start = time.monotonic() + backoff
                log.warning("triton of %s/%s exited (%s); restart %d in %.1f s", proc.namespace, proc.name,
                            proc.server.process.returncode, proc.restarts, backoff)
            elif time.monotonic() >= proc.next_start:
                proc.next_start = 0.0
                self._launch(proc)
                running = True
        ready = running and self._probe(proc)
        if ready:
            proc.started = True
        container = pod["spec"]["containers"][0]
        if running:
            state = {"running": {"startedAt": now()}}
        else:
            state = {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off restarting tritonserver"}}
        status_key = f"{ready}/{running}/{proc.restarts}/{proc.started}"
        if status_key == proc.last_status:
            return
        proc.last_status = status_key
        cond = "True" if ready else "False"
        reason = "" if ready else "ContainersNotReady"
        status = {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": cond, "reason": reason, "lastTransitionTime": now()},
                           {"type": "ContainersReady", "status": cond, "reason": reason, "lastTransitionTime": now()}],
            "containerStatuses": [{"name": container["name"], "image": container["image"], "ready": ready,
                                   "started": proc.started and running, "restartCount": proc.restarts,
                                   "state": state}],
        }
        try:
            self.api.patch_status(proc.namespace, proc.name, status)
        except Exception as e:
            proc.last_status = ""
            log.warning("status of %s/%s not written: %s", proc.namespace, proc.name, e)

    # -- loop -----------------------------------------------------------------------------------
    def sync(self) -> None:
        pods = self.api.get("/api/v1/pods").get("items", [])
        seen = set()
        for pod in pods:
            meta, spec = pod["metadata"], pod["spec"]
            containers = spec.get("containers") or []
            if not containers or containers[0].get("name") != "triton" or not spec.get("nodeName"):
                continue
            if (meta.get("labels") or {}).get("serving.autoglm.io/model-format") not in ("python",):
                continue  # TensorRT engines cannot run here: KWOK simulates those pods
            if meta.get("deletionTimestamp"):
                proc = self.pods.get(meta["uid"])
                if proc is None:
                    self.api.delete_now(meta["namespace"], meta["name"], meta["uid"])
                    continue
                seen.add(meta["uid"])
                if proc.stop_at is None:  # like a kubelet: run the preStop sleep, then stop the server
                    proc.stop_at = time.monotonic() + proc.pre_stop_seconds
                if time.monotonic() >= proc.stop_at:
                    self._stop(meta["uid"])
                    self.api.delete_now(meta["namespace"], meta["name"], meta["uid"])
                continue
            if not (pod.get("status") or {}).get("podIP"):
                continue
            seen.add(meta["uid"])
            if meta["uid"] not in self.pods:
                try:
                    self._start(pod)
                except Exception as e:
                    log.exception("could not start triton for %s/%s: %s", meta["namespace"], meta["name"], e)
                    continue
            self._report(self.pods[meta["uid"]], pod)
        for gone in set(self.pods) - seen:  # removed behind our back (force delete): its IP may be reused
            self._stop(gone)

    def run(self, interval: float = 0.3) -> None:
        try:
            while True:
                try:
                    self.sync()
                except Exception as e:
                    log.warning("sync failed: %s", e)
                time.sleep(interval)
        finally:
            for key in list(self.pods):
                self._stop(key)


def _server_env(server: TritonProcess) -> dict[str, str]:
    from .triton import library_path
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {**os.environ, "LD_LIBRARY_PATH": library_path(), "PATH": path, **server.env}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cluster", default="dev")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    state = paths.cluster_state_dir(args.cluster)
    import signal
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    Runtime(args.cluster, state / "kubeconfig", state, PodNetwork(args.cluster)).run()


if __name__ == "__main__":
    main()
