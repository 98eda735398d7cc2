"""TransferSeg engine: fine-tune pretrained 3D segmentation models on a few annotated cases.

Pure Python (torch, monai, numpy, SimpleITK). Nothing here imports Qt; only
``TransferSegLib.scene`` imports ``slicer``.
"""

__version__ = "0.1.0"
