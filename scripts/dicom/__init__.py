"""DICOM objects the bundle writes and reads besides the radiographs themselves (docs/review.md, "DICOM and PACS").

* :mod:`.compat`: the few pydicom calls that differ between pydicom 2.4 (the review app's environment) and 3 (the
  bundle's), in one place;
* :mod:`.seg`: the explanation levels (or a reviewer's label) as a DICOM Segmentation of a projection radiograph,
  and back;
* :mod:`.heatmap`: the float explanation map as a 16-bit Secondary Capture with a rescale back to the map's values;
* :mod:`.dicomweb`: a small QIDO-RS / WADO-RS / STOW-RS client on the standard library (what
  ``scripts.data.reviewed`` and the tests use to talk to a PACS).

Every module here works under pydicom 2.4.5 and 3.0.
"""
