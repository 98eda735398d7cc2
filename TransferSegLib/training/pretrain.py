"""Making base models: partial-label pretraining and self-supervised pretraining.

Partial labels (Humpire-Mamani et al. 2023, arXiv 2311.05032): one network is
trained on a collection where each case annotates only some classes. The label
set is the union; each case's loss is the marginal loss over the classes it
annotates (``losses.partial_label_loss``), so a class a case does not annotate is
never pushed toward background.

Self-supervised: for a new modality or domain without labels, the network learns
to reconstruct masked cubes of unlabeled volumes; its encoder then initializes a
segmentation network (the head and decoder are re-learned during fine-tuning).
"""

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from TransferSegLib.data.cases import Case
from TransferSegLib.errors import CaseError
from TransferSegLib.training.finetune import FinetuneResult, FinetuneSpec, run_finetune
from TransferSegLib.data.imageio import read_image
from TransferSegLib.models.model_dir import save_model_dir
from TransferSegLib.names import normalize_label_name
from TransferSegLib.training.networks import NetworkSpec, build_network, default_network_spec
from TransferSegLib.data.preprocess import preprocess_image
from TransferSegLib.data.recipe import Recipe
from TransferSegLib.training.train import Reporter, TrainConfig, resolve_device, set_seed


def union_labels(cases: Sequence[Case], exclude: Sequence[str] = ()) -> List[str]:
    """Every class some case annotates, minus the withheld ones, in first-seen order."""
    withheld = {normalize_label_name(n) for n in exclude}
    seen: Dict[str, str] = {}
    for case in cases:
        names = case.annotated if case.annotated is not None else [n for _, n in sorted(case.label_names.items())]
        for name in names:
            key = normalize_label_name(name)
            if key not in withheld and key not in seen:
                seen[key] = name
    if not seen:
        raise CaseError("The pretraining cases name no class (after withholding): nothing to learn.")
    return list(seen.values())


def pretrain_partial_labels(
    cases: List[Case],
    output: str,
    config: TrainConfig,
    labels: Optional[List[str]] = None,
    exclude: Sequence[str] = (),
    recipe: Optional[Recipe] = None,
    patch_size=None,
    name: str = "",
    reporter: Optional[Reporter] = None,
    should_stop: Optional[Callable[[], bool]] = None,
    val_cases: Optional[List[Case]] = None,
) -> FinetuneResult:
    """Train a base model from scratch on partially labelled cases."""
    target = labels or union_labels(cases, exclude)
    withheld = {normalize_label_name(n) for n in exclude}
    clash = [n for n in target if normalize_label_name(n) in withheld]
    if clash:
        raise CaseError(f"Classes {clash} are both requested and withheld.")
    spec = FinetuneSpec(
        base="none", cases=cases, labels=target, strategy="scratch", output=output, train=config,
        val_cases=list(val_cases or []), recipe=recipe, patch_size=patch_size, name=name or Path(output).name,
    )
    return run_finetune(spec, reporter=reporter, should_stop=should_stop)


@dataclass
class MaskedReconstructionConfig:
    patch_size: tuple = (64, 64, 32)
    batch_size: int = 2
    iterations: int = 200
    mask_ratio: float = 0.4
    cube: int = 8
    learning_rate: float = 1e-3
    seed: int = 0
    device: str = "auto"


@torch.enable_grad()  # as train.train: never depend on the caller's autograd state
def pretrain_masked_reconstruction(
    images: List[str],
    output: str,
    config: MaskedReconstructionConfig,
    recipe: Optional[Recipe] = None,
    network: Optional[NetworkSpec] = None,
    reporter: Optional[Reporter] = None,
    modality: str = "CT",
) -> Path:
    """Self-supervised pretraining on unlabeled volumes; writes an encoder-only base model.

    Cubes covering ``mask_ratio`` of each patch are replaced by noise and the
    network regresses the original intensities there (L1 on masked voxels only),
    which forces the encoder to learn anatomy-aware context features.
    """
    reporter = reporter or Reporter()
    if not images:
        raise CaseError("Self-supervised pretraining needs at least one image.")
    recipe = recipe or Recipe()
    spec = network or default_network_spec(1, 1)
    spec = spec.with_out_channels(1)
    set_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    volumes = [preprocess_image(read_image(p), recipe)[0] for p in images]
    device = resolve_device(config.device)
    model = build_network(spec).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate)
    patch = np.array(config.patch_size)
    start = time.monotonic()
    loss_value = float("nan")
    for it in range(1, config.iterations + 1):
        batch = np.stack([_random_patch(volumes[rng.integers(len(volumes))], patch, rng) for _ in range(config.batch_size)])
        masks = np.stack([_cube_mask(patch, config.cube, config.mask_ratio, rng) for _ in range(config.batch_size)])
        target = torch.from_numpy(batch[:, None]).to(device)
        mask = torch.from_numpy(masks[:, None]).to(device)
        noise = torch.from_numpy(rng.normal(0, 0.5, target.shape).astype(np.float32)).to(device)
        corrupted = torch.where(mask, noise, target)
        model.train()
        optimizer.zero_grad(set_to_none=True)
        out = model(corrupted)
        if isinstance(out, (list, tuple)):
            out = out[0]
        loss = (torch.abs(out - target) * mask).sum() / mask.sum().clamp(min=1)
        loss.backward()
        optimizer.step()
        loss_value = float(loss.detach())
        if it == 1 or it % 10 == 0 or it == config.iterations:
            elapsed = time.monotonic() - start
            reporter.event("progress", iteration=it, total_iterations=config.iterations,
                           percent=round(100.0 * it / config.iterations, 1), loss=round(loss_value, 5),
                           eta_s=round(elapsed / it * (config.iterations - it), 1), elapsed_s=round(elapsed, 1))
    meta = {
        "name": Path(output).name,
        "network": spec.to_dict(),
        "labels": [],
        "encoder_only": True,
        "recipe": recipe.to_dict(),
        "patch_size": [int(p) for p in patch],
        "modality": modality,
        "strategy": "self-supervised masked reconstruction",
        "metrics": {"final_reconstruction_l1": round(loss_value, 5)},
        "training": {"iterations": config.iterations, "images": [Path(p).name for p in images],
                     "elapsed_s": round(time.monotonic() - start, 1)},
    }
    out = save_model_dir(Path(output), model.state_dict(), meta)
    reporter.event("finished", model=str(out), metrics=meta["metrics"], iterations=config.iterations)
    return out


def _random_patch(volume: np.ndarray, patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    pads = [(0, max(0, int(p) - s)) for p, s in zip(patch, volume.shape)]
    if any(b for _, b in pads):
        volume = np.pad(volume, pads, mode="constant", constant_values=float(volume.min()))
    start = [int(rng.integers(0, s - p + 1)) for s, p in zip(volume.shape, patch)]
    return volume[tuple(slice(a, a + int(p)) for a, p in zip(start, patch))].astype(np.float32)


def _cube_mask(patch: np.ndarray, cube: int, ratio: float, rng: np.random.Generator) -> np.ndarray:
    grid = [max(1, int(p) // cube) for p in patch]
    coarse = rng.random(grid) < ratio
    mask = np.kron(coarse, np.ones((cube, cube, cube), bool))
    full = np.zeros(tuple(int(p) for p in patch), bool)
    full[: mask.shape[0], : mask.shape[1], : mask.shape[2]] = mask[: full.shape[0], : full.shape[1], : full.shape[2]]
    return full
