"""The two endpoints of the model contract, as a package artifact describes them.

Each artifact's ``endpoints`` (see :mod:`stylecast.backends.package`) names, per
endpoint, the file, an optional signature, the model's input names for the
contract inputs (``image``; ``content`` and ``style``), the output name and an
optional ``fixed_hw`` for files baked to one content size.
"""

from __future__ import annotations

from dataclasses import dataclass

from stylecast.backends.package import Artifact, PackageError

# contract endpoint -> the contract input names it needs
CONTRACT_INPUTS = {"predict_style": ("image",), "stylize": ("content", "style")}


@dataclass(frozen=True)
class Endpoint:
    name: str                           # "predict_style" | "stylize"
    file: str | None                    # relative path in the package (None: the artifact root)
    signature: str | None               # signature key, or None to bind tensors by name
    inputs: dict[str, str]              # contract input name -> model input name
    output: str                         # model output name
    fixed_hw: tuple[int, int] | None    # content size the file is baked to


def endpoints(artifact: Artifact) -> dict[str, Endpoint]:
    """Parse and check both endpoints of ``artifact``; :class:`PackageError` if incomplete."""
    out = {}
    for name, needed in CONTRACT_INPUTS.items():
        spec = artifact.endpoints.get(name)
        if not isinstance(spec, dict):
            raise PackageError(f"artifact {artifact.format!r} has no {name!r} endpoint")
        inputs = spec.get("inputs") or {}
        missing = [k for k in needed if k not in inputs]
        if missing or not spec.get("output"):
            raise PackageError(f"artifact {artifact.format!r} endpoint {name!r} lacks "
                               f"{'inputs ' + ', '.join(missing) if missing else 'an output'}")
        hw = spec.get("fixed_hw")
        if hw is not None and (len(hw) != 2 or min(int(v) for v in hw) <= 0):
            raise PackageError(f"artifact {artifact.format!r} endpoint {name!r}: bad fixed_hw {hw!r}")
        out[name] = Endpoint(name, spec.get("file"), spec.get("signature"),
                             {k: str(inputs[k]) for k in needed}, str(spec["output"]),
                             (int(hw[0]), int(hw[1])) if hw is not None else None)
    return out
