"""What the panel shows: table rows and status lines, from the Logic's plain objects (no Qt).

The widget and the screenshot test (``Testing/test_panel_screenshot.py``) both use
these, so the picture in the docs shows the words users see.
"""

from typing import Dict, List, Optional, Sequence


def model_row(entry) -> List[str]:
    """Model, modality, classes, license, status of a ``scene.models.ModelRow``."""
    classes = entry.classes
    return [entry.title or entry.name, entry.modality or "-", f"{len(classes)}" if classes else "-",
            (entry.license or "-") + (" (non-commercial)" if entry.non_commercial else ""),
            "ready" if entry.cached else "download needed"]


def model_card(entry) -> str:
    """The rich-text card under the model table."""
    shown = ", ".join(entry.classes[:12]) + (", …" if len(entry.classes) > 12 else "")
    warning = "<b>Non-commercial license.</b> " if entry.non_commercial else ""
    where = {"shipped": "shipped with TransferSeg", "fine-tuned": "your fine-tuned model",
             "scratch": "random weights", "catalog": "catalog model"}.get(entry.source, entry.source)
    channels = list(getattr(entry, "channel_labels", []) or [])
    reads = f"<br>Reads {len(channels)} channels ({', '.join(channels)}): pick one volume per channel." if channels else ""
    return (f"{warning}<b>{entry.title or entry.name}</b> ({entry.modality or 'any modality'}, {where}): "
            + (shown or "no classes (encoder or scratch)") + reads)


def case_row(volume: str, segmentation: str, segments: Sequence[str], sparse: bool, slices: int,
             validation: bool, channels: int = 1) -> List[str]:
    annotated = ", ".join(segments)
    if channels > 1:
        volume += f" (+{channels - 1} channel{'s' if channels > 2 else ''})"
    if sparse:
        annotated += f" ({slices} slices)" if slices else " (drawn slices)"
    return [volume, segmentation, annotated, "validation" if validation else "training"]


def job_row(row) -> List[str]:
    """Job, state, device, model of a ``scene.jobs.JobRow``."""
    return [row.name, row.status_text(), row.device or "-", row.model or "-"]


def metric_rows(rows: Sequence[Dict]) -> List[List[str]]:
    """Class, Dice, HD95 of ``transferseg evaluate`` rows (a missing value: '-')."""
    def number(value, digits):
        return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "-"

    return [[r["label"], number(r.get("dice"), 3), number(r.get("hd95"), 1)] for r in rows]


def per_class_dice(validation: Dict) -> str:
    """'liver 0.912, spleen 0.873' from a validation event."""
    dice = validation.get("dice") or {}
    return ", ".join(f"{name} {value:.3f}" for name, value in dice.items() if isinstance(value, (int, float)))


def training_status(run) -> str:
    """The status line of a ``TrainingRun``, with the per-class Dice when there is one."""
    line = run.status_line()
    classes = per_class_dice(run.validation)
    return f"{line}\nPer class: {classes}" if classes and run.state != "failed" else line


def case_count(count: int, validation: int) -> str:
    if not count:
        return "No training cases yet."
    return f"{count} case(s)" + (f", {validation} for validation" if validation else "")


def first_step(has_volume: bool, has_cases: bool) -> Optional[str]:
    """The hint at the top of the panel until the first case is added (None: hide it)."""
    if has_cases:
        return None
    if not has_volume:
        return ("<b>Start here:</b> load a CT or MR and a segmentation of the organs you annotated (to try it: "
                "<i>Sample Data → TransferSeg abdomen CT</i>). Then pick a base model (1), tick the annotated "
                "segments and add the case (2), and start fine-tuning (3).")
    return ("<b>Next:</b> pick a base model (1), then in (2) choose the segmentation drawn on your volume, tick the "
            "segments you annotated and click <i>Add current case</i>.")
