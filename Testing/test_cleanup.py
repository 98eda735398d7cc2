"""Largest-component clean-up: the anatomy table, the per-class decision on validation cases, overrides."""

import numpy as np
import pytest

from TransferSegLib.errors import ModelError
from TransferSegLib.inference.cleanup import (
    CleanupDecision, cleanup_classes, cleanup_record, decide_cleanup, keep_largest_components, recorded_decisions,
    single_component_by_anatomy,
)

LABELS = ["background", "liver", "liver_tumor"]


@pytest.mark.parametrize("name", ["liver", "Spleen", "stomach", "pancreas", "heart", "kidney_left", "left kidney",
                                  "Kidney-Right", "lung_upper_lobe_left", "vertebra_L1",
                                  "gallbladder", "urinary_bladder"])
def test_one_connected_organs_are_cleaned_by_anatomy(name):
    assert single_component_by_anatomy(name)


@pytest.mark.parametrize("name", ["vertebrae_L1", "thoracic vertebral column", "ribs", "liver_tumor", "kidney cyst",
                                  "lesion", "portal_vein_and_splenic_vein", "kidney", "lungs", "colon", "small_bowel",
                                  "lung_nodules", "something_unknown"])
def test_multi_part_or_unknown_classes_are_not_cleaned_by_anatomy(name):
    assert not single_component_by_anatomy(name)


def _blobs(shape=(20, 20, 10)):
    """A reference with a big liver and a small tumour in two places; predictions built from it."""
    ref = np.zeros(shape, np.uint8)
    ref[2:12, 2:12, 2:8] = 1
    ref[15:18, 15:18, 2:4] = 2
    ref[15:18, 2:5, 6:8] = 2
    return ref


def test_validation_keeps_the_step_where_it_raises_dice_and_drops_it_where_it_lowers_dice():
    ref = _blobs()
    pred = ref.copy()
    pred[15:19, 10:14, 6:9] = 1  # a stray liver island: removing it helps
    decisions = decide_cleanup(LABELS, [pred], [ref])
    assert decisions["liver"].keep_largest and decisions["liver"].decided_by == "validation"
    assert decisions["liver"].dice_cleaned > decisions["liver"].dice_raw
    # The tumour is two true pieces: keeping the largest deletes one, so validation says no.
    assert not decisions["liver_tumor"].keep_largest and decisions["liver_tumor"].decided_by == "validation"
    assert decisions["liver_tumor"].dice_cleaned < decisions["liver_tumor"].dice_raw


def test_validation_overrules_anatomy_when_the_largest_component_is_the_wrong_blob():
    ref = np.zeros((20, 20, 10), np.uint8)
    ref[2:6, 2:6, 2:5] = 1  # a small true liver ...
    pred = ref.copy()
    pred[10:19, 10:19, 2:9] = 1  # ... and a larger false one
    decisions = decide_cleanup(["background", "liver"], [pred], [ref])
    assert not decisions["liver"].keep_largest and decisions["liver"].decided_by == "validation"


def test_no_validation_evidence_falls_back_to_anatomy():
    ref = _blobs()
    decisions = decide_cleanup(LABELS, [ref.copy()], [ref])  # one liver piece: the step changes nothing
    assert decisions["liver"] == CleanupDecision(True, "anatomy", 1.0, 1.0)
    none = decide_cleanup(LABELS, [], [])
    assert none["liver"].keep_largest and not none["liver_tumor"].keep_largest
    assert {d.decided_by for d in none.values()} == {"anatomy"}


def test_a_case_that_does_not_annotate_a_class_is_no_evidence_for_it():
    ref = _blobs()
    pred = ref.copy()
    pred[15:19, 10:14, 6:9] = 1
    decisions = decide_cleanup(LABELS, [pred], [ref], annotated=[[True, False, True]])
    assert decisions["liver"].decided_by == "anatomy"


def test_decisions_round_trip_through_the_model_card_and_overrides_win():
    decisions = {"liver": CleanupDecision(False, "validation", 0.8, 0.7), "liver_tumor": CleanupDecision(True, "validation")}
    card = {"cleanup": cleanup_record(decisions)}
    assert recorded_decisions(card) == decisions
    assert cleanup_classes(LABELS, recorded_decisions(card)) == [2]
    assert cleanup_classes(LABELS, recorded_decisions(card), True) == [1, 2]
    assert cleanup_classes(LABELS, recorded_decisions(card), False) == []
    assert cleanup_classes(LABELS, recorded_decisions(card), {"Liver": True, "liver tumor": False}) == [1]
    # A model with no record (older folders, base models): each class's anatomy.
    assert cleanup_classes(LABELS, {}) == [1]
    with pytest.raises(ModelError, match="spleen"):
        cleanup_classes(LABELS, {}, {"spleen": True})
    with pytest.raises(ModelError, match="keep_largest"):
        recorded_decisions({"cleanup": {"largest_component": {"liver": {"keep": True}}}})


def test_keep_largest_components_touches_only_the_named_classes():
    ref = _blobs()
    pred = ref.copy()
    pred[15:19, 10:14, 6:9] = 1
    cleaned = keep_largest_components(pred, [1])
    assert (cleaned == 1).sum() == (ref == 1).sum()
    assert (cleaned == 2).sum() == (ref == 2).sum()  # both tumour pieces stay


def test_predict_flags_become_an_override():
    from TransferSegLib.commands.predict import cleanup_override
    from TransferSegLib.errors import TransferSegError

    assert cleanup_override(None, None) is None
    assert cleanup_override("*", None) is True
    assert cleanup_override(None, "*") is False
    assert cleanup_override("liver,spleen", "tumor") == {"liver": True, "spleen": True, "tumor": False}
    for keep, drop in (("*", "*"), ("*", "tumor"), ("liver", "liver")):
        with pytest.raises(TransferSegError):
            cleanup_override(keep, drop)


def test_the_panel_status_says_which_strategy_auto_chose(tmp_path):
    from TransferSegLib.scene.runs import TrainingRun

    run = TrainingRun(job=None, directory=tmp_path, output=tmp_path / "model", labels=["liver"])
    run.apply({"kind": "started", "strategy": "full", "strategy_requested": "auto", "strategy_reason": "fallback"})
    run.apply({"kind": "progress", "iteration": 3, "total_iterations": 10})
    assert run.status_line().startswith("strategy full (auto), iteration 3/10")
