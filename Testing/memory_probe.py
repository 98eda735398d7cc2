"""Peak resident memory of one prediction, for test_inference_memory (run as a subprocess).

Usage: python Testing/memory_probe.py CLASSES X Y Z
Predicts a synthetic CT of X×Y×Z voxels at 1 mm with a freshly initialised default
network of CLASSES classes and the default model's recipe (3 mm, body crop), then
prints the peak resident set size in bytes before and after the prediction.
"""

import resource
import sys

import numpy as np
import SimpleITK as sitk
import torch

from TransferSegLib.inference.infer import InferenceOptions, predict_image
from TransferSegLib.models.base_model import default_model_dir, load_model_dir
from TransferSegLib.training.networks import build_network, default_network_spec


def _peak_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def main() -> None:
    classes, size = int(sys.argv[1]), [int(v) for v in sys.argv[2:5]]
    torch.manual_seed(0)
    torch.set_num_threads(1)
    info = load_model_dir(default_model_dir())
    info.labels = ["background"] + [f"class {i}" for i in range(1, classes)]
    model = build_network(default_network_spec(1, classes))
    zz, yy, xx = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in size[::-1]], indexing="ij", sparse=True)
    body = ((xx - size[0] / 2) / (0.4 * size[0])) ** 2 + ((yy - size[1] / 2) / (0.35 * size[1])) ** 2 < 1.0
    values = np.where(body, 40.0, -1000.0) + 0.0 * zz
    image = sitk.GetImageFromArray(values.astype(np.int16))
    del values, body
    before = _peak_bytes()
    prediction = predict_image(model, info, image, "cpu", InferenceOptions(overlap=0.25))
    assert prediction.labelmap.GetSize() == tuple(size)
    print(before, _peak_bytes())


if __name__ == "__main__":
    main()
