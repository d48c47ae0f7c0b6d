"""Every metric a record or the analysis can hold has a reader's name in figures and tables."""

from __future__ import annotations

import pytest

from paramcorr.analysis.labels import metric_label
from paramcorr.record import METRIC_KEYS

# The job also records each split's loss, the generalization split's included (job.py).
RECORDED = (*METRIC_KEYS, "gen_loss", "effective_robustness")


@pytest.mark.parametrize("metric", RECORDED)
def test_every_recorded_metric_has_a_human_label(metric: str) -> None:
    label = metric_label(metric)
    assert "_" not in label and label[0].isupper() and label != metric.replace("_", " ")
