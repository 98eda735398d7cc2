"""MONAI bundles out: a fine-tuned model folder as a bundle MONAI's own tools run.

The bundle's configuration is made of standard MONAI transforms that reproduce
TransferSeg's own preprocessing, sliding window and inverse, so that MONAI Label,
Auto3DSeg or ``python -m monai.bundle run`` predict what ``transferseg predict`` does.
Nothing is left at the output path unless the bundle is complete.
"""

import datetime
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Dict, List

from TransferSegLib.data.recipe import Recipe
from TransferSegLib.data.steps import describe
from TransferSegLib.errors import ModelError
from TransferSegLib.inference.cleanup import cleanup_classes, recorded_decisions
from TransferSegLib.models.base_model import BaseModel, load_model_dir
from TransferSegLib.models.bundle_steps import transforms_of_step
from TransferSegLib.paths import write_atomically


def _preprocessing(recipe: Recipe) -> List[Dict[str, Any]]:
    transforms: List[Dict[str, Any]] = [
        {"_target_": "LoadImaged", "keys": "image", "image_only": True},
        {"_target_": "EnsureChannelFirstd", "keys": "image"},
    ]
    if recipe.reorients:
        transforms.append({"_target_": "Orientationd", "keys": "image", "axcodes": recipe.orientation})
    if recipe.spacing is not None:
        transforms.append({"_target_": "Spacingd", "keys": "image", "pixdim": list(recipe.spacing), "mode": "bilinear"})
    if recipe.crop_foreground and recipe.crop_select != "above":
        raise ModelError(f"Cannot export the recipe's '{recipe.crop_select}' foreground crop as a MONAI transform.")
    if recipe.crop_foreground and recipe.crop_margin_fraction:
        raise ModelError("Cannot export a foreground crop with a margin fraction as a MONAI transform.")
    if recipe.crop_foreground:
        spacing = recipe.spacing or (1.0, 1.0, 1.0)
        margin = [int(-(-recipe.crop_margin_mm // s)) for s in spacing]
        transforms.append({"_target_": "CropForegroundd", "keys": "image", "source_key": "image",
                           "select_fn": f"$lambda x: x > {recipe.crop_threshold!r}", "margin": margin,
                           "allow_smaller": True})
    if recipe.resize is not None:
        transforms.append({"_target_": "Resized", "keys": "image", "spatial_size": list(recipe.resize),
                           "mode": "trilinear" if recipe.resize_mode == "linear" else "nearest-exact"})
    for step in recipe.intensity:
        transforms.extend(transforms_of_step(step))
    return transforms


def _cleanup_transforms(info: BaseModel) -> List[Dict[str, Any]]:
    """The model's per-class largest-component clean-up as MONAI's own transform, so the bundle
    predicts what ``transferseg predict`` does (face connectivity, removed voxels become background)."""
    classes = cleanup_classes(info.labels, recorded_decisions(info.card, f"model '{info.name}'"))
    if not classes:
        return []
    return [{"_target_": "KeepLargestConnectedComponentd", "keys": "pred", "applied_labels": classes,
             "is_onehot": False, "independent": True, "connectivity": 1}]


def _background_outside_crop(recipe: Recipe, when: str) -> List[Dict[str, Any]]:
    """Outside the foreground crop TransferSeg's way back fills probability 1 for background; MONAI's
    inverse of ``CropForegroundd`` fills 0 for every class, which moves the argmax wherever the way back
    interpolates across the crop's edge. Shifting the background channel by -1 before the inverse and
    back after it makes MONAI's zeros mean background 1 (the interpolation is linear)."""
    if not recipe.crop_foreground:
        return []
    offset = "- 1" if when == "before" else "+ 1"
    return [{"_target_": "Lambdad", "keys": "pred", "func": f"$lambda p: torch.cat([p[:1] {offset}, p[1:]])"}]


def inference_config(info: BaseModel, overlap: float = 0.5) -> Dict[str, Any]:
    """``configs/inference.json`` for a model: MONAI transforms only, runnable with
    ``python -m monai.bundle run --config_file configs/inference.json --image IMAGE``."""
    return {
        "imports": ["$import torch", "$import numpy"],
        "bundle_root": ".",
        "image": "",
        "output_dir": "$@bundle_root + '/eval'",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": info.network.to_dict(),
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": _preprocessing(info.recipe)},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": list(info.patch_size), "sw_batch_size": 2,
                    "overlap": overlap, "mode": "gaussian", "padding_mode": "constant",
                    # windows past the image's edge are filled with its minimum, as TransferSeg pads (training too)
                    "cval": "$float(@sample['image'].min())"},
        "postprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "Activationsd", "keys": "pred", "softmax": True},
            *_background_outside_crop(info.recipe, "before"),
            {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "image",
             "nearest_interp": False, "to_tensor": True},
            *_background_outside_crop(info.recipe, "after"),
            {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
            *_cleanup_transforms(info),
            {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir", "output_postfix": "seg",
             "output_ext": ".nii.gz", "output_dtype": "$numpy.uint8", "resample": False,
             "separate_folder": False, "print_log": False},
        ]},
        "checkpoint": "$@bundle_root + '/models/model.pt'",
        "load_weights": "$@network.load_state_dict(torch.load(@checkpoint, map_location=@device, weights_only=True))",
        "sample": "$@preprocessing({'image': @image})",
        "predict": "$@postprocessing(dict(@sample, pred=@inferer(@sample['image'][None].to(@device), @network)[0]))",
        "initialize": ["$torch.set_grad_enabled(False)"],
        "run": ["$@load_weights", "$@network.eval()", "$@predict"],
    }


def _versions() -> Dict[str, str]:
    import monai
    import numpy
    import torch

    return {"monai_version": monai.__version__, "pytorch_version": torch.__version__.split("+")[0],
            "numpy_version": numpy.__version__}


def input_channels(info: BaseModel) -> List[str]:
    """The names of the network's input channels, in its order (MONAI's input ``channel_def``).

    A multi-channel model's bundle is run with one file per channel in this order
    (``--image "['t1c.nii.gz', 't1.nii.gz']"``): MONAI's ``LoadImaged`` stacks a list
    of files as channels, as the BraTS bundle's data lists do.
    """
    names = [str(n) for n in (info.card.get("input_channels") or [])]
    count = int(info.network.args.get("in_channels", len(names) or 1))
    if len(names) == count:
        return names
    return ["image"] if count == 1 else [f"channel {i}" for i in range(count)]


def metadata(info: BaseModel, meta: Dict[str, Any]) -> Dict[str, Any]:
    """``configs/metadata.json``: MONAI's metadata fields, labels as ``channel_def``."""
    classes = [n for n in info.labels[1:]]
    channels = input_channels(info)
    images = (f"single channel {info.modality} image" if len(channels) == 1 else
              f"{len(channels)} co-registered {info.modality} channels ({', '.join(channels)}), one file each")
    channel_def = {str(i): name for i, name in enumerate(info.labels)}
    created = str(meta.get("created") or datetime.date.today().isoformat())
    data = {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json",
        "version": "0.1.0",
        "changelog": {"0.1.0": f"exported from TransferSeg ({created})"},
        **_versions(),
        # MONAI's KeepLargestConnectedComponentd (the clean-up) needs scikit-image on the CPU.
        **({"optional_packages_version": {"scikit-image": "0.19"}} if _cleanup_transforms(info) else {}),
        "required_packages_version": {"nibabel": _nibabel_version()},
        "name": info.name,
        "task": f"{info.modality} segmentation of {', '.join(classes) or 'no classes'}",
        "description": f"Fine-tuned by TransferSeg from the base model '{meta.get('base_model', 'unknown')}' "
                       f"with the '{meta.get('strategy', 'unknown')}' strategy.",
        "authors": "TransferSeg user",
        "copyright": "",
        "data_source": "the user's own annotated cases",
        "data_type": "nibabel",
        "image_classes": images,
        "label_classes": ", ".join(f"{i}: {n}" for i, n in enumerate(info.labels)),
        "pred_classes": ", ".join(f"{i}: {n}" for i, n in enumerate(info.labels)),
        "eval_metrics": dict(meta.get("metrics") or {}),
        "intended_use": "Research only; not for clinical decisions.",
        "references": ["TransferSeg: fine-tuning pretrained 3D segmentation networks on a few annotated cases."],
        "network_data_format": {
            "inputs": {"image": {
                "type": "image", "format": "hounsfield" if info.modality.upper() == "CT" else "magnitude",
                "modality": info.modality, "num_channels": len(channels), "spatial_shape": list(info.patch_size),
                "dtype": "float32", "value_range": [], "is_patch_data": True,
                "channel_def": {str(i): name for i, name in enumerate(channels)}}},
            "outputs": {"pred": {
                "type": "image", "format": "segmentation", "num_channels": len(info.labels),
                "spatial_shape": list(info.patch_size), "dtype": "float32", "value_range": [0, 1],
                "is_patch_data": True, "channel_def": channel_def}},
        },
    }
    return data


def _nibabel_version() -> str:
    try:
        import nibabel

        return str(nibabel.__version__)
    except ImportError:
        return "required"


def _readme(info: BaseModel, meta: Dict[str, Any]) -> str:
    recipe = info.recipe
    lines = [
        f"# {info.name}", "",
        f"A {info.modality} segmentation model fine-tuned with TransferSeg from the base model "
        f"'{meta.get('base_model', 'unknown')}' (strategy '{meta.get('strategy', 'unknown')}').", "",
        "## Labels", "", *[f"- {i}: {name}" for i, name in enumerate(info.labels)], "",
        "## Preprocessing", "",
        f"- orientation {recipe.orientation}; spacing {list(recipe.spacing) if recipe.spacing else 'unchanged'} mm",
        f"- intensity: {describe(recipe.intensity)}",
        f"- sliding window {list(info.patch_size)}, gaussian blending, overlap 0.5; softmax, argmax, back to the "
        f"input grid", "",
        "## Run", "",
        "Needs monai, nibabel and fire (`pip install monai nibabel fire`).", "",
    ]
    channels = input_channels(info)
    image = ("/path/to/image.nii.gz" if len(channels) == 1 else
             '"[' + ", ".join(f"'{name.replace(' ', '_')}.nii.gz'" for name in channels) + ']"')
    if len(channels) > 1:
        lines += [f"The model reads {len(channels)} co-registered images, one file per channel in this order: "
                  f"{', '.join(channels)}.", ""]
    lines += ["```", "python -m monai.bundle run --config_file configs/inference.json --bundle_root . \\",
              f"    --image {image} --output_dir ./eval", "```", ""]
    if info.network.target.startswith("TransferSegLib."):
        lines += ["The network is a TransferSeg class: install TransferSeg (and the package its network comes "
                  "from) in the Python that runs this bundle.", ""]
    if info.non_commercial:
        lines += ["**The base model's license forbids commercial use; so does this derived model's.**", ""]
    if meta.get("metrics"):
        lines += ["## Validation", "", "```", json.dumps(meta["metrics"], indent=2), "```", ""]
    lines += ["Research use only; not a medical device."]
    return "\n".join(lines) + "\n"


def _license_text(info: BaseModel, meta: Dict[str, Any]) -> str:
    base = meta.get("base_model", "unknown")
    text = (f"This model was fine-tuned from the base model '{base}'"
            f"{' (license: ' + info.license + ')' if info.license else ''}.\n"
            "Its weights are a derivative of the base model's weights and carry the base model's license terms.\n")
    if info.non_commercial:
        text += "The base model's license is non-commercial: commercial use of this model is not permitted.\n"
    return text


def export_bundle(model_dir: Path, out: Path) -> Path:
    """Write a fine-tuned model folder as a MONAI bundle folder at ``out`` (or a zip
    when ``out`` ends in ``.zip``); nothing is left at ``out`` unless complete."""
    info = load_model_dir(Path(model_dir))
    meta = dict(info.card)
    out = Path(out).expanduser().resolve()
    if out.exists():
        raise ModelError(f"'{out}' already exists; choose another output path or remove it first.")
    as_zip = out.suffix == ".zip"
    name = out.stem if as_zip else out.name
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=str(out.parent)))
    try:
        root = temp / name
        for sub in ("configs", "models", "docs"):
            (root / sub).mkdir(parents=True)
        (root / "configs" / "metadata.json").write_text(json.dumps(metadata(info, meta), indent=4) + "\n",
                                                        encoding="utf-8")
        (root / "configs" / "inference.json").write_text(json.dumps(inference_config(info), indent=4) + "\n",
                                                         encoding="utf-8")
        shutil.copyfile(info.weights, root / "models" / "model.pt")
        (root / "docs" / "README.md").write_text(_readme(info, meta), encoding="utf-8")
        (root / "LICENSE").write_text(_license_text(info, meta), encoding="utf-8")
        if as_zip:
            def pack(archive: Path) -> None:
                with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
                    for file in sorted(root.rglob("*")):
                        if file.is_file():
                            zf.write(file, file.relative_to(temp).as_posix())
            write_atomically(out, pack)
        else:
            os.chmod(root, 0o755)
            os.replace(root, out)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return out
