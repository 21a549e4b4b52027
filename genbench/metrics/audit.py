"""Memorization audit: is a generator returning (near-)copies of its training images?"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from genbench.io import write_json
from genbench.sampling import save_grid

DEFINITION = (
    "fraction of samples whose distance to the nearest audited training image is at most the "
    "q-quantile of the same distance for held-out real images; fresh samples score about q, "
    "copies of training images about 1"
)


@dataclass
class Nearest:
    distance: torch.Tensor  # (n,) float64
    index: torch.Tensor  # (n,) positions in the base set


def _sq_norms(x: torch.Tensor) -> torch.Tensor:
    return (x * x).sum(1)


def nearest(
    queries: torch.Tensor, base: torch.Tensor, *, chunk: int = 4096, pixels: bool = False
) -> Nearest:
    """Nearest base row (L2) for each query row. ``pixels``: both are uint8 images,
    compared as flattened floats in [0, 1], the base converted chunk by chunk."""

    def prep(t: torch.Tensor) -> torch.Tensor:
        # Pixels: float32 (tens of thousands of images; exact copies still land within ~1e-2
        # of 0, far below any held-out distance). Features: few, so float64.
        t = t.reshape(len(t), -1)
        return t.float() / 255.0 if pixels else t.double()

    q = prep(queries)
    qn = _sq_norms(q)
    best_d = torch.full((len(q),), float("inf"), dtype=q.dtype)
    best_i = torch.zeros(len(q), dtype=torch.long)
    for s in range(0, len(base), chunk):
        b = prep(base[s : s + chunk])
        d2 = (qn[:, None] + _sq_norms(b)[None, :] - 2.0 * (q @ b.T)).clamp_min_(0)
        d, i = d2.min(1)
        better = d < best_d
        best_d[better], best_i[better] = d[better], i[better] + s
    return Nearest(best_d.double().sqrt(), best_i)


def _space_summary(gen: Nearest, held: Nearest, q: float) -> dict[str, Any]:
    threshold = float(torch.quantile(held.distance, q)) if len(held.distance) else float("nan")
    med_g = float(gen.distance.median()) if len(gen.distance) else float("nan")
    med_h = float(held.distance.median()) if len(held.distance) else float("nan")
    return {
        "rate": float((gen.distance <= threshold).double().mean()) if len(gen.distance) else None,
        "threshold": threshold,
        "median_distance_samples": med_g,
        "median_distance_heldout": med_h,
        "distance_ratio": med_g / med_h if med_h > 0 else None,
    }


def memorization_audit(
    *,
    gen_features: torch.Tensor,
    held_features: torch.Tensor,
    train_features: torch.Tensor,
    gen_images: torch.Tensor,
    held_images: torch.Tensor,
    train_images_features: torch.Tensor,
    train_images_pixels: torch.Tensor,
    train_source_index_features: torch.Tensor,
    train_source_index_pixels: torch.Tensor,
    quantile: float = 0.05,
    top_k: int = 8,
    out_dir: Path | None = None,
) -> dict[str, Any]:
    """The memorization rate in Inception-feature space and in pixel space.

    Definition (per space S, quantile q, audited training images T, held-out
    real images H, generated samples G):
    ``d(x) = min over t in T of ||phi_S(x) - phi_S(t)||_2``, with ``phi`` the
    extractor's pool features or the pixels scaled to [0, 1];
    ``rate = |{g in G : d(g) <= Q_q({d(h) : h in H})}| / |G|``, where ``Q_q`` is
    the q-quantile. A held-out image is a fresh draw from the data distribution,
    so a generator that makes fresh images scores about q; one that returns
    training images scores about 1 (for copies of images inside the audited
    set T; the caps on T are recorded). ``distance_ratio`` = median d over G /
    median d over H (< 1: samples sit closer to the training set than real
    unseen images do).

    ``train_images_features`` are the uint8 training images whose features are
    ``train_features`` (for rendering); the pixel-space search uses
    ``train_images_pixels``, usually a larger set. Writes RUN_DIR/memorization.png
    (rows: sample, nearest training image in feature space, nearest in pixel
    space; the ``top_k`` samples closest in feature space) and
    memorization.json (per-sample nearest indices and distances) to ``out_dir``.
    """
    gf = nearest(gen_features, train_features)
    hf = nearest(held_features, train_features)
    gp = nearest(gen_images, train_images_pixels, pixels=True)
    hp = nearest(held_images, train_images_pixels, pixels=True)
    result: dict[str, Any] = {
        "definition": DEFINITION,
        "quantile": quantile,
        "n_samples": len(gen_features),
        "n_heldout": len(held_features),
        "n_train_features": len(train_features),
        "n_train_pixels": len(train_images_pixels),
        "feature": _space_summary(gf, hf, quantile),
        "pixel": _space_summary(gp, hp, quantile),
    }
    order = torch.argsort(gf.distance)[:top_k]
    result["closest"] = [
        {
            "sample": int(i),
            "train_index": int(train_source_index_features[gf.index[i]]),
            "feature_distance": float(gf.distance[i]),
            "pixel_train_index": int(train_source_index_pixels[gp.index[i]]),
            "pixel_distance": float(gp.distance[i]),
        }
        for i in order
    ]
    if out_dir is not None and len(order):
        rows = []
        for i in order:
            rows += [
                gen_images[i],
                train_images_features[gf.index[i]],
                train_images_pixels[gp.index[i]],
            ]
        grid = torch.stack(rows)
        if grid.shape[-1] < 64:  # small images: enlarge (nearest) so the pairs can be inspected
            f = 64 // grid.shape[-1]
            grid = grid.repeat_interleave(f, dim=-1).repeat_interleave(f, dim=-2)
        save_grid(grid, out_dir / "memorization.png", nrow=3)
        write_json(
            out_dir / "memorization.json",
            {
                "definition": DEFINITION,
                "feature_nearest_train_index": train_source_index_features[gf.index].tolist(),
                "feature_distance": [round(float(d), 5) for d in gf.distance],
                "pixel_nearest_train_index": train_source_index_pixels[gp.index].tolist(),
                "pixel_distance": [round(float(d), 5) for d in gp.distance],
            },
        )
        result["image"] = "memorization.png"
    return result
