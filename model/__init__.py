"""The built-in style model: networks, distillation, export and model packages.

Importing this package is cheap: TensorFlow is imported only by the modules that
build, train or export networks (``networks``, ``distill``, ``export``).
"""

from pathlib import Path

BUILTIN_DIR = Path(__file__).parent / "builtin"
