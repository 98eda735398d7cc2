"""``transferseg models``: list, inspect, download, register, import and export base models."""

import json
import sys
from pathlib import Path
from typing import Optional


def _example(*lines: str) -> str:
    return "example:\n" + "\n".join(f"  {line}" for line in lines)


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="list, show, download, add, import or export base models",
                       epilog=_example("transferseg models list", "transferseg models show default"))
    actions = p.add_subparsers(dest="models_command", metavar="ACTION")

    listing = actions.add_parser("list", help="base models ('default', 'none', catalog, registered) and their status",
                                 epilog=_example("transferseg models list --all"))
    listing.add_argument("--all", action="store_true", help="also list models of packages that are not installed")
    listing.add_argument("--json", action="store_true", help="print the entries as JSON")
    listing.set_defaults(func=run_list)

    show = actions.add_parser("show", help="a model's card: source, classes, license, recipe, training evidence",
                              epilog=_example("transferseg models show default", "transferseg models show models/liver"))
    show.add_argument("name", help="'default', 'none', a catalog or registered name, or a model folder")
    show.add_argument("--json", action="store_true", help="print the raw card as JSON")
    show.set_defaults(func=run_show)

    fetch = actions.add_parser("download", help="download and verify a catalog model's weights",
                               epilog=_example("transferseg models download spleen_ct_segmentation"))
    fetch.add_argument("name", help="catalog name ('transferseg models list')")
    fetch.add_argument("--allow-unverified", action="store_true",
                       help="download even when the publisher gives no checksum (you trust the server)")
    fetch.add_argument("--file", metavar="PATH",
                       help="use this copy of the published file instead of downloading it (checked the same way)")
    fetch.set_defaults(func=run_download)

    add = actions.add_parser("add", help="register a local checkpoint (with --spec), a MONAI bundle or an nnU-Net "
                                         "v2 trained model folder",
                             epilog=_example("transferseg models add --name mynet --checkpoint net.pt --spec net.json"))
    add.add_argument("--name", required=True, help="name to use with --base")
    source = add.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="weights file (torch.save of a state_dict)")
    source.add_argument("--bundle", help="MONAI bundle folder or zip")
    source.add_argument("--nnunet", metavar="FOLDER",
                        help="nnU-Net v2 trained model folder (<Trainer>__<Plans>__<configuration> with plans.json, "
                             "dataset.json, fold_X/checkpoint_final.pth), or one fold_X folder of it")
    add.add_argument("--spec", help="JSON with network, labels, recipe, patch_size (and optional key_map, "
                                    "encoder_only, modality, license)")
    add.set_defaults(func=run_add)

    remove = actions.add_parser("remove", help="forget a model registered with 'add' or 'import-bundle'",
                                epilog=_example("transferseg models remove mynet"))
    remove.add_argument("name", help="the registered model's name")
    remove.set_defaults(func=run_remove)

    imp = actions.add_parser("import-bundle", help="register a MONAI bundle (folder or zip) as a base model",
                             epilog=_example("transferseg models import-bundle spleen_ct_segmentation.zip"))
    imp.add_argument("path", help="MONAI bundle folder or zip")
    imp.add_argument("--name", help="name to use with --base (without it: the bundle's name)")
    imp.set_defaults(func=run_import)

    inflate = actions.add_parser("inflate", help="register a 3D network initialized from a 2D network's weights",
                                 epilog=_example("transferseg models inflate --checkpoint-2d unet2d.pt "
                                                 "--spec unet3d.json --name unet3d"))
    inflate.add_argument("--checkpoint-2d", required=True, help="weights of the 2D network (plain state_dict)")
    inflate.add_argument("--spec", required=True,
                         help="JSON spec of the 3D network (same class and widths, spatial_dims 3), labels, recipe, "
                              "patch size")
    inflate.add_argument("--name", required=True, help="name to use with --base")
    inflate.add_argument("--depth-mode", choices=("center", "average"), default="center",
                         help="2D kernel on the middle slice (center) or spread over depth (average)")
    inflate.set_defaults(func=run_inflate)

    exp = actions.add_parser("export-bundle", help="write a fine-tuned model folder as a MONAI bundle",
                             epilog=_example("transferseg models export-bundle models/liver liver_bundle.zip"))
    exp.add_argument("model_dir", metavar="MODEL_DIR", help="fine-tuned model folder (model.json + model.pt)")
    exp.add_argument("out", metavar="OUT", help="bundle folder to create (a .zip path writes a zip)")
    exp.set_defaults(func=run_export)

    nnunet = actions.add_parser("export-nnunet", help="write a model fine-tuned from an nnU-Net base as an nnU-Net v2 "
                                                      "model folder (runs with nnUNetv2_predict_from_modelfolder)",
                                 epilog=_example("transferseg models export-nnunet models/liver Dataset900_Liver/"
                                                 "nnUNetTrainer__nnUNetPlans__3d_fullres"))
    nnunet.add_argument("model_dir", metavar="MODEL_DIR", help="TransferSeg model folder fine-tuned from an nnU-Net base")
    nnunet.add_argument("out", metavar="OUT_DIR",
                        help="nnU-Net model folder to create (plans.json, dataset.json, fold_all/checkpoint_final.pth)")
    nnunet.set_defaults(func=run_export_nnunet)

    p.set_defaults(func=run_list, all=False, json=False)


def run(args) -> int:
    return int(args.func(args) or 0)


def run_list(args) -> int:
    from TransferSegLib.commands.model_card import builtin_rows, short_classes
    from TransferSegLib.commands.tables import format_table, terminal_width
    from TransferSegLib.models.catalog import list_models

    entries = list_models(include_unavailable=bool(getattr(args, "all", False)))
    if getattr(args, "json", False):
        rows = [dict(e.to_dict(), status=e.status(), cached=e.cached()) for e in entries]
        print(json.dumps(rows, indent=2))
        return 0
    rows = builtin_rows()
    for e in entries:
        license_text = (e.license or "?") + (" (NC)" if e.non_commercial else "")
        rows.append([e.name, e.source, e.modality, license_text, e.status(), short_classes(e.labels)])
    print(format_table(["NAME", "SOURCE", "MOD", "LICENSE", "STATUS", "CLASSES"], rows, terminal_width()))
    if any(e.non_commercial for e in entries):
        print("(NC): non-commercial license, research use only.")
    if any(e.status() == "unverified" for e in entries):
        print("unverified: the publisher gives no checksum; 'transferseg models download NAME --allow-unverified'.")
    if any(e.status() == "not installed" for e in entries):
        print("not installed: install the model's Python package ('transferseg models show NAME').")
    print("'transferseg models show NAME' prints a model's card.")
    return 0


def run_show(args) -> int:
    from TransferSegLib.commands.model_card import card_data, format_card

    data = card_data(args.name)
    print(json.dumps(data, indent=2) if args.json else format_card(data))
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
    from TransferSegLib.models.resolve import download_model

    local = Path(args.file) if getattr(args, "file", None) else None
    path = download_model(args.name, progress=_progress(), allow_unverified=args.allow_unverified, local_file=local)
    if local is None:
        print(file=sys.stderr)
    print(f"{args.name}: {path}")
    return 0


def run_add(args) -> int:
    from TransferSegLib.models.register import add_user_model
    from TransferSegLib.errors import ModelError

    if args.checkpoint and not args.spec:
        raise ModelError("'transferseg models add --checkpoint' needs --spec SPEC.json (network, labels, recipe, "
                         "patch_size).")
    name = add_user_model(Path(args.checkpoint or args.bundle or args.nnunet), name=args.name, spec=args.spec)
    print(f"registered '{name}': use it with --base {name}")
    return 0


def run_remove(args) -> int:
    from TransferSegLib.models.register import remove_user_model

    remove_user_model(args.name)
    print(f"removed '{args.name}'")
    return 0


def run_import(args) -> int:
    from TransferSegLib.models.register import add_user_model

    name = add_user_model(Path(args.path), name=args.name)
    print(f"registered the bundle as '{name}': use it with --base {name}")
    return 0


def run_inflate(args) -> int:
    from TransferSegLib.models.register import add_inflated_model

    name = add_inflated_model(Path(args.checkpoint_2d), Path(args.spec), args.name, depth_mode=args.depth_mode)
    print(f"registered the inflated 3D network as '{name}': fine-tune it with --base {name}")
    return 0


def run_export(args) -> int:
    from TransferSegLib.models.bundle_export import export_bundle

    out = export_bundle(Path(args.model_dir), Path(args.out))
    print(f"wrote the MONAI bundle {out}; run it with: python -m monai.bundle run --config_file "
          f"{out}/configs/inference.json --bundle_root {out} --image IMAGE --output_dir OUT")
    return 0


def run_export_nnunet(args) -> int:
    from TransferSegLib.models.nnunet_export import export_nnunet

    out = export_nnunet(Path(args.model_dir), Path(args.out))
    print(f"wrote the nnU-Net v2 model folder {out}; run it with: nnUNetv2_predict_from_modelfolder -i IN -o OUT "
          f"-m {out} -f all (input files named <case>_0000{_file_ending(out)})")
    return 0


def _file_ending(folder: Path) -> str:
    try:
        return str(json.loads((folder / "dataset.json").read_text(encoding="utf-8")).get("file_ending", ".nii.gz"))
    except (OSError, ValueError):
        return ".nii.gz"
