"""Export the regressor *and* the face model's decoding as one ONNX graph with a dynamic batch.

:class:`FaceGraph` is what the graph computes: the regressor's parameters, then
:func:`facenet3d.decode.decode_face` (shape from the constant bases, 6D rotation by
Gram-Schmidt, pose, projection of the 68 landmarks into the crop) and the diffuse albedo at the
vertices, all from buffers that become constant initialisers. :func:`export_onnx` traces it,
writes the metadata of :mod:`facenet3d.onnx.metadata`, checks the file with ``onnx.checker``,
runs it once in ONNX Runtime against PyTorch on a batch size it was not traced with, and moves
it into place only then.

Example:
    >>> regressor = load_regressor("default", face_model=model)     # doctest: +SKIP
    >>> export_onnx(regressor, model, "facenet3d.onnx")               # doctest: +SKIP
"""

from __future__ import annotations

import os
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from facenet3d import __version__
from facenet3d.atomic import atomic_path
from facenet3d.decode import crop_camera, decode_face
from facenet3d.errors import ExportError
from facenet3d.export.mesh import TexturedMesh, vertex_colors_from_texture
from facenet3d.facemodel import MorphableModel
from facenet3d.network import FaceRegressor, check_face_model, face_model_fingerprint
from facenet3d.onnx.metadata import INPUT_NAME, OUTPUT_NAMES, PARAM_OUTPUTS, OnnxModelInfo

#: Opset used unless asked otherwise (17: LayerNormalization and everything timm CNNs need;
#: supported by every ONNX Runtime of the last years).
DEFAULT_OPSET = 17
#: Largest difference between PyTorch and ONNX Runtime accepted by the export check, relative to
#: an output's largest magnitude (at least 1): generous, it catches broken graphs; the test
#: suite holds the real tolerances (0.01 mm, 0.01 px).
VERIFY_TOLERANCE = 1e-4


def vertex_albedo_space(model: MorphableModel) -> tuple[np.ndarray, np.ndarray]:
    """The model's diffuse-albedo space evaluated at its vertices.

    A UV map is baked to the vertices as the PLY exporter bakes it
    (:func:`~facenet3d.export.mesh.vertex_colors_from_texture`: mean of bilinear samples at the
    vertex's UV corners); baking is linear, so baking the mean and every basis map gives a
    per-vertex linear space with the same coefficients.

    Returns:
        ``mean (V, 3)`` and ``basis (Ka, V, 3)`` float32, linear RGB (mid-grey and no modes for
        a model without albedo).
    """
    v = model.num_vertices
    if model.albedo_space == "none":
        return np.full((v, 3), 0.5, np.float32), np.zeros((0, v, 3), np.float32)
    mean = model.albedo_mean.detach().cpu().numpy()
    basis = (model.albedo_basis.detach().cpu().numpy() if model.albedo_basis is not None
             else np.zeros((0, *mean.shape), np.float32))
    if model.albedo_space == "vertex":
        return mean.astype(np.float32), basis.astype(np.float32)
    tri, uvs, uv_tri = (model.triangles.cpu().numpy(), model.uvs.cpu().numpy(), model.uv_triangles.cpu().numpy())
    vertices = model.mean_shape.detach().cpu().numpy()

    def bake(image: np.ndarray) -> np.ndarray:
        mesh = TexturedMesh(vertices, tri, uvs=uvs, uv_triangles=uv_tri, textures={"albedo": image})
        return vertex_colors_from_texture(mesh, "albedo")

    return bake(mean), np.stack([bake(b) for b in basis]) if len(basis) else np.zeros((0, v, 3), np.float32)


class FaceGraph(nn.Module):
    """Regressor + decoding: aligned crops in, parameters and geometry out (the exported graph).

    Args:
        regressor: the regressor.
        face_model: the face model it predicts for.

    ``forward(image (B, 3, S, S) RGB in [0, 1])`` returns the tuple of
    :data:`~facenet3d.onnx.metadata.OUTPUT_NAMES` (shapes and units in
    :mod:`facenet3d.onnx.metadata`).
    """

    def __init__(self, regressor: FaceRegressor, face_model: MorphableModel):
        super().__init__()
        self.regressor = regressor
        self.face_model = face_model
        self.camera = crop_camera(regressor.crop_size)
        mean, basis = vertex_albedo_space(face_model)
        self.register_buffer("vertex_albedo_mean", torch.as_tensor(mean))
        self.register_buffer("vertex_albedo_basis", torch.as_tensor(basis.reshape(len(basis), -1)))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        params = self.regressor(image)
        params = replace(params, expression=self.face_model.clamp_expression(params.expression))
        decoded = decode_face(self.face_model, params, self.camera.to(image.device))
        if self.vertex_albedo_basis.shape[0]:
            offsets = params.albedo @ self.vertex_albedo_basis
            vertex_albedo = self.vertex_albedo_mean + offsets.reshape(offsets.shape[0], -1, 3)
        else:
            vertex_albedo = self.vertex_albedo_mean.expand(image.shape[0], -1, -1)
        return (*(getattr(params, name) for name in PARAM_OUTPUTS), decoded.rotation, decoded.vertices_camera,
                decoded.vertices, decoded.landmarks68, vertex_albedo.clamp(0.0, 1.0))


def graph_info(regressor: FaceRegressor, face_model: MorphableModel, opset: int, weights: dict | None = None
               ) -> OnnxModelInfo:
    """The metadata of the graph of ``regressor`` and ``face_model``."""
    info = regressor.info
    return OnnxModelInfo(
        crop_size=int(info.crop_size), face_model=info.face_model or str(face_model.metadata.get("name", "")),
        face_model_fingerprint=face_model_fingerprint(face_model), num_vertices=int(face_model.num_vertices),
        albedo_space=face_model.albedo_space, dims=tuple(int(d) for d in info.dims),
        mean=tuple(float(v) for v in info.mean), std=tuple(float(v) for v in info.std),
        crop_focal_px=float(crop_camera(info.crop_size).focal[0, 0]), regressor=info.to_dict(),
        weights=dict(weights or {}), facenet3d_version=__version__, opset=int(opset))


def export_onnx(regressor: FaceRegressor, face_model: MorphableModel, path: str | os.PathLike,
                opset: int = DEFAULT_OPSET, verify: bool = True, weights: dict | None = None) -> Path:
    """Write the ONNX graph of a regressor and its face model's decoding, atomically.

    Args:
        regressor: the regressor (trained, or freshly created for tests and benchmarks).
        face_model: the face model it predicts for (checked against the regressor's record).
        path: destination ``.onnx``.
        opset: ONNX opset version (17 or newer).
        verify: run the file in ONNX Runtime on a random batch of a size it was not traced with
            and compare with PyTorch before moving it into place.
        weights: provenance recorded in the metadata (weights file, checksum, training).

    Returns:
        ``path``.

    Raises:
        WeightsError: the regressor was built for another face model.
        ExportError: the exported graph fails ``onnx.checker`` or disagrees with PyTorch.
    """
    import onnx

    path = Path(path)
    if opset < 17:
        raise ExportError(path, f"opset {opset} is too old; use 17 or newer")
    check_face_model(regressor.info, face_model)
    graph = FaceGraph(regressor, face_model).cpu().eval()
    s = regressor.crop_size
    example = torch.rand(2, 3, s, s, generator=torch.Generator().manual_seed(0))
    dynamic = {name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)}
    info = graph_info(regressor, face_model, opset, weights)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with torch.no_grad(), warnings.catch_warnings():
            # Shapes that are constant for a model (coefficient counts) are traced as constants
            # on purpose; the batch stays dynamic and is checked below.
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            # The TorchScript exporter is deprecated in favour of the torch.export one, which needs
            # onnxscript; it still exports these CNNs and the decoding exactly.
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
            warnings.filterwarnings("ignore", message="The feature will be removed", category=DeprecationWarning)
            torch.onnx.export(graph, (example,), str(tmp), dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                              dynamic_axes=dynamic, do_constant_folding=True)
        proto = onnx.load(str(tmp))
        del proto.metadata_props[:]
        for key, value in info.metadata_props().items():
            proto.metadata_props.add(key=key, value=value)
        proto.producer_name, proto.producer_version = "facenet3d", __version__
        proto.doc_string = ("facenet3d face regressor + face-model decoding: aligned RGB crop in [0, 1] -> "
                            "parameters, vertices (mm), 68 landmarks (crop px), vertex albedo")
        try:
            onnx.checker.check_model(proto, full_check=True)
        except onnx.checker.ValidationError as e:
            raise ExportError(path, f"the exported graph is not valid ONNX: {e}") from e
        onnx.save(proto, str(tmp))
        if verify:
            verify_graph(tmp, graph, batch=3, source=path)
    return path


def verify_graph(onnx_path: str | os.PathLike, graph: FaceGraph, batch: int = 3, seed: int = 1,
                 source: str | os.PathLike | None = None) -> dict[str, float]:
    """Run an exported graph in ONNX Runtime and in PyTorch on the same random crops.

    Returns:
        Largest absolute difference per output.

    Raises:
        ExportError: an output differs by more than :data:`VERIFY_TOLERANCE` (relative).
    """
    import onnxruntime as ort

    s = graph.regressor.crop_size
    images = torch.rand(batch, 3, s, s, generator=torch.Generator().manual_seed(seed))
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(list(OUTPUT_NAMES), {INPUT_NAME: images.numpy()})
    with torch.no_grad():
        expected = graph(images)
    diffs = {}
    for name, a, b in zip(OUTPUT_NAMES, got, expected, strict=True):
        b = b.cpu().numpy()
        if a.shape != b.shape:
            raise ExportError(source or onnx_path, f"output {name!r} has shape {a.shape} in ONNX Runtime, "
                                                   f"{b.shape} in PyTorch")
        diffs[name] = float(np.abs(a - b).max()) if a.size else 0.0
        scale = max(1.0, float(np.abs(b).max())) if b.size else 1.0
        if not diffs[name] <= VERIFY_TOLERANCE * scale:
            raise ExportError(source or onnx_path, f"output {name!r} differs from PyTorch by {diffs[name]:.3g}")
    return diffs
