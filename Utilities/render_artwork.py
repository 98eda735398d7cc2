#!/usr/bin/env python3
"""Draw the extension's artwork: the 128×128 icon, the Sample Data thumbnails and the
workflow figure used as the Extension Manager screenshot until a real one exists.

Usage::

    python Utilities/render_artwork.py                       # icon and thumbnails
    python Utilities/render_artwork.py --demo transferseg-demo   # + docs/screenshots/workflow.png

``--demo`` is the output folder of ``transferseg demo`` (its model, prediction and
summary): the figure shows that real run, never invented results.
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import SimpleITK as sitk  # noqa: E402
from matplotlib import patches  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

from TransferSegLib.data.grid import align_to_image  # noqa: E402
from TransferSegLib.data.images import read_image
from TransferSegLib.data.labelmaps import read_labelmap
from TransferSegLib.names import label_color  # noqa: E402

RESOURCES = ROOT / "Resources"
DATA = RESOURCES / "SampleData"
NAVY, STEEL, AMBER, ORGAN, WHITE = "#17263f", "#2f5d8a", "#f2a541", "#c8553d", "#f4f1ea"

#: thumbnail file (Resources/Icons/SampleData/) → image, labelmap, label-name task ("" = from the file)
THUMBNAILS = {
    "TransferSeg-abdomen-CT.png": ("TotalSegmentator/example_ct_sm.nii.gz", "TotalSegmentator/example_seg.nii.gz", "total"),
    "TransferSeg-abdomen-CT-2-DICOM.png": ("TotalSegmentator/example_ct_dicom", "TotalSegmentator/example_seg_dicom.nii.gz", "total"),
    "TransferSeg-abdomen-MR.png": ("TotalSegmentator/example_mr_sm.nii.gz", "TotalSegmentator/example_seg_mr.nii.gz", "total_mr"),
    "TransferSeg-chest-CT.png": ("SlicerIO/CTChest4.nrrd", "SlicerIO/Segmentation.seg.nrrd", ""),
}


# --- icon -----------------------------------------------------------------------------------------

def _liver_outline(cx: float, cy: float, scale: float) -> np.ndarray:
    """A liver-like silhouette (large right lobe, tapering left lobe), as a closed polygon."""
    t = np.linspace(0, 2 * np.pi, 200, endpoint=False)
    radius = 1 + 0.28 * np.cos(t) + 0.12 * np.cos(2 * t - 0.6) - 0.08 * np.sin(3 * t)
    x, y = radius * np.cos(t) * 1.25, radius * np.sin(t) * 0.72
    y = y - 0.22 * x  # the left lobe rises toward the viewer's right
    return np.column_stack([cx + scale * x, cy + scale * y])


def render_icon(path: Path) -> None:
    """A voxel volume, an arrow and the new organ it learned: 'transfer to a new structure'."""
    fig = plt.figure(figsize=(1.28, 1.28), dpi=100)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")
    ax.add_patch(patches.FancyBboxPatch((0.03, 0.03), 0.94, 0.94, boxstyle="round,pad=0,rounding_size=0.17",
                                        facecolor=NAVY, edgecolor="none"))
    # An isometric voxel block (the pretrained network's 3D input) in the upper left.
    x0, y0, s, d = 0.12, 0.46, 0.32, 0.13
    front = np.array([[x0, y0], [x0 + s, y0], [x0 + s, y0 + s], [x0, y0 + s]])
    back = front + [d, d]
    ax.add_patch(patches.Polygon([front[3], front[2], back[2], back[3]], closed=True, facecolor="#4d7fb0", edgecolor="none"))
    ax.add_patch(patches.Polygon([front[1], back[1], back[2], front[2]], closed=True, facecolor="#244a70", edgecolor="none"))
    ax.add_patch(patches.Polygon(front, closed=True, facecolor=STEEL, edgecolor="none"))
    for k in (1, 2):
        f = k / 3
        ax.plot([x0 + f * s] * 2, [y0, y0 + s], color="#9cc3e6", lw=0.9)
        ax.plot([x0, x0 + s], [y0 + f * s] * 2, color="#9cc3e6", lw=0.9)
    for a, b in ((front[3], back[3]), (front[2], back[2]), (front[1], back[1]), (back[3], back[2]), (back[2], back[1])):
        ax.plot([a[0], b[0]], [a[1], b[1]], color="#cfe3f5", lw=1.1)
    ax.add_patch(patches.Polygon(front, closed=True, facecolor="none", edgecolor="#cfe3f5", lw=1.1))
    # The transfer arrow.
    ax.add_patch(patches.FancyArrowPatch((0.62, 0.74), (0.84, 0.50), connectionstyle="arc3,rad=-0.5",
                                         arrowstyle="Simple,head_length=9,head_width=10,tail_width=4",
                                         color=AMBER, lw=0))
    # The new organ, segmented.
    outline = _liver_outline(0.60, 0.25, 0.16)
    ax.add_patch(patches.Polygon(outline, closed=True, facecolor=ORGAN, edgecolor=WHITE, lw=1.6))
    fig.savefig(path, dpi=100, transparent=True)
    plt.close(fig)


# --- data views -----------------------------------------------------------------------------------

def _case(image_rel: str, label_rel: str, task: str) -> Tuple[sitk.Image, sitk.Image, Dict[int, str]]:
    image_path, label_path = DATA / image_rel, DATA / label_rel
    image = read_image(str(image_path))
    label = read_labelmap(str(label_path), reference=image)
    names = label.names
    if task:
        table = json.loads((DATA / "TotalSegmentator" / "label_names.json").read_text(encoding="utf-8"))[task]
        names = {int(k): v for k, v in table.items()}
    return image, align_to_image(image, label.image, str(image_path), str(label_path)), names


def _axial(image: sitk.Image, z: Optional[int] = None, label: Optional[sitk.Image] = None):
    """An axial slice as radiologists view it (patient right on screen left, anterior up)."""
    image = sitk.DICOMOrient(image, "LPS")
    array = sitk.GetArrayFromImage(image)  # (z, y, x): rows anterior→posterior, columns right→left
    labels = sitk.GetArrayFromImage(sitk.DICOMOrient(label, "LPS")) if label is not None else None
    if z is None and labels is not None:  # the slice showing the most structures, then the most voxels
        score = [len(np.unique(s)) * 1e7 + np.count_nonzero(s) for s in labels]
        z = int(np.argmax(score))
    elif z is None:
        z = array.shape[0] // 2
    spacing = image.GetSpacing()
    extent = (0, array.shape[2] * spacing[0], array.shape[1] * spacing[1], 0)
    return array[z], (labels[z] if labels is not None else None), extent, z


def _window(slice_: np.ndarray, ct: bool) -> np.ndarray:
    low, high = (-175.0, 250.0) if ct else tuple(np.percentile(slice_, [1, 99.5]))
    return np.clip((slice_ - low) / max(high - low, 1e-6), 0, 1)


def _overlay(ax, labels: np.ndarray, names: Dict[int, str], extent, alpha: float = 0.55) -> None:
    values = [v for v in np.unique(labels) if v > 0]
    if not values:
        return
    top = int(max(values))
    colors = np.zeros((top + 1, 4))
    for v in values:
        if names.get(int(v), "") != "tissue":  # a body outline would hide the image
            colors[int(v)] = (*label_color(names.get(int(v), ""), int(v)), alpha)
    ax.imshow(labels, cmap=ListedColormap(colors), vmin=0, vmax=top, extent=extent, interpolation="nearest")


def render_thumbnails(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for file_name, (image_rel, label_rel, task) in THUMBNAILS.items():
        image, label, names = _case(image_rel, label_rel, task)
        slice_, labels, extent, _z = _axial(image, label=label)
        fig = plt.figure(figsize=(1.28, 1.28), dpi=100)
        ax = fig.add_axes([0, 0, 1, 1])
        ax.axis("off")
        ax.imshow(_window(slice_, ct="mr" not in file_name.lower()), cmap="gray", extent=extent)
        _overlay(ax, labels, names, extent)
        ax.set_aspect("equal")
        fig.savefig(folder / file_name, dpi=100, facecolor="black")
        plt.close(fig)


# --- workflow figure ------------------------------------------------------------------------------

def _liver_only(label: sitk.Image, names: Dict[int, str]) -> sitk.Image:
    value = next(v for v, n in names.items() if n == "liver")
    return sitk.Cast(label == value, sitk.sitkUInt8)


def _learning_curve(model_dir: Path):
    """(iteration, loss, validation Dice) at each validation the run recorded in its model card."""
    card = json.loads((model_dir / "model.json").read_text(encoding="utf-8"))
    history = (card.get("training", {}) or {}).get("history") or []
    return [(h["iteration"], h["loss"], h.get("mean_dice")) for h in history
            if isinstance(h, dict) and h.get("iteration") is not None and h.get("loss") is not None]


def render_workflow(path: Path, demo: Path) -> None:
    summary = json.loads((demo / "demo_result.json").read_text(encoding="utf-8"))
    names_ct = {int(k): v for k, v in json.loads(
        (DATA / "TotalSegmentator" / "label_names.json").read_text(encoding="utf-8"))["total"].items()}
    train_image, train_label, _ = _case("TotalSegmentator/example_ct_sm.nii.gz", "TotalSegmentator/example_seg.nii.gz", "total")
    target_image, target_label, _ = _case("TotalSegmentator/example_ct_dicom", "TotalSegmentator/example_seg_dicom.nii.gz", "total")
    predicted = read_labelmap(str(demo / "ts_dicom_liver.seg.nrrd"), reference=target_image)
    prediction = align_to_image(target_image, predicted.image, "target", "prediction")
    base_card = json.loads((RESOURCES / "Models" / "default" / "model.json").read_text(encoding="utf-8"))
    curve = _learning_curve(Path(summary["model"]))

    fig = plt.figure(figsize=(15, 4.1), dpi=100, facecolor=WHITE)
    fig.suptitle("TransferSeg: fine-tune a pretrained 3D network on a few annotated cases, in five steps",
                 fontsize=14, color=NAVY, x=0.01, ha="left", y=0.97)
    titles = ["1  Pick a base model", "2  Add training cases", "3  Fine-tune", "4  Predict a new patient",
              "5  Review, correct, repeat"]
    axes = [fig.add_axes([0.01 + i * 0.198, 0.16, 0.18, 0.66]) for i in range(5)]
    for ax, title in zip(axes, titles):
        ax.set_title(title, fontsize=11.5, color=NAVY, loc="left", fontweight="bold")
        ax.set_anchor("N")  # images keep their aspect: align every panel (and its title) at the top

    ax = axes[0]
    ax.axis("off")
    classes = len(base_card["labels"]) - 1
    text = (f"default (shipped)\n{base_card['network']['_target_'].split('.')[-1]}, {base_card['modality']}\n"
            f"{classes} classes pretrained\nliver withheld\n\nor: catalog models, MONAI\nbundles, your own "
            f"checkpoints")
    ax.text(0.04, 0.95, text, transform=ax.transAxes, va="top", fontsize=10.5, color=NAVY, linespacing=1.5,
            bbox=dict(boxstyle="round,pad=0.8", facecolor="white", edgecolor=STEEL))

    ax = axes[1]
    slice_, labels, extent, _ = _axial(train_image, label=_liver_only(train_label, names_ct))
    ax.imshow(_window(slice_, True), cmap="gray", extent=extent)
    _overlay(ax, labels, {1: "liver"}, extent)
    ax.axis("off")
    ax.text(0.02, 0.02, "patient A: CT + liver", transform=ax.transAxes, color="white", fontsize=9.5)

    ax = axes[2]
    if len(curve) >= 2:
        its, losses, dice = zip(*curve)
        ax.plot(its, losses, color=STEEL, lw=2, marker="o", ms=4, label="loss")
        if all(d is not None for d in dice):
            ax.plot(its, dice, color=ORGAN, lw=2, marker="o", ms=4, label="liver Dice (on the training case)")
        ax.set_xlabel("iteration")
        ax.set_ylim(0, max(1.0, max(losses) * 1.05))
        ax.legend(frameon=False, fontsize=9, loc="upper right")
        ax.text(0.02, 0.03, f"{summary['iterations']} iterations, {summary['train_seconds']:.0f} s on CPU,\n"
                f"strategy {summary['strategy']}", transform=ax.transAxes, fontsize=9, color=NAVY)
    else:
        ax.axis("off")
        ax.text(0.05, 0.8, f"{summary['iterations']} iterations\n{summary['train_seconds']:.0f} s on 2 CPU cores\n"
                f"strategy: {summary['strategy']}\n(last decoder block + head)", transform=ax.transAxes,
                va="top", fontsize=10.5, color=NAVY, linespacing=1.5)
    ax.spines[["top", "right"]].set_visible(False)

    ax = axes[3]
    slice_, labels, extent, z = _axial(target_image, label=prediction)
    ax.imshow(_window(slice_, True), cmap="gray", extent=extent)
    _overlay(ax, labels, {1: "liver"}, extent)
    ax.axis("off")
    ax.text(0.02, 0.02, f"patient B: predicted liver, Dice {summary['held_out_liver_dice']:.2f}",
            transform=ax.transAxes, color="white", fontsize=9.5)

    ax = axes[4]
    _, reference, _, _ = _axial(target_image, z=z, label=_liver_only(target_label, names_ct))
    ax.imshow(_window(slice_, True), cmap="gray", extent=extent)
    _overlay(ax, labels, {1: "liver"}, extent, alpha=0.45)
    rows, columns = reference.shape
    xs = (np.arange(columns) + 0.5) * extent[1] / columns
    ys = (np.arange(rows) + 0.5) * extent[2] / rows
    ax.contour(xs, ys, reference, levels=[0.5], colors=[AMBER], linewidths=1.4)
    ax.axis("off")
    ax.text(0.02, 0.02, "reference outline: correct, add as case,\nfine-tune again from the new model",
            transform=ax.transAxes, color="white", fontsize=9)

    fig.text(0.01, 0.015, f"Rendered from a real `transferseg demo` run on the shipped sample data "
             f"({summary['iterations']} iterations, {summary['train_seconds']:.0f} s, CPU); not a Slicer screenshot.",
             fontsize=8.5, color="#555555")
    fig.savefig(path, dpi=100, facecolor=WHITE)
    plt.close(fig)
    _shrink_png(path)


def _shrink_png(path: Path) -> None:
    """An adaptive 256-color palette keeps the figure well under the 200 KB the packaging test allows."""
    from PIL import Image

    with Image.open(path) as image:
        quantized = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    quantized.save(path, optimize=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo", type=Path, help="output folder of 'transferseg demo' (draws the workflow figure)")
    args = parser.parse_args(argv)
    render_icon(RESOURCES / "Icons" / "TransferSeg.png")
    render_thumbnails(RESOURCES / "Icons" / "SampleData")
    if args.demo:
        screenshots = ROOT / "docs" / "screenshots"
        screenshots.mkdir(parents=True, exist_ok=True)
        render_workflow(screenshots / "workflow.png", args.demo)
    return 0


if __name__ == "__main__":
    sys.exit(main())
