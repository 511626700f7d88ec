"""Face landmarks, attribute scores, FFHQ alignment and identity embeddings (optional ``face`` extra).

Install with ``pip install -e ".[face]"`` (dlib-bin + face_recognition_models). Import the submodules
directly; importing this package does not import dlib::

    from latentpriv.faces import available
    from latentpriv.faces.attributes import score_images     # smile, mouth_open, yaw, eyes_open
    from latentpriv.faces.align import align_image           # FFHQ alignment
    from latentpriv.faces.identity import embed, identity_distance

The 68-point landmark model (used by attributes and alignment) was trained on iBUG 300-W, whose licence
excludes commercial use.
"""

from __future__ import annotations

from latentpriv.faces.models import INSTALL_HINT, LICENSE_NOTE, FaceExtraMissing, available

__all__ = ["INSTALL_HINT", "LICENSE_NOTE", "FaceExtraMissing", "available"]
