"""Evaluation: ``facenet3d evaluate aflw2000 | geometry | photometric | identity | expression | fairness``.

- :mod:`~facenet3d.evaluate.aflw2000` — 68-landmark NME on AFLW2000-3D per yaw bin (3DDFA protocol);
- :mod:`~facenet3d.evaluate.geometry` — shape error in mm on faces rendered from ICT-FaceKit with
  known geometry (:mod:`~facenet3d.evaluate.synthetic`), measured as NoW does
  (:mod:`~facenet3d.evaluate.mesh_distance` for point-to-surface distances);
- :mod:`~facenet3d.evaluate.photometric` — PSNR/SSIM of the re-render in the face region;
- :mod:`~facenet3d.evaluate.identity` — spread of the neutral shape within vs across people;
- :mod:`~facenet3d.evaluate.expression` — ARKit expression coefficients against emotion labels
  (within-person ROC AUC against the same people's neutral photos);
- :mod:`~facenet3d.evaluate.fairness` — photometric error and albedo per UTKFace race group;
- :mod:`~facenet3d.evaluate.methods` — the compared methods (baselines and refinement presets).

Every evaluation returns a JSON-able report (:func:`~facenet3d.evaluate.common.write_report`).
Modules are imported on use; this package imports nothing heavy.
"""
