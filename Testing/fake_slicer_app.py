"""A stand-in for the parts of Slicer that exist only in the application.

``qt``, ``ctk``, ``slicer.ScriptedLoadableModule``, ``slicer.parameterNodeWrapper``,
``slicer.i18n`` and the GUI calls of ``slicer.util`` come from Slicer's PythonQt
build and cannot be installed. This module fakes just enough of them to import
``TransferSeg/TransferSeg.py`` and run ``Widget.setup()``, so that a syntax error, a
bad import or a widget name missing from the ``.ui`` fails a test instead of the
user's Slicer. It is strict where mistakes are likely: ``self.ui.<name>`` must be a
widget of the ``.ui`` file, every ``SlicerParameterName`` must be a parameter, and
signals must look like Qt signatures.

``stand_in(module_path, mrml=None)`` installs it (the whole ``slicer`` package is
faked unless a real slicer-core ``slicer`` is given) and restores ``sys.modules``.
"""

import contextlib
import re
import sys
import types
import unittest
import xml.etree.ElementTree as ET
from typing import Any, Dict, Iterator, List, Optional

SIGNAL = re.compile(r"^[A-Za-z_]\w*\((?:[\w:<>*&, ]*)\)$")


class Anything:
    """Accepts any attribute, call or setting: the loose parts of the stand-in."""

    def __init__(self, name: str = "anything"):
        object.__setattr__(self, "_name", name)

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        value = Anything(f"{self._name}.{name}")
        object.__setattr__(self, name, value)
        return value

    def __call__(self, *args, **kwargs):
        return Anything(f"{self._name}()")

    def __bool__(self) -> bool:
        return False

    def __iter__(self):
        return iter(())

    def __or__(self, other):
        return self

    __ror__ = __or__

    def __repr__(self) -> str:
        return f"<stand-in {self._name}>"


class FakeWidget:
    """A widget of the .ui file: keeps properties, items and connections."""

    def __init__(self, class_name: str, name: str, parameter: Optional[str] = None):
        self.className, self.objectName, self.parameter = class_name, name, parameter
        self.connections: List[tuple] = []
        self.items: List[tuple] = []
        self.cells: Dict[tuple, Any] = {}
        self.rowCount = 0
        self.currentIndex = -1
        self.text = ""
        self.enabled = True
        self.visible = True

    def connect(self, signal: str, slot) -> None:
        if not SIGNAL.match(signal):
            raise AssertionError(f"'{signal}' connected on '{self.objectName}' is not a Qt signal signature")
        if not callable(slot):
            raise AssertionError(f"the slot connected to {self.objectName}.{signal} is not callable")
        self.connections.append((signal, slot))

    def setVisible(self, visible: bool) -> None:
        self.visible = bool(visible)

    # combo boxes and list widgets
    def clear(self) -> None:
        self.items = []
        self.currentIndex = -1

    def addItem(self, item, data=None) -> None:
        self.items.append((item, data))
        if self.currentIndex < 0:
            self.currentIndex = 0

    @property
    def count(self) -> int:
        return len(self.items)

    def itemData(self, index: int):
        return self.items[index][1]

    def item(self, index: int):
        return self.items[index][0]

    def setCurrentIndex(self, index: int) -> None:
        self.currentIndex = index

    # tables
    def setRowCount(self, rows: int) -> None:
        self.rowCount = rows

    def setItem(self, row: int, column: int, item) -> None:
        self.cells[(row, column)] = item

    def currentRow(self) -> int:
        return -1

    def setCurrentRow(self, row: int) -> None:
        pass

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return Anything(f"{self.objectName}.{name}")


class UiVariables:
    """``self.ui``: only the widgets the .ui file declares."""

    def __init__(self, widgets: Dict[str, FakeWidget], path: str):
        object.__setattr__(self, "_widgets", widgets)
        object.__setattr__(self, "_path", path)

    def __getattr__(self, name: str):
        try:
            return self._widgets[name]
        except KeyError:
            raise AttributeError(f"the code uses self.ui.{name} but {self._path} has no widget named '{name}'") from None


def load_ui(path: str) -> FakeWidget:
    root_element = ET.parse(path).getroot().find("widget")
    root = FakeWidget(root_element.get("class"), root_element.get("name"))
    widgets = {}
    for element in root_element.iter("widget"):
        parameter = None
        for prop in element.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                parameter = prop.findtext("string")
        widget = FakeWidget(element.get("class"), element.get("name"), parameter)
        widget.columnCount = len(element.findall("column"))
        widgets[element.get("name")] = widget
    root.children = widgets
    root.path = path
    return root


# --- parameterNodeWrapper --------------------------------------------------------------------------


class _Validator:
    def __init__(self, *args, **kwargs):
        self.args = args


class Choice(_Validator):
    pass


class WithinRange(_Validator):
    pass


class Default(_Validator):
    pass


def _default_for(annotation):
    import typing

    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _default_for(typing.get_args(annotation)[0])
    if origin in (list, List):
        return []
    return {str: "", int: 0, float: 0.0, bool: False}.get(annotation)


def _fields(cls) -> Dict[str, Any]:
    fields = {}
    for klass in reversed(cls.__mro__):
        fields.update(getattr(klass, "__annotations__", {}))
    return fields


def parameterPack(cls):
    fields = _fields(cls)
    defaults = {name: getattr(cls, name, _default_for(kind)) for name, kind in fields.items()}

    def __init__(self, *args, **kwargs):
        values = dict(defaults)
        values.update(zip(fields, args))
        values.update(kwargs)
        unknown = set(values) - set(fields)
        if unknown:
            raise TypeError(f"{cls.__name__} has no parameters {sorted(unknown)}")
        for name, value in values.items():
            setattr(self, name, list(value) if isinstance(value, list) else value)

    cls.__init__ = __init__
    cls._parameter_names = list(fields)
    return cls


def parameterNodeWrapper(cls):
    fields = _fields(cls)
    defaults = {name: getattr(cls, name, _default_for(kind)) for name, kind in fields.items()}

    class Wrapper:
        __name__ = cls.__name__
        _parameter_names = list(fields)
        _annotations = fields

        def __init__(self, parameterNode):
            object.__setattr__(self, "parameterNode", parameterNode)
            for name, value in defaults.items():
                object.__setattr__(self, name, list(value) if isinstance(value, list) else value)

        def __setattr__(self, name, value):
            if name not in fields:
                raise AttributeError(f"{cls.__name__} has no parameter '{name}'")
            object.__setattr__(self, name, value)

        def connectGui(self, ui: UiVariables):
            for widget in ui._widgets.values():
                if widget.parameter and widget.parameter.split(".")[0] not in fields:
                    raise AssertionError(
                        f"{widget.objectName} is bound to '{widget.parameter}', which {cls.__name__} does not have")
            return "gui-tag"

        def disconnectGui(self, tag) -> None:
            pass

    Wrapper.__qualname__ = cls.__qualname__
    Wrapper.__doc__ = cls.__doc__
    return Wrapper


# --- the scripted-module base classes --------------------------------------------------------------


def _module(name: str, **attributes) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    return module


def _scripted_module_layer(slicer_module, module_path: str) -> types.ModuleType:
    import os

    class ScriptedLoadableModule:
        def __init__(self, parent):
            self.parent = parent
            self.moduleName = type(self).__name__

        def resourcePath(self, filename):
            return os.path.join(os.path.dirname(self.parent.path), "Resources", filename)

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent=None):
            self.moduleName = type(self).__name__[: -len("Widget")]
            self.parent = parent if parent is not None else Anything("parent")
            self.layout = self.parent.layout()

        def resourcePath(self, filename):
            return os.path.join(os.path.dirname(module_path), "Resources", filename)

        def setup(self):
            pass

    class ScriptedLoadableModuleLogic:
        def __init__(self, parent=None):
            self.moduleName = type(self).__name__[: -len("Logic")]

        def getParameterNode(self):
            scene = slicer_module.mrmlScene
            node = scene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
            if not node:
                node = scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode")
                node.SetSingletonTag(self.moduleName)
            return node

    class ScriptedLoadableModuleTest(unittest.TestCase):
        def delayDisplay(self, message, msec=None):
            print(message)

    return _module("slicer.ScriptedLoadableModule", ScriptedLoadableModule=ScriptedLoadableModule,
                   ScriptedLoadableModuleWidget=ScriptedLoadableModuleWidget,
                   ScriptedLoadableModuleLogic=ScriptedLoadableModuleLogic,
                   ScriptedLoadableModuleTest=ScriptedLoadableModuleTest)


class _Observations:
    def __init__(self):
        self.observations = []

    def addObserver(self, obj, event, method, *args, **kwargs):
        self.observations.append((obj, event, method))

    def removeObserver(self, obj, event, method):
        pass

    def removeObservers(self, method=None):
        self.observations = []


class _NodeClasses(types.ModuleType):
    """A fake ``slicer`` package: MRML class names resolve to placeholder classes."""

    def __getattr__(self, name: str):
        if name.startswith("vtk") or name.startswith("qMRML"):
            cls = type(name, (), {})
            setattr(self, name, cls)
            return cls
        raise AttributeError(f"the stand-in slicer module has no '{name}' (real Slicer may not either)")


GUI_CALLS = ("loadUI", "childWidgetVariables", "errorDisplay", "warningDisplay", "infoDisplay", "mainWindow",
             "modulePath", "confirmOkCancelDisplay", "confirmYesNoDisplay", "pip_install", "delayDisplay")
REPLACED = ("qt", "ctk", "slicer", "slicer.util", "slicer.ScriptedLoadableModule", "slicer.parameterNodeWrapper",
            "slicer.i18n", "TransferSeg")


@contextlib.contextmanager
def stand_in(module_path: str, mrml=None) -> Iterator[types.SimpleNamespace]:
    """Install the stand-in; ``mrml`` is a real slicer-core ``slicer`` module to build on, or None."""
    saved_modules = {name: sys.modules.get(name) for name in sys.modules
                     if name in REPLACED or name.startswith(("TransferSegLib.scene", "TransferSegPanel"))}
    saved_modules.update({name: sys.modules.get(name) for name in REPLACED})
    import TransferSegLib

    saved_package = {name: value for name, value in vars(TransferSegLib).items() if name.startswith("scene")}
    messages: List[str] = []
    class QObject:  # subclassed by the panel (an event filter): must be a real class
        def __init__(self, *args):
            pass

    qt = _module("qt", QTimer=lambda *a: Anything("QTimer"), QTableWidgetItem=lambda *a: Anything("QTableWidgetItem"),
                 QListWidgetItem=lambda *a: Anything("QListWidgetItem"), QFileDialog=Anything("QFileDialog"),
                 Qt=Anything("Qt"), QIcon=lambda *a: Anything("QIcon"), QSettings=lambda *a: Anything("QSettings"),
                 QObject=QObject, QEvent=Anything("QEvent"), QMessageBox=Anything("QMessageBox"),
                 QHeaderView=Anything("QHeaderView"), QApplication=Anything("QApplication"),
                 QCursor=lambda *a: Anything("QCursor"), QLabel=lambda *a: FakeWidget("QLabel", "(made in code)"))
    ctk = _module("ctk")
    if mrml is not None:
        slicer_module = mrml
        util = mrml.util
        saved_util = {name: getattr(util, name, None) for name in GUI_CALLS + ("VTKObservationMixin",)}
        saved_attrs = {name: getattr(mrml, name, None)
                       for name in ("app", "ScriptedLoadableModule", "parameterNodeWrapper", "i18n",
                                    "qMRMLNodeComboBox")}
    else:
        slicer_module = _NodeClasses("slicer")
        slicer_module.__path__ = []
        util = _module("slicer.util")
        slicer_module.util = util
        slicer_module.mrmlScene = Anything("mrmlScene")
        slicer_module.modules = Anything("modules")
        saved_util, saved_attrs = {}, {}
    util.loadUI = load_ui
    util.childWidgetVariables = lambda root: UiVariables(root.children, root.path)
    util.errorDisplay = util.warningDisplay = util.infoDisplay = lambda text, *a, **k: messages.append(str(text))
    util.mainWindow = lambda: None
    util.modulePath = lambda name: module_path
    util.confirmOkCancelDisplay = util.confirmYesNoDisplay = lambda *a, **k: False
    util.delayDisplay = lambda *a, **k: None
    util.VTKObservationMixin = _Observations
    slicer_module.app = Anything("app")
    # Widgets the panel makes in code (slicer-core has no Qt classes): recorded like the .ui's own.
    slicer_module.qMRMLNodeComboBox = lambda *a: FakeWidget("qMRMLNodeComboBox", "(made in code)")
    slicer_module.ScriptedLoadableModule = _scripted_module_layer(slicer_module, module_path)
    slicer_module.parameterNodeWrapper = _module("slicer.parameterNodeWrapper", parameterNodeWrapper=parameterNodeWrapper,
                                                 parameterPack=parameterPack, Choice=Choice, WithinRange=WithinRange,
                                                 Default=Default)
    slicer_module.i18n = _module("slicer.i18n", tr=lambda text: text, translate=lambda context, text: text)
    for name in list(sys.modules):
        if name.startswith(("TransferSegLib.scene", "TransferSegPanel")) or name == "TransferSeg":
            del sys.modules[name]
    sys.modules.update({"qt": qt, "ctk": ctk, "slicer": slicer_module, "slicer.util": util,
                        "slicer.ScriptedLoadableModule": slicer_module.ScriptedLoadableModule,
                        "slicer.parameterNodeWrapper": slicer_module.parameterNodeWrapper,
                        "slicer.i18n": slicer_module.i18n})
    try:
        yield types.SimpleNamespace(slicer=slicer_module, messages=messages)
    finally:
        for name in list(sys.modules):
            if name.startswith(("TransferSegLib.scene", "TransferSegPanel")) or name == "TransferSeg":
                del sys.modules[name]
        for name, module in saved_modules.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
        for name in [n for n in vars(TransferSegLib) if n.startswith("scene")]:
            delattr(TransferSegLib, name)
        for name, value in saved_package.items():
            setattr(TransferSegLib, name, value)
        for name, value in saved_util.items():
            if value is None:
                if hasattr(util, name):
                    delattr(util, name)
            else:
                setattr(util, name, value)
        for name, value in saved_attrs.items():
            if value is None:
                if hasattr(mrml, name):
                    delattr(mrml, name)
            else:
                setattr(mrml, name, value)
