"""The built-in style model: networks, distillation, export and model packages.

Importing this package is cheap: Keras is imported only by the modules that build,
train, time or export networks (``networks``, ``teacher_port``, ``recipe``, ``distill``,
``export``, ``candidates``), TensorFlow only by ``distill``, ``export`` and ``mobile`` (the v5
recipe runs on any Keras backend).
"""

from pathlib import Path

BUILTIN_DIR = Path(__file__).parent / "builtin"
# The built-in tiers (model cards in MODEL_CARD.md): the real-time one, served when no model is
# named, and the quality one (``stylecast serve --model stylecast-quality``).
BUILTIN_MODEL = "stylecast-small"
QUALITY_MODEL = "stylecast-quality"
