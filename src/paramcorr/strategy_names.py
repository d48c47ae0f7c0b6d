"""The freeze strategies' vocabulary: names, labels, plot markers and their display order.

Light on purpose (no torch, timm or peft): the config schema builds its ``freeze.strategy``
choices from it and the analysis reads labels, markers and order from it, both without
loading a model library. :mod:`paramcorr.strategies` builds each strategy's behaviour on these
terms (one class per entry; a test checks the two agree).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StrategyTerms:
    """How one strategy is named, shown and recorded."""

    name: str
    # What figures, tables and the report call it: for readers ("none" would read as "no
    # fine-tuning", the opposite of what it does). Every strategy trains the head too.
    label: str
    marker: str
    # The record's run axes its freeze keys become: (run axis, freeze key) pairs. Their values
    # are numbers, except those named in ``text_axes`` (paramcorr.record.RUN_AXES reads both).
    axes: tuple[tuple[str, str], ...] = ()
    text_axes: tuple[str, ...] = ()
    # Only the classifier trains (the backbone is not fine-tuned): its features can be cached,
    # and the analysis counts it as not fine-tuned.
    head_only: bool = False
    # Its runs at several depths form one dose-response (trainable parameters grow as fewer
    # stages are frozen): the analysis draws them per architecture (plots.partial_plot).
    dose_response: bool = False


# Display order: the study's two, the depth sweep, then parameter-efficient ones by how much
# of the backbone they touch.
STRATEGY_TERMS: tuple[StrategyTerms, ...] = (
    StrategyTerms("base", "frozen base", "o", head_only=True),
    StrategyTerms("none", "full fine-tuning", "^"),
    StrategyTerms("partial", "partial freezing", "s", (("frozen_stages", "stages"),),
                  dose_response=True),
    StrategyTerms("bitfit", "BitFit (biases)", "D"),
    StrategyTerms("norm", "normalization layers", "v"),
    StrategyTerms("lora", "LoRA", "P",
                  (("lora_rank", "rank"), ("lora_alpha", "alpha"), ("lora_target", "target")),
                  text_axes=("lora_target",)),
    StrategyTerms("surgical", "surgical fine-tuning", "*", (("surgical_block", "block"),)),
    StrategyTerms("lpft", "linear probe, then fine-tuning", "X",
                  (("probe_epochs", "probe_epochs"),)),
)
TERMS: dict[str, StrategyTerms] = {t.name: t for t in STRATEGY_TERMS}
STRATEGY_ORDER: tuple[str, ...] = tuple(TERMS)
HEAD_ONLY: frozenset[str] = frozenset(t.name for t in STRATEGY_TERMS if t.head_only)
DOSE_RESPONSE: frozenset[str] = frozenset(t.name for t in STRATEGY_TERMS if t.dose_response)
# A marker for a strategy this vocabulary does not know (an older or foreign record).
UNKNOWN_MARKER = "o"


def label(name: str) -> str:
    """The legend label of ``name``; an unknown strategy is shown by its name."""
    terms = TERMS.get(str(name))
    return terms.label if terms else str(name)


def marker(name: str) -> str:
    terms = TERMS.get(str(name))
    return terms.marker if terms else UNKNOWN_MARKER


def ordered(names: list[str]) -> list[str]:
    """``names`` in the vocabulary's order, unknown ones after, by name."""
    known = [n for n in STRATEGY_ORDER if n in names]
    return known + sorted((n for n in names if n not in TERMS), key=str)
