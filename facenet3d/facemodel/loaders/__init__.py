"""Loaders of third-party face-model formats; each module registers its format on import.

Formats: ``ict`` (ICT-FaceKit OBJ files), ``bfm2009`` (Basel 2009 ``.mat``, Deep3DFaceRecon's
``BFM_model_front.mat``), ``bfm2017`` (Basel 2017/2019 ``.h5``, optional AlbedoMM), ``flame``
(``generic_model.pkl``, restricted unpickling) and ``sfm`` (Surrey Face Model / eos ``.bin``).
Shared conventions (millimetres, standardised coefficients, outward winding) are described
in :mod:`facenet3d.facemodel.loaders.common`.
"""

from facenet3d.facemodel.loaders import bfm2009, bfm2017, flame, ict, sfm  # noqa: F401
