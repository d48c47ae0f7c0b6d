"""Train one configuration (or, with -m, a sweep): each job writes its result.json.

    python scripts/train.py model=resnet50 freeze=base optimizer=sgd lr=1e-2
    python scripts/train.py -m experiment=demo
"""

import hydra

from paramcorr.config import register_schemas
from paramcorr.entry import run_cli, train_task

register_schemas()


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg) -> float | None:
    return train_task(cfg)


if __name__ == "__main__":
    run_cli(main)
