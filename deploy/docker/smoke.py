"""Smoke test of built images: ``python deploy/docker/smoke.py localhost/stylecast:edge ...``
(``make images-smoke``).  For each image: run it (podman, or ENGINE=docker) with its gRPC port
published on loopback, wait for gRPC health SERVING, run the image's own HEALTHCHECK command
inside it, register a style and stylize one frame through the SDK, report the image size,
remove the container.  Then (podman only) ``podman kube play`` of the base Kubernetes manifests
(ConfigMap, PersistentVolumeClaim, Deployment) with the first image, the same checks against the
pod's address, and ``podman kube down``; and two containers of the first image on the host network
sharing one ``redis-server`` (started here on a free loopback port): a style registered on one is
streamed on the other, deleted there, and NOT_FOUND on the first.  Exits non-zero on the first
failure."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import shutil

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from stylecast.client import Client, NotFound
from stylecast.client.loadgen import synthetic_image

ENGINE = os.environ.get("ENGINE", "podman")
BASE = Path(__file__).resolve().parents[1] / "k8s" / "base"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def engine(*args: str) -> str:
    return subprocess.run([ENGINE, *args], check=True, capture_output=True, text=True).stdout.strip()


def wait_serving(address: str, name: str, timeout: float = 300.0) -> float:
    start = time.monotonic()
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                if stub.Check(health_pb2.HealthCheckRequest(service="stylecast.v1.StyleTransfer"),
                              timeout=2).status == health_pb2.HealthCheckResponse.SERVING:
                    return time.monotonic() - start
            except grpc.RpcError:
                pass
            if time.monotonic() - start > timeout:
                raise SystemExit(f"{name}: not SERVING after {timeout:g} s:\n{engine('logs', name)[-3000:]}")
            time.sleep(0.5)


def stylize_one(address: str):
    with Client(address) as client:
        style = client.register_style(synthetic_image(256, seed=1), name="smoke")
        return client.stylize(synthetic_image(320, seed=2), style, output="jpeg")


def smoke(image: str) -> None:
    port, name = free_port(), f"stylecast-smoke-{os.getpid()}"
    engine("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:50051", image)
    try:
        ready_s = wait_serving(f"127.0.0.1:{port}", name)
        health = subprocess.run([ENGINE, "healthcheck", "run", name], capture_output=True, text=True) \
            if ENGINE == "podman" else None
        result = stylize_one(f"127.0.0.1:{port}")
        size = int(json.loads(engine("image", "inspect", image))[0]["Size"])
        print(f"{image}: SERVING after {ready_s:.1f} s; HEALTHCHECK "
              f"{'exit ' + str(health.returncode) if health else 'n/a'}; stylized {result.width}x{result.height} "
              f"with {result.backend} {result.model}:{result.model_version} "
              f"({len(result.data)} B JPEG); image {size / 1e6:.0f} MB")
        if not result.ok or (health is not None and health.returncode != 0):
            raise SystemExit(f"{image}: smoke test failed")
    finally:
        subprocess.run([ENGINE, "rm", "-f", name], capture_output=True)


def kube_play(image: str) -> None:
    """``podman kube play`` of the base manifests with ``image``; checked on the pod's own address.
    The containers' ``ports`` are left out so podman publishes nothing on this (shared) host."""
    docs = [d for f in ("configmap.yaml", "pvc.yaml", "deployment.yaml")
            for d in yaml.safe_load_all((BASE / f).read_text()) if d]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    container["image"] = image
    container.pop("ports")
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "stylecast.yaml"
        manifest.write_text(yaml.safe_dump_all(docs))
        engine("kube", "play", str(manifest))
        try:
            pod = f"{deployment['metadata']['name']}-pod-0"
            infra = engine("pod", "inspect", pod, "--format", "{{.InfraContainerID}}")
            ip = engine("inspect", infra, "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}")
            ready_s = wait_serving(f"{ip}:50051", f"{pod}-{container['name']}")
            result = stylize_one(f"{ip}:50051")
            print(f"podman kube play (ConfigMap + PVC + Deployment, {image}): SERVING after {ready_s:.1f} s; "
                  f"stylized {result.width}x{result.height} with {result.backend}")
            if not result.ok:
                raise SystemExit("kube play: smoke test failed")
        finally:
            subprocess.run([ENGINE, "kube", "down", str(manifest)], capture_output=True)
            for d in docs:
                if d["kind"] == "PersistentVolumeClaim":
                    subprocess.run([ENGINE, "volume", "rm", "-f", d["metadata"]["name"]], capture_output=True)


def replicas(image: str) -> None:
    """Two containers of ``image`` (host network, loopback ports) on one Redis."""
    if shutil.which("redis-server") is None:
        print("replicas: skipped, redis-server not installed (make redis-tools)")
        return
    redis_port, ports = free_port(), [free_port(), free_port()]
    redis = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(redis_port), "--save", ""],
                             stdout=subprocess.DEVNULL)
    names = [f"stylecast-smoke-{os.getpid()}-{p}" for p in ports]
    try:
        for name, port in zip(names, ports):
            engine("run", "-d", "--name", name, "--network", "host", image, "stylecast", "serve", "--host",
                   "127.0.0.1", "--port", str(port), "--metrics-port", "0",
                   "--style-store", f"redis://127.0.0.1:{redis_port}/0")
        for name, port in zip(names, ports):
            wait_serving(f"127.0.0.1:{port}", name)
        with Client(f"127.0.0.1:{ports[0]}") as a, Client(f"127.0.0.1:{ports[1]}") as b:
            style = a.register_style(synthetic_image(256, seed=5), name="shared")
            results = list(b.stream([synthetic_image(64, seed=i) for i in range(3)], style.id, output="raw"))
            deleted = b.delete_style(style.id)
            try:
                a.get_style(style.id)
                gone = False
            except NotFound:
                gone = True
        ok = [r.status for r in results] == ["ok"] * 3 and deleted and gone
        print(f"two {image} containers on one Redis: registered on A, {len(results)} frames streamed on B, "
              f"deleted on B, NOT_FOUND on A: {'ok' if ok else 'FAILED'}")
        if not ok:
            raise SystemExit("replicas: smoke test failed")
    finally:
        subprocess.run([ENGINE, "rm", "-f", *names], capture_output=True)
        redis.kill()
        redis.wait()


if __name__ == "__main__":
    images = sys.argv[1:] or ["localhost/stylecast:edge"]
    for image in images:
        smoke(image)
    if ENGINE == "podman":
        kube_play(images[0])
    replicas(images[0])
