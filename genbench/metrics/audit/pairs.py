"""The files a person reads beside a copy verdict: copies.json (every sample's best match
and how it was caught) and copies.png (the closest pairs, copies first)."""

from __future__ import annotations

from typing import Any

import torch

from genbench.metrics.audit.copies import Pool, QueryStats
from genbench.metrics.audit.settings import DEFINITION, STAGE
from genbench.metrics.audit.verdict import Calibration


def _pair_record(i: int, gen: QueryStats, cal: Calibration, pool: Pool) -> dict[str, Any]:
    caught = [k for k, hit in cal.caught(gen).items() if bool(hit[i])]
    stage = STAGE[caught[0]] if caught else None
    if stage == "descriptor":
        pos, how = int(gen.desc_index[i]), "learned descriptor"
    elif stage == "mosaic":
        pos, how = int(gen.mix.half_index[i]), f"{gen.mix.half_region[i]} half"
    elif stage == "blend":
        pos, how = (
            int(gen.mix.blend_pair[i, 0]),
            "blend with " + "{} #{}".format(*pool.origin(int(gen.mix.blend_pair[i, 1]))),
        )
    else:
        pos, how = int(gen.ncc.index[i]), gen.ncc.transform[i]
    split, src = pool.origin(pos)
    return {
        "sample": i,
        "split": split,
        "source_index": src,
        "pool_index": pos,
        "transform": how,
        "ncc": round(float(gen.ncc.ncc1[i]), 5),
        "desc_d": round(float(gen.stats["desc_d"][i]), 5),
        "copy": bool(caught),
        "caught_by": sorted({STAGE[c] for c in caught}),
    }


def pair_files(
    gen_images: torch.Tensor,
    gen: QueryStats,
    cal: Calibration,
    pool: Pool,
    *,
    top_k: int = 8,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The closest pairs shown (copies first) and the files: copies.json (every sample's
    best match) and copies.png (the shown pairs tiled: sample | pool image)."""
    from genbench.storage.images import tile_tensor

    flags = cal.flags(gen)
    order = sorted(
        range(len(flags)), key=lambda i: (not bool(flags[i]), float(gen.ncc.distance[i]))
    )
    pairs = [_pair_record(i, gen, cal, pool) for i in order]
    files: dict[str, Any] = {"copies.json": {"definition": DEFINITION, "pairs": pairs}}
    shown = pairs[:top_k]
    if shown:
        rows = []
        for p in shown:
            a, b = gen_images[p["sample"]], pool.images[p["pool_index"]]
            if a.shape[0] != b.shape[0]:
                a, b = a.expand(3, -1, -1) if a.shape[0] == 1 else a, b.expand(3, -1, -1)
            rows += [a, b]
        grid = torch.stack(rows)
        if grid.shape[-1] < 64:  # enlarge small images (nearest) so the pairs can be inspected
            f = 64 // grid.shape[-1]
            grid = grid.repeat_interleave(f, dim=-1).repeat_interleave(f, dim=-2)
        files["copies.png"] = tile_tensor(grid, nrow=2)
    return shown, files
