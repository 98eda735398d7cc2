"""The TransferSeg panel's sections, split out of ``TransferSeg.py`` (the module file Slicer loads).

Each module holds one section's slots as a mixin of ``TransferSegWidget``; ``texts``
holds the words and table rows they show (no Qt, so tests and the screenshot use the
same ones). Everything that is not showing or asking lives in the Logic
(``TransferSegLib.scene.logic``).
"""
