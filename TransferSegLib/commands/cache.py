"""``transferseg cache list|clean``: what the download cache holds, and freeing it."""


def add_parser(sub) -> None:
    p = sub.add_parser("cache", help="list or clean the download cache (downloaded base models)",
                       epilog="example:\n  transferseg cache list\n  transferseg cache clean --dry-run")
    actions = p.add_subparsers(dest="cache_command", metavar="ACTION")

    listing = actions.add_parser("list", help="what the cache holds, with sizes",
                                 epilog="example:\n  transferseg cache list")
    listing.set_defaults(func=run_list)

    clean = actions.add_parser("clean", help="remove downloaded models and partial downloads (they can be "
                                             "downloaded again); registered models are kept",
                               epilog="example:\n  transferseg cache clean spleen_ct_segmentation")
    clean.add_argument("names", nargs="*", metavar="NAME",
                       help="entries to remove, as 'cache list' names them (without any: every download)")
    clean.add_argument("--all", action="store_true",
                       help="also remove what other tools keep in the cache folder (never registered models)")
    clean.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    clean.set_defaults(func=run_clean)

    p.set_defaults(func=run_list)


def run_list(args) -> int:
    from TransferSegLib.commands.tables import format_table, terminal_width
    from TransferSegLib.models.cache import list_cache
    from TransferSegLib.models.download import cache_dir
    from TransferSegLib.paths import format_size

    items = list_cache()
    print(f"cache folder: {cache_dir()} (set TRANSFERSEG_CACHE to move it)")
    if not items:
        print("the cache is empty")
        return 0
    rows = [[i.name, i.kind, format_size(i.bytes), str(i.path)] for i in items]
    print(format_table(["NAME", "KIND", "SIZE", "PATH"], rows, terminal_width()))
    print(f"total {format_size(sum(i.bytes for i in items))}; 'transferseg cache clean' removes the downloads "
          f"({format_size(sum(i.bytes for i in items if i.removable))})")
    return 0


def run_clean(args) -> int:
    from TransferSegLib.models.cache import clean_cache
    from TransferSegLib.paths import format_size

    removed = clean_cache(args.names, include_other=args.all, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for item in removed:
        print(f"{verb} {item.name} ({item.kind}, {format_size(item.bytes)})")
    print(f"{verb} {len(removed)} cache entr{'y' if len(removed) == 1 else 'ies'}, "
          f"{format_size(sum(i.bytes for i in removed))}")
    return 0
