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

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from TransferSegLib.data.channels import order_channels, read_channels
from TransferSegLib.data.preprocess import preprocess_image
from TransferSegLib.data.recipe import Recipe
from TransferSegLib.errors import CaseError
from TransferSegLib.model_card import ModelCard
from TransferSegLib.models.model_dir import save_model_dir
from TransferSegLib.names import BACKGROUND, normalize_label_name
from TransferSegLib.specs import Case, FinetuneSpec, NetworkSpec, TrainConfig, parse_image_argument
from TransferSegLib.training.finetune import FinetuneResult, run_finetune
from TransferSegLib.training.loop import Batch, Loop, Reporter, remove_checkpoints, run_loop
from TransferSegLib.training.networks import build_network, default_network_spec


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

    def train_config(self) -> TrainConfig:
        """The training loop's settings for this run (no validation, no augmentation; AMP on a GPU)."""
        return TrainConfig(patch_size=tuple(int(p) for p in self.patch_size), batch_size=self.batch_size,  # type: ignore[arg-type]
                           iterations=self.iterations, time_budget=None, learning_rate=self.learning_rate,
                           weight_decay=0.01, val_every=max(self.iterations, 1) + 1, patience=0, seed=self.seed,
                           device=self.device, augment=False)


def masked_batches(volumes: List[np.ndarray], config: MaskedReconstructionConfig) -> Callable[[Loop], Batch]:
    """``next_batch`` for masked reconstruction: random patches, cubes covering ``mask_ratio`` replaced by noise."""
    patch = np.array(config.patch_size)

    def next_batch(loop: Loop) -> Batch:
        rng = loop.np_rng
        batch = np.stack([_random_patch(volumes[rng.integers(len(volumes))], patch, rng) for _ in range(config.batch_size)])
        masks = np.stack([_cube_mask(patch, config.cube, config.mask_ratio, rng) for _ in range(config.batch_size)])
        target = torch.from_numpy(batch).to(loop.device)  # (B, C, X, Y, Z)
        mask = torch.from_numpy(masks[:, None]).to(loop.device)  # (B, 1, X, Y, Z): the same cubes in every channel
        noise = torch.from_numpy(rng.normal(0, 0.5, target.shape).astype(np.float32)).to(loop.device)
        return Batch(inputs=torch.where(mask, noise, target), target=target, region=mask)

    return next_batch


def masked_l1(outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
    """L1 between the reconstruction and the original intensities, on the masked voxels only."""
    mask = batch.region.expand_as(batch.target)
    return (torch.abs(outputs - batch.target) * mask).sum() / mask.sum().clamp(min=1)


def pretrain_masked_reconstruction(
    images: List[str],
    output: str,
    config: MaskedReconstructionConfig,
    recipe: Optional[Recipe] = None,
    network: Optional[NetworkSpec] = None,
    reporter: Optional[Reporter] = None,
    modality: str = "CT",
    should_stop: Optional[Callable[[], bool]] = None,
    work_dir: Optional[str] = None,
    resume: bool = False,
) -> Path:
    """Self-supervised pretraining on unlabeled volumes; writes an encoder-only base model.

    Cubes covering ``mask_ratio`` of each patch are replaced by noise and the
    network regresses the original intensities there (L1 on masked voxels only),
    which forces the encoder to learn anatomy-aware context features. Runs in the
    same loop as fine-tuning: mixed precision on a GPU, cancel, checkpoints, resume.
    """
    reporter = reporter or Reporter()
    if not images:
        raise CaseError("Self-supervised pretraining needs at least one image.")
    recipe = recipe or Recipe()
    volumes, channel_names = _unlabelled_volumes(images, recipe)
    channels = int(volumes[0].shape[0])
    spec = network or default_network_spec(channels, channels)
    if int(spec.args.get("in_channels", channels)) != channels:
        raise CaseError(f"The network reads {spec.args.get('in_channels')} channel(s) but the images have {channels}.")
    spec = spec.with_out_channels(channels)  # every channel is reconstructed
    model = build_network(spec)
    work = Path(work_dir) if work_dir else Path(output).expanduser().resolve().parent / f".{Path(output).name}.work"
    result = run_loop(model, config.train_config(), work, masked_batches(volumes, config), masked_l1,
                      reporter=reporter, should_stop=should_stop, resume=resume)
    card = ModelCard(
        name=Path(output).name, network=spec, labels=[BACKGROUND], encoder_only=True, recipe=recipe,
        patch_size=tuple(int(p) for p in config.patch_size), modality=modality, input_channels=channel_names,
        strategy="self-supervised masked reconstruction",
        metrics={"final_reconstruction_l1": round(result.final_loss, 5)},
        training={"iterations": result.iterations, "images": [Path(p).name for p in images],
                  "elapsed_s": round(result.elapsed_s, 1)},
    )
    out = save_model_dir(Path(output), model.state_dict(), card)
    remove_checkpoints(work)
    reporter.event("finished", model=str(out), metrics=card.metrics, iterations=result.iterations)
    return out


def _unlabelled_volumes(images: Sequence[str], recipe: Recipe) -> Tuple[List[np.ndarray], List[str]]:
    """Each image preprocessed to ``(C, X, Y, Z)``; an image of several channels is given as one
    ``a,b`` / ``T1=a,T2=b`` argument (as ``--image`` of ``finetune``) or a 4D file. Every image must
    have the same channels (named ones in the first image's order)."""
    volumes: List[np.ndarray] = []
    names: List[str] = []
    for index, image in enumerate(images):
        paths, given = parse_image_argument(str(image))
        if index == 0:
            names = list(given)
        elif names and given:
            paths = order_channels(paths, given, names, len(names), f"Image '{image}'")
        channels = read_channels(paths)
        array, _ = preprocess_image(channels if len(channels) > 1 else channels[0], recipe)
        array = array if array.ndim == 4 else array[None]
        if volumes and array.shape[0] != volumes[0].shape[0]:
            raise CaseError(f"Image '{image}' has {array.shape[0]} channel(s), the first image "
                            f"{volumes[0].shape[0]}: give every image the same channels.")
        volumes.append(array)
    return volumes, names if len(names) == volumes[0].shape[0] else []


def _random_patch(volume: np.ndarray, patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random ``(C, *patch)`` patch of a ``(C, X, Y, Z)`` volume (padded with its minimum if smaller)."""
    pads = [(0, 0)] + [(0, max(0, int(p) - s)) for p, s in zip(patch, volume.shape[1:])]
    if any(b for _, b in pads):
        volume = np.pad(volume, pads, mode="constant", constant_values=float(volume.min()))
    start = [int(rng.integers(0, s - p + 1)) for s, p in zip(volume.shape[1:], patch)]
    return volume[(slice(None),) + tuple(slice(a, a + int(p)) for a, p in zip(start, patch))].astype(np.float32)


def _cube_mask(patch: np.ndarray, cube: int, ratio: float, rng: np.random.Generator) -> np.ndarray:
    grid = [max(1, int(p) // cube) for p in patch]
    coarse = rng.random(grid) < ratio
    mask = np.kron(coarse, np.ones((cube, cube, cube), bool))
    full = np.zeros(tuple(int(p) for p in patch), bool)
    full[: mask.shape[0], : mask.shape[1], : mask.shape[2]] = mask[: full.shape[0], : full.shape[1], : full.shape[2]]
    return full
