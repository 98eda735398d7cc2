"""Files shipped inside installed Python packages (a published network inside, e.g., deepbet).

Found from the distribution's file list, without importing the package.
"""

from importlib import metadata
from pathlib import Path
from typing import Optional


def installed_package_file(package: str, resource: str) -> Optional[Path]:
    """A file of an installed distribution, found from its file list (without importing it).

    Importing e.g. deepbet would pull in its GUI and image-processing dependencies;
    the distribution metadata says where its files are, also for data folders
    installed beside the package rather than inside it.
    """
    if not package or not resource:
        return None
    try:
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        return None
    wanted = resource.replace("\\", "/").strip("/")
    for item in dist.files or []:
        if str(item).replace("\\", "/") == wanted:
            path = Path(str(dist.locate_file(item)))
            return path if path.is_file() else None
    return None
