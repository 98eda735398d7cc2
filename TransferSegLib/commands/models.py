"""``transferseg models``: list, inspect, download, register, import and export base models."""

import json
import sys
from pathlib import Path
from typing import Optional


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="list, download, add, import or export base models")
    actions = p.add_subparsers(dest="models_command", metavar="ACTION")

    listing = actions.add_parser("list", help="catalog models and what is available on this computer")
    listing.add_argument("--all", action="store_true", help="also list models of packages that are not installed")
    listing.add_argument("--json", action="store_true", help="print the entries as JSON")
    listing.set_defaults(func=run_list)

    show = actions.add_parser("show", help="a model's card: network, labels, recipe, license, source")
    show.add_argument("name")
    show.set_defaults(func=run_show)

    fetch = actions.add_parser("download", help="download and verify a catalog model's weights")
    fetch.add_argument("name")
    fetch.add_argument("--allow-unverified", action="store_true",
                       help="download even when the publisher gives no checksum (you trust the server)")
    fetch.add_argument("--file", metavar="PATH",
                       help="use this copy of the published file instead of downloading it (checked the same way)")
    fetch.set_defaults(func=run_download)

    add = actions.add_parser("add", help="register a local checkpoint (with --spec) or a MONAI bundle")
    add.add_argument("--name", required=True, help="name to use with --base")
    source = add.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="weights file (torch.save of a state_dict)")
    source.add_argument("--bundle", help="MONAI bundle folder or zip")
    add.add_argument("--spec", help="JSON with network, labels, recipe, patch_size (and optional key_map, "
                                    "encoder_only, modality, license)")
    add.set_defaults(func=run_add)

    remove = actions.add_parser("remove", help="forget a model registered with 'add' or 'import-bundle'")
    remove.add_argument("name")
    remove.set_defaults(func=run_remove)

    imp = actions.add_parser("import-bundle", help="register a MONAI bundle (folder or zip) as a base model")
    imp.add_argument("path")
    imp.add_argument("--name", help="name to use with --base (default: the bundle's name)")
    imp.set_defaults(func=run_import)

    inflate = actions.add_parser("inflate", help="register a 3D network initialized from a 2D network's weights")
    inflate.add_argument("--checkpoint-2d", required=True, help="weights of the 2D network (plain state_dict)")
    inflate.add_argument("--spec", required=True,
                         help="JSON spec of the 3D network (same class and widths, spatial_dims 3), labels, recipe, "
                              "patch size")
    inflate.add_argument("--name", required=True, help="name to use with --base")
    inflate.add_argument("--depth-mode", choices=("center", "average"), default="center",
                         help="2D kernel on the middle slice (center) or spread over depth (average)")
    inflate.set_defaults(func=run_inflate)

    exp = actions.add_parser("export-bundle", help="write a fine-tuned model folder as a MONAI bundle")
    exp.add_argument("model_dir", metavar="MODEL_DIR")
    exp.add_argument("out", metavar="OUT", help="bundle folder to create (a .zip path writes a zip)")
    exp.set_defaults(func=run_export)

    p.set_defaults(func=run_list, all=False, json=False)


def run(args) -> int:
    return int(args.func(args) or 0)


def _classes(labels) -> str:
    names = [n for n in labels if str(n).lower() != "background"]
    if not names:
        return "no head (encoder/backbone)"
    return f"{len(names)}: " + ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")


def run_list(args) -> int:
    from TransferSegLib.models.catalog import list_models

    entries = list_models(include_unavailable=bool(getattr(args, "all", False)))
    if getattr(args, "json", False):
        rows = [dict(e.to_dict(), status=e.status(), cached=e.cached()) for e in entries]
        print(json.dumps(rows, indent=2))
        return 0
    width = max([len(e.name) for e in entries] + [4])
    print(f"{'NAME':<{width}}  {'SOURCE':<8} {'MOD':<3} {'LICENSE':<20} {'STATUS':<13} CLASSES")
    for e in entries:
        license_text = (e.license or "?") + (" (NC)" if e.non_commercial else "")
        print(f"{e.name:<{width}}  {e.source:<8} {e.modality:<3} {license_text:<20} {e.status():<13} "
              f"{_classes(e.labels)}")
    if any(e.non_commercial for e in entries):
        print("(NC): non-commercial license, research use only.")
    if any(e.status() == "unverified" for e in entries):
        print("unverified: the publisher gives no checksum; 'transferseg models download NAME --allow-unverified'.")
    if any(e.status() == "not installed" for e in entries):
        print("not installed: install the model's Python package ('transferseg models show NAME').")
    return 0


def run_show(args) -> int:
    from TransferSegLib.models.catalog import find_model

    entry = find_model(args.name)
    data = entry.to_dict()
    data["status"] = entry.status()
    weights = entry.weights_file()
    data["weights_file"] = str(weights) if weights else None
    print(json.dumps(data, indent=2))
    return 0


def _progress():
    state = {"last": -1}

    def report(done: int, total: Optional[int]) -> None:
        if total:
            percent = int(100 * done / total)
            if percent != state["last"]:
                state["last"] = percent
                print(f"\r{done / 1e6:8.1f} / {total / 1e6:.1f} MB ({percent}%)", end="", file=sys.stderr)
        elif done // 10_000_000 != state["last"]:
            state["last"] = done // 10_000_000
            print(f"\r{done / 1e6:8.1f} MB", end="", file=sys.stderr)

    return report


def run_download(args) -> int:
    from TransferSegLib.models.catalog import download_model

    local = Path(args.file) if getattr(args, "file", None) else None
    path = download_model(args.name, progress=_progress(), allow_unverified=args.allow_unverified, local_file=local)
    if local is None:
        print(file=sys.stderr)
    print(f"{args.name}: {path}")
    return 0


def run_add(args) -> int:
    from TransferSegLib.models.catalog import add_user_model
    from TransferSegLib.errors import ModelError

    if args.checkpoint and not args.spec:
        raise ModelError("'transferseg models add --checkpoint' needs --spec SPEC.json (network, labels, recipe, "
                         "patch_size).")
    name = add_user_model(Path(args.checkpoint or args.bundle), name=args.name, spec=args.spec)
    print(f"registered '{name}': use it with --base {name}")
    return 0


def run_remove(args) -> int:
    from TransferSegLib.models.catalog import remove_user_model

    remove_user_model(args.name)
    print(f"removed '{args.name}'")
    return 0


def run_import(args) -> int:
    from TransferSegLib.models.catalog import add_user_model

    name = add_user_model(Path(args.path), name=args.name)
    print(f"registered the bundle as '{name}': use it with --base {name}")
    return 0


def run_inflate(args) -> int:
    from TransferSegLib.models.catalog import add_inflated_model

    name = add_inflated_model(Path(args.checkpoint_2d), Path(args.spec), args.name, depth_mode=args.depth_mode)
    print(f"registered the inflated 3D network as '{name}': fine-tune it with --base {name}")
    return 0


def run_export(args) -> int:
    from TransferSegLib.models.bundle import export_bundle

    out = export_bundle(Path(args.model_dir), Path(args.out))
    print(f"wrote the MONAI bundle {out}; run it with: python -m monai.bundle run --config_file "
          f"{out}/configs/inference.json --bundle_root {out} --image IMAGE --output_dir OUT")
    return 0
