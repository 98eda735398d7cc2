"""Installing dependencies inside Slicer: torch through the PyTorch extension, the rest with pip.

Slicer's installers cannot run here, so stand-ins record how they are called: what
matters is who installs torch, that Slicer's own packages are held back, and that
saying no ends with a message instead of a half-working module.
"""

import sys
import types

import pytest

slicer = pytest.importorskip("slicer")

from TransferSegLib.scene import dependencies as scene_dependencies  # noqa: E402
from TransferSegLib.scene.dependencies import DependencyError, install_dependencies  # noqa: E402

MODULES = {"torch": "PyTorch", "monai": "MONAI", "einops": "einops"}


@pytest.fixture
def environment(monkeypatch, tmp_path):
    """Nothing installed; installers 'install' by adding names. Returns (installed, calls, requirements)."""
    installed, calls = set(), []
    monkeypatch.setattr(scene_dependencies, "_installed", lambda name: name in installed)
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# comment\nmonai>=1.3\neinops>=0.6\n")

    class TorchLogic:
        def torchInstalled(self):
            return "torch" in installed

        def installTorch(self, askConfirmation=False, torchVersionRequirement=None):
            calls.append(("installTorch", askConfirmation, torchVersionRequirement))
            installed.add("torch")
            return types.SimpleNamespace(__version__="2.13")

    monkeypatch.setitem(sys.modules, "PyTorchUtils", types.SimpleNamespace(PyTorchUtilsLogic=TorchLogic))
    return installed, calls, requirements


def test_torch_comes_from_the_pytorch_extension_and_pip_holds_back_slicers_packages(environment, monkeypatch):
    installed, calls, requirements = environment

    def pip_ensure(reqs, requester=None, skip_packages=None):
        calls.append(("pip_ensure", [str(r) for r in reqs], requester, skip_packages))
        installed.update({"monai", "einops"})

    def load_requirements(path):
        return [line for line in open(path).read().splitlines() if line and not line.startswith("#")]

    packaging = types.SimpleNamespace(load_requirements=load_requirements, pip_ensure=pip_ensure)
    monkeypatch.setattr(slicer, "packaging", packaging, raising=False)

    install_dependencies(str(requirements), MODULES)

    assert calls[0] == ("installTorch", True, scene_dependencies.TORCH_REQUIREMENT)  # asks first
    kind, requested, requester, skipped = calls[1]
    assert kind == "pip_ensure" and requested == ["monai>=1.3", "einops>=0.6"] and requester == "TransferSeg"
    assert {"torch", "SimpleITK", "requests"} <= set(skipped)


def test_older_slicer_installs_monai_without_letting_pip_touch_torch(environment, monkeypatch):
    installed, calls, requirements = environment
    installed.add("torch")
    monkeypatch.delattr(slicer, "packaging", raising=False)
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda *a, **k: True, raising=False)

    def pip_install(arguments):
        calls.append(arguments)
        installed.update({"monai", "einops"})

    monkeypatch.setattr(slicer.util, "pip_install", pip_install, raising=False)
    install_dependencies(str(requirements), MODULES)
    assert calls == ['"einops>=0.6"', '"monai>=1.3" --no-deps']


def test_declining_ends_with_a_message_saying_what_is_missing(environment, monkeypatch):
    installed, calls, requirements = environment
    installed.add("torch")
    monkeypatch.delattr(slicer, "packaging", raising=False)
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda *a, **k: False, raising=False)
    monkeypatch.setattr(slicer.util, "pip_install", lambda *a: calls.append(a), raising=False)
    with pytest.raises(DependencyError, match="not installed"):
        install_dependencies(str(requirements), MODULES)
    assert calls == []  # nothing was installed behind the user's back


def test_without_the_pytorch_extension_the_message_says_where_to_get_it(environment, monkeypatch):
    monkeypatch.setitem(sys.modules, "PyTorchUtils", None)
    with pytest.raises(DependencyError, match="Extensions Manager"):
        install_dependencies(str(environment[2]), MODULES)


def test_nothing_happens_when_everything_is_there(environment):
    installed, calls, requirements = environment
    installed.update(MODULES)
    install_dependencies(str(requirements), MODULES)
    assert calls == []
