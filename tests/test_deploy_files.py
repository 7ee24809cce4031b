"""Deployment recipes and README.md against the real code.

No Docker engine or cluster runs here, so the Dockerfile, compose file and Kubernetes
manifests are checked statically against what they drive: their ``stylecast serve`` command
lines go through the real CLI parser and ``load_config`` (with the ConfigMap's TOML and the
environment a pod would get), their ports and probes against the server's config and health
service names. The image's HEALTHCHECK command runs against a real server, and a wheel is
built from the Docker build context that ``.dockerignore`` lets through. README examples run
against a real server; its make targets, CLI flags, config table and grpcurl payloads are
checked against the Makefile, the CLI, ``ServerConfig`` and the proto.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tomllib
import typer
import yaml
from conftest import REPO, encoded, picture
from google.protobuf import json_format
from grpc_health.v1 import health_pb2
from PIL import Image

from stylecast.backends.base import backend_names
from stylecast.client.cli import app
from stylecast.server.app import SERVICE
from stylecast.server.config import ConfigError, ServerConfig, load_config
from stylecast.v1 import stylecast_pb2 as pb

DOCKERFILE = REPO / "deploy" / "docker" / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
COMPOSE = REPO / "deploy" / "compose" / "docker-compose.yml"
K8S = REPO / "deploy" / "k8s"
README = REPO / "README.md"
DEFAULTS = ServerConfig()

needs_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None,
                                   reason="kubectl not installed (renders the kustomize overlays offline)")


# ----------------------------------------------------------------------------- the real CLI

def cli_command(argv: list[str]):
    """(click command, its context) for ``stylecast ...`` argv, parsed by the real CLI."""
    assert argv[0] == "stylecast" or argv[0].endswith("/stylecast"), argv
    command = typer.main.get_command(app)
    ctx = command.make_context("stylecast", [], resilient_parsing=True)
    args = list(argv[1:])
    while hasattr(command, "get_command"):
        name = args.pop(0)
        sub = command.get_command(ctx, name)
        assert sub is not None, f"no command {name!r} in {argv}"
        command = sub
        ctx = command.make_context(name, [], parent=ctx, resilient_parsing=True)
    return command, args


def serve_flags(argv: list[str]) -> tuple[dict, str | None]:
    """The flags ``stylecast serve`` hands to ``server.app.main`` and its ``--config`` path."""
    command, args = cli_command(argv)
    assert command.name == "serve", argv
    params = command.make_context("serve", args).params
    config = params.pop("config")
    return params, str(config) if config else None


def option_names(command) -> set[str]:
    return {o for p in command.params for o in (*p.opts, *p.secondary_opts)}


# ----------------------------------------------------------------------------- Dockerfile

def dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """Stage name -> [(INSTRUCTION, arguments)], continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in DOCKERFILE.read_text().splitlines()
                                         if not line.lstrip().startswith("#")))
    stages: dict[str, list[tuple[str, str]]] = {"": []}
    current = ""
    for line in filter(None, (ln.strip() for ln in text.splitlines())):
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            m = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", rest.strip(), re.IGNORECASE)
            current = m.group(2) or f"stage{len(stages)}"
            stages[current] = [("FROM", m.group(1))]
        else:
            stages[current].append((word.upper(), rest.strip()))
    return stages


def stage_chain(stages, name: str) -> list[tuple[str, str]]:
    """A stage's instructions with those of the stages it is built FROM, base first."""
    base = stages[name][0][1]
    return (stage_chain(stages, base) if base in stages else []) + stages[name]


def last(chain, instruction: str) -> str:
    return [args for ins, args in chain if ins == instruction][-1]


def installed_extras(stages, name: str) -> set[str]:
    runs = " ".join(args for ins, args in stages[name] if ins == "RUN")
    found = re.findall(r'"\$1\[([a-z0-9,-]+)\]"', runs)
    assert len(found) == 1, f"stage {name} should pip install the project wheel once with extras: {runs}"
    return set(found[0].split(","))


IMAGE_HOME = Path("/home/stylecast")


def test_dockerfile_targets_install_the_right_extras_and_run_serve() -> None:
    stages = dockerfile_stages()
    assert {"wheel", "runtime", "edge", "server", "gpu"} <= set(stages)
    assert list(stages)[-1] == "edge", "edge (LiteRT only) must be the default target: the last stage"
    arg = next(args for ins, args in stages[""] if ins == "ARG" and args.startswith("PYTHON_IMAGE="))
    assert arg == "PYTHON_IMAGE=python:3.11-slim"

    extras = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    assert installed_extras(stages, "edge") == {"litert"}          # no TensorFlow on the edge image
    assert installed_extras(stages, "server") == {"litert", "tf", "onnx"}
    gpu = installed_extras(stages, "gpu")
    assert "gpu" in gpu and "onnx" not in gpu, "onnxruntime and onnxruntime-gpu must not share one image"
    assert (installed_extras(stages, "edge") | installed_extras(stages, "server") | gpu) <= extras

    for target in ("edge", "server", "gpu"):
        chain = stage_chain(stages, target)
        assert chain[0] == ("FROM", "${PYTHON_IMAGE}")
        user = last(chain, "USER")
        uid = user.split(":")[0]
        assert uid.isdigit() and int(uid) != 0, f"{target}: numeric non-root USER (runAsNonRoot needs it)"
        exposed = {int(p) for p in last(chain, "EXPOSE").split()}
        assert exposed == {DEFAULTS.port, DEFAULTS.metrics_port}
        cmd = json.loads(last(chain, "CMD"))
        flags, config_path = serve_flags(cmd)
        assert load_config(flags, {}, config_path).port == DEFAULTS.port
        assert "/tmp/wheels/stylecast-*.whl" in " ".join(a for i, a in stages[target] if i == "RUN")

    runtime = " ".join(args for ins, args in stages["runtime"] if ins == "RUN")
    assert "--uid 10001" in runtime and str(IMAGE_HOME / ".stylecast") in runtime
    assert last(stages["runtime"], "WORKDIR") == str(IMAGE_HOME)


def healthcheck() -> tuple[list[str], dict[str, str]]:
    """The HEALTHCHECK's exec-form command and its --options."""
    args = last(dockerfile_stages()["runtime"], "HEALTHCHECK")
    options = dict(re.findall(r"--([a-z-]+)=(\S+)", args))
    command = json.loads(args[args.index("CMD") + 3:])
    return command, options


async def run_healthcheck(port: int) -> tuple[int, str]:
    command, _ = healthcheck()
    assert command[0] == "python"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *command[1:], env=os.environ | {"STYLECAST_PORT": str(port)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode()


async def test_image_healthcheck_follows_the_servers_grpc_health(server) -> None:
    command, options = healthcheck()
    assert f"service='{SERVICE}'" in command[-1]
    rpc_timeout = float(re.search(r"timeout=(\d+(?:\.\d+)?)\)", command[-1]).group(1))
    assert rpc_timeout < float(options["timeout"].rstrip("s")), "the RPC must time out before Docker kills it"

    code, out = await run_healthcheck(server.port)
    assert code == 0, out
    await server.health.set(SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)   # draining
    code, out = await run_healthcheck(server.port)
    assert code == 1, out
    await server.stop(1.0)
    code, out = await run_healthcheck(server.port)
    assert code == 1 and "UNAVAILABLE" in out, out


# ----------------------------------------------------------------------------- build context

def dockerignore_rules() -> list[tuple[bool, re.Pattern]]:
    """(re-include?, regex) per .dockerignore line, Docker's matching (** = any dirs)."""
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        out, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out, i = out + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                out, i = out + ".*", i + 2
            elif pattern[i] == "*":
                out, i = out + "[^/]*", i + 1
            elif pattern[i] == "?":
                out, i = out + "[^/]", i + 1
            else:
                out, i = out + re.escape(pattern[i]), i + 1
        rules.append((negate, re.compile(out + "$")))
    return rules


def ignored(rel: str, rules) -> bool:
    """Docker: a rule matching the path or any parent decides; the last matching rule wins."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    result = False
    for negate, rx in rules:
        if any(rx.match(p) for p in prefixes):
            result = not negate
    return result


def build_context(dest: Path) -> set[str]:
    """Copy what ``docker build`` would send (the repo filtered by .dockerignore) to ``dest``."""
    rules = dockerignore_rules()
    reincluded = [rx.pattern for neg, rx in rules if neg]
    sent = set()
    for root, dirs, files in os.walk(REPO):
        rel_root = Path(root).relative_to(REPO).as_posix()
        rel_root = "" if rel_root == "." else rel_root + "/"
        dirs[:] = [d for d in dirs if not (ignored(rel_root + d, rules) and not any(
            p.startswith(re.escape(rel_root + d + "/")) for p in reincluded))]
        for f in files:
            rel = rel_root + f
            if not ignored(rel, rules):
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(Path(root) / f, dest / rel)
                sent.add(rel)
    return sent


def test_wheel_built_from_the_docker_context_holds_the_server(tmp_path) -> None:
    pytest.importorskip("setuptools", minversion="77", reason="the wheel build needs setuptools >= 77 (dev extra)")
    context = tmp_path / "context"
    sent = build_context(context)
    for heavy in (".git/", ".venv/", "runs/", "tests/", "model/checkpoints/", "deploy/"):
        assert not any(p.startswith(heavy) for p in sent), f"{heavy} must stay out of the build context"
    assert not any("__pycache__" in p for p in sent)
    for ins, args in dockerfile_stages()["wheel"]:
        if ins == "COPY":
            for src in args.split()[:-1]:
                assert (context / src).exists(), f"COPY {src}: not in the build context"

    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                           "--wheel-dir", str(tmp_path / "wheels"), str(context)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [wheel] = (tmp_path / "wheels").glob("stylecast-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = next(zf.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    for module in ("stylecast/v1/stylecast_pb2.py", "stylecast/v1/stylecast_pb2_grpc.py",
                   "stylecast/v1/stylecast.proto", "stylecast/server/app.py", "stylecast/backends/litert.py",
                   "stylecast/client/cli.py", "stylecast/backends/package.py"):
        assert module in names, module
    assert re.search(r"^stylecast = stylecast\.client\.cli:app$", entry_points, re.MULTILINE)
    builtin = REPO / "model" / "builtin"
    shipped = [p for p in builtin.rglob("*") if p.is_file() and "__pycache__" not in p.parts] \
        if builtin.is_dir() else []
    for path in shipped:  # the built-in model must travel inside the image
        assert f"stylecast/model/builtin/{path.relative_to(builtin).as_posix()}" in names, path


# ----------------------------------------------------------------------------- compose

def test_compose_builds_a_dockerfile_target_and_keeps_styles_on_its_volume(monkeypatch) -> None:
    service = yaml.safe_load(COMPOSE.read_text())["services"]["stylecast"]
    build = service["build"]
    context = (COMPOSE.parent / build["context"]).resolve()
    assert context == REPO and (context / build["dockerfile"]).resolve() == DOCKERFILE
    assert build["target"] in dockerfile_stages()

    flags, config_path = serve_flags(service["command"])
    monkeypatch.setenv("HOME", str(IMAGE_HOME))   # the image user's home: the default styles_db lives there
    config = load_config(flags, {}, config_path)
    mounts = dict(reversed(v.split(":")[:2]) for v in service["volumes"])
    assert str(Path(config.styles_db).parent) in mounts, "styles.db must be on a volume"
    assert f"{config.port}:{config.port}" in service["ports"]


# ----------------------------------------------------------------------------- Kubernetes

def k8s_objects(*files: Path) -> list[dict]:
    return [doc for f in files for doc in yaml.safe_load_all(f.read_text()) if doc]


def by_kind(objects: list[dict], kind: str) -> dict:
    [obj] = [o for o in objects if o["kind"] == kind]
    return obj


def base_objects() -> list[dict]:
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    return k8s_objects(*(K8S / "base" / r for r in kustomization["resources"]))


def render(overlay: Path) -> list[dict]:
    proc = subprocess.run(["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def container(objects: list[dict]) -> dict:
    [c] = by_kind(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return c


def service_link_env(objects: list[dict]) -> dict[str, str]:
    """The docker-link variables Kubernetes injects for each Service unless enableServiceLinks is false."""
    env = {}
    for svc in (o for o in objects if o["kind"] == "Service"):
        name = svc["metadata"]["name"].upper().replace("-", "_")
        first = svc["spec"]["ports"][0]
        env[f"{name}_SERVICE_HOST"] = "10.0.0.10"
        env[f"{name}_SERVICE_PORT"] = str(first["port"])
        env[f"{name}_PORT"] = f"tcp://10.0.0.10:{first['port']}"
        for port in svc["spec"]["ports"]:
            env[f"{name}_SERVICE_PORT_{port['name'].upper()}"] = str(port["port"])
            env[f"{name}_PORT_{port['port']}_TCP"] = f"tcp://10.0.0.10:{port['port']}"
            env[f"{name}_PORT_{port['port']}_TCP_PORT"] = str(port["port"])
    return env


def pod_config(objects: list[dict], tmp_path: Path) -> ServerConfig:
    """``load_config`` exactly as the pod runs it: its command, env and the mounted ConfigMap."""
    pod = by_kind(objects, "Deployment")["spec"]["template"]["spec"]
    c = container(objects)
    flags, config_path = serve_flags(c["command"] + c.get("args", []))
    mount = next(m for m in c["volumeMounts"] if config_path.startswith(m["mountPath"] + "/"))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    cm = next(o for o in objects if o["kind"] == "ConfigMap"
              and o["metadata"]["name"] == volume["configMap"]["name"])
    local = tmp_path / "stylecast.toml"
    local.write_text(cm["data"][Path(config_path).name])
    env = {e["name"]: e["value"] for e in c.get("env", [])}
    if pod.get("enableServiceLinks", True):
        env |= service_link_env(objects)
    return load_config(flags, env, local)


def test_k8s_pod_runs_serve_with_the_configmap_and_no_service_links(tmp_path) -> None:
    objects = base_objects()
    pod = by_kind(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["enableServiceLinks"] is False
    with pytest.raises(ConfigError):   # why: the injected STYLECAST_* variables would stop the server
        load_config({}, service_link_env(objects))
    config = pod_config(objects, tmp_path)
    c = container(objects)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"grpc": config.port, "metrics": config.metrics_port}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["grpc"]["port"] == config.port, probe
        assert c[probe]["grpc"].get("service", "") in ("", SERVICE), probe
    assert c["readinessProbe"]["grpc"]["service"] == SERVICE
    meta = by_kind(objects, "Deployment")["spec"]["template"]["metadata"]
    assert meta["annotations"]["prometheus.io/port"] == str(config.metrics_port)
    assert meta["annotations"]["prometheus.io/path"] == "/metrics"
    assert pod["terminationGracePeriodSeconds"] > config.grace_s
    assert config.workers * config.threads <= 2, "the edge profile is sized for 2 cores"


def test_k8s_styles_db_lives_on_the_claim_with_one_replica(tmp_path) -> None:
    objects = base_objects()
    deployment = by_kind(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    config = pod_config(objects, tmp_path)
    mount = next(m for m in container(objects)["volumeMounts"]
                 if str(Path(config.styles_db).parent) == m["mountPath"])
    assert not mount.get("readOnly", False)
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    pvc = by_kind(objects, "PersistentVolumeClaim")
    assert volume["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    # SQLite: one writer. A second replica or a rolling update would share the file.
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
    uid = int(last(stage_chain(dockerfile_stages(), "edge"), "USER").split(":")[0])
    security = pod["securityContext"]
    assert security["runAsUser"] == uid and security["fsGroup"] == uid and security["runAsNonRoot"] is True
    # a read-only root file system: everything the server writes must be on a writable mount
    assert container(objects)["securityContext"]["readOnlyRootFilesystem"] is True
    writable = [m["mountPath"] for m in container(objects)["volumeMounts"] if not m.get("readOnly")]
    for path in (Path(config.styles_db), config.upload_root, Path("/tmp")):
        assert any(path.is_relative_to(w) for w in writable), f"{path} is not on a writable volume"


def test_k8s_service_and_monitor_reach_the_named_ports() -> None:
    objects = base_objects()
    pod_template = by_kind(objects, "Deployment")["spec"]["template"]
    service = by_kind(objects, "Service")
    assert service["spec"]["selector"].items() <= pod_template["metadata"]["labels"].items()
    assert by_kind(objects, "Deployment")["spec"]["selector"]["matchLabels"].items() \
        <= pod_template["metadata"]["labels"].items()
    container_ports = {p["name"]: p["containerPort"] for p in container(objects)["ports"]}
    service_ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert set(service_ports) == {"grpc", "metrics"}
    for name, port in service_ports.items():
        assert port["targetPort"] in container_ports and port["port"] == container_ports[port["targetPort"]]
    monitor = by_kind(k8s_objects(K8S / "servicemonitor.yaml"), "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"


def test_every_kustomization_names_files_that_exist_and_all_yaml_parses() -> None:
    for kustomization in K8S.rglob("kustomization.yaml"):
        spec = yaml.safe_load(kustomization.read_text())
        for entry in spec.get("resources", []) + [p["path"] for p in spec.get("patches", [])]:
            assert (kustomization.parent / entry).exists(), f"{kustomization}: {entry}"
    files = [*(REPO / "deploy").rglob("*.yml"), *(REPO / "deploy").rglob("*.yaml")]
    assert len(files) >= 10
    for f in files:
        assert list(yaml.safe_load_all(f.read_text())), f


@needs_kubectl
def test_k8s_profiles_render_with_their_image_targets(tmp_path) -> None:
    stages = dockerfile_stages()
    edge, gpu = render(K8S), render(K8S / "gpu")
    for objects, target in ((edge, "edge"), (gpu, "gpu")):
        image = container(objects)["image"]
        assert image.rsplit(":", 1)[1] == target and target in stages, image
    assert pod_config(edge, tmp_path).backend == "auto"   # the edge image has LiteRT only

    config = pod_config(gpu, tmp_path)
    assert config.backend == "tensorrt" and "gpu" in installed_extras(stages, "gpu")
    c = container(gpu)
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    from stylecast.backends.engines import DEFAULT_CACHE_ROOT   # the engines need a writable cache
    cache = IMAGE_HOME / DEFAULT_CACHE_ROOT.relative_to("~")
    assert any(cache.is_relative_to(m["mountPath"]) and not m.get("readOnly") for m in c["volumeMounts"])
    # the overlay changes only what a GPU needs; the rest of the pod is the base's
    edge_c = container(edge)
    assert c["ports"] == edge_c["ports"] and c["readinessProbe"] == edge_c["readinessProbe"]
    assert by_kind(gpu, "ConfigMap") == by_kind(edge, "ConfigMap")


# ----------------------------------------------------------------------------- README

def readme_blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), re.DOTALL)


def makefile_targets() -> set[str]:
    return set(re.findall(r"^([a-z][a-z-]*):", (REPO / "Makefile").read_text(), re.MULTILINE))


def section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def test_readme_make_targets_exist() -> None:
    named = set(re.findall(r"\bmake ([a-z][a-z-]*)", README.read_text()))
    assert {"serve", "test", "train", "eval-model", "bench-model"} <= named
    assert named <= makefile_targets(), named - makefile_targets()


def test_readme_cli_lines_use_real_commands_and_flags() -> None:
    lines = [ln.split("  #")[0] for block in readme_blocks("sh") for ln in block.splitlines()
             if re.match(r"(\.venv/bin/)?stylecast ", ln)]
    assert len(lines) >= 10
    seen = set()
    for line in lines:
        command, args = cli_command(shlex.split(line))
        seen.add(command.name)
        unknown = {a.split("=")[0] for a in args if a.startswith("-")} - option_names(command)
        assert not unknown, f"{line}: {unknown}"
    assert {"image", "video", "add", "list", "rm", "bench", "serve", "export", "import-magenta"} <= seen
    serve_command, _ = cli_command(["stylecast", "serve"])
    config_text = section("Configuration")
    for opt in option_names(serve_command) - {"--help"}:
        assert f"`{opt}`" in config_text, f"serve flag {opt} missing from the Configuration section"


def toml_literal(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def test_readme_config_table_lists_every_field_with_its_default(tmp_path) -> None:
    rows = dict(re.findall(r"^\| `(\w+)` \| `([^`]*)` \|", section("Configuration"), re.MULTILINE))
    fields = {f.name: f.default for f in dataclasses.fields(ServerConfig)}
    assert set(rows) == set(fields)
    for name, default in fields.items():
        assert rows[name] == toml_literal(default), name
    example = tmp_path / "stylecast.toml"
    example.write_text(readme_blocks("toml")[0])
    config = load_config({}, {}, example)   # the README's example file is accepted as written
    assert config.max_streams == tomllib.loads(example.read_text())["server"]["max_streams"]


def test_readme_backends_table_names_every_backend() -> None:
    rows = set(re.findall(r"^\| `([a-z][\w-]*)`", section("Backends"), re.MULTILINE))
    assert rows == set(backend_names()) | {"auto"}


def test_readme_grpcurl_payloads_parse_as_their_requests() -> None:
    services = {**{s.full_name: s for s in pb.DESCRIPTOR.services_by_name.values()},
                **{s.full_name: s for s in health_pb2.DESCRIPTOR.services_by_name.values()}}
    classes = {**{n: getattr(pb, n) for n in pb.DESCRIPTOR.message_types_by_name},
               "grpc.health.v1.HealthCheckRequest": health_pb2.HealthCheckRequest}
    text = "\n".join(readme_blocks("sh"))
    calls = re.findall(r"grpcurl -plaintext (?:-d (@|'[^']*') )?localhost:50051 ([\w.]+)/(\w+)", text)
    assert len(calls) >= 5
    for data, service, method in calls:
        descriptor = services[service].methods_by_name[method].input_type
        cls = classes.get(descriptor.full_name) or getattr(pb, descriptor.name)
        if data == "@":  # the printf template piped in: fill its %s with a style id and base64 bytes
            template = re.search(r"printf '([^']*)'", text).group(1)
            data = "'" + template.replace("%s", "abc", 1).replace("%s", "AAEC", 1) + "'"
        json_format.Parse(data.strip("'"), cls())


def photo_files(folder: Path) -> tuple[int, int]:
    size = (96, 64)
    (folder / "photo.jpg").write_bytes(encoded(picture(*size, seed=1), "JPEG", quality=95))
    (folder / "starry.jpg").write_bytes(encoded(picture(80, 80, seed=2), "JPEG", quality=95))
    (folder / "wave.jpg").write_bytes(encoded(picture(72, 90, seed=3), "JPEG", quality=95))
    return size


async def test_readme_python_examples_run_against_a_server(server, tmp_path) -> None:
    blocks = readme_blocks("python")
    assert len(blocks) >= 3
    size = photo_files(tmp_path)
    for i, code in enumerate(blocks):
        assert "localhost:50051" in code, f"example {i} should name its target"
        script = tmp_path / f"example_{i}.py"
        script.write_text(code.replace("localhost:50051", f"127.0.0.1:{server.port}"))
        proc = await asyncio.create_subprocess_exec(sys.executable, str(script), cwd=tmp_path,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, f"README python example {i} failed:\n{code}\n{out.decode()}"
    for name in ("out.jpg", "blend.png"):
        with Image.open(tmp_path / name) as img:
            assert img.size == size, name
            assert np.asarray(img.convert("RGB")).std() > 1.0
