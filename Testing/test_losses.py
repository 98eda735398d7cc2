"""Partial- and sparse-label loss: what a case does not annotate must not teach anything."""

import torch

from TransferSegLib.training.losses import partial_label_loss


def _batch(seed=0, c=4, shape=(6, 5, 4)):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn((2, c) + shape, generator=g, requires_grad=True)
    target = torch.randint(0, c, (2,) + shape, generator=g)
    return logits, target


def test_partial_labels_do_not_teach_background():
    logits, target = _batch()
    annotated = torch.tensor([[True, True, False, True], [True, True, False, True]])
    target[target == 2] = 0  # class 2 unannotated: its voxels carry label 0
    loss = partial_label_loss(logits, target, annotated)
    swapped = logits.detach().clone()
    swapped[:, [0, 2]] = swapped[:, [2, 0]]  # move probability between background and class 2
    assert torch.allclose(partial_label_loss(swapped, target, annotated), loss, atol=1e-6)
    # The unannotated class's logit gets the same push as background's merged share:
    # never a push *away* from it relative to background.
    loss.backward()
    g = logits.grad
    bg_voxels = target == 0
    p = torch.softmax(logits.detach(), 1)
    ratio_bg = g[:, 0][bg_voxels] / p[:, 0][bg_voxels]
    ratio_unann = g[:, 2][bg_voxels] / p[:, 2][bg_voxels]
    assert torch.allclose(ratio_bg, ratio_unann, rtol=1e-4, atol=1e-7)


def test_swapping_an_annotated_class_with_background_changes_the_loss():
    logits, target = _batch(1)
    annotated = torch.ones(2, 4, dtype=torch.bool)
    loss = partial_label_loss(logits, target, annotated)
    swapped = logits.detach().clone()
    swapped[:, [0, 2]] = swapped[:, [2, 0]]
    assert abs(float(partial_label_loss(swapped, target, annotated)) - float(loss)) > 1e-3


def test_voxels_outside_the_annotated_region_do_not_count():
    logits, target = _batch(2)
    annotated = torch.ones(2, 4, dtype=torch.bool)
    region = torch.zeros_like(target, dtype=torch.bool)
    region[:, :3] = True
    loss = partial_label_loss(logits, target, annotated, region)
    changed = logits.detach().clone()
    changed[:, :, 3:] = torch.randn_like(changed[:, :, 3:]) * 10
    other_target = target.clone()
    other_target[:, 3:] = (other_target[:, 3:] + 1) % 4
    assert torch.allclose(partial_label_loss(changed, other_target, annotated, region), loss, atol=1e-6)


def test_perfect_prediction_has_lower_loss_than_a_wrong_one():
    target = torch.zeros(1, 8, 8, 8, dtype=torch.long)
    target[:, 2:6, 2:6, 2:6] = 1
    good = torch.nn.functional.one_hot(target, 2).movedim(-1, 1).float() * 20 - 10
    bad = -good
    ann = torch.ones(1, 2, dtype=torch.bool)
    assert float(partial_label_loss(good, target, ann)) < 0.01
    assert float(partial_label_loss(bad, target, ann)) > 1.0


def test_empty_region_gives_zero_loss_with_a_graph():
    logits, target = _batch(3)
    loss = partial_label_loss(logits, target, torch.ones(2, 4, dtype=torch.bool), torch.zeros_like(target, dtype=torch.bool))
    assert float(loss) == 0.0
    loss.backward()
