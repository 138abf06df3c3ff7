"""The training application: face-model builder and the Lightning trainer of the regressor."""

import facenet3d  # noqa: F401  (sets the OpenMP wait policy before torch is imported)
