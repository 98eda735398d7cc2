"""Batches made ahead in background threads are the batches of their iteration, whoever makes them."""

import numpy as np
import torch

from TransferSegLib.training.augment import AugmentConfig
from TransferSegLib.training.batches import BatchSource, WaitShare
from TransferSegLib.training.sampling import PreparedCase


def _cases():
    rng = np.random.default_rng(0)
    cases = []
    for n in range(2):
        label = np.zeros((40, 36, 20), np.uint8)
        label[10:20, 8:30, 5:15] = 1
        label[25:35, 5:12, 2:8] = 2
        image = (label * 1.0 + rng.normal(0, 0.1, label.shape)).astype(np.float32)
        cases.append(PreparedCase(f"case{n}", image, label, np.array([True, True, True])))
    for case in cases:
        case.index_foreground(np.random.default_rng(0))
    return cases


def _run(workers, start=0, count=6, augment=True):
    aug = AugmentConfig(rotate_prob=0.5, scale_prob=0.5, intensity_prob=0.5) if augment else None
    with BatchSource(_cases(), (16, 16, 8), 2, 0.67, seed=3, device=torch.device("cpu"), augment=aug,
                     start=start, workers=workers, depth=3) as source:
        return [source.next() for _ in range(count)]


def test_threads_and_depth_do_not_change_the_batches():
    inline, threaded = _run(workers=0), _run(workers=2)
    for a, b in zip(inline, threaded):
        assert a.iteration == b.iteration
        for name in ("images", "labels", "regions", "annotated"):
            assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert len({float(b.images.sum()) for b in inline}) == len(inline)  # each iteration its own batch


def test_a_resumed_run_draws_the_batches_of_the_uninterrupted_run():
    whole = _run(workers=2, count=7)
    resumed = _run(workers=2, start=4, count=3)
    assert [b.iteration for b in resumed] == [4, 5, 6]
    for a, b in zip(whole[4:], resumed):
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)


def test_batches_are_augmented_and_keep_labels_aligned_with_images():
    plain, augmented = _run(workers=1, augment=False), _run(workers=1)
    assert any(not torch.equal(p.images, a.images) for p, a in zip(plain, augmented))
    for batch in plain:
        assert batch.images.shape == (2, 1, 16, 16, 8) and batch.labels.dtype == torch.int64
        # without augmentation the image is the label plus small noise, voxel for voxel
        assert (batch.images[:, 0].round().long() == batch.labels).float().mean() > 0.99
        assert batch.wait_s >= 0.0


def test_the_wait_share_is_the_waited_part_of_the_step_time():
    share = WaitShare(window=3)
    assert share.percent is None
    for wait, step in [(9.0, 10.0), (0.1, 1.0), (0.1, 1.0), (0.3, 1.0)]:
        share.add(wait, step)
    assert share.percent == 16.7  # the first step fell out of the window
