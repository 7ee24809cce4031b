"""The committed generated code is exactly what ``make proto`` produces from the .proto."""

from __future__ import annotations

from pathlib import Path

import pytest

grpc_tools = pytest.importorskip("grpc_tools", reason="grpcio-tools (the dev extra) regenerates the code")
from grpc_tools import protoc  # noqa: E402

PROTOS = Path(__file__).resolve().parents[1] / "protos"


def test_generated_code_matches_the_proto(tmp_path):
    sources = sorted(PROTOS.glob("stylecast/v1/*.proto"))
    assert sources
    include = Path(grpc_tools.__file__).parent / "_proto"
    rc = protoc.main(["protoc", f"-I{PROTOS}", f"-I{include}", f"--python_out={tmp_path}",
                      f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}",
                      *(str(p.relative_to(PROTOS)) for p in sources)])
    assert rc == 0
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert generated
    for rel in generated:
        committed = PROTOS / rel
        assert committed.is_file(), f"{rel} is generated but not committed: run make proto"
        assert committed.read_bytes() == (tmp_path / rel).read_bytes(), f"{rel} is stale: run make proto"
