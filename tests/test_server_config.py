"""Config precedence (flags > env > TOML > defaults), validation, and error mapping."""

from __future__ import annotations

import json
import shutil

import grpc
import pytest

from stylecast.backends.base import AUTO_ORDER, BackendError, unavailable
from stylecast.model import BUILTIN_DIR, BUILTIN_MODEL, QUALITY_MODEL
from stylecast.server.config import ConfigError, ServerConfig, load_config
from stylecast.server.errors import FailedPrecondition, InvalidArgument, NotFound, code_number, to_status
from stylecast.server.packages import choose_backend, find_package, layout, malloc_arenas


def test_precedence_flags_over_env_over_toml(tmp_path):
    toml = tmp_path / "stylecast.toml"
    toml.write_text('[server]\nport = 7000\nworkers = 3\nbackend = "savedmodel"\nxla = true\n')
    env = {"STYLECAST_WORKERS": "4", "STYLECAST_BACKEND": "litert", "HOME_UNRELATED": "x"}
    cfg = load_config({"backend": "onnx", "threads": None}, env, toml)
    assert (cfg.port, cfg.workers, cfg.backend, cfg.xla, cfg.threads) == (7000, 4, "onnx", True, 0)
    assert cfg.style_store.startswith("sqlite:///") and cfg.sqlite_path.name == "styles.db"  # resolved default
    cfg = load_config({}, {"STYLECAST_CONFIG": str(toml)})
    assert cfg.port == 7000
    assert load_config({}, {}) == ServerConfig(style_store=load_config({}, {}).style_store) == ServerConfig()
    # The model tools' STYLECAST_ASSETS (set by whoever also trains) is not a server setting.
    assert load_config({}, {"STYLECAST_ASSETS": str(tmp_path)}) == load_config({}, {})


def test_bad_settings_are_named(tmp_path):
    with pytest.raises(ConfigError, match="unknown setting 'prot'"):
        load_config({"prot": 1}, {})
    with pytest.raises(ConfigError, match="workers: expected int"):
        load_config({}, {"STYLECAST_WORKERS": "many"})
    with pytest.raises(ConfigError, match="threads and workers must be >= 0"):
        load_config({"workers": -1}, {})
    with pytest.raises(ConfigError, match="not found"):
        load_config({}, {}, tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="xla: expected bool"):
        load_config({}, {"STYLECAST_XLA": "maybe"})
    with pytest.raises(ConfigError, match="malloc_arenas must be >= 0"):
        load_config({}, {"STYLECAST_MALLOC_ARENAS": "-1"})
    with pytest.raises(ConfigError, match="malloc_trim_s must be >= 0"):
        load_config({}, {"STYLECAST_MALLOC_TRIM_S": "-5"})
    # Values that used to pass validation and fail later, at startup, with a traceback.
    for env, message in [({"STYLECAST_STALL_TIMEOUT_S": "nan"}, "stall_timeout_s: expected a finite float"),
                         ({"STYLECAST_GRACE_S": "inf"}, "grace_s: expected a finite float"),
                         ({"STYLECAST_KEEPALIVE_TIMEOUT_S": "0"}, "keepalive_time_s and keepalive_timeout_s"),
                         ({"STYLECAST_LOG_LEVEL": "verbose"}, "log_level must be DEBUG, INFO"),
                         ({"STYLECAST_STYLE_STORE": "redis://cache:abc/0"}, "Port could not be cast"),
                         ({"STYLECAST_STYLE_STORE": "redis://cache:6379/styles"}, "database 'styles' is not a number"),
                         ({"STYLECAST_STYLE_STORE": "redis://cache:6379/0?db=x"}, "Invalid value for 'db'")]:
        with pytest.raises(ConfigError, match=message):
            load_config({}, env)
    assert load_config({}, {"STYLECAST_LOG_LEVEL": "debug", "STYLECAST_STYLE_STORE": "rediss://:pw@cache:6380/2"}
                       ).style_store == "rediss://:pw@cache:6380/2"


def test_one_mapping_for_errors(caplog):
    assert to_status(NotFound("style x")) == (grpc.StatusCode.NOT_FOUND, "style x")
    assert to_status(InvalidArgument("bad"))[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert to_status(BackendError("boom"))[0] == grpc.StatusCode.INTERNAL
    code, message = to_status(ZeroDivisionError("secret detail"))
    assert code == grpc.StatusCode.INTERNAL and "secret" not in message
    assert "ZeroDivisionError" in caplog.text  # the traceback is logged
    assert code_number(grpc.StatusCode.INVALID_ARGUMENT) == 3


def test_auto_layout_fills_the_cpus_per_backend(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert layout(ServerConfig(), "litert") == (8, 1)          # one single-threaded interpreter per core
    assert layout(ServerConfig(), "savedmodel") == (1, 8)      # one session over every core
    assert layout(ServerConfig(threads=2), "litert") == (4, 2)
    assert layout(ServerConfig(workers=2), "onnx") == (2, 4)
    assert layout(ServerConfig(workers=3, threads=5), "litert") == (3, 5)  # explicit wins, even oversubscribed


def test_one_malloc_arena_when_only_litert_serves():
    assert malloc_arenas(ServerConfig(backend="litert")) == 1
    assert malloc_arenas(ServerConfig(backend="savedmodel")) == 0           # glibc's default
    assert malloc_arenas(ServerConfig(backend="onnx", malloc_arenas=2)) == 2  # explicit wins
    assert malloc_arenas(ServerConfig(load_order="litert:tflite-int8,savedmodel:savedmodel")) == 0
    assert malloc_arenas(ServerConfig(load_order="litert:tflite-int8,litert:tflite-fp32")) == 1
    auto = next(n for n in AUTO_ORDER if not unavailable(n))
    assert malloc_arenas(ServerConfig()) == (1 if auto == "litert" else 0)


def test_package_and_backend_selection(tiny_models_dir, tmp_path):
    pkg = find_package(tiny_models_dir)
    assert (pkg.name, pkg.version) == ("tiny", "1")
    models = tmp_path / "models"
    def copy(name: str, version: str) -> None:  # the manifest names its folder's model and version
        folder = shutil.copytree(tiny_models_dir / "tiny" / "1", models / name / version)
        manifest = json.loads((folder / "manifest.json").read_text())
        (folder / "manifest.json").write_text(json.dumps(manifest | {"name": name, "version": version}))

    for version in ("2", "10", "9"):
        copy("tiny", version)
    assert find_package(models, "tiny").path.name == "10"  # latest by version number, not by string
    assert find_package(models, "tiny", "9").path.name == "9"
    with pytest.raises(FailedPrecondition, match="no version '3'"):
        find_package(models, "tiny", "3")
    copy("other", "1")
    with pytest.raises(FailedPrecondition, match="exactly one model"):
        find_package(models)
    # the built-in folder holds both tiers: no name (folder given or not) is the real-time tier
    assert {p.name for p in BUILTIN_DIR.iterdir() if p.is_dir()} >= {BUILTIN_MODEL, QUALITY_MODEL}
    assert find_package("").name == find_package(BUILTIN_DIR).name == BUILTIN_MODEL
    assert find_package("", QUALITY_MODEL).name == QUALITY_MODEL
    with pytest.raises(FailedPrecondition, match="'nope' not found"):
        find_package(models, "nope")
    shutil.copytree(tiny_models_dir / "tiny" / "1", models / "tiny" / "11")  # manifest.json still says 1
    with pytest.raises(FailedPrecondition, match="says tiny:1, but the folder is tiny/11; edit manifest.json"):
        find_package(models, "tiny")
    assert find_package(models, "tiny", "10").version == "10"

    assert choose_backend(ServerConfig(backend="litert"), pkg) == ("litert", "tflite-int8")
    assert choose_backend(ServerConfig(backend="savedmodel"), pkg) == ("savedmodel", "savedmodel")
    name, fmt = choose_backend(ServerConfig(backend="auto"), pkg)
    assert (name, fmt) in {("litert", "tflite-int8"), ("onnx", "onnx"), ("tensorrt", "onnx")}
    with pytest.raises(FailedPrecondition, match="cannot load format 'onnx'"):
        choose_backend(ServerConfig(backend="litert", format="onnx"), pkg)
    with pytest.raises(FailedPrecondition, match="unknown backend"):
        choose_backend(ServerConfig(backend="cuda-magic"), pkg)
