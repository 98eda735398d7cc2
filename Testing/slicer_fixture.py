"""A real MRML scene without the Slicer application (slicer-core), for scene-facing tests.

Import the fixture into a test module (``from slicer_fixture import mrml_scene``).
It builds what the application would: the scene, an application logic with color
nodes, the Volumes / Segmentations / Subject Hierarchy logics registered by name,
``slicer.mrmlScene`` and a ``slicer.modules`` namespace whose ``<name>.logic()``
``slicer.util`` looks up. VTK reports errors only on stderr, so any VTK error
during a test fails it.
"""

import types
from typing import Dict, List

import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
if not hasattr(slicer, "vtkMRMLScene"):  # pragma: no cover - a stand-in took the name
    pytest.skip("the imported 'slicer' is not slicer-core", allow_module_level=True)
import vtk  # noqa: E402


class MRMLApplication:
    """The scene with its logics; keeps every logic referenced for the test's lifetime."""

    def __init__(self) -> None:
        self.scene = slicer.vtkMRMLScene()
        self.app_logic = slicer.vtkSlicerApplicationLogic()
        self.app_logic.SetMRMLScene(self.scene)
        colors = self.app_logic.GetColorLogic()
        colors.SetMRMLScene(self.scene)
        colors.AddDefaultColorNodes()
        self.app_logic.SetSliceLogics(vtk.vtkCollection())
        self.app_logic.SetViewLogics(vtk.vtkCollection())
        self.app_logic.SetModuleLogic("Colors", colors)
        self.logics: Dict[str, object] = {"colors": colors}
        for name, cls in (
            ("Volumes", slicer.vtkSlicerVolumesLogic),
            ("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic),
            ("SubjectHierarchy", slicer.vtkSlicerSubjectHierarchyModuleLogic),
        ):
            logic = cls()
            # Setting the scene is what registers the segmentation representation converters.
            logic.SetMRMLScene(self.scene)
            logic.SetMRMLApplicationLogic(self.app_logic)
            self.app_logic.SetModuleLogic(name, logic)
            self.logics[name.lower()] = logic
        self.modules = types.SimpleNamespace(
            **{key: types.SimpleNamespace(logic=(lambda logic=logic: logic)) for key, logic in self.logics.items()}
        )

    def add_to_study(self, *nodes, patient: str = "patient", study: str = "study") -> int:
        """Put nodes in a patient/study folder, as DICOM loading would (headless adds no items)."""
        hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(self.scene)
        subject = hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), patient)
        study_item = hierarchy.CreateStudyItem(subject, study)
        for node in nodes:
            item = hierarchy.GetItemByDataNode(node)
            if item:
                hierarchy.SetItemParent(item, study_item)
            else:
                hierarchy.CreateItem(study_item, node)
        return study_item


@pytest.fixture
def mrml_scene():
    """A fresh real MRML scene as ``slicer.mrmlScene``; fails the test on any VTK error."""
    application = MRMLApplication()
    saved = {name: getattr(slicer, name, None) for name in ("mrmlScene", "modules")}
    slicer.mrmlScene = application.scene
    slicer.modules = application.modules
    errors: List[str] = []
    output = vtk.vtkOutputWindow.GetInstance()
    tag = output.AddObserver(vtk.vtkCommand.ErrorEvent, lambda caller, event: errors.append(event))
    try:
        yield application
    finally:
        output.RemoveObserver(tag)
        application.scene.Clear(1)
        for name, value in saved.items():
            if value is None:
                if hasattr(slicer, name):
                    delattr(slicer, name)
            else:
                setattr(slicer, name, value)
    assert not errors, f"VTK reported {len(errors)} error(s) during the test (see stderr)"
