"""Training a segmentation network on prepared cases: patches in, a validated network and checkpoints out.

The loop itself (budgets, resume, checkpoints, keeping the best weights) is
``loop.run_loop``; this module says what a segmentation batch is (patches sampled
around the foreground, augmented), what its loss is (the partial-label loss: a
class a case does not annotate is never pushed toward background) and how
validation scores it (Dice per class on whole validation volumes).
"""

from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import nn

from TransferSegLib.evaluation.metrics import dice_per_class
from TransferSegLib.specs import TrainConfig
from TransferSegLib.training.augment import AugmentConfig
from TransferSegLib.training.batches import BatchSource
from TransferSegLib.training.loop import Batch, Loop, Reporter, TrainResult, Validator, run_loop
from TransferSegLib.training.losses import partial_label_loss
from TransferSegLib.training.sampling import PreparedCase

PredictFn = Callable[[nn.Module, np.ndarray], np.ndarray]


class SegmentationBatches:
    """``next_batch`` for segmentation: patches of the cases (foreground-weighted), augmented, on the device.

    The one place patches are drawn for training: ``batches.BatchSource`` samples
    them ahead in background threads and augments on the device. Batch ``i``
    depends on ``(seed, i)`` only, so the source is (re)started at the loop's
    iteration and a resumed run draws what an uninterrupted one would.
    """

    def __init__(self, cases: List[PreparedCase], labels: Sequence[str], config: TrainConfig):
        self.cases, self.config = cases, config
        self.augment = AugmentConfig.for_labels(labels) if config.augment else None
        self.source: Optional[BatchSource] = None

    def __call__(self, loop: Loop) -> Batch:
        if self.source is None or self.source.next_iteration != loop.state.iteration:
            self.close()
            config = self.config
            self.source = BatchSource(self.cases, config.patch_size, config.batch_size, config.foreground_ratio,
                                      config.seed, loop.device, self.augment, start=loop.state.iteration)
        made = self.source.next()
        return Batch(made.images, made.labels, made.annotated, made.regions, wait_s=made.wait_s)

    def close(self) -> None:
        """Stop the background threads (the loop calls it however it ends)."""
        if self.source is not None:
            self.source.close()
            self.source = None


def segmentation_batches(cases: List[PreparedCase], labels: Sequence[str], config: TrainConfig
                         ) -> SegmentationBatches:
    return SegmentationBatches(cases, labels, config)


def segmentation_loss(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    return partial_label_loss(logits, batch.target, batch.annotated, batch.region)


def train(
    model: nn.Module,
    train_cases: List[PreparedCase],
    val_cases: List[PreparedCase],
    labels: Sequence[str],
    strategy: str,
    config: TrainConfig,
    work_dir: Path,
    reporter: Optional[Reporter] = None,
    should_stop: Optional[Callable[[], bool]] = None,
    resume: bool = False,
    predict_fn: Optional[PredictFn] = None,
) -> TrainResult:
    """Train ``model`` in place; the best weights (by validation Dice) are loaded at the end.

    ``predict_fn(model, image (X,Y,Z)) -> labels (X,Y,Z)`` runs validation inference.
    """
    config.check()
    for case in train_cases:
        case.index_foreground(np.random.default_rng(config.seed))
    return run_loop(model, config, Path(work_dir), segmentation_batches(train_cases, labels, config),
                    segmentation_loss, strategy=strategy, reporter=reporter, should_stop=should_stop,
                    resume=resume, validator=_validator(val_cases, labels, predict_fn))


def _validator(cases: List[PreparedCase], labels: Sequence[str], predict_fn: Optional[PredictFn]
               ) -> Optional[Validator]:
    if not cases or predict_fn is None:
        return None
    return lambda net: validate(net, cases, labels, predict_fn)


def validate(model: nn.Module, cases: List[PreparedCase], labels: Sequence[str], predict_fn: PredictFn
             ) -> Dict[str, float]:
    """Mean Dice per foreground label over the cases that annotate it (within their annotated region)."""
    sums: Dict[str, List[float]] = {}
    model.eval()
    for case in cases:
        pred, ref = np.asarray(predict_fn(model, case.image)), np.asarray(case.label)
        if case.region is not None:
            pred, ref = pred[case.region], ref[case.region]
        classes = max(len(labels), int(pred.max(initial=0)) + 1, int(ref.max(initial=0)) + 1)
        dice = dice_per_class(pred, ref, classes)
        for index, name in enumerate(labels):
            if index > 0 and case.annotated[index]:
                sums.setdefault(name, []).append(float(dice[index]))
    return {name: round(float(np.mean(v)), 4) for name, v in sums.items()}
