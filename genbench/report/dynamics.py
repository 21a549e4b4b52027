"""First-order facts about training read from train_log.jsonl: whether a GAN's
discriminator has won (its D(real) and D(fake) logs), stated beside the scores."""

from __future__ import annotations

from collections.abc import Sequence

from genbench.report.collect import RunRecord

#: D has won when, over the last fifth of training, it scores real images above this ...
D_REAL_WON = 0.9
#: ... and generated images below this, at every logged step.
D_FAKE_WON = 0.1
LAST = 0.2


def discriminator_won(rec: RunRecord) -> bool:
    """D(real) > 0.9 and D(fake) < 0.1 at every logged step of the last 20% of training."""
    log = [r for r in rec.train_log() if "d_real" in r and "d_fake" in r]
    if not log:
        return False
    end = max(r.get("step", 0) for r in log)
    tail = [r for r in log if r.get("step", 0) >= (1 - LAST) * end]
    return bool(tail) and all(r["d_real"] > D_REAL_WON and r["d_fake"] < D_FAKE_WON for r in tail)


def notes(records: Sequence[RunRecord]) -> list[str]:
    """One line per run whose discriminator has won, with its last logged values."""
    out = []
    for rec in records:
        if rec.is_real or not rec.done or not discriminator_won(rec):
            continue
        last = [r for r in rec.train_log() if "d_real" in r][-1]
        out.append(
            f"{rec.run_id}: the discriminator has won (D(real) > {D_REAL_WON} and D(fake) < "
            f"{D_FAKE_WON} over the last {LAST:.0%} of training; last D(real) "
            f"{last['d_real']:.2f}, D(fake) {last['d_fake']:.2f}): the generator gets "
            "little gradient, and its samples stop improving"
        )
    return out
