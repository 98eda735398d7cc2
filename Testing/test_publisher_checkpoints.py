"""Checkpoints saved the way each publisher's training script saves them (optimizer
and scheduler state included) load with ``torch.load(weights_only=True)``.

Layouts, from each publisher's code:
- SuPreM ``supervised_pretraining/train.py``: ``{"net", "optimizer", "scheduler",
  "epoch"}``, DistributedDataParallel keys (``module.``), AdamW and its
  ``LinearWarmupCosineAnnealingLR`` (``optimizers/lr_scheduler.py``).
- Swin UNETR self-supervised, research-contributions ``SwinUNETR/Pretrain/main.py``:
  ``{"epoch", "state_dict", "optimizer"}``, AdamW.
- MONAI bundles trained with ``monai.handlers.CheckpointSaver``: ``{"model",
  "optimizer", "lr_scheduler"}`` (the released ``model.pt`` is the bare state_dict).
- MedicalNet ``train.py``: ``Testing/test_medicalnet.py``.
"""

import math

import pytest
import torch

from TransferSegLib.models import catalog
from TransferSegLib.models.checkpoints import load_state_dict, read_checkpoint
from TransferSegLib.specs import NetworkSpec
from TransferSegLib.training.networks import build_network

ENTRIES = {e.name: e for e in catalog.read_catalog(catalog.shipped_catalog_path())}


class WarmupCosine(torch.optim.lr_scheduler.LRScheduler):
    """A scheduler with the attributes of SuPreM's LinearWarmupCosineAnnealingLR (its
    state_dict is what matters here): linear warm-up, then cosine annealing."""

    def __init__(self, optimizer, warmup_epochs: int, max_epochs: int, warmup_start_lr: float = 0.0,
                 eta_min: float = 0.0) -> None:
        self.warmup_epochs, self.max_epochs = warmup_epochs, max_epochs
        self.warmup_start_lr, self.eta_min = warmup_start_lr, eta_min
        super().__init__(optimizer)

    def get_lr(self):
        e = self.last_epoch
        if e < self.warmup_epochs:
            return [self.warmup_start_lr + e * (b - self.warmup_start_lr) / max(1, self.warmup_epochs - 1)
                    for b in self.base_lrs]
        t = (e - self.warmup_epochs) / max(1, self.max_epochs - self.warmup_epochs)
        return [self.eta_min + 0.5 * (b - self.eta_min) * (1 + math.cos(math.pi * t)) for b in self.base_lrs]


def _trained(model: torch.nn.Module, optimizer, scheduler, steps: int = 2) -> None:
    """Optimizer steps with synthetic gradients: the optimizer's state (moments, step
    counts) and the scheduler's fill in as in training, without a forward pass."""
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        for param in model.parameters():
            param.grad = torch.randn(param.shape, generator=generator) * 1e-3
        optimizer.step()
        scheduler.step()


def _prefixed(state, prefix):
    return {prefix + k: v for k, v in state.items()}


def _loads(path, entry_name, model):
    entry = ENTRIES[entry_name]
    raw = read_checkpoint(path)  # weights_only=True
    assert isinstance(raw, dict)
    loaded, report = load_state_dict(path, entry.key_map, model)
    assert not report.shape_mismatch
    return raw, loaded, report


def test_a_suprem_checkpoint_with_adamw_and_its_scheduler_loads_weights_only(tmp_path):
    entry = ENTRIES["suprem_segresnet"]
    model = build_network(entry.network)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-5)
    scheduler = WarmupCosine(optimizer, warmup_epochs=10, max_epochs=400)
    _trained(model, optimizer, scheduler)
    path = tmp_path / "segresnet.pth"
    torch.save({"net": _prefixed(model.state_dict(), "module."), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "epoch": 2}, path)
    raw, loaded, report = _loads(path, "suprem_segresnet", build_network(entry.network))
    assert set(raw) == {"net", "optimizer", "scheduler", "epoch"}
    assert raw["scheduler"]["warmup_epochs"] == 10 and raw["optimizer"]["state"]
    assert not report.missing and len(report.loaded) == len(model.state_dict())
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded[key], value)


def test_a_swin_ssl_pretraining_checkpoint_with_optimizer_state_loads_weights_only(tmp_path):
    """research-contributions' pre-training saves the SSL model (swinViT + heads) with
    DataParallel keys; TransferSeg maps its swinViT onto SwinUNETR's encoder. A
    small feature size keeps the test fast; the key names do not depend on it."""
    entry = ENTRIES["swin_unetr_ssl"]
    spec = NetworkSpec.from_dict(dict(entry.network.to_dict(), feature_size=12))
    source = build_network(spec)
    optimizer = torch.optim.AdamW(source.parameters(), lr=4e-4, weight_decay=1e-5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 500))
    _trained(source, optimizer, scheduler, steps=1)
    swin = {k[len("swinViT."):].replace("mlp.linear1.", "mlp.fc1.").replace("mlp.linear2.", "mlp.fc2."): v
            for k, v in source.state_dict().items() if k.startswith("swinViT.")}
    path = tmp_path / "model_bestValRMSE.pt"
    torch.save({"epoch": 1, "state_dict": _prefixed(swin, "module."), "optimizer": optimizer.state_dict()}, path)
    raw, loaded, report = _loads(path, "swin_unetr_ssl", build_network(spec))
    assert set(raw) == {"epoch", "state_dict", "optimizer"}
    assert len(report.loaded) == len(swin) and all(k.startswith("swinViT.") for k in report.loaded)


@pytest.mark.parametrize("name", ["spleen_ct_segmentation", "brats_mri_segmentation"])
def test_a_monai_checkpoint_saver_file_loads_weights_only(tmp_path, name):
    entry = ENTRIES[name]
    spec = entry.network
    if name == "brats_mri_segmentation":
        spec = NetworkSpec.from_dict(dict(spec.to_dict(), init_filters=8))
    model = build_network(spec)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=100)
    _trained(model, optimizer, scheduler)
    path = tmp_path / "model_key_metric=0.9.pt"
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "lr_scheduler": scheduler.state_dict()}, path)
    _, loaded, report = _loads(path, name, build_network(spec))
    assert not report.missing and len(loaded) == len(model.state_dict())
