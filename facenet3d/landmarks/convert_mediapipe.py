"""Convert the face models bundled in the ``mediapipe`` wheel from TensorFlow Lite to ONNX.

The landmark path (:mod:`facenet3d.landmarks.mediapipe_onnx`) runs MediaPipe's face detectors
(BlazeFace short and full range) and its attention face mesh with onnxruntime, so no install
needs the ``mediapipe`` package or TensorFlow. This tool makes those ``.onnx`` files from the
``.tflite`` files of an installed ``mediapipe`` wheel (Apache-2.0) and copies the face mesh's
edge sets (``face_mesh_connections.npz``, for :mod:`facenet3d.landmarks.topology`); the project
ships its output in ``facenet3d/landmarks/data/mediapipe/``. Run it where ``mediapipe`` and the
``tflite`` flatbuffer reader are installed (``pip install ".[mediapipe]"``)::

    python -m facenet3d.landmarks.convert_mediapipe -o facenet3d/landmarks/data/mediapipe

The output is deterministic (same input bytes -> same output bytes).

How: the models are plain CNNs, so the converter reads the TFLite flatbuffer and writes ONNX
nodes per TFLite operator. TFLite is NHWC, ONNX convolutions are NCHW: every 4-D activation is
kept NCHW inside the graph, the input stays NHWC (as the TFLite model's) and 4-D outputs are
transposed back, so both models take and return the same arrays. Float16 weights stay float16
with a Cast (TFLite's DEQUANTIZE, exact), which halves the files; sparse weights are densified.
MediaPipe's three custom operators of the attention mesh (Landmarks2TransformMatrix,
TransformTensorBilinear, TransformLandmarks; mediapipe/util/tflite/operations) are written with
standard operators (the bilinear one as GridSample, hence opset 16).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
from pathlib import Path

import numpy as np

from facenet3d.errors import ExportError

#: Models converted: output name -> path of the .tflite inside the mediapipe package.
MODELS = {
    "face_detection_short_range": "modules/face_detection/face_detection_short_range.tflite",
    "face_detection_full_range": "modules/face_detection/face_detection_full_range_sparse.tflite",
    "face_landmark_with_attention": "modules/face_landmark/face_landmark_with_attention.tflite",
}

OPSET = 16  # GridSample (MediaPipe's TransformTensorBilinear)
_NHWC_TO_NCHW = (0, 3, 1, 2)
_NCHW_TO_NHWC = (0, 2, 3, 1)
_NUMPY_TYPE = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 9: np.int8}


class UnsupportedModelError(ExportError):
    """The .tflite file uses an operator or option this converter does not translate."""


def mediapipe_dir() -> Path:
    """Folder of the installed ``mediapipe`` package (found without importing it)."""
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the mediapipe package is not installed: pip install mediapipe==0.10.14")
    return Path(next(iter(spec.submodule_search_locations)))


def _operator_names() -> dict[int, str]:
    from tflite.BuiltinOperator import BuiltinOperator

    return {v: k for k, v in vars(BuiltinOperator).items() if not k.startswith("_")}


def _options(op, name: str):
    """The operator's builtin options table as the ``tflite`` class called ``name``."""
    import tflite

    table = op.BuiltinOptions()
    opts = getattr(tflite, name)()
    opts.Init(table.Bytes, table.Pos)
    return opts


def _densify(tensor, values: np.ndarray) -> np.ndarray:
    """Dense array of a sparse TFLite constant (TFLite's sparsity format: traversal order,
    block map and per-dimension DENSE / SPARSE_CSR metadata)."""
    sp = tensor.Sparsity()
    shape = [int(d) for d in tensor.ShapeAsNumpy()]
    order = [int(i) for i in sp.TraversalOrderAsNumpy()]
    block_map = [int(i) for i in sp.BlockMapAsNumpy()] if sp.BlockMapLength() else []
    dims = []
    for i in range(sp.DimMetadataLength()):
        m = sp.DimMetadata(i)
        if m.Format() == 0:  # DENSE
            dims.append(("dense", m.DenseSize(), None, None))
        else:
            dims.append(("csr", None, _index_vector(m.ArraySegments(), m.ArraySegmentsType()),
                         _index_vector(m.ArrayIndices(), m.ArrayIndicesType())))
    n_orig = len(shape)
    block_size = {block_map[k]: dims[n_orig + k][1] for k in range(len(block_map))}
    dense = np.zeros(shape, values.dtype)
    flat = iter(values.reshape(-1))

    def visit(level: int, prev_pos: int, coords: list[int]) -> None:
        if level == len(order):
            index = [0] * n_orig
            for lvl, dim in enumerate(order):
                c = coords[lvl]
                if dim < n_orig:
                    index[dim] += c * block_size.get(dim, 1)
                else:
                    index[block_map[dim - n_orig]] += c
            dense[tuple(index)] = next(flat)
            return
        kind, size, segments, indices = dims[level]
        if kind == "dense":
            for i in range(size):
                visit(level + 1, prev_pos * size + i, coords + [i])
        else:
            for pos in range(segments[prev_pos], segments[prev_pos + 1]):
                visit(level + 1, pos, coords + [int(indices[pos])])

    visit(0, 0, [])
    return dense


def _index_vector(table, kind: int) -> np.ndarray:
    import tflite

    cls = {1: tflite.Int32Vector, 2: tflite.Uint16Vector, 3: tflite.Uint8Vector}[kind]
    vec = cls()
    vec.Init(table.Bytes, table.Pos)
    return vec.ValuesAsNumpy()


class _GraphBuilder:
    """Translates one TFLite subgraph into ONNX nodes (see the module docstring for layouts)."""

    def __init__(self, model, graph):
        from onnx import helper

        self.helper = helper
        self.model, self.graph = model, graph
        self.nodes: list = []
        self.initializers: list = []
        self.consts: dict[int, np.ndarray] = {}  # tensor index -> constant value
        self.names: dict[int, str] = {}  # tensor index -> ONNX value name of an activation
        self.op_names = _operator_names()
        self._count = 0
        for i in range(graph.TensorsLength()):
            t = graph.Tensors(i)
            data = model.Buffers(t.Buffer()).DataAsNumpy()
            if isinstance(data, np.ndarray) and data.size:
                values = data.view(_NUMPY_TYPE[t.Type()])
                if t.Sparsity() is not None:
                    self.consts[i] = values  # densified by its DENSIFY operator
                else:
                    self.consts[i] = values.reshape([int(d) for d in t.ShapeAsNumpy()])

    # -- helpers -------------------------------------------------------------------------------
    def shape(self, index: int) -> list[int]:
        return [int(d) for d in self.graph.Tensors(index).ShapeAsNumpy()]

    def fresh(self, stem: str) -> str:
        self._count += 1
        return f"{stem}_{self._count}"

    def node(self, op: str, inputs: list[str], outputs: list[str] | None = None, **attrs) -> str:
        outputs = outputs or [self.fresh(op.lower())]
        self.nodes.append(self.helper.make_node(op, inputs, outputs, name=self.fresh(f"n_{op.lower()}"), **attrs))
        return outputs[0]

    def constant(self, value: np.ndarray, stem: str) -> str:
        """An initializer; float16 values stay float16 and are cast to float32 in the graph."""
        from onnx import numpy_helper

        name = self.fresh(stem)
        if value.dtype == np.float16:
            self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name + "_f16"))
            return self.node("Cast", [name + "_f16"], [name], to=1)
        if value.dtype == np.float32 or value.dtype == np.int64:
            self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
            return name
        raise UnsupportedModelError(f"constant of type {value.dtype}")

    def ints(self, values, stem: str) -> str:
        return self.constant(np.asarray(values, np.int64), stem)

    def value(self, index: int, rank4: bool) -> str:
        """ONNX name of a TFLite input tensor; constants become initializers, NCHW when the
        activation they meet is 4-D."""
        if index in self.names:
            return self.names[index]
        if index not in self.consts:
            raise UnsupportedModelError(f"tensor {index} is neither computed nor constant")
        c = self.consts[index]
        if rank4 and c.ndim >= 1 and c.size > 1:
            c = c.reshape((1,) * (4 - c.ndim) + c.shape).transpose(_NHWC_TO_NCHW)
        return self.constant(c, "const")

    def activation(self, name: str, fused: int, out: str) -> None:
        if fused == 0:
            self.node("Identity", [name], [out])
        elif fused == 1:
            self.node("Relu", [name], [out])
        elif fused in (2, 3):
            lo, hi = (-1.0, 1.0) if fused == 2 else (0.0, 6.0)
            self.node("Clip", [name, self.constant(np.float32(lo).reshape(()), "lo"),
                               self.constant(np.float32(hi).reshape(()), "hi")], [out])
        elif fused == 4:
            self.node("Tanh", [name], [out])
        else:
            raise UnsupportedModelError(f"fused activation {fused}")

    def same_pads(self, in_hw, k_hw, strides, dilations) -> list[int]:
        begin, end = [], []
        for size, k, s, d in zip(in_hw, k_hw, strides, dilations, strict=True):
            out = -(-size // s)
            total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
            begin.append(total // 2)
            end.append(total - total // 2)
        return begin + end

    # -- operators -----------------------------------------------------------------------------
    def convert(self, op) -> None:
        opcode = self.model.OperatorCodes(op.OpcodeIndex())
        kind = self.op_names.get(max(opcode.BuiltinCode(), opcode.DeprecatedBuiltinCode()), "?")
        ins = [int(i) for i in op.InputsAsNumpy()]
        outs = [int(i) for i in op.OutputsAsNumpy()]
        out_name = self.graph.Tensors(outs[0]).Name().decode()
        if kind in ("DEQUANTIZE", "DENSIFY") and ins[0] in self.consts:
            src = self.consts[ins[0]]
            self.consts[outs[0]] = (_densify(self.graph.Tensors(ins[0]), src) if kind == "DENSIFY" else src)
            return
        if kind == "CUSTOM":
            kind = opcode.CustomCode().decode()
        handler = getattr(self, f"op_{kind.lower()}", None)
        if handler is None:
            raise UnsupportedModelError(f"operator {kind} is not supported")
        handler(op, ins, outs, out_name)
        self.names[outs[0]] = out_name

    def _conv(self, op, ins, out, depthwise: bool) -> None:
        o = _options(op, "DepthwiseConv2DOptions" if depthwise else "Conv2DOptions")
        w = self.consts[ins[1]]
        in_shape = self.shape(ins[0])
        if depthwise:
            weight, group = w.transpose(3, 0, 1, 2), in_shape[3]
        else:
            weight, group = w.transpose(0, 3, 1, 2), 1
        strides = [o.StrideH(), o.StrideW()]
        dil = [o.DilationHFactor(), o.DilationWFactor()]
        k = list(weight.shape[2:])
        pads = self.same_pads(in_shape[1:3], k, strides, dil) if o.Padding() == 0 else [0, 0, 0, 0]
        inputs = [self.value(ins[0], True), self.constant(weight, "w")]
        if len(ins) > 2 and ins[2] >= 0:
            inputs.append(self.constant(self.consts[ins[2]], "b"))
        y = self.node("Conv", inputs, kernel_shape=k, strides=strides, dilations=dil, pads=pads, group=group)
        self.activation(y, o.FusedActivationFunction(), out)

    def op_conv_2d(self, op, ins, outs, out) -> None:
        self._conv(op, ins, out, depthwise=False)

    def op_depthwise_conv_2d(self, op, ins, outs, out) -> None:
        self._conv(op, ins, out, depthwise=True)

    def op_max_pool_2d(self, op, ins, outs, out) -> None:
        o = _options(op, "Pool2DOptions")
        k, s = [o.FilterHeight(), o.FilterWidth()], [o.StrideH(), o.StrideW()]
        pads = self.same_pads(self.shape(ins[0])[1:3], k, s, [1, 1]) if o.Padding() == 0 else [0, 0, 0, 0]
        y = self.node("MaxPool", [self.value(ins[0], True)], kernel_shape=k, strides=s, pads=pads)
        self.activation(y, o.FusedActivationFunction(), out)

    def _binary(self, onnx_op: str, options: str, op, ins, out) -> None:
        rank4 = len(self.shape(ins[0])) == 4 or len(self.shape(ins[1])) == 4
        y = self.node(onnx_op, [self.value(ins[0], rank4), self.value(ins[1], rank4)])
        self.activation(y, _options(op, options).FusedActivationFunction(), out)

    def op_add(self, op, ins, outs, out) -> None:
        self._binary("Add", "AddOptions", op, ins, out)

    def op_mul(self, op, ins, outs, out) -> None:
        self._binary("Mul", "MulOptions", op, ins, out)

    def op_relu(self, op, ins, outs, out) -> None:
        self.node("Relu", [self.value(ins[0], True)], [out])

    def op_prelu(self, op, ins, outs, out) -> None:
        alpha = self.consts[ins[1]]
        slope = alpha.reshape(-1, 1, 1) if len(self.shape(ins[0])) == 4 else alpha
        self.node("PRelu", [self.value(ins[0], True), self.constant(slope, "alpha")], [out])

    def op_pad(self, op, ins, outs, out) -> None:
        p = self.consts[ins[1]].astype(np.int64)  # (4, 2) NHWC
        order = _NHWC_TO_NCHW if len(p) == 4 else range(len(p))
        pads = [int(p[d, 0]) for d in order] + [int(p[d, 1]) for d in order]
        self.node("Pad", [self.value(ins[0], True), self.ints(pads, "pads")], [out], mode="constant")

    def op_reshape(self, op, ins, outs, out) -> None:
        x = self.value(ins[0], True)
        if len(self.shape(ins[0])) == 4:
            x = self.node("Transpose", [x], perm=list(_NCHW_TO_NHWC))
        target = self.shape(outs[0])
        if len(target) == 4:
            y = self.node("Reshape", [x, self.ints(target, "shape")])
            self.node("Transpose", [y], [out], perm=list(_NHWC_TO_NCHW))
        else:
            self.node("Reshape", [x, self.ints(target, "shape")], [out])

    def op_concatenation(self, op, ins, outs, out) -> None:
        o = _options(op, "ConcatenationOptions")
        rank = len(self.shape(outs[0]))
        axis = o.Axis() % rank
        if rank == 4:
            axis = _NHWC_TO_NCHW.index(axis)
        y = self.node("Concat", [self.value(i, rank == 4) for i in ins], axis=axis)
        self.activation(y, o.FusedActivationFunction(), out)

    def op_resize_bilinear(self, op, ins, outs, out) -> None:
        o = _options(op, "ResizeBilinearOptions")
        mode = "align_corners" if o.AlignCorners() else ("half_pixel" if o.HalfPixelCenters() else "asymmetric")
        n, h, w, c = self.shape(outs[0])
        self.node("Resize", [self.value(ins[0], True), "", "", self.ints([n, c, h, w], "sizes")], [out],
                  mode="linear", coordinate_transformation_mode=mode)

    def op_depth_to_space(self, op, ins, outs, out) -> None:
        o = _options(op, "DepthToSpaceOptions")
        self.node("DepthToSpace", [self.value(ins[0], True)], [out], blocksize=o.BlockSize(), mode="DCR")

    def op_strided_slice(self, op, ins, outs, out) -> None:
        o = _options(op, "StridedSliceOptions")
        if o.BeginMask() or o.EndMask() or o.ShrinkAxisMask() or o.EllipsisMask() or o.NewAxisMask():
            raise UnsupportedModelError("STRIDED_SLICE with masks is not supported")
        begin, end, step = (self.consts[i].astype(np.int64) for i in ins[1:4])
        rank4 = len(begin) == 4
        order = _NHWC_TO_NCHW if rank4 else range(len(begin))
        begin, end, step = ([int(v[d]) for d in order] for v in (begin, end, step))
        self.node("Slice", [self.value(ins[0], rank4), self.ints(begin, "begin"), self.ints(end, "end"),
                            self.ints(list(range(len(begin))), "axes"), self.ints(step, "steps")], [out])

    # MediaPipe's custom operators of the attention mesh model (mediapipe/util/tflite/operations).
    def custom_options(self, op) -> dict:
        from flatbuffers import flexbuffers

        raw = op.CustomOptionsAsNumpy()
        return flexbuffers.Loads(bytes(raw)) if isinstance(raw, np.ndarray) and raw.size else {}

    def scalar(self, value: float) -> str:
        return self.constant(np.float32(value).reshape(()), "s")

    def gather(self, x: str, indices, axis: int) -> str:
        return self.node("Gather", [x, self.ints(indices, "idx")], axis=axis)

    def op_landmarks2transformmatrix(self, op, ins, outs, out) -> None:
        """4x4 matrix from output-grid to landmark coordinates of a rotated box around a landmark
        subset (version 2: the box is level along ``left -> right`` and scaled by scale_x/y)."""
        o = self.custom_options(op)
        if o.get("target_rotation_radians", 0.0) != 0.0:
            raise UnsupportedModelError("Landmarks2TransformMatrix with a target rotation")
        xy = self.gather(self.gather(self.value(ins[0], False), [0], 0), [0, 1], 2)  # (1, N, 2)
        xy = self.node("Reshape", [xy, self.ints([-1, 2], "shape")])  # (N, 2)
        d = self.node("Sub", [self.gather(xy, [o["right_rotation_idx"]], 0),
                              self.gather(xy, [o["left_rotation_idx"]], 0)])
        norm = self.node("Sqrt", [self.node("ReduceSum", [self.node("Mul", [d, d]), self.ints([1], "axes")],
                                            keepdims=1)])
        unit = self.node("Div", [d, norm])  # (1, 2): cos(a), sin(a) of the left->right angle a
        c, s = self.gather(unit, [0], 1), self.gather(unit, [1], 1)  # (1, 1) each
        pts = self.gather(xy, list(o["subset_idxs"]), 0)
        px, py = self.gather(pts, [0], 1), self.gather(pts, [1], 1)  # (M, 1)
        # rotate by -a (level the box): x' = c x + s y, y' = -s x + c y
        rx = self.node("Add", [self.node("Mul", [c, px]), self.node("Mul", [s, py])])
        ry = self.node("Sub", [self.node("Mul", [c, py]), self.node("Mul", [s, px])])
        rot = self.node("Concat", [rx, ry], axis=1)
        hi = self.node("ReduceMax", [rot], axes=[0], keepdims=1)
        lo = self.node("ReduceMin", [rot], axes=[0], keepdims=1)
        size = self.node("Sub", [hi, lo])  # (1, 2) crop width, height
        mid = self.node("Mul", [self.node("Add", [hi, lo]), self.scalar(0.5)])
        mx, my = self.gather(mid, [0], 1), self.gather(mid, [1], 1)
        # centre rotated back by +a
        cx = self.node("Sub", [self.node("Mul", [c, mx]), self.node("Mul", [s, my])])
        cy = self.node("Add", [self.node("Mul", [s, mx]), self.node("Mul", [c, my])])
        scale = self.node("Mul", [size, self.constant(np.array([[o["scale_x"] / o["output_width"],
                                                               o["scale_y"] / o["output_height"]]], np.float32), "k")])
        sx, sy = self.gather(scale, [0], 1), self.gather(scale, [1], 1)
        a00, a01 = self.node("Mul", [c, sx]), self.node("Neg", [self.node("Mul", [s, sy])])
        a10, a11 = self.node("Mul", [s, sx]), self.node("Mul", [c, sy])
        hx, hy = -o["output_width"] / 2.0, -o["output_height"] / 2.0
        t0 = self.node("Add", [cx, self.node("Add", [self.node("Mul", [a00, self.scalar(hx)]),
                                                     self.node("Mul", [a01, self.scalar(hy)])])])
        t1 = self.node("Add", [cy, self.node("Add", [self.node("Mul", [a10, self.scalar(hx)]),
                                                     self.node("Mul", [a11, self.scalar(hy)])])])
        zero, one = self.constant(np.zeros((1, 1), np.float32), "z"), self.constant(np.ones((1, 1), np.float32), "o")
        rows = [[a00, a01, zero, t0], [a10, a11, zero, t1], [zero, zero, one, zero], [zero, zero, zero, one]]
        flat = self.node("Concat", [v for row in rows for v in row], axis=1)
        self.node("Reshape", [flat, self.ints([1, 4, 4], "shape")], [out])

    def op_transformtensorbilinear(self, op, ins, outs, out) -> None:
        """Bilinear resampling of a feature map on a grid mapped by a 4x4 matrix; zero where the
        mapped point leaves the map (version 2: pixel centres at +0.5)."""
        _, h, w, _ = self.shape(ins[0])
        _, oh, ow, _ = self.shape(outs[0])
        t = self.gather(self.node("Reshape", [self.value(ins[1], False), self.ints([4, 4], "shape")]), [0, 1], 0)
        k = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 0], [0, 0, 1]], np.float32)
        m = self.node("Add", [self.node("MatMul", [t, self.constant(k, "k")]),
                              self.constant(np.array([[0, 0, -0.5]], np.float32), "c")])  # (2, 3)
        ys, xs = np.meshgrid(np.arange(oh), np.arange(ow), indexing="ij")
        grid = np.stack([xs.ravel(), ys.ravel(), np.ones(oh * ow)], 1).astype(np.float32)
        tc = self.node("MatMul", [self.constant(grid, "grid"), self.node("Transpose", [m], perm=[1, 0])])
        limit = self.constant(np.array([w - 1, h - 1], np.float32), "lim")
        inside = self.node("And", [self.node("GreaterOrEqual", [tc, self.scalar(0.0)]),
                                   self.node("LessOrEqual", [tc, limit])])
        inside = self.node("ReduceMin", [self.node("Cast", [inside], to=1)], axes=[1], keepdims=0)
        g = self.node("Sub", [self.node("Mul", [self.node("Div", [tc, limit]), self.scalar(2.0)]), self.scalar(1.0)])
        g = self.node("Reshape", [g, self.ints([1, oh, ow, 2], "shape")])
        y = self.node("GridSample", [self.value(ins[0], True), g], mode="bilinear", padding_mode="zeros",
                      align_corners=1)
        self.node("Mul", [y, self.node("Reshape", [inside, self.ints([1, 1, oh, ow], "shape")])], [out])

    def op_transformlandmarks(self, op, ins, outs, out) -> None:
        """2-D points ``(1, N, 2)`` mapped by the 4x4 matrix's affine part."""
        if self.shape(ins[0])[-1] != 2:
            raise UnsupportedModelError("TransformLandmarks on 3-D points")
        t = self.gather(self.node("Reshape", [self.value(ins[1], False), self.ints([4, 4], "shape")]), [0, 1], 0)
        a = self.gather(t, [0, 1], 1)  # (2, 2)
        shift = self.node("Reshape", [self.gather(t, [3], 1), self.ints([1, 1, 2], "shape")])
        y = self.node("MatMul", [self.value(ins[0], False), self.node("Transpose", [a], perm=[1, 0])])
        self.node("Add", [y, shift], [out])

    # -- whole graph ---------------------------------------------------------------------------
    def build(self, name: str):
        from onnx import TensorProto, helper

        g = self.graph
        inputs, outputs = [], []
        for i in range(g.InputsLength()):
            idx = g.Inputs(i)
            t_name = g.Tensors(idx).Name().decode()
            inputs.append(helper.make_tensor_value_info(t_name, TensorProto.FLOAT, self.shape(idx)))
            self.names[idx] = (self.node("Transpose", [t_name], perm=list(_NHWC_TO_NCHW))
                               if len(self.shape(idx)) == 4 else t_name)
        for i in range(g.OperatorsLength()):
            self.convert(g.Operators(i))
        for i in range(g.OutputsLength()):
            idx = g.Outputs(i)
            t_name = g.Tensors(idx).Name().decode()
            shape = self.shape(idx)
            if len(shape) == 4:  # computed NCHW under the TFLite name: expose it NHWC
                inner = t_name + "_nchw"
                for n in self.nodes:
                    n.output[:] = [inner if o == t_name else o for o in n.output]
                    n.input[:] = [inner if v == t_name else v for v in n.input]
                self.node("Transpose", [inner], [t_name], perm=list(_NCHW_TO_NHWC))
            outputs.append(helper.make_tensor_value_info(t_name, TensorProto.FLOAT, shape))
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.initializers)
        model = helper.make_model(graph, producer_name="facenet3d.landmarks.convert_mediapipe",
                                  opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = 8
        return model


def convert_tflite(path: str | Path, name: str):
    """The ONNX model (``onnx.ModelProto``) of one single-subgraph TFLite file."""
    import onnx
    import tflite

    buf = Path(path).read_bytes()
    model = tflite.Model.GetRootAsModel(buf, 0)
    if model.SubgraphsLength() != 1:
        raise UnsupportedModelError(f"{path}: {model.SubgraphsLength()} subgraphs, expected 1")
    onnx_model = _GraphBuilder(model, model.Subgraphs(0)).build(name)
    onnx.checker.check_model(onnx_model)
    return onnx_model


def mesh_connections(source: Path) -> bytes:
    """``.npz`` bytes of the face-mesh edge sets (``FACEMESH_*`` of the wheel's
    ``face_mesh_connections.py``, a file of literals, loaded without importing mediapipe), each a
    sorted ``(E, 2)`` int32 array."""
    import importlib.util
    import io

    path = source / "python" / "solutions" / "face_mesh_connections.py"
    spec = importlib.util.spec_from_file_location("_face_mesh_connections", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    arrays = {k: np.array(sorted(v), np.int32).reshape(-1, 2) for k, v in sorted(vars(module).items())
              if k.startswith("FACEMESH_")}
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def convert_all(out_dir: str | Path, source: Path | None = None) -> dict[str, str]:
    """Convert every model of :data:`MODELS` and write the mesh's edge sets
    (``face_mesh_connections.npz``); returns ``{file name: sha256}`` of the written files."""
    from facenet3d.atomic import write_bytes

    source = source or mediapipe_dir()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {f"{name}.onnx": convert_tflite(source / rel, name).SerializeToString() for name, rel in MODELS.items()}
    files["face_mesh_connections.npz"] = mesh_connections(source)
    for name, data in files.items():
        write_bytes(data, out / name)
    return {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m facenet3d.landmarks.convert_mediapipe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--out", required=True, help="output folder for the .onnx files")
    parser.add_argument("--mediapipe-dir", type=Path, default=None,
                        help="folder of the mediapipe package (default: the installed one)")
    args = parser.parse_args(argv)
    for file, digest in convert_all(args.out, args.mediapipe_dir).items():
        print(f"{digest}  {file}")


if __name__ == "__main__":
    main()
