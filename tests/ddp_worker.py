"""Run under torchrun by tests/test_distributed.py: train a tiny DCGAN data-parallel
and save this rank's final weights, so the test can compare ranks."""

import sys
from pathlib import Path

import torch

from genbench import registry
from genbench.config import DataConfig, TrainConfig
from genbench.data import load_data
from genbench.train.loop import train
from genbench.utils.device import seed_everything
from genbench.utils.distributed import from_env, shutdown


def main(out: Path) -> None:
    info = from_env("cpu")
    data = load_data(DataConfig(source="digits", resolution=8))
    seed_everything(0)
    cls = registry.load("dcgan")
    model = cls(
        spec=data.spec, config=cls.Config(), device=torch.device("cpu"), train_data=data.train
    )
    cfg = TrainConfig(kimg=0.16, batch_size=16, log_every=2, eval_images=0)
    res = train(model, data.train, cfg, seed=0, run_dir=out / "run", dist_info=info)
    state = {f"{k}.{n}": t for k, m in model.modules().items() for n, t in m.state_dict().items()}
    torch.save(
        {"state": state, "steps": res.steps, "images_seen": res.images_seen},
        out / f"rank{info.rank}.pt",
    )
    shutdown(info)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
