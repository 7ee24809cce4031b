"""Model package manifests: 1 MiB chunks, verification, and manifests that lie."""

from __future__ import annotations

import json
import os

import pytest

from stylecast.backends.package import CHUNK_SIZE, PackageError, load_package, write_manifest


@pytest.fixture
def pkg(tmp_path):
    root = tmp_path / "m" / "1"
    (root / "tflite").mkdir(parents=True)
    (root / "tflite" / "a.bin").write_bytes(os.urandom(CHUNK_SIZE * 2 + 123))
    (root / "sm" / "variables").mkdir(parents=True)
    (root / "sm" / "saved_model.pb").write_bytes(b"graph")
    (root / "sm" / "variables" / "v.data").write_bytes(os.urandom(50))
    ep = {"stylize": {"file": "tflite/a.bin", "inputs": {"content": "c", "style": "s"}, "output": "o"}}
    return write_manifest(root, "m", "1", 100, {"tflite-fp32": {"files": ["tflite/a.bin"], "endpoints": ep},
                                                "savedmodel": {"root": "sm", "endpoints": {}}})


def test_files_are_listed_in_1mib_chunks_and_verify(pkg):
    entry = pkg.artifact("tflite-fp32").files[0]
    assert entry.size == CHUNK_SIZE * 2 + 123 and len(entry.chunks) == 3
    assert [f.path for f in pkg.artifact("savedmodel").files] == ["sm/saved_model.pb", "sm/variables/v.data"]
    progress = []
    load_package(pkg.path).verify(progress=lambda fmt, done, total: progress.append((fmt, done, total)))
    assert progress[-1][1] == progress[-1][2]
    assert [p[1] for p in progress if p[0] == "tflite-fp32"] == [CHUNK_SIZE, 2 * CHUNK_SIZE, 2 * CHUNK_SIZE + 123]


def test_corrupt_chunk_names_file_and_chunk(pkg):
    path = pkg.path / "tflite" / "a.bin"
    raw = bytearray(path.read_bytes())
    raw[CHUNK_SIZE + 5] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(PackageError, match=r"tflite/a.bin: chunk 1 sha256 mismatch"):
        load_package(pkg.path).verify()


def test_truncated_and_missing_files(pkg):
    path = pkg.path / "tflite" / "a.bin"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(PackageError, match="size"):
        load_package(pkg.path).verify(["tflite-fp32"])
    (pkg.path / "sm" / "saved_model.pb").unlink()
    with pytest.raises(PackageError, match="missing"):
        load_package(pkg.path).verify(["savedmodel"])


@pytest.mark.parametrize("bad", ["../evil", "/etc/passwd", "a/../../b", "a//b", ""])
def test_manifest_paths_must_stay_inside_the_package(pkg, bad):
    data = json.loads((pkg.path / "manifest.json").read_text())
    data["artifacts"]["tflite-fp32"]["files"][0]["path"] = bad
    (pkg.path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(PackageError, match="unsafe path"):
        load_package(pkg.path)


def test_manifest_that_lies_about_size_or_hash(pkg):
    data = json.loads((pkg.path / "manifest.json").read_text())
    data["artifacts"]["tflite-fp32"]["files"][0]["size"] += 1
    (pkg.path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(PackageError):
        load_package(pkg.path).verify()
    data["artifacts"]["tflite-fp32"]["files"][0]["size"] -= 1
    data["artifacts"]["tflite-fp32"]["files"][0]["sha256"] = "0" * 64
    (pkg.path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(PackageError, match="sha256 mismatch"):
        load_package(pkg.path).verify()


def test_malformed_manifests(tmp_path):
    with pytest.raises(PackageError, match="no manifest.json"):
        load_package(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(PackageError, match="invalid JSON"):
        load_package(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"name": "x", "version": "1"}))
    with pytest.raises(PackageError, match="malformed"):
        load_package(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps(
        {"name": "x", "version": "1", "style_dim": 100, "artifacts": {"pytorch": {"files": []}}}))
    with pytest.raises(PackageError, match="unknown artifact format"):
        load_package(tmp_path)
