"""Settings chosen from evidence instead of asked for: the strategy behind ``auto``, and the clean-up per class.

``--strategy auto`` (the default) picks, per base model, the strategy that model's own
experiment found best, as recorded in its card (``best_strategy``: the strategy, the
experiment and its scores). A base without that record gets ``FALLBACK_STRATEGY``;
no base at all means ``scratch``. The choice and its reason go into the ``started``
event, so the terminal, ``job watch`` and the panel all say what ran and why.

The clean-up decision (keep only the largest component, per class) is taken after
training on the validation cases, through the same prediction the user will run;
see ``inference/cleanup.py`` for the rule.
"""

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence

import SimpleITK as sitk

from TransferSegLib.errors import ModelError
from TransferSegLib.inference.cleanup import CleanupDecision, anatomy_decisions, decide_cleanup
from TransferSegLib.models.base_model import BaseModel
from TransferSegLib.specs import AUTO


#: For a base model without a recorded experiment: train every weight. It is what
#: nnU-Net's own fine-tuning does, and it does not bet that the base's features fit the
#: target, as every frozen strategy does; a frozen strategy needs that evidence. A principle,
#: not a measurement: the shipped base records its own best (docs/results.md).
FALLBACK_STRATEGY = "full"


@dataclass
class StrategyChoice:
    """The strategy a run uses, what was asked for, and why."""

    strategy: str
    requested: str
    reason: str


def recorded_best_strategy(card: Optional[Mapping[str, Any]], where: str) -> Optional[Dict[str, Any]]:
    """A card's ``best_strategy`` record (``{"strategy": ..., "evidence": ..., "scores": {...}}``), or None."""
    record = (card or {}).get("best_strategy")
    if record is None:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("strategy"), str):
        raise ModelError(f"{where}: 'best_strategy' must be an object with 'strategy' (a strategy name), got {record!r}.")
    return record


def choose_strategy(requested: str, base: Optional[BaseModel]) -> StrategyChoice:
    """What ``requested`` means for ``base``: itself, unless it is ``auto``."""
    if requested != AUTO:
        return StrategyChoice(requested, requested, "asked for")
    if base is None:
        return StrategyChoice("scratch", AUTO, "no base model: training from scratch")
    record = recorded_best_strategy(base.card, f"base model '{base.name}'")
    if record is not None:
        evidence = record.get("evidence") or "its card"
        return StrategyChoice(record["strategy"], AUTO, f"best in the base model's recorded experiment ({evidence})")
    return StrategyChoice(FALLBACK_STRATEGY, AUTO,
                          f"the base model records no experiment: the fallback '{FALLBACK_STRATEGY}' (all weights trained)")


def inherited_best_strategy(base: Optional[BaseModel]) -> Optional[Dict[str, Any]]:
    """The record a fine-tuned model carries for its next round: its base's, marked as inherited."""
    if base is None:
        return None
    record = recorded_best_strategy(base.card, f"base model '{base.name}'")
    if record is None:
        return None
    inherited = dict(record)
    inherited["inherited_from"] = record.get("inherited_from") or base.name
    return inherited


def choose_cleanup(
    model, info: BaseModel, val_cases: Sequence[Any], labels: List[str], device: str
) -> Dict[str, CleanupDecision]:
    """Per-class clean-up decisions: on ``val_cases`` (loaded cases on their own grid), else by anatomy.

    The validation cases are predicted exactly as ``predict`` will (same preprocessing, patch,
    overlap, inverse), without clean-up; each class keeps the step where it raises that class's Dice.
    """
    from TransferSegLib.inference.infer import InferenceOptions, predict_image

    if not val_cases:
        return anatomy_decisions(labels)
    predictions, references, annotated = [], [], []
    for case in val_cases:
        raw = predict_image(model, info, case.network_input, device, InferenceOptions(largest_component=False))
        predictions.append(sitk.GetArrayFromImage(raw.labelmap))
        references.append(sitk.GetArrayFromImage(case.label))
        annotated.append(list(case.annotated))
    return decide_cleanup(labels, predictions, references, annotated)
