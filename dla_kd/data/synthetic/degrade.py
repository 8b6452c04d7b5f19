"""Scan degradation of a rendered page: skew, paper tone and uneven illumination, low contrast,
blur, noise/speckle, salt-and-pepper, grey-scale and JPEG artefacts.

:func:`sample_degradation` draws all parameters from the page RNG *before* the page is drawn, so
annotations can be transformed with :func:`skew_matrix` consistently with the pixels.
Images are (H, W, 3) uint8 RGB arrays.
"""

from dataclasses import dataclass
from typing import Optional, Tuple

import cv2
import numpy as np

MAX_SKEW_DEG = 1.5


@dataclass(frozen=True)
class Degradation:
    """Parameters of one page's degradation; neutral values mean "off"."""

    angle: float = 0.0  # rotation in degrees, counter-clockwise, about the page centre
    paper: Tuple[float, float, float] = (1.0, 1.0, 1.0)  # multiplicative paper tint per channel
    shading: float = 0.0  # depth (0..1) of the low-frequency illumination field
    contrast: Tuple[float, float] = (0.0, 255.0)  # output grey levels of ink black and paper white
    blur_sigma: float = 0.0  # Gaussian blur (px)
    noise_sigma: float = 0.0  # additive Gaussian noise (grey levels)
    speckle: float = 0.0  # fraction of pixels hit by dark specks
    salt_pepper: float = 0.0  # fraction of pixels set to black or white
    grey: bool = False
    jpeg_quality: Optional[int] = None
    noise_seed: int = 0


def sample_degradation(rng: np.random.Generator) -> Degradation:
    """Clean for about a third of the pages, otherwise a random mix of effects."""
    if rng.random() < 0.35:
        return Degradation()
    on = rng.random(9) < np.array([0.6, 0.5, 0.4, 0.35, 0.45, 0.3, 0.25, 0.08, 0.35])
    tint = 1.0 - rng.uniform(0.0, 0.12) * np.array([0.4, 0.7, 1.0]) if on[1] else np.ones(3)
    return Degradation(
        angle=float(rng.uniform(-MAX_SKEW_DEG, MAX_SKEW_DEG)) if on[0] else 0.0,
        paper=tuple(float(v) for v in tint),
        shading=float(rng.uniform(0.05, 0.25)) if on[2] else 0.0,
        contrast=(float(rng.uniform(20, 90)), float(rng.uniform(200, 250))) if on[3] else (0.0, 255.0),
        blur_sigma=float(rng.uniform(0.4, 0.9)) if on[4] else 0.0,
        noise_sigma=float(rng.uniform(2, 10)) if on[5] else 0.0,
        speckle=float(rng.uniform(1e-4, 1e-3)) if on[6] else 0.0,
        salt_pepper=float(rng.uniform(1e-4, 2e-3)) if on[7] else 0.0,
        grey=bool(rng.random() < 0.2),
        jpeg_quality=int(rng.integers(25, 80)) if on[8] else None,
        noise_seed=int(rng.integers(2**31)),
    )


def skew_matrix(angle: float, width: int, height: int) -> np.ndarray:
    """(2, 3) affine matrix rotating by ``angle`` degrees about the centre of a width x height page."""
    return cv2.getRotationMatrix2D((width / 2.0, height / 2.0), angle, 1.0)


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) affine ``matrix`` to (N, 2) ``points``."""
    return points @ matrix[:, :2].T + matrix[:, 2]


def degrade(image: np.ndarray, d: Degradation) -> np.ndarray:
    """The degraded copy of ``image`` under ``d``."""
    height, width = image.shape[:2]
    rng = np.random.default_rng(d.noise_seed)
    out = image
    if d.angle:
        out = cv2.warpAffine(
            out,
            skew_matrix(d.angle, width, height),
            (width, height),
            flags=cv2.INTER_LINEAR,
            borderValue=(255, 255, 255),
        )
    out = out.astype(np.float32)
    light = np.array(d.paper, np.float32)[None, None, :]
    if d.shading:
        coarse = rng.uniform(1 - d.shading, 1, size=(3, 3, 1)).astype(np.float32)
        light = light * cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)[:, :, None]
    out = out * light
    low, high = d.contrast
    out = low + out * ((high - low) / 255.0)
    if d.blur_sigma:
        out = cv2.GaussianBlur(out, (0, 0), d.blur_sigma)
    if d.noise_sigma:
        out += rng.normal(0, d.noise_sigma, size=(height, width, 1)).astype(np.float32)
    if d.speckle:
        specks = (rng.random((height, width)) < d.speckle).astype(np.float32)
        specks = cv2.dilate(specks, np.ones((2, 2), np.uint8))
        out -= specks[:, :, None] * rng.uniform(60, 160)
    if d.salt_pepper:
        hit = rng.random((height, width))
        out[hit < d.salt_pepper / 2] = 0
        out[(hit >= d.salt_pepper / 2) & (hit < d.salt_pepper)] = 255
    if d.grey:
        out[:] = out.mean(axis=2, keepdims=True)
    out = np.clip(out, 0, 255).astype(np.uint8)
    if d.jpeg_quality is not None:
        _, encoded = cv2.imencode(".jpg", out[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, d.jpeg_quality])
        out = cv2.imdecode(encoded, cv2.IMREAD_COLOR)[:, :, ::-1]
    return np.ascontiguousarray(out)
