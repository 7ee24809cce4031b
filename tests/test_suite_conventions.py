"""Conventions that keep the suite passing on any x86-64 CPU, checked over the suite's own source.

A test comparing a server result with a reference it computes itself must run both through the
same functions or state a tolerance.  The usual way to break that is converting pixels by hand:
``x / 255.0`` and the server's ``x * (1/255)`` differ in the last bit for half the uint8 levels,
and whether that changes an output level depends on the CPU's kernels (it did with AVX-512 VNNI).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from stylecast.model.preprocess import to_float

TESTS = Path(__file__).resolve().parent
# "/ 255", "/ 255.0", "* 255 + 0.5": uint8 <-> float by hand instead of preprocess.to_float/to_uint8
HAND_CONVERSION = re.compile(r"/\s*255(?:\.0*)?(?![\d.])|\*\s*255(?:\.0*)?\s*\+\s*0?\.5")


def test_two_ways_to_convert_uint8_to_float_differ_in_the_last_bit() -> None:
    levels = np.arange(256, dtype=np.uint8)
    assert (levels.astype(np.float32) / 255.0 != to_float(levels)).sum() > 100


def test_tests_convert_pixels_with_the_servers_functions() -> None:
    offenders = [f"{path.name}:{number}: {line.strip()}"
                 for path in sorted(TESTS.glob("*.py")) if path.name != Path(__file__).name
                 for number, line in enumerate(path.read_text().splitlines(), 1)
                 if HAND_CONVERSION.search(line.split("#")[0])]
    assert not offenders, ("convert pixels with stylecast.model.preprocess.to_float/to_uint8 (what the "
                           "server runs), or compare with a stated tolerance:\n" + "\n".join(offenders))
