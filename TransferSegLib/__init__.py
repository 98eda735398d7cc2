"""TransferSeg engine: fine-tune pretrained 3D segmentation models on a few annotated cases.

Pure Python (torch, monai, numpy, SimpleITK). Nothing here imports Qt; only the
scene bridge, the ``TransferSegLib.scene`` package, imports ``slicer``.
"""

__version__ = "0.1.0"
