"""TransferSeg's shipped cases in Slicer's Sample Data module: the workflow in one click.

The cases are real images with their labelmaps (``Resources/SampleData``, licenses
beside them). Clicking one in Sample Data loads the volume and a segmentation whose
segments carry the organ names, so it can be ticked as a training case at once; a
plain labelmap loaded by Slicer's own reader would give unnamed segments, which is
why every TransferSeg sample has a custom loader (``loadSample``).

``registerSampleData()`` is called by ``TransferSeg.py`` once Slicer has started.
Slicer loads every ``.py`` file of a module folder as a module, so this file also
defines a hidden module of its own name, with a self-test of the sample cases.
"""

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleTest

CATEGORY = "TransferSeg"


@dataclass(frozen=True)
class SampleCase:
    """One shipped case: paths are relative to ``Resources/SampleData``."""

    name: str  # the Sample Data button and the volume node's name
    image: str  # an image file or a DICOM series folder
    labelmap: str
    names_task: str  # key of TotalSegmentator's label_names.json; "" when the labelmap names its segments
    thumbnail: str  # relative to Resources/Icons

    @property
    def slug(self) -> str:
        return self.name.replace(" ", "-").replace("(", "").replace(")", "")


SAMPLE_CASES: List[SampleCase] = [
    # Abdominal CT, 3 mm, 41 structures: the training case of the guide (docs/slicer.md).
    SampleCase("TransferSeg abdomen CT", "TotalSegmentator/example_ct_sm.nii.gz",
               "TotalSegmentator/example_seg.nii.gz", "total", "SampleData/TransferSeg-abdomen-CT.png"),
    # Another patient's abdominal CT, a DICOM series, 31 structures: the target to predict and compare.
    SampleCase("TransferSeg abdomen CT 2 (DICOM)", "TotalSegmentator/example_ct_dicom",
               "TotalSegmentator/example_seg_dicom.nii.gz", "total", "SampleData/TransferSeg-abdomen-CT-2-DICOM.png"),
    # Abdominal MR, 3 mm, 23 structures.
    SampleCase("TransferSeg abdomen MR", "TotalSegmentator/example_mr_sm.nii.gz",
               "TotalSegmentator/example_seg_mr.nii.gz", "total_mr", "SampleData/TransferSeg-abdomen-MR.png"),
    # Chest CT with lungs, ribs and spine drawn in Slicer (slicerio's example).
    SampleCase("TransferSeg chest CT", "SlicerIO/CTChest4.nrrd", "SlicerIO/Segmentation.seg.nrrd", "",
               "SampleData/TransferSeg-chest-CT.png"),
]


def resources_dir() -> Path:
    """Installed, Resources/ sits next to this file; in a source checkout, one folder up."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "Resources", here.parent / "Resources"):
        if (candidate / "SampleData").is_dir():
            return candidate
    return here / "Resources"


def _sample(name: str) -> SampleCase:
    for sample in SAMPLE_CASES:
        if sample.name == name:
            return sample
    known = ", ".join(f"'{s.name}'" for s in SAMPLE_CASES)
    raise ValueError(f"TransferSeg has no sample case '{name}'. Known: {known}.")


def _uri(path: Path) -> str:
    return path.resolve().as_uri()


def sampleDataSources(resources: Optional[Path] = None) -> List[Dict[str, Any]]:
    """The keyword arguments of ``SampleDataLogic.registerCustomSampleDataSource``, one dict per case.

    The Sample Data buttons call ``customDownloader`` (named segments). The file URIs
    are there for scripts calling ``SampleDataLogic().downloadSamples(name)``, which
    skips custom loaders: they get Slicer's plain readers (a DICOM series is only copied,
    not loaded; use ``loadSample`` instead).
    """
    resources = Path(resources) if resources is not None else resources_dir()
    data = resources / "SampleData"
    sources = []
    for sample in SAMPLE_CASES:
        image, labelmap = data / sample.image, data / sample.labelmap
        label_ext = ".seg.nrrd" if labelmap.name.endswith(".seg.nrrd") else ".nii.gz"
        if image.is_dir():
            files = sorted(p for p in image.iterdir() if p.is_file()) + [labelmap]
            names = [f"{sample.slug}-{p.name}" for p in files[:-1]] + [f"{sample.slug}-segmentation{label_ext}"]
            fields = dict(uris=[_uri(p) for p in files], fileNames=names, nodeNames=[None] * len(files),
                          loadFiles=[False] * len(files), loadFileTypes=[None] * len(files))
        else:
            image_ext = "".join(image.suffixes[-2:]) if image.name.endswith(".nii.gz") else image.suffix
            fields = dict(uris=[_uri(image), _uri(labelmap)],
                          fileNames=[f"{sample.slug}{image_ext}", f"{sample.slug}-segmentation{label_ext}"],
                          nodeNames=[sample.name, f"{sample.name} segmentation"],
                          loadFileTypes=["VolumeFile", "SegmentationFile"])
        sources.append(dict(category=CATEGORY, sampleName=sample.name,
                            thumbnailFileName=str(resources / "Icons" / sample.thumbnail),
                            customDownloader=_load_clicked_sample, **fields))
    return sources


def registerSampleData() -> None:
    """Add the TransferSeg section to the Sample Data module (calling it again adds nothing)."""
    import SampleData

    # Sources hold a function, so two registrations from re-imported code would not compare
    # equal in Slicer's own duplicate check: compare by name instead.
    known = {source.sampleName for source in SampleData.SampleDataLogic.sampleDataSourcesByCategory(CATEGORY)}
    register = SampleData.SampleDataLogic.registerCustomSampleDataSource
    for fields in sampleDataSources():
        if fields["sampleName"] not in known:
            register(**fields_for(register, fields))


def fields_for(register, fields: Dict[str, Any]) -> Dict[str, Any]:
    """The fields in the spelling this Slicer's ``registerCustomSampleDataSource`` takes.

    Slicer 5.6 names the per-file types ``loadFileType`` (singular), 5.8 and later
    ``loadFileTypes``; passing the other one raises TypeError and the samples would
    silently be missing. The function's own signature decides.
    """
    import inspect

    try:
        accepted = set(inspect.signature(register).parameters)
    except (TypeError, ValueError):  # a built-in without a signature: assume the current spelling
        return dict(fields)
    result = dict(fields)
    if "loadFileTypes" in result and "loadFileTypes" not in accepted and "loadFileType" in accepted:
        result["loadFileType"] = result.pop("loadFileTypes")
    return {k: v for k, v in result.items() if k in accepted or "kwargs" in accepted}


def _make_library_importable() -> None:
    """Installed, TransferSegLib sits next to this file; in a source checkout, one folder up."""
    here = os.path.dirname(os.path.abspath(__file__))
    for folder in (here, os.path.dirname(here)):
        if os.path.isdir(os.path.join(folder, "TransferSegLib")):
            if folder not in sys.path:
                sys.path.insert(0, folder)
            return


def _label_names(sample: SampleCase, data: Path) -> Dict[int, str]:
    import json

    table = json.loads((data / "TotalSegmentator" / "label_names.json").read_text(encoding="utf-8"))
    return {int(value): str(name) for value, name in table[sample.names_task].items()}


def loadSample(name: str, resources: Optional[Path] = None) -> Tuple[Any, Any]:
    """Load a shipped case as a NEW volume node and a segmentation node with named segments.

    Needs only SimpleITK and numpy (Slicer's own), not PyTorch or MONAI, so it works
    before TransferSeg's dependencies are installed. Returns ``(volume, segmentation)``.
    """
    sample = _sample(name)
    data = (Path(resources) if resources is not None else resources_dir()) / "SampleData"
    _make_library_importable()
    import SimpleITK as sitk

    from TransferSegLib.errors import CaseError
    from TransferSegLib.data.grid import align_to_image
    from TransferSegLib.data.images import read_image
    from TransferSegLib.data.labelmaps import read_labelmap
    from TransferSegLib.scene import load_case_into_scene

    image_path, label_path = data / sample.image, data / sample.labelmap
    if not image_path.exists() or not label_path.exists():
        raise CaseError(f"The sample case '{name}' is missing from '{data}'. Reinstall the TransferSeg extension.")
    # A DICOM folder needs the series reader; a single file keeps its own pixel type (a CT stays int16).
    image = read_image(str(image_path)) if image_path.is_dir() else sitk.ReadImage(str(image_path))
    label = read_labelmap(str(label_path), reference=image)
    names = label.names if not sample.names_task else _label_names(sample, data)
    labelmap = align_to_image(image, label.image, str(image_path), str(label_path))
    return load_case_into_scene(image, labelmap, names, sample.name)


def _load_clicked_sample(source) -> None:
    """The Sample Data button: load and show the volume; a failure is shown in a message box."""
    import slicer

    with slicer.util.tryWithErrorDisplay(f"Could not load the sample '{source.sampleName}'.", waitCursor=True):
        volume, _segmentation = loadSample(source.sampleName)
        slicer.util.setSliceViewerLayers(background=volume, fit=True)


class TransferSegSampleData(ScriptedLoadableModule):
    """A hidden module: Slicer loads this file as one (see the module docstring)."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "TransferSeg Sample Data"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["TransferSeg contributors"]
        self.parent.helpText = "Registers TransferSeg's sample cases with the Sample Data module."
        self.parent.acknowledgementText = (
            "Sample data: TotalSegmentator examples (Apache-2.0) and slicerio's chest CT (MIT); "
            "see Resources/SampleData/README.md."
        )
        self.parent.hidden = True


class TransferSegSampleDataTest(ScriptedLoadableModuleTest):
    """Every sample case is in Sample Data and loads with named segments on its volume's grid."""

    def setUp(self):
        import slicer

        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_every_sample_loads_with_named_segments()

    def test_every_sample_loads_with_named_segments(self):
        import SampleData

        registerSampleData()
        registered = {s.sampleName for s in SampleData.SampleDataLogic.sampleDataSourcesByCategory(CATEGORY)}
        for sample in SAMPLE_CASES:
            self.delayDisplay(f"Loading {sample.name}")
            self.assertIn(sample.name, registered)
            volume, segmentation = loadSample(sample.name)
            segments = segmentation.GetSegmentation()
            self.assertGreater(segments.GetNumberOfSegments(), 0)
            names = [segments.GetNthSegment(i).GetName() for i in range(segments.GetNumberOfSegments())]
            self.assertFalse([n for n in names if n.lower().startswith(("segment_", "label_"))], names)
            self.assertIsNotNone(volume.GetImageData())
        logging.info("TransferSeg sample data: all %d cases load", len(SAMPLE_CASES))
        self.delayDisplay("Test passed")
