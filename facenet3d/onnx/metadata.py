"""What an exported facenet3d ONNX file promises: its inputs, outputs and metadata (no torch).

The exporter (:mod:`facenet3d.onnx.export`) writes, and the torch-free runtime (``infer/``)
reads, the ONNX ``metadata_props`` described here:

- ``facenet3d``: one JSON string, the authoritative record (:class:`OnnxModelInfo`): format and
  version, facenet3d version, the regressor (variant, backbone, crop size, coefficient counts,
  input normalisation), the face model (name, fingerprint, vertex count, albedo space), the
  crop camera, and the inputs/outputs with shapes and units;
- ``face_model``, ``crop_size``, ``input``, ``normalisation``, ``facenet3d_version``: the same
  facts as plain strings for people and tools (e.g. Netron) that do not parse JSON.

The graph (``B`` dynamic)::

    image            (B, 3, S, S) float32  aligned crop, RGB in [0, 1]; mean/std normalisation inside
    identity         (B, Ki)              \\
    expression       (B, Ke)               |
    albedo           (B, Ka)               |  FaceParams fields, crop camera
    rotation         (B, 6)                |  (facenet3d.params.FaceParams)
    translation      (B, 3) mm             |
    sh               (B, 9, 3)             |
    specular         (B, 1)                |
    roughness        (B, 1)               /
    rotation_matrix  (B, 3, 3)            model -> crop camera
    vertices         (B, V, 3) mm         crop camera frame
    vertices_model   (B, V, 3) mm         model frame (identity + expression, no pose)
    landmarks68      (B, 68, 2) px        projected iBUG-68 landmarks, crop pixels
    vertex_albedo    (B, V, 3)            diffuse albedo at the vertices, linear RGB in [0, 1]
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from facenet3d.errors import WeightsError

FORMAT_NAME = "facenet3d-onnx"
FORMAT_VERSION = 1
METADATA_KEY = "facenet3d"
INPUT_NAME = "image"

#: FaceParams fields, in the order of the flat parameter vector.
PARAM_OUTPUTS = ("identity", "expression", "albedo", "rotation", "translation", "sh", "specular", "roughness")
#: Decoded geometry and appearance.
DECODED_OUTPUTS = ("rotation_matrix", "vertices", "vertices_model", "landmarks68", "vertex_albedo")
OUTPUT_NAMES = PARAM_OUTPUTS + DECODED_OUTPUTS

OUTPUT_DOCS: dict[str, str] = {
    "identity": "(B, Ki) identity coefficients",
    "expression": "(B, Ke) expression coefficients",
    "albedo": "(B, Ka) albedo coefficients",
    "rotation": "(B, 6) first two columns of the model-to-crop-camera rotation",
    "translation": "(B, 3) mm, model origin in the crop camera",
    "sh": "(B, 9, 3) spherical-harmonics lighting",
    "specular": "(B, 1) specular albedo scale",
    "roughness": "(B, 1) roughness",
    "rotation_matrix": "(B, 3, 3) model -> crop camera rotation",
    "vertices": "(B, V, 3) mm, crop camera frame (camera at the origin looking down -z, +y up)",
    "vertices_model": "(B, V, 3) mm, model frame (+y up, +z out of the face), pose removed",
    "landmarks68": "(B, 68, 2) px, projected iBUG-68 landmarks in the crop (origin top-left, centres at +0.5)",
    "vertex_albedo": "(B, V, 3) diffuse albedo at the vertices, linear RGB in [0, 1]",
}

@dataclass(frozen=True)
class OnnxModelInfo:
    """The ``facenet3d`` metadata entry of an exported graph.

    Attributes:
        crop_size: side ``S`` of the input crop, px.
        face_model: name of the face model whose decoding is in the graph.
        face_model_fingerprint: its :func:`face_model_fingerprint`.
        num_vertices: ``V``.
        albedo_space: ``"uv"``, ``"vertex"`` or ``"none"``.
        dims: ``(Ki, Ke, Ka)``.
        mean, std: RGB normalisation applied inside the graph to ``[0, 1]`` input.
        crop_focal_px: focal length of the crop camera, px (principal point at ``S / 2``).
        regressor: the regressor's record (variant, backbone, ...).
        weights: where the weights came from (path, checksum, training provenance).
        facenet3d_version: version that exported the file.
        opset: ONNX opset of the graph.
    """

    crop_size: int
    face_model: str
    face_model_fingerprint: str
    num_vertices: int
    albedo_space: str
    dims: tuple[int, int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_focal_px: float
    regressor: dict = field(default_factory=dict)
    weights: dict = field(default_factory=dict)
    facenet3d_version: str = ""
    opset: int = 0

    def to_json(self) -> str:
        record = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **asdict(self),
                  "input": {"name": INPUT_NAME, "shape": ["B", 3, self.crop_size, self.crop_size],
                            "dtype": "float32", "layout": "NCHW", "colour": "RGB", "range": [0.0, 1.0]},
                  "outputs": OUTPUT_DOCS}
        return json.dumps(record)

    def metadata_props(self) -> dict[str, str]:
        """``metadata_props`` entries for the ONNX file."""
        return {
            METADATA_KEY: self.to_json(),
            "face_model": self.face_model,
            "crop_size": str(self.crop_size),
            "input": f"{INPUT_NAME}: float32 (B, 3, {self.crop_size}, {self.crop_size}) RGB in [0, 1], "
                     "an aligned face crop (facenet3d.landmarks.align_face)",
            "normalisation": f"(x - mean) / std inside the graph, mean={list(self.mean)}, std={list(self.std)}",
            "facenet3d_version": self.facenet3d_version,
        }

    @classmethod
    def from_metadata(cls, props: Mapping[str, str], source: str | None = None) -> OnnxModelInfo:
        """Parse ``metadata_props`` (e.g. ``session.get_modelmeta().custom_metadata_map``).

        Raises:
            WeightsError: no facenet3d entry, another format, a newer version, or missing fields.
        """
        where = f"{source}: " if source else ""
        if METADATA_KEY not in props:
            raise WeightsError(f"{where}ONNX file without facenet3d metadata (export it with "
                               "`facenet3d export-onnx`)")
        try:
            record = json.loads(props[METADATA_KEY])
        except ValueError as e:
            raise WeightsError(f"{where}corrupt facenet3d metadata ({e})") from e
        if record.get("format") != FORMAT_NAME:
            raise WeightsError(f"{where}format {record.get('format')!r} is not {FORMAT_NAME!r}")
        if int(record.get("format_version", 0)) > FORMAT_VERSION:
            raise WeightsError(f"{where}format version {record['format_version']} is newer than this "
                               f"facenet3d reads ({FORMAT_VERSION}); upgrade facenet3d")
        try:
            return cls(
                crop_size=int(record["crop_size"]), face_model=str(record["face_model"]),
                face_model_fingerprint=str(record["face_model_fingerprint"]),
                num_vertices=int(record["num_vertices"]), albedo_space=str(record["albedo_space"]),
                dims=tuple(int(v) for v in record["dims"]), mean=tuple(float(v) for v in record["mean"]),
                std=tuple(float(v) for v in record["std"]), crop_focal_px=float(record["crop_focal_px"]),
                regressor=dict(record.get("regressor", {})), weights=dict(record.get("weights", {})),
                facenet3d_version=str(record.get("facenet3d_version", "")), opset=int(record.get("opset", 0)))
        except (KeyError, TypeError, ValueError) as e:
            raise WeightsError(f"{where}incomplete facenet3d metadata ({e!r})") from e


def face_model_fingerprint(arrays) -> str:
    """The fingerprint of a face model read as numpy arrays (:meth:`FaceModelArrays.fingerprint`),
    equal to :func:`facenet3d.network.face_model_fingerprint` of the same model.

    Args:
        arrays: a :class:`~facenet3d.facemodel.FaceModelArrays`.
    """
    return arrays.fingerprint()
