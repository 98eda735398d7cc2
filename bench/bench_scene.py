"""Main-thread time of the panel's "Add current case" and "Start fine-tuning" on a big case, in real MRML.

Usage: python bench/bench_scene.py [--size 512 512 300] [--segments 41] [--channels 1] [--keep-job]

Builds, with slicer-core (no Slicer application), a volume of the given size (i, j, k)
and a segmentation with that many non-overlapping segments drawn on it, then runs the
module Logic's two paths the way the panel does: ``add_case`` (what "Add current case"
runs) and ``start_finetune`` (what "Start fine-tuning" runs: export of the case, job
spec, worker launch). With ``--channels N`` the case has N co-registered volumes (one
per input channel, as for BraTS' four MR sequences): each is checked and written. The
worker is cancelled right after it was launched: training is not what is measured. The last line printed is one JSON object::

    {"add_case_s": ..., "start_s": ..., "torch_imported": ...}

``torch_imported`` says whether ``torch`` is in this process's ``sys.modules`` after
the model list (what the panel shows when it opens) and both paths (Slicer's own
process must never import it).
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "Testing"))

import numpy as np  # noqa: E402

IJK_TO_RAS = np.diag([-0.8, -0.8, 1.5, 1.0])  # 0.8 × 0.8 × 1.5 mm voxels, a CT's usual grid


def build_case(size, segments: int):
    """A CT-like volume and a segmentation with ``segments`` bricks, as the user's nodes."""
    import slicer
    import vtk

    i, j, k = size
    voxels = np.random.default_rng(0).integers(-1000, 1000, size=(k, j, i), dtype=np.int16)
    ijk_to_ras = IJK_TO_RAS
    volume = slicer.util.addVolumeFromArray(voxels, ijkToRAS=ijk_to_ras, name="big CT")
    labels = np.zeros((k, j, i), np.uint8)
    per_side = int(np.ceil(np.sqrt(segments)))
    step_j, step_i = j // per_side, i // per_side
    for n in range(segments):
        row, column = divmod(n, per_side)
        labels[k // 4: 3 * k // 4, row * step_j + 2: (row + 1) * step_j - 2,
               column * step_i + 2: (column + 1) * step_i - 2] = n + 1
    labelmap = slicer.util.addVolumeFromArray(labels, ijkToRAS=ijk_to_ras, name="labels",
                                              nodeClassName="vtkMRMLLabelMapVolumeNode")
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "big segmentation")
    segmentation.CreateDefaultDisplayNodes()
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    ids = vtk.vtkStringArray()
    for n in range(segments):
        ids.InsertNextValue(segmentation.GetSegmentation().AddEmptySegment(f"organ_{n + 1}", f"organ {n + 1}"))
    if not slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(labelmap, segmentation, ids):
        raise SystemExit("could not build the segmentation")
    slicer.mrmlScene.RemoveNode(labelmap)
    return volume, segmentation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=3, default=[512, 512, 300], help="volume size i j k (default: 512 512 300)")
    parser.add_argument("--segments", type=int, default=41, help="number of segments (default: 41)")
    parser.add_argument("--channels", type=int, default=1, help="volumes per case, one per input channel (default: 1)")
    parser.add_argument("--keep-job", action="store_true", help="keep the job folder (default: removed)")
    args = parser.parse_args()

    import slicer
    from slicer_fixture import MRMLApplication

    application = MRMLApplication()
    slicer.mrmlScene = application.scene
    slicer.modules = application.modules
    from TransferSegLib.scene.logic import TransferSegLogic
    from TransferSegLib.scene import segment_names

    work = Path(tempfile.mkdtemp(prefix="bench-scene-"))
    t0 = time.perf_counter()
    volume, segmentation = build_case(args.size, args.segments)
    print(f"built {args.size} volume with {args.segments} segments in {time.perf_counter() - t0:.1f} s", flush=True)
    logic = TransferSegLogic(python=sys.executable, work_root=str(work))
    rows = logic.base_models()  # what the panel does when it opens: the model list
    print(f"model list: {len(rows)} rows", flush=True)
    ticked = segment_names(segmentation)
    channels = [slicer.util.addVolumeFromArray(slicer.util.arrayFromVolume(volume) // (n + 2),
                                               ijkToRAS=IJK_TO_RAS, name=f"channel {n + 2}")
                for n in range(args.channels - 1)]
    names = [f"C{n + 1}" for n in range(args.channels)] if channels else []

    t0 = time.perf_counter()
    result = logic.add_case(volume, segmentation, ticked, channels=channels, channel_names=names)
    add_case_s = time.perf_counter() - t0
    case = getattr(result, "case", result)
    print(f"add case: {add_case_s:.2f} s", flush=True)

    t0 = time.perf_counter()
    run = logic.start_finetune([case], base="none", strategy="scratch", iterations=1, time_budget_s=None)
    start_s = time.perf_counter() - t0
    print(f"start fine-tuning: {start_s:.2f} s (job {run.directory})", flush=True)
    torch_imported = "torch" in sys.modules
    try:
        logic.cancel_training()
        if hasattr(logic, "wait_for_training"):
            try:
                logic.wait_for_training(timeout=600)
            except Exception as exc:  # a cancelled or refused job is expected here
                print(f"job ended: {exc}")
    finally:
        if not args.keep_job:
            shutil.rmtree(work, ignore_errors=True)
        application.scene.Clear(1)
    print(json.dumps({"add_case_s": round(add_case_s, 2), "start_s": round(start_s, 2),
                      "torch_imported": torch_imported, "size": args.size, "segments": args.segments,
                      "channels": args.channels, "cpus": os.cpu_count()}))


if __name__ == "__main__":
    main()
