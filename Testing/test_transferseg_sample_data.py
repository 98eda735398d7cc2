"""The shipped cases in Slicer's Sample Data module (TransferSeg/TransferSegSampleData.py).

Slicer's Sample Data module exists only in the application, so it is replaced by a
stand-in with the same registration signature (Slicer 5.8 to 5.10) and the same
consistency rule for a source's lists; the loading itself runs against a real MRML
scene from slicer-core.
"""

import importlib.util
import sys
import types
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import fake_slicer_app
from slicer_fixture import mrml_scene  # noqa: F401  (pytest fixture)

import slicer  # noqa: E402
import SimpleITK as sitk  # noqa: E402

from TransferSegLib.scene import find_segment_id, segment_mask, segment_names  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODULE = ROOT / "TransferSeg" / "TransferSegSampleData.py"
DATA = ROOT / "Resources" / "SampleData"


def _sample_data_stand_in() -> types.ModuleType:
    """Slicer's SampleData module, reduced to what registration touches."""
    registry = {}

    def registerCustomSampleDataSource(category="Custom", sampleName=None, uris=None, fileNames=None, nodeNames=None,
                                       customDownloader=None, thumbnailFileName=None, loadFileTypes=None,
                                       loadFiles=None, loadFileProperties={}, checksums=None, loadFileType=None):
        count = len(uris)
        filled = {"nodeNames": nodeNames, "loadFiles": loadFiles, "checksums": checksums,
                  "loadFileTypes": loadFileTypes}
        filled = {k: ([None] * count if v is None else v) for k, v in filled.items()}
        if not all(len(v) == count for v in [fileNames, *filled.values()]):
            raise ValueError("All fields of sample data source must have the same length")
        registry.setdefault(category, []).append(types.SimpleNamespace(
            sampleName=sampleName, uris=uris, fileNames=fileNames, thumbnailFileName=thumbnailFileName,
            customDownloader=customDownloader, **filled))

    def sampleDataSourcesByCategory(category=None):
        return registry if category is None else registry.get(category, [])

    logic = type("SampleDataLogic", (), {
        "registerCustomSampleDataSource": staticmethod(registerCustomSampleDataSource),
        "sampleDataSourcesByCategory": staticmethod(sampleDataSourcesByCategory),
    })
    module = types.ModuleType("SampleData")
    module.SampleDataLogic = logic
    module.registry = registry
    return module


@pytest.fixture
def sample_data(mrml_scene, monkeypatch):  # noqa: F811
    """The module file imported as Slicer would, with a Sample Data stand-in: (module, stand-in, app)."""
    stand_in = _sample_data_stand_in()
    monkeypatch.setitem(sys.modules, "SampleData", stand_in)
    with fake_slicer_app.stand_in(str(MODULE), mrml=slicer) as app:
        spec = importlib.util.spec_from_file_location("TransferSegSampleData", MODULE)
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, "TransferSegSampleData", module)
        spec.loader.exec_module(module)
        yield module, stand_in, app


def test_registration_adds_every_shipped_case_once(sample_data):
    module, stand_in, _app = sample_data
    module.registerSampleData()
    module.registerSampleData()  # TransferSeg.py registers at every startup; a reload must not duplicate
    sources = stand_in.registry[module.CATEGORY]
    assert [s.sampleName for s in sources] == [case.name for case in module.SAMPLE_CASES]
    assert len(sources) == 4 and list(stand_in.registry) == ["TransferSeg"]


def test_every_source_points_at_shipped_files_with_readable_names(sample_data):
    module, _stand_in, _app = sample_data
    for fields in module.sampleDataSources():
        for uri in fields["uris"]:
            parsed = urllib.parse.urlparse(uri)
            assert parsed.scheme == "file"
            path = Path(urllib.request.url2pathname(parsed.path))
            assert path.is_file() and DATA in path.parents, uri
        assert Path(fields["thumbnailFileName"]).is_file(), fields["thumbnailFileName"]
        assert fields["customDownloader"] is not None, "the button must name the segments"
        # Slicer's readers pick the format from the cached file's name: keep the extensions.
        for name, uri in zip(fields["fileNames"], fields["uris"]):
            if uri.endswith((".nii.gz", ".seg.nrrd", ".nrrd")):
                assert name.endswith(uri[uri.index(".", uri.rindex("/")):]), (name, uri)
        if "loadFiles" not in fields:
            assert fields["loadFileTypes"] == ["VolumeFile", "SegmentationFile"]


def test_the_hidden_module_lets_slicer_load_this_file_as_a_module(sample_data):
    module, _stand_in, _app = sample_data
    parent = types.SimpleNamespace(path=str(MODULE))
    module.TransferSegSampleData(parent)
    assert parent.hidden is True and parent.title


def test_training_case_loads_with_the_organ_names_on_the_volume_grid(sample_data):
    module, _stand_in, _app = sample_data
    volume, segmentation = module.loadSample("TransferSeg abdomen CT")
    assert volume.GetName() == "TransferSeg abdomen CT"
    names = segment_names(segmentation)
    assert len(names) == 41 and "liver" in names and "spleen" in names
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(DATA / "TotalSegmentator" / "example_seg.nii.gz")))
    liver = segment_mask(segmentation, find_segment_id(segmentation, "liver"), volume)  # (k, j, i)
    expected = reference == 5  # TotalSegmentator's value 5 is the liver
    assert expected.sum() > 1000 and np.array_equal(liver.astype(bool), expected)
    image = sitk.ReadImage(str(DATA / "TotalSegmentator" / "example_ct_sm.nii.gz"))
    voxels = slicer.util.arrayFromVolume(volume)
    assert voxels.dtype == np.int16, "the CT keeps its own pixel type"
    assert np.array_equal(voxels, sitk.GetArrayFromImage(image))


def test_dicom_target_loads_with_its_flipped_labelmap_realigned(sample_data):
    module, _stand_in, _app = sample_data
    volume, segmentation = module.loadSample("TransferSeg abdomen CT 2 (DICOM)")
    assert slicer.util.arrayFromVolume(volume).shape == (20, 512, 512)
    liver = segment_mask(segmentation, find_segment_id(segmentation, "liver"), volume)
    stored = sitk.GetArrayFromImage(sitk.ReadImage(str(DATA / "TotalSegmentator" / "example_seg_dicom.nii.gz")))
    # The NIfTI stores the series with its y axis flipped: copied index by index it would be wrong.
    assert (stored == 5).sum() > 1000 and not np.array_equal(liver.astype(bool), stored == 5)
    assert np.array_equal(liver.astype(bool), np.flip(stored == 5, axis=1))


def test_unknown_sample_is_refused_with_the_known_names(sample_data):
    module, _stand_in, _app = sample_data
    with pytest.raises(ValueError, match="TransferSeg abdomen CT"):
        module.loadSample("abdomen")


def test_the_sample_button_shows_what_failed(sample_data, tmp_path, monkeypatch):
    module, _stand_in, app = sample_data
    monkeypatch.setattr(module, "resources_dir", lambda: tmp_path)  # an installation without its data
    with pytest.raises(Exception, match="Reinstall"):  # re-raised after the message, as Slicer's helper does
        module._load_clicked_sample(types.SimpleNamespace(sampleName="TransferSeg chest CT"))
    assert app.messages and "TransferSeg chest CT" in app.messages[0] and "Reinstall" in app.messages[0]


def test_in_slicer_self_test_passes_on_every_sample(sample_data):
    module, _stand_in, _app = sample_data
    case = module.TransferSegSampleDataTest("test_every_sample_loads_with_named_segments")
    case.setUp()
    case.test_every_sample_loads_with_named_segments()
    assert slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 4


def test_registration_uses_the_spelling_of_slicer_5_6_when_that_is_what_slicer_takes():
    """Slicer 5.6's registerCustomSampleDataSource has ``loadFileType``; 5.8+ ``loadFileTypes``."""
    spec = importlib.util.spec_from_file_location("TransferSegSampleData_fields", MODULE)
    with fake_slicer_app.stand_in(str(MODULE)):
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        seen = {}

        def slicer_5_6(category="Custom", sampleName=None, uris=None, fileNames=None, nodeNames=None,
                       customDownloader=None, thumbnailFileName=None, loadFileType=None, loadFiles=None,
                       loadFileProperties={}, checksums=None):
            seen.update(loadFileType=loadFileType, sampleName=sampleName)

        def slicer_5_8(category="Custom", sampleName=None, uris=None, fileNames=None, nodeNames=None,
                       customDownloader=None, thumbnailFileName=None, loadFileTypes=None, loadFiles=None,
                       loadFileProperties={}, checksums=None):
            seen.update(loadFileTypes=loadFileTypes)

        fields = dict(sampleName="x", uris=["a", "b"], fileNames=["a", "b"], loadFileTypes=["VolumeFile", "SegmentationFile"])
        slicer_5_6(**module.fields_for(slicer_5_6, fields))
        slicer_5_8(**module.fields_for(slicer_5_8, fields))
    assert seen == {"loadFileType": ["VolumeFile", "SegmentationFile"], "sampleName": "x",
                    "loadFileTypes": ["VolumeFile", "SegmentationFile"]}
