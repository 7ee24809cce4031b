"""Training/evaluation data from ``../shared/assets`` and the fixed held-out split.

Nothing here is ever committed: images are read from the assets folder at run time.
Held-out styles and every ``content/val`` image are excluded from every training step.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

# Fixed held-out style images (file names in assets/styles/): evaluation only.
HELDOUT_STYLES = (
    "candy.jpg",
    "great_wave_hokusai.jpg",
    "starry_night_van_gogh.jpg",
    "the_scream_munch.jpg",
    "udnie_picabia.jpg",
    "tfex_style10.jpg",
    "zigzag_colorful.jpg",
)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def assets_dir() -> Path:
    """``STYLECAST_ASSETS`` or ``<repo>/../shared/assets``."""
    env = os.environ.get("STYLECAST_ASSETS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "assets"


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def train_styles(root: Path) -> list[Path]:
    return [p for p in _images(root / "styles") if p.name not in HELDOUT_STYLES]


def heldout_styles(root: Path) -> list[Path]:
    return [root / "styles" / n for n in HELDOUT_STYLES]


def train_content(root: Path) -> list[Path]:
    return _images(root / "content" / "train")


def val_content(root: Path) -> list[Path]:
    return _images(root / "content" / "val")


def training_images(root: Path) -> list[Path]:
    """Every image a training step may read: train photos and train styles."""
    return train_content(root) + train_styles(root)


def load_rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))
