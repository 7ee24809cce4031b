"""Model names, versions and manifest paths from clients never leave the model roots: absolute
names, ``../``, a path in the version and a symlink out of the root are refused with
INVALID_ARGUMENT, and nothing is deleted or loaded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import grpc
import pytest
from conftest import CHANNEL_OPTIONS, status_of

from stylecast.backends.package import PackageError, parse_manifest, safe_relpath
from stylecast.v1 import model_admin_pb2 as apb
from stylecast.v1 import model_admin_pb2_grpc as apb_grpc

pytestmark = pytest.mark.integration


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def victim(tmp_path: Path, tiny_models_dir: Path) -> Path:
    """A folder outside every model root holding a valid package copy ``victim/tiny/1``."""
    folder = tmp_path / "victim"
    shutil.copytree(tiny_models_dir / "tiny" / "1", folder / "tiny" / "1")
    (folder / "v").mkdir()
    (folder / "v" / "precious.txt").write_text("keep me")
    return folder


async def test_traversal_attempts_are_invalid_argument_and_change_nothing(server, victim, tmp_path):
    uploads = tmp_path / "uploads"
    uploads.mkdir(exist_ok=True)
    (uploads / "evil").symlink_to(victim)                    # a symlinked model name
    (uploads / "tiny").mkdir()
    (uploads / "tiny" / "9").symlink_to(victim / "tiny" / "1")  # a symlinked version
    before = snapshot(victim)
    attempts = [
        (str(victim), "v"), (str(victim / "tiny"), "1"), ("../victim", "v"), ("tiny", "../../victim/v"),
        ("tiny", "1/../../victim"), ("evil", "v"), ("evil", "tiny"), ("tiny", "9"), (".uploads", "x"),
        ("tiny\0", "1"), ("", "1"), ("x" * 65, "1"),
    ]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=CHANNEL_OPTIONS) as channel:
        admin = apb_grpc.ModelAdminStub(channel)
        for name, version in attempts:
            unload = await status_of(admin.UnloadModel(apb.UnloadModelRequest(name=name, version=version,
                                                                               delete_files=True)))
            assert unload[0] == grpc.StatusCode.INVALID_ARGUMENT, (name, version, unload)
            if name:
                load = await status_of(admin.LoadModel(apb.LoadModelRequest(name=name, version=version)))
                assert load[0] == grpc.StatusCode.INVALID_ARGUMENT, (name, version, load)
                watch = admin.WatchModel(apb.WatchModelRequest(name=name, version=version))
                assert (await status_of(watch.read()))[0] == grpc.StatusCode.INVALID_ARGUMENT
        # the serving model is untouched, nothing was deleted, nothing outside was loaded
        models = (await admin.ListModels(apb.ListModelsRequest())).models
    assert snapshot(victim) == before
    package = server.engine.slot.model.package
    assert package.key == "tiny:1" and package.path.is_relative_to(
        Path(server.engine.config.models_dir))
    assert all(m.name != "evil" and not (m.name == "tiny" and m.version == "9") for m in models)


def test_manifest_paths_and_names_are_single_safe_segments(tiny_models_dir):
    manifest = json.loads((tiny_models_dir / "tiny" / "1" / "manifest.json").read_text())
    for bad in ("/etc/passwd", "a/../../b", "a\0b", "a\\b", "./a", "", "a//b", "x" * 600):
        with pytest.raises(PackageError):
            safe_relpath(bad)
    for field, value in (("name", "../up"), ("name", "a/b"), ("version", "."), ("version", "1\0"),
                         ("name", ".hidden"), ("style_dim", 10 ** 9), ("style_dim", float("inf")),
                         ("artifacts", []), ("name", "x" * 65)):
        with pytest.raises(PackageError):
            parse_manifest(manifest | {field: value}, Path("/nonexistent"))
