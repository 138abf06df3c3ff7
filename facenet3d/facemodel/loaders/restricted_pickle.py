"""A restricted unpickler for model files shipped as pickles (FLAME's ``generic_model.pkl``).

``pickle.load`` runs whatever callable a file names, so an untrusted model file could run
any code. This unpickler resolves only an allow-list of globals: numpy array, dtype and
scalar reconstruction, ``copyreg._reconstructor`` / ``object`` (needed to rebuild plain
objects), ``_codecs.encode`` (how protocol 2 stores bytes) and a few builtin containers.
Two foreign classes that real model files contain are rebuilt as inert data holders, never
imported:

* ``chumpy.ch.Ch`` (FLAME and SMPL pickles are chumpy objects): its state's ``x`` array is
  taken; chumpy need not be installed;
* ``scipy.sparse`` CSC/CSR matrices (``J_regressor``): rebuilt from ``data``, ``indices``,
  ``indptr`` and the shape with the installed scipy.

Anything else (``os.system``, ``builtins.eval``, other classes) raises
:class:`~facenet3d.errors.FaceModelFormatError` before it is called.
"""

from __future__ import annotations

import builtins
import copyreg
import importlib
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from facenet3d.errors import FaceModelFormatError


class _ChumpyState:
    """Stand-in for ``chumpy.ch.Ch``: keeps the pickled state, runs nothing."""

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _SparseState:
    """Stand-in for a pickled scipy sparse matrix: keeps the pickled state."""

    FORMAT = ""

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _CscState(_SparseState):
    FORMAT = "csc"


class _CsrState(_SparseState):
    FORMAT = "csr"


def _numpy_global(modules: tuple[str, ...], name: str) -> Any:
    # numpy 2 moved numpy.core to numpy._core; files written by either (or by Python 2) name one.
    for module in modules:
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"numpy has no {name}")


_MULTIARRAY = ("numpy._core.multiarray", "numpy.core.multiarray")
_NUMERIC = ("numpy._core.numeric", "numpy.core.numeric")


def _allowed() -> dict[tuple[str, str], Any]:
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _codecs_encode,
        ("copy_reg", "_reconstructor"): copyreg._reconstructor,
        ("copyreg", "_reconstructor"): copyreg._reconstructor,
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = _numpy_global(_MULTIARRAY, "_reconstruct")
        allowed[(module, "scalar")] = _numpy_global(_MULTIARRAY, "scalar")
    for module in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[(module, "_frombuffer")] = _numpy_global(_NUMERIC, "_frombuffer")
    for module in ("__builtin__", "builtins"):
        for name in ("object", "set", "frozenset", "bytearray", "complex", "slice"):
            allowed[(module, name)] = getattr(builtins, name)
    allowed[("chumpy.ch", "Ch")] = _ChumpyState
    for fmt, stub in (("csc", _CscState), ("csr", _CsrState)):
        for module in (f"scipy.sparse.{fmt}", f"scipy.sparse._{fmt}"):
            for kind in ("matrix", "array"):
                allowed[(module, f"{fmt}_{kind}")] = stub
    return allowed


def _codecs_encode(text: str, encoding: str = "utf-8") -> bytes:
    # Protocol 2 pickles bytes as _codecs.encode(str, "latin1"); only plain text codecs are needed.
    if encoding.lower().replace("-", "") not in ("latin1", "iso88591", "utf8", "ascii"):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode(encoding)


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, source: Path):
        super().__init__(file, encoding="latin1")  # latin1: Python 2 pickles hold numpy bytes as str
        self.source = source
        self.allowed = _allowed()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise FaceModelFormatError(self.source, f"refusing to unpickle {module}.{name}: only numpy "
                                                    "arrays, scipy sparse matrices, chumpy arrays and plain "
                                                    "Python values are allowed in a model file") from None


def load_restricted_pickle(path: str | Path) -> Any:
    """Unpickle ``path`` allowing only data (see the module docstring).

    Returns:
        The unpickled value with chumpy arrays replaced by numpy arrays and sparse matrices
        by ``scipy.sparse`` CSC/CSR matrices.

    Raises:
        FaceModelFormatError: missing file, a refused global, or not a readable pickle.
    """
    path = Path(path)
    if not path.is_file():
        raise FaceModelFormatError(path, "file not found")
    try:
        with open(path, "rb") as f:
            value = _RestrictedUnpickler(f, path).load()
    except FaceModelFormatError:
        raise
    except Exception as e:  # pickle reports foreign bytes with many exception types
        raise FaceModelFormatError(path, f"not a readable pickle ({type(e).__name__}: {e})") from e
    return _plain(value, path)


def _plain(value: Any, path: Path) -> Any:
    """Replace the stand-ins by numpy / scipy values, recursively through containers."""
    if isinstance(value, dict):
        return {k: _plain(v, path) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v, path) for v in value)
    if isinstance(value, _ChumpyState):
        state = value.state if isinstance(value.state, dict) else {}
        if not isinstance(state.get("x"), np.ndarray):
            raise FaceModelFormatError(path, "a chumpy object without an 'x' array (a chumpy expression, not "
                                             "data): convert the file with chumpy first")
        return state["x"]
    if isinstance(value, _SparseState):
        return _sparse(value, path)
    return value


def _sparse(value: _SparseState, path: Path) -> Any:
    import scipy.sparse

    state = value.state if isinstance(value.state, dict) else {}
    shape = state.get("_shape", state.get("shape"))
    try:
        parts = tuple(np.asarray(state[k]) for k in ("data", "indices", "indptr"))
        cls = scipy.sparse.csc_matrix if value.FORMAT == "csc" else scipy.sparse.csr_matrix
        return cls(parts, shape=tuple(int(s) for s in shape))
    except (KeyError, TypeError, ValueError) as e:
        raise FaceModelFormatError(path, f"malformed pickled {value.FORMAT} sparse matrix ({e})") from e
