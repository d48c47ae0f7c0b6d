"""Generated photo-like image folders, for benchmarks and checks that need real JPEG decoding.

Smooth random colour fields with noise compress and decode like photographs (unlike pure
noise or flat colour), at a realistic size (500x375 by default), in torchvision's
ImageFolder layout: ``root/train/<class>/<i>.jpg``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_jpeg_folder(root: Path, images: int, classes: int = 4,
                      size: tuple[int, int] = (500, 375), seed: int = 0) -> Path:
    """Write ``images`` JPEGs round-robin over ``classes`` class dirs under ``root/train``."""
    rng = np.random.default_rng(seed)
    width, height = size
    for i in range(images):
        folder = Path(root) / "train" / f"c{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
        field = np.asarray(Image.fromarray(base).resize((width, height), Image.BICUBIC),
                           np.int16)
        noisy = np.clip(field + rng.integers(-20, 20, field.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(folder / f"{i}.jpg", quality=90)
    return Path(root)
