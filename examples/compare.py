"""Which generator is better on my data, and by how much? The comparison from Python.

    python examples/compare.py                      # a few minutes on a laptop CPU, offline
    python examples/compare.py --kimg 20 --n 1000   # closer to a real comparison

Trains genbench's DCGAN and the one-shot denoiser on scikit-learn's digits for two
seeds each, scores their samples against the held-out split, and prints FID and KID
per model as mean ± spread over seeds, next to the real-data floor. Only rows that
share a protocol fingerprint are compared. Then it scores a tensor made outside
genbench (here, blurred real images) under the same protocol, and writes the report.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch

import genbench


def compare(*, results: Path, kimg: float, n: int) -> tuple[pd.DataFrame, str]:
    """Run the comparison; return FID/KID per model (mean, std, seeds) and the protocol."""
    genbench.run(
        "smoke",  # digits 16x16, packaged with genbench
        models=["dcgan", "denoiser"],
        seeds=[0, 1],
        overrides={"train.kimg": kimg, "sample.n": n, "metrics.enabled": True},
        results=results,
    )
    df = genbench.load_results(results)
    df = df[df["status"] == "done"]
    protocols = df["protocol"].unique()
    if len(protocols) > 1:  # e.g. an older run at another N in the same folder
        raise SystemExit(f"{results} mixes {len(protocols)} protocols; use a fresh folder")
    table = df.groupby("model")[["fid", "kid"]].agg(["mean", "std", "count"])
    return table, str(protocols[0])


def score_outside_tensor(*, n: int) -> dict:
    """Score images made outside genbench (a tensor in [0, 1]) against the same reference."""
    from genbench.data import load_data

    exp = genbench.load_experiments("smoke", overrides={"sample.n": n})[0]
    real = load_data(exp.data).train.images[:n].float() / 255  # N x 1 x 16 x 16
    blurred = torch.nn.functional.avg_pool2d(real, 3, stride=1, padding=1)
    return genbench.score(blurred, ref="smoke", n_ref=n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results-compare"))
    parser.add_argument("--kimg", type=float, default=2.0, help="training budget per model")
    parser.add_argument("--n", type=int, default=200, help="images generated and scored")
    args = parser.parse_args()

    table, protocol = compare(results=args.results, kimg=args.kimg, n=args.n)
    print(f"protocol {protocol} (mean and std over seeds; 'real' is the real-data floor)")
    print(table.round(3).to_string())
    blurred = score_outside_tensor(n=args.n)
    same = blurred["protocol"]["fingerprint"] == protocol
    print(
        f"blurred real images: FID {blurred['scores']['fid']:.2f}"
        + ("" if same else " (another protocol: not comparable with the table)")
    )
    report = genbench.build_report(args.results)
    print(f"report: {report.out_dir / 'report.html'}")


if __name__ == "__main__":
    main()
