"""Pretrain backbones on a source task; save timm-compatible safetensors for model.weights.

    python scripts/pretrain.py                      # the demo's six backbones on digits 0-4
    python scripts/pretrain.py models=[resnet50] data.classes=[0,1,2,3,4,5,6,7,8,9]
"""

import hydra

from paramcorr.config import register_schemas
from paramcorr.entry import pretrain_task, run_cli

register_schemas()


@hydra.main(version_base="1.3", config_path="../conf", config_name="pretrain")
def main(cfg) -> None:
    pretrain_task(cfg)


if __name__ == "__main__":
    run_cli(main)
