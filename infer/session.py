"""The ONNX Runtime session of an exported facenet3d graph (no torch).

:class:`RegressorSession` opens a file written by ``facenet3d export-onnx``, reads its metadata
(:class:`~facenet3d.onnx.metadata.OnnxModelInfo`), picks the execution provider (CUDA when
onnxruntime-gpu is installed and a GPU is usable, the CPU otherwise) and runs batches of aligned
crops.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from facenet3d.errors import WeightsError
from facenet3d.onnx.metadata import INPUT_NAME, OUTPUT_NAMES, OnnxModelInfo

#: ``providers`` choices: CUDA when available, else CPU; CUDA (failing without it); CPU only.
PROVIDER_CHOICES = ("auto", "cuda", "cpu")


def select_providers(choice: str = "auto") -> list[str]:
    """ONNX Runtime execution providers for ``choice`` (see :data:`PROVIDER_CHOICES`).

    Raises:
        ValueError: ``choice`` is unknown, or ``"cuda"`` without onnxruntime-gpu.
    """
    import onnxruntime as ort

    if choice not in PROVIDER_CHOICES:
        raise ValueError(f"provider must be one of {PROVIDER_CHOICES}, got {choice!r}")
    available = ort.get_available_providers()
    cuda = "CUDAExecutionProvider" in available
    if choice == "cuda" and not cuda:
        raise ValueError("the CUDA execution provider is not available (install onnxruntime-gpu)")
    if choice in ("auto", "cuda") and cuda:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class RegressorSession:
    """An exported graph ready to run.

    Args:
        path: ``.onnx`` file from ``facenet3d export-onnx``.
        threads: intra-op threads for the CPU provider (None: ONNX Runtime's default, one per
            physical core).
        provider: ``"auto"``, ``"cuda"`` or ``"cpu"`` (see :func:`select_providers`).

    Attributes:
        info: the file's metadata.
        providers: the execution providers in use.

    Raises:
        WeightsError: missing or unreadable file, not a facenet3d graph, or outputs missing.

    Example:
        >>> session = RegressorSession("facenet3d.onnx", threads=2)   # doctest: +SKIP
        >>> out = session.run(crops)                                   # doctest: +SKIP
        >>> out["vertices"].shape                                      # doctest: +SKIP
        (4, 7305, 3)
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None, provider: str = "auto"):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise WeightsError(f"{self.path}: no such ONNX file (write one with `facenet3d export-onnx`)")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        # Idle worker threads sleep instead of spinning: a video runs the graph once per frame between
        # other work, where spinning threads burned as much CPU as the graph itself (and, on a shared
        # machine, took it from the rest of the frame); batches of photos run long enough not to care.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=select_providers(provider))
        except Exception as e:  # onnxruntime's errors (InvalidProtobuf, Fail, ...) derive from Exception only
            raise WeightsError(f"{self.path}: not a loadable ONNX model ({e})") from e
        self.info = OnnxModelInfo.from_metadata(self.session.get_modelmeta().custom_metadata_map, str(self.path))
        outputs = {o.name for o in self.session.get_outputs()}
        missing = [n for n in OUTPUT_NAMES if n not in outputs]
        if missing or INPUT_NAME not in {i.name for i in self.session.get_inputs()}:
            raise WeightsError(f"{self.path}: the graph lacks {missing or [INPUT_NAME]}; re-export it with this "
                               "facenet3d version")
        self.providers = self.session.get_providers()

    @property
    def crop_size(self) -> int:
        return self.info.crop_size

    def run(self, images: np.ndarray, batch_size: int | None = None) -> dict[str, np.ndarray]:
        """Run the graph.

        Args:
            images: ``(B, 3, S, S)`` float32 RGB in ``[0, 1]`` (see :func:`facenet3d.infer.pipeline.crops_to_input`).
            batch_size: run at most this many crops at a time (None: all at once).

        Returns:
            Every output of :data:`~facenet3d.onnx.metadata.OUTPUT_NAMES` with a leading ``B``.
        """
        x = np.ascontiguousarray(images, dtype=np.float32)
        s = self.crop_size
        if x.ndim != 4 or x.shape[1:] != (3, s, s):
            raise ValueError(f"images must be (B, 3, {s}, {s}) float32, got {x.shape}")
        step = batch_size or max(1, len(x))
        chunks = [self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: x[i:i + step]}) for i in range(0, len(x), step)]
        if not chunks:
            raise ValueError("no images to run")
        return {name: np.concatenate([c[k] for c in chunks]) for k, name in enumerate(OUTPUT_NAMES)}
