"""Regenerate Resources/TotalSegmentator/class_maps.json from an installed (or unpacked) TotalSegmentator.

TransferSeg lists the TotalSegmentator models it finds on disk with their class names and licenses. The
tables are TotalSegmentator's own, copied as data: ``totalsegmentator/map_to_binary.py`` (``class_map``,
the part maps, ``commercial_models``) and ``totalsegmentator/map_tasks_config.py`` (task ids, trainers,
weights folders and releases). TransferSeg reads an installed package first and this copy when it is absent;
both go through ``TransferSegLib.models.totalsegmentator.tables_from_modules``.

    python Utilities/make_totalseg_class_maps.py [FOLDER_HOLDING_THE_totalsegmentator_PACKAGE]

(e.g. ``pip download --no-deps TotalSegmentator`` and unzip the wheel into FOLDER).
"""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from TransferSegLib.models.totalsegmentator import shipped_tables_path, tables_from_modules  # noqa: E402


def main() -> int:
    if len(sys.argv) > 1:
        sys.path.insert(0, sys.argv[1])
        infos = sorted(Path(sys.argv[1]).glob("[Tt]otal[Ss]egmentator-*.dist-info"))
        version = infos[0].name[:-len(".dist-info")].split("-")[1] if infos else "(unknown version)"
    else:
        from importlib import metadata

        version = metadata.version("TotalSegmentator")
    from totalsegmentator import map_tasks_config, map_to_binary

    payload = tables_from_modules(map_to_binary, map_tasks_config, version)
    out = shipped_tables_path()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}: {len(payload['datasets'])} datasets")
    return 0


if __name__ == "__main__":
    sys.exit(main())
