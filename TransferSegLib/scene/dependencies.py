"""Installing the engine's dependencies inside Slicer, on demand and after asking.

The peers' most common failure is an install that replaces Slicer's own packages.
So: torch only through the PyTorch extension (it picks the CUDA build for the
GPU), everything else with pip from ``Resources/requirements.txt`` with Slicer's
SimpleITK, torch and requests held back. Application only (dialogs).
"""

import importlib
import importlib.util
from typing import Dict, List

from TransferSegLib.errors import TransferSegError

# Packages Slicer ships or the PyTorch extension owns: pip must never replace them.
PROTECTED = ["torch", "SimpleITK", "requests"]
TORCH_REQUIREMENT = ">=1.13"


class DependencyError(TransferSegError):
    """A dependency is missing and was not (or could not be) installed."""


def _installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def _missing(names) -> List[str]:
    importlib.invalidate_caches()  # packages installed a moment ago must be seen
    return [n for n in names if not _installed(n)]


def install_torch() -> None:
    """torch through the PyTorch extension's installer (asks the user, picks the CUDA build)."""
    if not _missing(["torch"]):
        return
    try:
        import PyTorchUtils
    except ImportError as exc:
        raise DependencyError(
            "TransferSeg needs the 'PyTorch' extension to install PyTorch: install it from the "
            "Extensions Manager, restart Slicer, then try again."
        ) from exc
    torch_logic = PyTorchUtils.PyTorchUtilsLogic()
    if torch_logic.torchInstalled():
        return
    torch = torch_logic.installTorch(askConfirmation=True, torchVersionRequirement=TORCH_REQUIREMENT)
    if torch is None:
        raise DependencyError(
            "PyTorch was not installed, so TransferSeg cannot train or predict. Click the button "
            "again to retry, or install it in the PyTorch Utils module."
        )


def install_packages(requirements_path: str) -> None:
    """The pip requirements (monai, ...) after asking, without touching protected packages."""
    import slicer

    packaging = getattr(slicer, "packaging", None)
    if packaging is None:
        try:
            packaging = importlib.import_module("slicer.packaging")
        except ImportError:
            packaging = None
    if packaging is not None and hasattr(packaging, "pip_ensure"):  # Slicer 5.12+
        requirements = packaging.load_requirements(requirements_path)
        try:
            packaging.pip_ensure(requirements, requester="TransferSeg", skip_packages=PROTECTED)
        except TypeError:  # a pip_ensure without skip_packages: torch is already installed by now
            packaging.pip_ensure(requirements, requester="TransferSeg")
        except RuntimeError as exc:
            raise DependencyError(f"Python packages were not installed ({exc}). TransferSeg needs them to run.") from exc
        return
    with open(requirements_path, encoding="utf-8") as handle:
        lines = [ln.strip() for ln in handle if ln.strip() and not ln.lstrip().startswith(("#", "-"))]
    if not lines:
        return
    if not slicer.util.confirmOkCancelDisplay(
        "TransferSeg needs these Python packages, which will be installed into Slicer's Python:\n\n"
        + "\n".join(lines) + "\n\nSlicer's own PyTorch, SimpleITK and requests are not changed.",
        "TransferSeg - install Python packages",
    ):
        raise DependencyError("Python packages were not installed. TransferSeg needs them to train and predict.")
    # Older Slicer: --no-deps for monai keeps pip from replacing torch; its other needs are listed.
    slicer.util.pip_install(" ".join(f'"{ln}"' for ln in lines if not ln.lower().startswith("monai")))
    monai = [ln for ln in lines if ln.lower().startswith("monai")]
    if monai:
        slicer.util.pip_install(f'"{monai[0]}" --no-deps')


def install_dependencies(requirements_path: str, modules: Dict[str, str]) -> None:
    """Install whatever of ``modules`` (import name → display name) is missing."""
    missing = _missing(modules)
    if not missing:
        return
    if "torch" in missing:
        install_torch()
    if _missing([m for m in modules if m != "torch"]):
        install_packages(requirements_path)
    still = _missing(modules)
    if still:
        raise DependencyError(
            f"Still missing after installing: {', '.join(modules[m] for m in still)}. Restart Slicer and try "
            f"again; if it persists, install them from the Python console with slicer.util.pip_install."
        )
