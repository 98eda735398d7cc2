"""The training loop: it learns, it stops when told, and a resume continues the same run."""

import numpy as np
import pytest
import torch

from TransferSegLib.errors import TrainingCancelled, TransferSegError
from TransferSegLib.specs import TrainConfig
from TransferSegLib.training.loop import CHECKPOINT_LAST
from TransferSegLib.training.networks import build_network, default_network_spec
from TransferSegLib.training.sampling import PreparedCase, sample_batch
from TransferSegLib.training.train import train


def _case(seed: int, name: str) -> PreparedCase:
    rng = np.random.default_rng(seed)
    image = rng.normal(0, 0.1, (24, 24, 16)).astype(np.float32)
    label = np.zeros(image.shape, np.uint8)
    c = rng.integers(8, 16, 3)
    label[c[0] - 4 : c[0] + 4, c[1] - 4 : c[1] + 4, 4:12] = 1
    image[label == 1] += 1.0
    return PreparedCase(name, image, label, np.array([True, True]))


def _predict(model, image):
    with torch.no_grad():
        x = torch.from_numpy(image)[None, None]
        return model(x).argmax(1)[0].numpy()


def _config(**kw):
    base = dict(patch_size=(16, 16, 16), batch_size=2, iterations=12, time_budget=None, val_every=4,
                patience=0, seed=3, device="cpu", augment=True, checkpoint_every=100, learning_rate=1e-2)
    base.update(kw)
    return TrainConfig(**base)


class Recorder:
    def __init__(self):
        self.events = []

    def event(self, kind, **fields):
        self.events.append((kind, fields))


def _model():
    torch.manual_seed(0)
    return build_network(default_network_spec(1, 2))


def test_training_reports_progress_validation_and_learns(tmp_path):
    cases = [_case(1, "a"), _case(2, "b")]
    model = _model()
    rec = Recorder()
    result = train(model, cases, cases, ["background", "blob"], "full", _config(iterations=40), tmp_path, rec, predict_fn=_predict)
    kinds = [k for k, _ in rec.events]
    assert "progress" in kinds and "validation" in kinds and "checkpoint" in kinds
    progress = [f for k, f in rec.events if k == "progress"]
    assert progress[-1]["percent"] == 100.0 and progress[-1]["iteration"] == 40
    assert all(f["loss"] is not None for f in progress)
    assert result.best_score > 0.5, result.history
    assert (tmp_path / CHECKPOINT_LAST).is_file()


def test_cancel_saves_a_checkpoint_and_resume_follows_the_same_trajectory(tmp_path):
    cases = [_case(1, "a"), _case(2, "b")]
    full = _model()
    train(full, cases, [], ["background", "blob"], "full", _config(), tmp_path / "full")

    calls = {"n": 0}

    def stop_after_5():
        calls["n"] += 1
        return calls["n"] > 5

    first = _model()
    with pytest.raises(TrainingCancelled):
        train(first, cases, [], ["background", "blob"], "full", _config(), tmp_path / "resumed", should_stop=stop_after_5)
    ckpt = torch.load(tmp_path / "resumed" / CHECKPOINT_LAST, weights_only=True)
    assert ckpt["state"]["iteration"] == 5
    second = _model()
    train(second, cases, [], ["background", "blob"], "full", _config(), tmp_path / "resumed", resume=True)
    for (k, a), (_, b) in zip(full.state_dict().items(), second.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-5), k


class _Events:
    def __init__(self):
        self.events = []

    def event(self, kind, **fields):
        self.events.append((kind, fields))


def test_progress_events_report_the_share_of_step_time_spent_waiting_for_data(tmp_path):
    events = _Events()
    train(_model(), [_case(1, "a")], [], ["background", "blob"], "full", _config(iterations=4), tmp_path,
          reporter=events)
    shares = [f["data_wait_pct"] for kind, f in events.events if kind == "progress"]
    assert shares and all(s is not None and 0.0 <= s <= 100.0 for s in shares)


def test_frozen_parameters_do_not_change(tmp_path):
    cases = [_case(1, "a")]
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train(model, cases, [], ["background", "blob"], "last-layers", _config(iterations=3), tmp_path)
    after = model.state_dict()
    assert torch.equal(before["input_block.conv1.conv.weight"], after["input_block.conv1.conv.weight"])
    assert not torch.equal(before["output_block.conv.conv.weight"], after["output_block.conv.conv.weight"])


def test_training_learns_even_when_the_caller_switched_autograd_off(tmp_path):
    cases = [_case(1, "a")]
    model = _model()
    before = model.output_block.conv.conv.weight.detach().clone()
    previous = torch.is_grad_enabled()
    torch.set_grad_enabled(False)  # what `monai.bundle run` leaves behind in its interpreter
    try:
        train(model, cases, [], ["background", "blob"], "last-layers", _config(iterations=2), tmp_path)
        assert not torch.is_grad_enabled()  # and the caller's state is given back
    finally:
        torch.set_grad_enabled(previous)
    assert not torch.equal(before, model.output_block.conv.conv.weight)


def test_augmentation_never_moves_an_organ_to_the_other_side():
    from TransferSegLib.training.augment import AugmentConfig, augment_batch

    labels = torch.zeros(8, 16, 16, 16, dtype=torch.long)
    labels[:, :6] = 1  # an organ on the low-X (right, in RAS arrays) side, like the liver
    config = AugmentConfig.for_labels(["spleen"])
    config.flip_prob, config.rotate_prob, config.scale_prob = 1.0, 0.0, 0.0  # mirror every axis it may
    assert 0 not in config.flip_axes
    _, out, _ = augment_batch(labels[:, None].float(), labels, torch.ones_like(labels), config,
                              torch.Generator().manual_seed(0))
    assert bool((out[:, :6] == 1).all()) and not bool(out[:, 10:].any())


def test_a_budget_is_required():
    with pytest.raises(TransferSegError, match="budget"):
        _config(iterations=None, time_budget=None).check()


def test_patches_are_centred_on_foreground_as_often_as_asked():
    case = _case(1, "a")
    case.index_foreground(np.random.default_rng(0))
    rng = np.random.default_rng(0)
    _, labels, _, _ = sample_batch([case], (8, 8, 8), 200, rng, foreground_ratio=1.0)
    assert (labels.reshape(200, -1).max(1) == 1).mean() > 0.95


def test_volumes_smaller_than_the_patch_are_padded_outside_the_region():
    case = _case(1, "a")
    case.index_foreground(np.random.default_rng(0))
    images, labels, regions, _ = sample_batch([case], (32, 32, 32), 1, np.random.default_rng(0))
    assert images.shape == (1, 1, 32, 32, 32)
    assert regions.sum() == case.image.size
