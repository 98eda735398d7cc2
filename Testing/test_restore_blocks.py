"""The bounded-memory restore gives the whole-volume restore's labels, on exact geometry."""

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from TransferSegLib.data.preprocess import preprocess_image, preprocess_labels, restore_labelmap, restore_probabilities
from TransferSegLib.data.recipe import IntensitySpec, Recipe
from TransferSegLib.inference.outputs import normalized_entropy, restored_outputs
from TransferSegLib.inference.restore_blocks import label_blocks, restore_labels

# The oblique, permuted and flipped grids the preprocessing tests use.
from test_preprocess import _PERMUTED_FLIPPED, _rotation  # noqa: E402

NO_INTENSITY = IntensitySpec(kind="none")




def _oblique_image(size=(40, 34, 18), spacing=(0.8, 1.1, 3.0)) -> sitk.Image:
    """A body-like blob on an oblique, permuted, flipped, anisotropic grid with an off-centre origin."""
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in size[::-1]], indexing="ij")
    centre = [(n - 1) / 2 for n in size]
    distance = sum(((g - c) * s) ** 2 for g, c, s in zip((xx, yy, zz), centre, spacing))
    values = np.where(distance < 14.0 ** 2, 100.0, -100.0) + np.random.default_rng(0).normal(0, 5, distance.shape)
    image = sitk.GetImageFromArray(values.astype(np.float32))
    image.SetSpacing(spacing)
    image.SetOrigin((-112.5, 37.25, 401.0))
    image.SetDirection(tuple((_rotation(20, 20) @ _PERMUTED_FLIPPED).ravel()))
    return image


def _smooth_probabilities(shape, classes: int, seed: int = 0, organs: bool = True) -> np.ndarray:
    """Softmax of smooth random logits. ``organs``: each class a blob somewhere in a
    background (as in a CT, so most classes can only win in a small box); otherwise
    noise where every class wins somewhere all over the volume. Many near-ties at borders."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    noise = np.stack([ndimage.gaussian_filter(rng.normal(0, 6, shape), 2.0) for _ in range(classes)])
    if not organs:
        noise[0] += 1.5
        logits = noise
    else:
        grid = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
        logits = 0.3 * noise
        for c in range(1, classes):
            centre = [rng.uniform(0.2, 0.8) * n for n in shape]
            radius = rng.uniform(0.1, 0.25) * min(shape)
            d2 = sum((g - m) ** 2 for g, m in zip(grid, centre))
            logits[c] += 9.0 * np.exp(-d2 / (2 * radius ** 2)) - 5.0
    e = np.exp(logits - logits.max(0))
    return (e / e.sum(0)).astype(np.float32)


RECIPES = {
    "resampled": Recipe(spacing=(1.7, 1.3, 2.2), intensity=NO_INTENSITY),
    "resampled+crop": Recipe(spacing=(1.5, 1.5, 1.5), intensity=NO_INTENSITY, crop_foreground=True,
                             crop_threshold=0.0, crop_margin_mm=2.0),
    "reoriented only": Recipe(spacing=None, intensity=NO_INTENSITY),
    "resampled+crop+resize": Recipe(spacing=(1.5, 1.5, 1.5), intensity=NO_INTENSITY, crop_foreground=True,
                                    crop_threshold=0.0, crop_margin_mm=2.0, resize=(12, 10, 9)),
    "crop only": Recipe(spacing=None, intensity=NO_INTENSITY, crop_foreground=True, crop_threshold=0.0,
                        crop_margin_mm=1.0),
}


@pytest.mark.parametrize("name", sorted(RECIPES))
@pytest.mark.parametrize("budget", [20_000, 1 << 26])  # blocks of 5 voxels, and one block for everything
@pytest.mark.parametrize("organs", [True, False])
def test_block_restore_equals_the_whole_volume_argmax(name, budget, organs):
    image = _oblique_image()
    array, info = preprocess_image(image, RECIPES[name])
    probs = _smooth_probabilities(array.shape, classes=6, organs=organs)
    reference = sitk.GetArrayFromImage(restore_labelmap(probs, info))
    candidates = [len(c) for *_, c in label_blocks(torch.from_numpy(probs), info, budget)]
    if organs and budget < 1 << 26:  # both shortcuts are exercised: blocks with one candidate, blocks with fewer than all
        assert min(candidates) == 1 and 1 < max(candidates) < 6 and len(candidates) > 100
    labels = restore_labels(torch.from_numpy(probs), info, budget_bytes=budget)
    assert labels.shape == tuple(image.GetSize())[::-1]
    assert len(np.unique(reference)) >= 4  # the check sees several classes, not just background
    np.testing.assert_array_equal(labels, reference)


def test_block_restore_is_exact_for_labels_on_an_oblique_grid():
    image = _oblique_image()
    truth = (sitk.GetArrayFromImage(image) > 0).astype(np.uint8)
    label = sitk.GetImageFromArray(truth)
    label.CopyInformation(image)
    array, info = preprocess_image(image, RECIPES["crop only"])
    net = preprocess_labels(label, info)
    one_hot = np.stack([(net == c).astype(np.float32) for c in range(2)])
    np.testing.assert_array_equal(restore_labels(torch.from_numpy(one_hot), info), truth)


def test_float16_probabilities_restore_to_nearly_the_same_labels():
    image = _oblique_image()
    array, info = preprocess_image(image, RECIPES["resampled"])
    probs = _smooth_probabilities(array.shape, classes=5, seed=1)
    full = restore_labels(torch.from_numpy(probs), info)
    half = restore_labels(torch.from_numpy(probs).half(), info)
    assert (full != half).mean() < 1e-3


def test_slabs_give_the_whole_volume_probabilities_and_entropy(tmp_path):
    image = _oblique_image(size=(30, 26, 12))
    array, info = preprocess_image(image, RECIPES["resampled+crop+resize"])
    probs = _smooth_probabilities(array.shape, classes=4, seed=2)
    reference = restore_probabilities(probs, info)
    path = tmp_path / "probabilities.mha"
    kept, entropy = restored_outputs(torch.from_numpy(probs), info, keep=True, uncertainty=True,
                                     probabilities_path=path, budget_bytes=1)
    np.testing.assert_allclose(kept, reference, atol=1e-6)
    written = sitk.ReadImage(str(path))
    assert written.GetSize() == image.GetSize() and written.GetNumberOfComponentsPerPixel() == 4
    assert written.GetSpacing() == image.GetSpacing() and written.GetOrigin() == image.GetOrigin()
    np.testing.assert_allclose(written.GetDirection(), image.GetDirection(), atol=1e-12)
    np.testing.assert_allclose(sitk.GetArrayFromImage(written).transpose(3, 2, 1, 0), reference, atol=1e-6)
    expected = normalized_entropy(torch.from_numpy(reference)).numpy().transpose(2, 1, 0)
    np.testing.assert_allclose(sitk.GetArrayFromImage(entropy), expected, atol=1e-5)
    assert entropy.GetDirection() == image.GetDirection()
    assert [p.name for p in tmp_path.iterdir()] == ["probabilities.mha"]  # no temporary left behind
