"""Packaging: what makes TransferSeg installable from Slicer's Extension Manager.

The Slicer SDK (its CMake macros, the launcher) is not available here, so the CMake
files are run with ``cmake -P`` against stand-ins for Slicer's commands that record
their arguments and apply the same path rules as the real macros
(``slicerMacroBuildScriptedModule`` resolves files against the module folder,
``ctkMacroCompilePythonScript`` copies each to ``<destination>/<path as given>``).
From the record the tests rebuild the installed module folder and import the engine
from it, as Slicer would. The catalog entry is validated against the vendored schema,
and the checks the Extensions Index runs on a submission are repeated offline.
"""

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "Utilities"))
import update_cmake_lists  # noqa: E402

TOP_CMAKE = ROOT / "CMakeLists.txt"
MODULE_CMAKE = ROOT / "TransferSeg" / "CMakeLists.txt"
CATALOG_ENTRY = ROOT / "TransferSeg.json"
SCHEMA = ROOT / "Resources" / "Schema" / "slicer-extension-catalog-entry-schema-v1.0.1.json"
ICON = ROOT / "Resources" / "Icons" / "TransferSeg.png"
REFRESH = "python Utilities/update_cmake_lists.py"
SCRIPTED_MODULES_DIR = "lib/Slicer-5.8/qt-scripted-modules"

# --- stand-ins for the Slicer SDK -----------------------------------------------------------------
# Each records one line per call ("CALL <command>", then "ARG <value>" per argument) and
# fails like the real command where the extension could get it wrong.

STAND_INS = r"""
function(_record command)
  file(APPEND "${RECORD}" "CALL ${command}\n")
  foreach(_arg ${ARGN})
    file(APPEND "${RECORD}" "ARG ${_arg}\n")
  endforeach()
endfunction()

macro(project name)
  _record(project ${name} ${ARGN})
  set(PROJECT_NAME ${name})
  set(CMAKE_PROJECT_NAME ${name})
  set(PROJECT_SOURCE_DIR "${CMAKE_CURRENT_SOURCE_DIR}")
  set(${name}_SOURCE_DIR "${CMAKE_CURRENT_SOURCE_DIR}")
endmacro()

macro(find_package name)
  _record(find_package ${name} ${ARGN})
  if("${name}" STREQUAL "Slicer")
    set(Slicer_FOUND TRUE)
    set(Slicer_USE_FILE "${STUB_DIR}/UseSlicer.cmake")
    set(Slicer_EXTENSION_GENERATE_CONFIG "${STUB_DIR}/SlicerExtensionGenerateConfig.cmake")
    set(Slicer_EXTENSION_CPACK "${STUB_DIR}/SlicerExtensionCPack.cmake")
  endif()
endmacro()

function(add_subdirectory dir)
  _record(add_subdirectory ${dir} ${ARGN})
  set(CMAKE_CURRENT_SOURCE_DIR "${CMAKE_CURRENT_SOURCE_DIR}/${dir}")
  set(CMAKE_CURRENT_BINARY_DIR "${CMAKE_CURRENT_BINARY_DIR}/${dir}")
  if(NOT EXISTS "${CMAKE_CURRENT_SOURCE_DIR}/CMakeLists.txt")
    message(FATAL_ERROR "add_subdirectory given a folder without CMakeLists.txt: ${dir}")
  endif()
  include("${CMAKE_CURRENT_SOURCE_DIR}/CMakeLists.txt")
endfunction()
"""

USE_SLICER = r"""
_record(include_use_file)
set(Slicer_USE_PYTHONQT ON)
set(BUILD_TESTING ON)
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR "@SCRIPTED@")
set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR "./@SCRIPTED@")

function(_record_copy destination relative source)
  file(RELATIVE_PATH _where "${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}" "${destination}/${relative}")
  file(APPEND "${RECORD}" "COPY ${_where}|${source}\n")
endfunction()

macro(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(MY_SLICER "WITH_GENERIC_TESTS;WITH_SUBDIR;VERBOSE" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
  _record(slicerMacroBuildScriptedModule ${ARGN})
  if(MY_SLICER_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "Unknown keywords given to slicerMacroBuildScriptedModule(): ${MY_SLICER_UNPARSED_ARGUMENTS}")
  endif()
  if(NOT DEFINED MY_SLICER_NAME)
    message(FATAL_ERROR "NAME is mandatory")
  endif()
  foreach(_value ${MY_SLICER_SCRIPTS} ${MY_SLICER_RESOURCES})
    if(NOT EXISTS "${CMAKE_CURRENT_SOURCE_DIR}/${_value}" AND NOT EXISTS "${CMAKE_CURRENT_SOURCE_DIR}/${_value}.py")
      message(FATAL_ERROR "slicerMacroBuildScriptedModule given nonexistent file '${_value}'")
    endif()
  endforeach()
  foreach(_value ${MY_SLICER_SCRIPTS} ${MY_SLICER_RESOURCES})
    _record_copy("${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}" "${_value}" "${CMAKE_CURRENT_SOURCE_DIR}/${_value}")
  endforeach()
endmacro()

macro(ctkMacroCompilePythonScript)
  cmake_parse_arguments(MY "NO_INSTALL_SUBDIR;GLOBAL_TARGET" "TARGET_NAME;SOURCE_DIR;DESTINATION_DIR;INSTALL_DIR" "SCRIPTS;RESOURCES" ${ARGN})
  _record(ctkMacroCompilePythonScript ${ARGN})
  foreach(_name TARGET_NAME SCRIPTS DESTINATION_DIR INSTALL_DIR)
    if(NOT DEFINED MY_${_name})
      message(FATAL_ERROR "${_name} is mandatory")
    endif()
  endforeach()
  if(NOT DEFINED MY_SOURCE_DIR)
    set(MY_SOURCE_DIR "${CMAKE_CURRENT_SOURCE_DIR}")
  endif()
  foreach(_value ${MY_SCRIPTS} ${MY_RESOURCES})
    if(IS_ABSOLUTE "${_value}")
      file(RELATIVE_PATH _relative "${CMAKE_CURRENT_BINARY_DIR}" "${_value}")
      _record_copy("${MY_DESTINATION_DIR}" "${_relative}" "${_value}")
    else()
      _record_copy("${MY_DESTINATION_DIR}" "${_value}" "${MY_SOURCE_DIR}/${_value}")
    endif()
  endforeach()
endmacro()

macro(slicer_add_python_unittest)
  cmake_parse_arguments(MY "" "TESTNAME_PREFIX;SCRIPT" "SLICER_ARGS" ${ARGN})
  _record(slicer_add_python_unittest ${ARGN})
  if(NOT EXISTS "${CMAKE_CURRENT_SOURCE_DIR}/${MY_SCRIPT}")
    message(FATAL_ERROR "slicer_add_python_unittest given nonexistent script '${MY_SCRIPT}'")
  endif()
endmacro()
"""

EXTENSION_VARIABLES = ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                       "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS", "EXTENSION_DEPENDS")

GENERATE_CONFIG = "_record(include_generate_config)\n" + "".join(
    f'if(DEFINED {name})\n  file(APPEND "${{RECORD}}" "VAR {name}=${{{name}}}\\n")\nendif()\n'
    for name in EXTENSION_VARIABLES)

DRIVER = r"""
set(CMAKE_SOURCE_DIR "@ROOT@")
set(CMAKE_CURRENT_SOURCE_DIR "@ROOT@")
set(CMAKE_BINARY_DIR "@BUILD@")
set(CMAKE_CURRENT_BINARY_DIR "@BUILD@")
include("${STUB_DIR}/stand_ins.cmake")
include("@ROOT@/CMakeLists.txt")
"""


def _cmake() -> str:
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake is not installed: the CMake files cannot be run (pip install cmake, or apt install cmake)")
    return cmake


def run_cmake_stand_in(root: Path, work: Path) -> Tuple[subprocess.CompletedProcess, List[Tuple[str, List[str]]], List[str]]:
    """Configure ``root``'s CMake files against the stand-ins: (process, calls, COPY records)."""
    stubs = work / "stubs"
    stubs.mkdir(parents=True, exist_ok=True)
    record = work / "record.txt"
    record.write_text("", encoding="utf-8")
    (stubs / "stand_ins.cmake").write_text(STAND_INS, encoding="utf-8")
    (stubs / "UseSlicer.cmake").write_text(USE_SLICER.replace("@SCRIPTED@", SCRIPTED_MODULES_DIR), encoding="utf-8")
    (stubs / "SlicerExtensionGenerateConfig.cmake").write_text(GENERATE_CONFIG, encoding="utf-8")
    (stubs / "SlicerExtensionCPack.cmake").write_text("_record(include_cpack)\n", encoding="utf-8")
    driver = stubs / "driver.cmake"
    driver.write_text(DRIVER.replace("@ROOT@", root.as_posix()).replace("@BUILD@", (work / "build").as_posix()),
                      encoding="utf-8")
    process = subprocess.run([_cmake(), f"-DRECORD={record.as_posix()}", f"-DSTUB_DIR={stubs.as_posix()}",
                              "-P", str(driver)], capture_output=True, text=True, timeout=120, cwd=work)
    calls: List[Tuple[str, List[str]]] = []
    copies: List[str] = []
    for line in record.read_text(encoding="utf-8").splitlines():
        if line.startswith("CALL "):
            calls.append((line[5:], []))
        elif line.startswith("ARG "):
            calls[-1][1].append(line[4:])
        elif line.startswith(("COPY ", "VAR ")):
            copies.append(line)
    return process, calls, copies


@pytest.fixture(scope="module")
def configured(tmp_path_factory):
    process, calls, records = run_cmake_stand_in(ROOT, tmp_path_factory.mktemp("cmake"))
    assert process.returncode == 0, f"the CMake files fail to configure:\n{process.stdout}\n{process.stderr}"
    copies = {}
    for line in records:
        if line.startswith("COPY "):
            where, source = line[5:].split("|", 1)
            copies[where] = source
    variables = dict(line[4:].split("=", 1) for line in records if line.startswith("VAR "))
    return calls, copies, variables


def _args(calls, command: str) -> List[List[str]]:
    return [args for name, args in calls if name == command]


# --- the CMake files -----------------------------------------------------------------------------

def test_cmake_files_call_slicers_commands_in_the_order_an_extension_needs(configured):
    calls, _copies, _variables = configured
    order = [name for name, _ in calls]
    assert order[:3] == ["project", "find_package", "include_use_file"]
    assert _args(calls, "project") == [["TransferSeg"]]
    assert _args(calls, "find_package") == [["Slicer", "REQUIRED"]]
    assert _args(calls, "add_subdirectory") == [["TransferSeg"]]
    assert order[-2:] == ["include_generate_config", "include_cpack"], "config and CPack come after the modules"
    (module,) = _args(calls, "slicerMacroBuildScriptedModule")
    assert module[:2] == ["NAME", "TransferSeg"] and "WITH_GENERIC_TESTS" in module
    tests = [args[args.index("SCRIPT") + 1] for args in _args(calls, "slicer_add_python_unittest")]
    assert "TransferSeg.py" in tests, "the module's self-test must be registered as a ctest"


def test_extension_metadata_is_set_before_the_config_is_generated(configured):
    _calls, _copies, variables = configured
    missing = [name for name in EXTENSION_VARIABLES if not variables.get(name)]
    assert not missing, f"EXTENSION_* variables unset when Slicer generates the extension config: {missing}"
    assert variables["EXTENSION_CATEGORY"] == "Segmentation"
    assert variables["EXTENSION_DEPENDS"] == "PyTorch"


def test_every_file_is_installed_inside_the_module_folder(configured):
    _calls, copies, _variables = configured
    outside = sorted(p for p in copies if p.startswith("..") or os.path.isabs(p))
    assert not outside, f"files the build would copy outside qt-scripted-modules/: {outside}"
    for expected in ("TransferSeg.py", "TransferSegSampleData.py", "TransferSegLib/__init__.py",
                     "TransferSegLib/jobs/__init__.py", "Resources/UI/TransferSeg.ui", "Resources/Icons/TransferSeg.png",
                     "Resources/requirements.txt", "Resources/Models/default/model.pt"):
        assert expected in copies, f"{expected} would not be installed next to the module"
    assert not [p for p in copies if p.startswith("Resources/Schema/")], "the vendored schema is not for users"
    missing = sorted(p for p, source in copies.items() if not Path(source).is_file())
    assert not missing, f"listed in CMake but not in the repository: {missing}. Run '{REFRESH}'."


def test_engine_imports_from_the_installed_module_folder(configured, tmp_path):
    """Rebuild qt-scripted-modules/ from the record and import TransferSegLib from it, as Slicer does."""
    _calls, copies, _variables = configured
    installed = tmp_path / "qt-scripted-modules"
    for relative, source in copies.items():
        target = installed / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    check = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(installed)!r})
        from pathlib import Path
        import TransferSegLib
        from TransferSegLib.models import base_model
        from TransferSegLib.data.sample_data import sample_cases
        assert Path(TransferSegLib.__file__).parent == Path({str(installed)!r}) / "TransferSegLib", TransferSegLib.__file__
        assert base_model.resources_dir() == Path({str(installed)!r}) / "Resources", base_model.resources_dir()
        assert (base_model.default_model_dir() / "model.json").is_file()
        assert len(sample_cases()) == 4
        print("ok")
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=300,
                            cwd=tmp_path, env=env)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]


def test_cmake_lists_match_the_repository_files():
    listed = update_cmake_lists.read_lists(MODULE_CMAKE.read_text(encoding="utf-8"))
    present = _packaged_files_by_walking()
    wanted = update_cmake_lists.expected_lists(ROOT, sorted(present))
    problems = update_cmake_lists.drift(listed, wanted)
    assert not problems, "TransferSeg/CMakeLists.txt does not match the repository:\n  " + "\n  ".join(problems) + \
        f"\nRun '{REFRESH}' (then check the diff)."
    stray = update_cmake_lists.unlisted_module_files(ROOT, sorted(present))
    assert not stray, f"files in TransferSeg/ that nothing installs (move them to Resources/): {stray}"


def _packaged_files_by_walking() -> Set[str]:
    """The files under the packaged folders, found without the update script's git listing."""
    found = set()
    for folder in ("TransferSeg", "TransferSegLib", "Resources"):
        for dirpath, dirs, names in os.walk(ROOT / folder):
            dirs[:] = [d for d in dirs if d not in {"__pycache__", ".pytest_cache", ".ipynb_checkpoints"}]
            for name in names:
                if not name.endswith((".pyc", ".pyo")) and name not in {".DS_Store", "Thumbs.db"}:
                    found.add((Path(dirpath) / name).relative_to(ROOT).as_posix())
    ignored = _git_ignored(sorted(found))
    return found - ignored


def _git_ignored(paths: List[str]) -> Set[str]:
    try:
        result = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "--stdin", "-z"], input="\0".join(paths),
                                capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return set()
    return {p for p in result.stdout.split("\0") if p} if result.returncode in (0, 1) else set()


def test_cmake_sees_exactly_the_lists_between_the_markers(configured):
    _calls, copies, _variables = configured
    listed = update_cmake_lists.read_lists(MODULE_CMAKE.read_text(encoding="utf-8"))
    expected = set(listed["MODULE_PYTHON_SCRIPTS"]) | set(listed["TRANSFERSEG_LIB_PYTHON_SCRIPTS"]) | \
        set(listed["MODULE_PYTHON_RESOURCES"])
    assert set(copies) == expected


def test_a_listed_file_that_is_missing_fails_the_configure(tmp_path):
    """The module's CMake file itself refuses a stale list (the build would only fail much later)."""
    root = _mini_repository(tmp_path / "repo")
    update_cmake_lists.main(["--root", str(root)])
    (root / "TransferSegLib" / "jobs" / "api.py").unlink()
    process, _calls, _copies = run_cmake_stand_in(root, tmp_path / "work")
    assert process.returncode != 0
    assert "TransferSegLib/jobs/api.py" in process.stderr and "update_cmake_lists.py" in process.stderr


# --- the list updater ----------------------------------------------------------------------------

def _mini_repository(root: Path) -> Path:
    files = {
        "CMakeLists.txt": TOP_CMAKE.read_text(encoding="utf-8"),
        "TransferSeg/CMakeLists.txt": MODULE_CMAKE.read_text(encoding="utf-8"),
        "TransferSeg/TransferSeg.py": "", "TransferSeg/TransferSegSampleData.py": "",
        "TransferSegLib/__init__.py": "", "TransferSegLib/jobs/__init__.py": "", "TransferSegLib/jobs/api.py": "",
        "TransferSegLib/__pycache__/api.cpython-311.pyc": "", "TransferSegLib/data/table.json": "{}",
        "Resources/UI/TransferSeg.ui": "<ui/>", "Resources/Icons/TransferSeg.png": "png",
        "Resources/SampleData/case.nrrd": "", "Resources/Schema/schema.json": "{}",
    }
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def test_updater_lists_scripts_and_resources_and_leaves_the_rest_alone(tmp_path, capsys):
    root = _mini_repository(tmp_path)
    before = (root / "TransferSeg" / "CMakeLists.txt").read_text(encoding="utf-8")
    assert update_cmake_lists.main(["--root", str(root)]) == 0
    after = (root / "TransferSeg" / "CMakeLists.txt").read_text(encoding="utf-8")
    lists = update_cmake_lists.read_lists(after)
    assert lists == {
        "MODULE_PYTHON_SCRIPTS": ["TransferSeg.py", "TransferSegSampleData.py"],
        "TRANSFERSEG_LIB_PYTHON_SCRIPTS": ["TransferSegLib/__init__.py", "TransferSegLib/jobs/__init__.py",
                                           "TransferSegLib/jobs/api.py"],
        "MODULE_PYTHON_RESOURCES": ["Resources/Icons/TransferSeg.png", "Resources/SampleData/case.nrrd",
                                    "Resources/UI/TransferSeg.ui", "TransferSegLib/data/table.json"],
    }
    marker = re.compile(r"# BEGIN generated: (\w+)\n.*?# END generated: \1\n", re.S)
    assert marker.sub("", before) == marker.sub("", after), "text outside the markers changed"
    assert update_cmake_lists.main(["--root", str(root), "--check"]) == 0


def test_updater_check_names_the_drift_and_the_command(tmp_path, capsys):
    root = _mini_repository(tmp_path)
    update_cmake_lists.main(["--root", str(root)])
    (root / "TransferSegLib" / "new_module.py").write_text("", encoding="utf-8")
    (root / "Resources" / "UI" / "TransferSeg.ui").unlink()
    capsys.readouterr()
    assert update_cmake_lists.main(["--root", str(root), "--check"]) == 1
    out = capsys.readouterr().out
    assert "TRANSFERSEG_LIB_PYTHON_SCRIPTS: not listed: TransferSegLib/new_module.py" in out
    assert "MODULE_PYTHON_RESOURCES: listed but not in the repository: Resources/UI/TransferSeg.ui" in out
    assert REFRESH in out


def test_updater_refuses_a_file_name_cmake_cannot_list(tmp_path):
    root = _mini_repository(tmp_path)
    (root / "Resources" / "SampleData" / "my case.nrrd").write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="my case.nrrd"):
        update_cmake_lists.main(["--root", str(root)])


# --- the catalog entry ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def entry() -> Dict:
    return json.loads(CATALOG_ENTRY.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def validator():
    jsonschema = pytest.importorskip("jsonschema", reason="pip install jsonschema (a test dependency)")
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_catalog_entry_is_valid_against_the_catalog_entry_schema(entry, validator):
    errors = [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in validator.iter_errors(entry)]
    assert not errors, f"TransferSeg.json is invalid against schema v1.0.1: {errors}"
    assert entry["$schema"].rstrip("#") == json.loads(SCHEMA.read_text(encoding="utf-8"))["$id"].rstrip("#")


@pytest.mark.parametrize("change", [
    {"scm_url": None}, {"tier": 9}, {"homepage": "https://example.org"}, {"build_dependencies": "PyTorch"},
])
def test_schema_check_rejects_a_broken_entry(entry, validator, change):
    broken = dict(entry)
    for key, value in change.items():
        if value is None:
            broken.pop(key)
        else:
            broken[key] = value
    assert list(validator.iter_errors(broken)), f"the schema accepted {change}"


def test_catalog_entry_fields_match_the_cmake_metadata(entry, configured):
    _calls, _copies, variables = configured
    assert entry["build_dependencies"] == variables["EXTENSION_DEPENDS"].split(";") == ["PyTorch"]
    assert entry["category"] == variables["EXTENSION_CATEGORY"]
    assert entry["build_subdirectory"] == "."
    assert entry["scm_revision"] == "main" and entry["tier"] == 1
    assert entry["scm_url"] == variables["EXTENSION_HOMEPAGE"]


def test_extension_name_agrees_across_project_catalog_entry_and_module(configured):
    calls, _copies, _variables = configured
    project = _args(calls, "project")[0][0]
    # The Extensions Index reads the name with this pattern: the first project( in the file.
    indexed = re.findall(r"project\s*\(\s*([^\s\)\n\r]+)", TOP_CMAKE.read_text(encoding="utf-8"), re.I)[0]
    module = _args(calls, "slicerMacroBuildScriptedModule")[0][1]
    module_source = (ROOT / "TransferSeg" / f"{module}.py").read_text(encoding="utf-8")
    assert project == indexed == CATALOG_ENTRY.stem == module == "TransferSeg"
    assert re.search(rf"^class {module}\(ScriptedLoadableModule\)", module_source, re.M)
    assert not CATALOG_ENTRY.stem.lower().startswith("slicer"), "the index refuses extension names starting 'Slicer'"


def test_catalog_entry_is_formatted_as_the_index_requires(entry):
    raw = CATALOG_ENTRY.read_bytes()
    assert b"\r" not in raw, "the index accepts LF line endings only"
    assert raw.decode("utf-8") == json.dumps(entry, indent=2) + "\n"
    url = entry["scm_url"]
    assert url.startswith("https://github.com/") and not url.endswith((".git", "/"))
    assert url.rsplit("/", 1)[-1].startswith("Slicer"), "the index wants the repository name to start with 'Slicer'"


def test_icon_and_screenshot_urls_point_to_files_of_this_repository(entry):
    text = TOP_CMAKE.read_text(encoding="utf-8")
    # The exact patterns the Extensions Index validator uses to find them.
    icon = re.findall(r'set\s*\(EXTENSION_ICONURL\s*"([^"]+)"[ ]*\)', text, re.I)
    shots = re.findall(r'set\s*\(EXTENSION_SCREENSHOTURLS\s*"([^"]+)"\)', text, re.I)
    assert icon and shots, "EXTENSION_ICONURL / EXTENSION_SCREENSHOTURLS must be one quoted string on one line"
    owner_repo = entry["scm_url"].split("github.com/", 1)[1]
    prefix = f"https://raw.githubusercontent.com/{owner_repo}/{entry['scm_revision']}/"
    urls = [icon[0]] + shots[0].split()
    for url in urls:
        assert url.startswith(prefix), f"{url} is not a file of {entry['scm_url']} at '{entry['scm_revision']}'"
        path = ROOT / url[len(prefix):]
        assert path.is_file() and path.suffix == ".png", f"{url}: no such PNG in the repository ({path})"
    assert ROOT / icon[0][len(prefix):] == ICON


def _png_size(path: Path) -> Tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", header[16:24])


def test_icon_is_a_small_128_pixel_png():
    assert _png_size(ICON) == (128, 128)
    assert ICON.stat().st_size < 200_000


def test_screenshots_are_small_pngs():
    shots = sorted((ROOT / "docs" / "screenshots").glob("*.png"))
    assert shots, "docs/screenshots/ holds no screenshot"
    for shot in shots:
        width, height = _png_size(shot)
        assert width >= 600 and height >= 200 and shot.stat().st_size < 200_000, shot


def test_sample_thumbnails_exist_for_every_sample_case():
    source = (ROOT / "TransferSeg" / "TransferSegSampleData.py").read_text(encoding="utf-8")
    thumbnails = re.findall(r'"(SampleData/[^"]+\.png)"', source)
    assert len(thumbnails) >= 4
    for relative in thumbnails:
        assert _png_size(ROOT / "Resources" / "Icons" / relative) == (128, 128), relative


def test_repository_has_the_license_and_stays_under_the_index_size_limit():
    license_text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert "END OF TERMS AND CONDITIONS" in license_text
    total = sum((ROOT / p).stat().st_size for p in _tracked_or_new_files())
    assert total < 100 * 1024 * 1024, f"the repository would be {total / 2**20:.0f} MB; the index limit is 100 MB"


def _tracked_or_new_files() -> List[str]:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                             capture_output=True, check=True, timeout=60).stdout.decode("utf-8")
        return [p for p in out.split("\0") if p and (ROOT / p).is_file()]
    except (OSError, subprocess.SubprocessError):
        return [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file() and ".git" not in p.parts]
