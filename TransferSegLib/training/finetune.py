"""Fine-tuning as one call: base model + a few cases + target labels → a model folder.

This is the function every face calls (command line, job worker, Slicer Logic):
it resolves the base model, reads and checks every case before any training
starts (so bad input fails in seconds, not after an hour), adapts the head to the
target labels by name, applies the transfer strategy, trains, and writes the
model folder atomically.
"""

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from TransferSegLib.data import case_cache
from TransferSegLib.data.cases import LoadedCase, load_case
from TransferSegLib.data.channels import channel_count, order_channels
from TransferSegLib.data.preprocess import preprocess_image, preprocess_labels
from TransferSegLib.data.recipe import Recipe
from TransferSegLib.errors import CaseError, ModelError
from TransferSegLib.inference.cleanup import cleanup_record
from TransferSegLib.inference.infer import InferenceOptions, sliding_window_probabilities
from TransferSegLib.model_card import ModelCard
from TransferSegLib.models.base_model import BaseModel
from TransferSegLib.models.folder_swap import check_folder_output, claim_output
from TransferSegLib.models.model_dir import base_weights, save_model_dir
from TransferSegLib.models.resolve import resolve_base_model
from TransferSegLib.models.totalsegmentator import pick_part
from TransferSegLib.names import index_by_name, normalize_label_name, with_background
from TransferSegLib.specs import Case, FinetuneSpec, NetworkSpec, check_strategy
from TransferSegLib.training.augment import AugmentConfig
from TransferSegLib.training.choices import choose_cleanup, choose_strategy, inherited_best_strategy
from TransferSegLib.training.devices import device_description, resolve_device
from TransferSegLib.training.loop import Reporter, remove_checkpoints
from TransferSegLib.training.memory import fit_training
from TransferSegLib.training.networks import build_network, default_network_spec, describe, patch_multiple
from TransferSegLib.training.sampling import PreparedCase
from TransferSegLib.specs import check_patch_size
from TransferSegLib.training.train import train
from TransferSegLib.training.transfer import adapt_head, load_pretrained

DEFAULT_PATCH = (64, 64, 32)


@dataclass
class FinetuneResult:
    model_dir: Path
    metrics: Dict[str, Any]
    iterations: int
    elapsed_s: float


def target_label_list(labels: Sequence[str], base: Optional[BaseModel], cases: Sequence[Case]) -> List[str]:
    """The model's label list (background first) for the requested target classes.

    Without ``--labels`` the target is every class the cases name, which must all
    be known to the base model (otherwise the user has to say what they want).
    """
    if labels:
        return with_background(labels)
    named = [n for case in cases for _, n in sorted(case.label_names.items())]
    if not named:
        raise CaseError(
            "The labelmaps carry no label names: give --labels NAME[,NAME] naming label values 1..N in order."
        )
    if base is not None and base.labels:
        known = index_by_name(base.labels)
        unknown = sorted({n for n in named if normalize_label_name(n) not in known})
        if unknown:
            raise CaseError(
                f"The cases label {', '.join(unknown)}, which the base model '{base.name}' does not know. "
                f"Give --labels to name the target classes (new classes get a new output channel)."
            )
    return with_background(named)


def _prepare(case: Case, labels: List[str], recipe: Recipe, loaded: Optional[LoadedCase] = None) -> PreparedCase:
    """The case on the model's grid; from the preprocessed-case cache when its files,
    the labels and the recipe are unchanged (``data/case_cache.py``)."""
    files = {"label": case.label, "region": case.region}
    files.update({f"image{n}": path for n, path in enumerate(case.images)})
    key = case_cache.case_key(files, {"label_names": case.label_names, "annotated": case.annotated, "name": case.name,
                                      "unselected": case.unselected, "channel_names": case.channel_names},
                              labels, recipe.to_dict())
    hit = case_cache.load(key)
    if hit is not None:
        return PreparedCase(hit["name"], hit["image"], hit["label"], hit["annotated"].astype(bool), hit["region"])
    loaded = loaded or load_case(case, labels)
    image, info = preprocess_image(loaded.network_input, recipe)
    if loaded.label is None:
        raise CaseError(f"Case '{loaded.name}' ({case.image}) has no labelmap: training cases need one.")
    label = preprocess_labels(loaded.label, info).astype(np.uint8)
    region = None
    if loaded.region is not None:
        region = preprocess_labels(loaded.region, info) > 0
    prepared = PreparedCase(loaded.name, image.astype(np.float32), label, np.asarray(loaded.annotated, bool), region)
    try:
        case_cache.store(key, prepared.name, {"image": prepared.image, "label": prepared.label,
                                               "annotated": prepared.annotated, "region": prepared.region})
    except OSError:
        pass  # a full or read-only cache only costs the next run the preprocessing again
    return prepared


def input_channels(base: Optional[BaseModel]) -> Tuple[List[str], Optional[int]]:
    """The channel names and count a base model's network reads (no base: any count)."""
    if base is None:
        return [], None
    names = [str(n) for n in (base.card.get("input_channels") or [])] if base.card else []
    return names, int(base.network.args.get("in_channels", len(names) or 1))


def order_case_channels(cases: Sequence[Case], base: Optional[BaseModel]) -> List[Case]:
    """Each case's channel files in the base model's channel order (matched by name
    when the case names them); a scratch model takes the cases' common count."""
    names, count = input_channels(base)
    if count is None:
        counts = {channel_count(c.images) for c in cases}
        if len(counts) > 1:
            raise CaseError(f"The cases have different numbers of channels ({sorted(counts)}): give every case "
                            f"the same channels.")
        return list(cases)
    return [c.with_channels(order_channels(c.images, c.channel_names, names, count, f"Case '{c.name}'"))
            for c in cases]


def _split_validation(cases: List[Case], seed: int) -> Tuple[List[Case], List[Case]]:
    if len(cases) < 3:
        return cases, []
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(cases))
    n_val = max(1, int(round(0.2 * len(cases))))
    val = [cases[i] for i in sorted(order[:n_val])]
    train_cases = [cases[i] for i in sorted(order[n_val:])]
    return train_cases, val


def _check_patch(patch: Sequence[int], spec: NetworkSpec) -> Tuple[int, int, int]:
    multiple = patch_multiple(spec)
    fixed = tuple(max(m, int(round(p / m)) * m) for p, m in zip(patch, multiple))
    return fixed  # type: ignore[return-value]


def build_target_model(
    base: Optional[BaseModel], labels: List[str], strategy: str, seed: int, in_channels: int = 1
) -> Tuple[torch.nn.Module, NetworkSpec, Dict[str, Any]]:
    """The network to train: the base network with a head for ``labels``, weights transferred
    (``in_channels``: the cases' channel count, for a network trained from scratch)."""
    torch.manual_seed(seed)
    if base is None:
        spec = default_network_spec(in_channels, len(labels))
        return build_network(spec), spec, {"transfer": "none (trained from scratch)"}
    spec = base.network.with_out_channels(len(labels))
    model = build_network(spec)
    if strategy == "scratch":
        return model, spec, {"transfer": "none (scratch strategy: the base network's architecture only)"}
    state = base_weights(base)
    if base.encoder_only or not base.labels:
        fresh = load_pretrained(model, state)
        return model, spec, {"transfer": "encoder weights", "fresh_tensors": len(fresh)}
    report = adapt_head(model, state, base.labels, labels)
    return model, spec, {"transfer": "weights + head adapted by label name", "kept": report.kept, "new": report.new, "dropped": report.dropped}


def run_finetune(
    spec: FinetuneSpec,
    reporter: Optional[Reporter] = None,
    should_stop: Optional[Callable[[], bool]] = None,
    work_dir: Optional[str] = None,
    resume: bool = False,
) -> FinetuneResult:
    """Fine-tune and write the model folder; see docs/architecture.md for the events.

    Settings, cases and ``--output`` are checked before anything is loaded; the
    output is claimed for the whole run (a second run for it is refused) and,
    without a ``work_dir``, checkpoints go to a folder of this run's own.
    """
    output = check_finetune_spec(spec)
    with claim_output(output):
        if work_dir is not None:
            return _run_claimed(spec, reporter, should_stop, Path(work_dir), resume)
        work = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".work", dir=str(output.parent)))
        finished = False
        try:
            result = _run_claimed(spec, reporter, should_stop, work, False)
            finished = True
            return result
        finally:
            # A failed or cancelled run keeps its checkpoints (resume with work_dir=...); so does a finished
            # one with keep_checkpoints. A folder with nothing in it never stays.
            if (finished and not spec.keep_checkpoints) or not any(work.iterdir()):
                shutil.rmtree(work, ignore_errors=True)


def check_finetune_spec(spec: FinetuneSpec) -> Path:
    """What can be checked before any file is read: strategy, settings, cases, ``--output``. Returns the output."""
    check_strategy(spec.strategy)  # 'auto' is resolved against the base model once it is loaded
    spec.train.check()
    if spec.patch_size is not None:
        check_patch_size(spec.patch_size)
    if not spec.cases:
        raise CaseError("No training cases: give --image/--label pairs or --dataset dataset.json.")
    return check_model_output(spec)


def check_model_output(spec: FinetuneSpec) -> Path:
    """``--output`` checked with the other inputs, before training (``OutputError`` naming the problem)."""
    inputs: Dict[str, List[str]] = {"--image": [], "--label": []}
    for case in spec.cases + spec.val_cases:
        inputs["--image"].append(case.image)
        inputs["--label"] += [p for p in (case.label, case.region) if p]
    return check_folder_output("--output", spec.output, inputs, marker="model.json")


def _run_claimed(spec: FinetuneSpec, reporter: Optional[Reporter], should_stop: Optional[Callable[[], bool]],
                 work: Path, resume: bool) -> FinetuneResult:
    reporter = reporter or Reporter()
    requested = check_strategy(spec.strategy)
    config = spec.train
    # TotalSegmentator's 'total' is several models: start from the part that knows the labels asked for
    wanted = list(spec.labels) or [n for c in spec.cases for n in c.label_names.values()]
    base_name, base_part = pick_part(spec.base, wanted)
    base = resolve_base_model(base_name, offline=spec.offline)
    choice = choose_strategy(requested, base)
    strategy = choice.strategy
    if base is None and strategy != "scratch":
        raise ModelError(
            f"Strategy '{strategy}' needs pretrained weights but --base is '{spec.base}'. "
            f"Pick a base model (e.g. --base default) or use --strategy scratch."
        )
    labels = target_label_list(spec.labels, base, spec.cases + spec.val_cases)
    recipe = spec.recipe or (base.recipe if base is not None else Recipe())
    if base is not None and spec.recipe is not None and strategy != "scratch":
        reporter.event("warning", message="A recipe override changes how the pretrained network sees images; transfer may suffer.")
    device = resolve_device(config.device)
    if device.type == "cpu":
        reporter.event("warning", message="Training on the CPU: expect it to be 10-50x slower than on a CUDA GPU.")

    cases, val_cases = order_case_channels(spec.cases, base), order_case_channels(spec.val_cases, base)
    channel_names = input_channels(base)[0] or (cases[0].channel_names if len(cases[0].images) > 1 else [])
    train_list, val_list = (cases, val_cases) if val_cases else _split_validation(cases, config.seed)
    prepared_train = [_prepare(c, labels, recipe) for c in train_list]
    loaded_val = [load_case(c, labels) for c in val_list]
    prepared_val = [_prepare(c, labels, recipe, loaded) for c, loaded in zip(val_list, loaded_val)]
    provided = np.any([c.annotated for c in prepared_train], axis=0)
    missing = [n for i, n in enumerate(labels) if i > 0 and not provided[i]]
    if missing:
        raise CaseError(
            f"No training case annotates {', '.join(missing)}: check the label names "
            f"(the cases name: {sorted({n for c in spec.cases for n in c.label_names.values()})})."
        )
    validation_on_training = False
    if not prepared_val:
        prepared_val = prepared_train
        validation_on_training = True
        reporter.event("warning", message="Fewer than 3 cases: validation Dice is measured on the training cases.")

    model, net_spec, transfer_info = build_target_model(base, labels, strategy, config.seed,
                                                        in_channels=channel_count(cases[0].images))
    patch = _check_patch(spec.patch_size or (base.patch_size if base is not None else config.patch_size or DEFAULT_PATCH), net_spec)
    fit = fit_training(model, patch, config.batch_size, device, config.amp, patch_multiple(net_spec))
    if (tuple(fit.patch_size), fit.batch_size) != (tuple(patch), config.batch_size):
        reporter.event("warning", message=f"GPU memory: {fit.reason} (patch {list(fit.patch_size)}, batch "
                                          f"{fit.batch_size}; about {fit.estimated_gb} GB of {fit.free_gb} GB free).")
        patch, config.batch_size = fit.patch_size, fit.batch_size
    config.patch_size = patch
    flips = AugmentConfig.for_labels(labels).flip_axes
    reporter.event(
        "started",
        **device_description(device),
        cases=[c.name for c in prepared_train],
        validation_cases=[c.name for c in prepared_val] if not validation_on_training else [],
        labels=labels,
        strategy=strategy,
        strategy_requested=choice.requested,
        strategy_reason=choice.reason,
        base=base.name if base is not None else "none",
        base_part=base_part or None,
        parameters=describe(model),
        patch_size=list(patch),
    )

    def predict_fn(net, image: np.ndarray) -> np.ndarray:
        probs = sliding_window_probabilities(net, image, patch, device, InferenceOptions(overlap=config.val_overlap))
        return probs.argmax(0)

    result = train(
        model, prepared_train, prepared_val, labels, strategy, config, work,
        reporter=reporter, should_stop=should_stop, resume=resume, predict_fn=predict_fn,
    )
    predictor = BaseModel(name=spec.name or Path(spec.output).name, network=net_spec, labels=labels, recipe=recipe,
                          patch_size=patch, card={"training": {"flip_axes": list(flips)}, "input_channels": list(channel_names)})
    cleanup = choose_cleanup(model, predictor, loaded_val, labels, config.device)
    metrics = {
        "validation_dice": result.last_dice if result.best_iteration == result.iterations else _best_dice(result.history),
        "best_mean_dice": round(result.best_score, 4) if result.best_score >= 0 else None,
        "validation_on_training_cases": validation_on_training,
    }
    card = ModelCard(
        name=spec.name or Path(spec.output).name,
        network=net_spec,
        labels=labels,
        recipe=recipe,
        patch_size=patch,
        input_channels=list(channel_names),
        modality=base.modality if base is not None else "CT",
        license=base.license if base is not None else "",
        non_commercial=bool(base.non_commercial) if base is not None else False,
        base_model=base.name if base is not None else "none",
        strategy=strategy,
        strategy_choice={"requested": choice.requested, "reason": choice.reason},
        best_strategy=inherited_best_strategy(base),
        cleanup=cleanup_record(cleanup),
        metrics=metrics,
        training={
            "iterations": result.iterations,
            "elapsed_s": round(result.elapsed_s, 1),
            "stopped_early": result.stopped_early,
            "config": config.to_dict(),
            "cases": [c.name for c in prepared_train],
            "validation_cases": [c.name for c in prepared_val] if not validation_on_training else [],
            "flip_axes": list(flips),
            "transfer": transfer_info,
            "history": result.history,
        },
    )
    out = save_model_dir(Path(spec.output), model.state_dict(), card)
    if not spec.keep_checkpoints:
        remove_checkpoints(work)
    reporter.event("finished", model=str(out), metrics=metrics, iterations=result.iterations, elapsed_s=round(result.elapsed_s, 1),
                   largest_component={n: d.to_dict() for n, d in cleanup.items()})
    return FinetuneResult(out, metrics, result.iterations, result.elapsed_s)


def _best_dice(history: List[Dict[str, Any]]) -> Dict[str, float]:
    scored = [h for h in history if "mean_dice" in h]
    if not scored:
        return {}
    return max(scored, key=lambda h: h["mean_dice"])["dice"]
