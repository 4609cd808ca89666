"""nutpie's compiled models, with their machine code reusable across runs.

``nutpie.compile_pymc_model`` builds a model's log density and gradient (PyTensor's
graph rewrites, then Numba) and wraps them in two C callbacks (``numba.cfunc``) that its
Rust sampler calls. PyTensor caches the Numba code of each operation on disk, but the two
callbacks, which link everything into one module and optimise it with LLVM, are compiled
again in every process: 5 to 20 s per model, about a fifth of the main job. Numba cannot
cache them itself (they are closures), so :func:`compile_model` does what nutpie does and
hands the callbacks' compilation to a store: the compile result (object code and the
metadata Numba rebuilds it from, as Numba's own cache keeps it) is saved under a key of
everything the machine code depends on and loaded instead of compiled when the key
matches.

The key (:func:`cache_key`) is a key of the two compiled function graphs' structure
(:func:`graph_key`: every operation with its Numba cache key, its parameters and every
constant, data included, whatever the order PyTensor's rewrites left the nodes in), the
sizes and shared variables the callbacks read, and the versions of Python, NumPy, SciPy,
PyTensor, PyMC, nutpie, Numba and llvmlite, the host CPU and Numba's optimisation
settings. A graph PyTensor cannot key (an operation without a Numba cache key) is
compiled as before, and so is a callback whose code holds a process address (Numba's
"dynamic globals"), which would not be valid in another process. The digamma function
(``psi``, in the gradient of every Gamma-family likelihood) is one such operation in
PyTensor: it calls SciPy's compiled ``psi`` through its address;
:func:`register_cacheable_psi` calls the very same SciPy function through a named symbol
instead, so graphs with it are keyed and cached. Its values are SciPy's, bit for bit;
the surrounding code is optimised as a whole (fast-math), so a model's draws need not
equal those of a build without the registration (they do not on the uplift model), but
they are the same with a store or without, loaded or compiled.

This module does no file I/O: the store (``load(key, name)`` / ``save(key, name,
payload)``) is the caller's (``analysis.compile_cache``). Written against nutpie 0.16's
``compile_pymc``; with another nutpie release :func:`compile_model` compiles with
``nutpie.compile_pymc_model`` (no cache).
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import pickle
import platform
import sys
import warnings
from dataclasses import dataclass
from importlib.metadata import version as _version
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    import pymc as pm

#: nutpie releases whose ``compile_pymc`` internals :func:`compile_model` follows
NUTPIE_RELEASES = ("0.16.",)
#: part of every key: a change to this module's payload format invalidates old entries
FORMAT = 1
#: the process-wide symbol SciPy's double-precision ``psi`` is exposed as
PSI_SYMBOL = "shopbayes_scipy_special_psi_f8"


class CFuncStore(Protocol):
    """Where compiled callbacks are kept between runs."""

    def load(self, key: str, name: str) -> bytes | None:
        """The payload saved under ``key`` and ``name``, or None."""

    def save(self, key: str, name: str, payload: bytes) -> None:
        """Keep ``payload`` under ``key`` and ``name``."""


def supported() -> bool:
    """Whether the installed nutpie is a release :func:`compile_model` follows."""
    try:
        return _version("nutpie").startswith(NUTPIE_RELEASES)
    except Exception:  # not installed
        return False


_PSI_REGISTERED = False


def register_cacheable_psi() -> None:
    """Make PyTensor's Numba code for ``psi`` (digamma) of float64 cacheable.

    PyTensor calls SciPy's ``scipy.special.cython_special.psi`` through the function's
    address, a constant of the generated code that is only valid in the process that
    compiled it, so PyTensor gives the operation no cache key, and every graph with it
    (the gradient of any Gamma, negative binomial or beta likelihood) is compiled again in
    every process. This registers, for float64 inputs, a Numba function that calls the
    same SciPy function through a named symbol (``llvmlite.binding.add_symbol``), which
    cached code resolves when it is loaded: the same function and values, and a cache key.
    Other dtypes keep PyTensor's implementation. Idempotent; :func:`compile_model` calls
    it whether or not it has a store, so both give the same draws.
    """
    global _PSI_REGISTERED
    if _PSI_REGISTERED:
        return
    import llvmlite.binding as llvm
    import numba
    import scipy
    import scipy.special.cython_special as cython_special
    from pytensor.link.numba.dispatch.basic import register_funcify_and_cache_key
    from pytensor.link.numba.dispatch.scalar import numba_funcify_ScalarOp
    from pytensor.scalar.math import Psi

    capsule = cython_special.__pyx_capi__["__pyx_fuse_1psi"]
    signature = scipy.LowLevelCallable(capsule).signature
    if signature != "double (double, int __pyx_skip_dispatch)":
        return  # another SciPy build: leave PyTensor's implementation alone
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype, get_name.argtypes = ctypes.c_char_p, (ctypes.py_object,)
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype = ctypes.c_void_p
    get_pointer.argtypes = (ctypes.py_object, ctypes.c_char_p)
    llvm.add_symbol(PSI_SYMBOL, get_pointer(capsule, get_name(capsule)))

    scipy_psi = numba.types.ExternalFunction(
        PSI_SYMBOL, numba.types.float64(numba.types.float64, numba.types.intc))
    one = np.intc(1)

    @numba.njit
    def psi(x):  # pragma: no cover  (compiled by Numba)
        return scipy_psi(x, one)

    key = hashlib.sha256(f"shopbayes psi {PSI_SYMBOL} scipy {scipy.__version__} "
                         f"{signature}".encode()).hexdigest()

    @register_funcify_and_cache_key(Psi)
    def numba_funcify_Psi(op: Any, node: Any, **kwargs: Any) -> tuple[Any, str | None]:
        if (node is None or [i.type.dtype for i in node.inputs] != ["float64"]
                or node.outputs[0].type.dtype != "float64"):
            return numba_funcify_ScalarOp(op, node=node, **kwargs)
        return psi, key

    _PSI_REGISTERED = True


def _versions() -> dict[str, str]:
    out = {"python": sys.version, "platform": platform.platform()}
    for pkg in ("numpy", "scipy", "pytensor", "pymc", "nutpie", "numba", "llvmlite"):
        try:
            out[pkg] = _version(pkg)
        except Exception:
            out[pkg] = "?"
    return out


def graph_key(fgraph: Any) -> str | None:
    """A key of a compiled function graph's structure that does not depend on the order
    its nodes are listed in; None when an operation has no Numba cache key.

    PyTensor keys a graph (``numba_funcify_FunctionGraph``) by each node's position in
    ``fgraph.toposort()`` and the positions its inputs come from. The graph PyTensor's
    rewrites make of one PyMC model is not always the same: the order of the nodes and of
    the operands of sums and products follows the identities of objects held in sets.
    Two builds of the propensity model in one process got different PyTensor keys with
    the same data, and on the pipeline's rerun with ``--force`` the propensity and uplift
    steps compiled again instead of loading what the first run saved. Here each
    variable's key is made from what it is (a graph input's position and type, a
    constant's value) or from the node computing it (the operation's Numba cache key,
    its output index and its inputs' keys, the operands of a commutative operation
    sorted; recursively: a Merkle hash), and the graph's key from its outputs' keys, so
    every order of the nodes, and of a sum's or product's operands, gives one key. Two
    graphs with the same key compute the same function of the same inputs; the loaded
    code may add a sum's operands in the order of the build that saved it, which is the
    code the earlier run sampled with.

    Parameters
    ----------
    fgraph
        A PyTensor ``FunctionGraph`` (after rewriting, as compiled).
    """
    from pytensor.graph.basic import Constant
    from pytensor.link.numba.dispatch.basic import (
        cache_key_for_constant,
        numba_funcify_and_cache_key,
    )

    keys: dict[Any, str] = {inp: f"input {i} {inp.type}" for i, inp in
                            enumerate(fgraph.inputs)}
    for node in fgraph.toposort():  # any valid order: the keys do not depend on it
        _, op_key = numba_funcify_and_cache_key(node.op, node=node)
        if op_key is None:
            return None
        ins = [f"constant {v.type} {cache_key_for_constant(v.data)}"
               if isinstance(v, Constant) else keys[v] for v in node.inputs]
        if getattr(getattr(node.op, "scalar_op", None), "commutative", False):
            ins = sorted(ins)
        node_key = hashlib.sha256(repr((op_key, ins)).encode()).hexdigest()
        for j, out in enumerate(node.outputs):
            keys[out] = f"{node_key} {j}"
    outs = [keys.get(o) or f"constant {o.type} {cache_key_for_constant(o.data)}"
            for o in fgraph.outputs]
    return hashlib.sha256(repr(outs).encode()).hexdigest()


def cache_key(graph_keys: list[str | None], n_dim: int, n_expanded: int,
              shared: dict[str, np.ndarray]) -> str | None:
    """The key of a model's two callbacks, or None when they cannot be cached.

    Parameters
    ----------
    graph_keys
        PyTensor's cache keys of the log-density-and-gradient and the expand function
        graphs (None: a graph PyTensor cannot key).
    n_dim, n_expanded
        Length of the unconstrained parameter vector and of the expanded draw.
    shared
        The shared variables the callbacks read (name to value; their dtype and rank
        shape the code, their values are passed at run time).
    """
    if any(k is None for k in graph_keys):
        return None
    import llvmlite.binding as llvm
    import numba
    from pytensor.configdefaults import config

    parts = {
        "format": FORMAT, "graphs": graph_keys, "n_dim": int(n_dim),
        "n_expanded": int(n_expanded),
        "shared": [(k, str(v.dtype), int(v.ndim)) for k, v in shared.items()],
        "versions": _versions(), "cpu": llvm.get_host_cpu_name(),
        "cpu_features": llvm.get_host_cpu_features().flatten(),
        "numba_opt": str(numba.config.OPT), "fastmath": bool(config.numba__fastmath),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:40]


class _StoreCache:
    """Numba's cache interface for one callback (``load_overload`` / ``save_overload``,
    as ``numba.core.caching.FunctionCache`` has), backed by a :class:`CFuncStore`."""

    def __init__(self, store: CFuncStore, key: str, name: str) -> None:
        self.store, self.key, self.name = store, key, name
        self.hit = False

    def load_overload(self, sig: Any, target_context: Any) -> Any:
        from numba.core import compiler

        payload = self.store.load(self.key, self.name)
        if payload is None:
            return None
        try:
            cres = compiler.CompileResult._rebuild(target_context, *pickle.loads(payload))
        except Exception:  # an unreadable entry: compile it again
            return None
        self.hit = True
        return cres

    def save_overload(self, sig: Any, cres: Any) -> None:
        from numba.core import serialize

        if cres.library.has_dynamic_globals:
            return  # a process address in the code: not valid in another process
        self.store.save(self.key, self.name, serialize.dumps(cres._reduce()))


def _placeholder(a: np.ndarray) -> np.ndarray:
    """An array of ``a``'s dtype, rank and layout (C-contiguous, read-only), one element
    per axis: what Numba types a global array by, without its values."""
    p = np.zeros((1,) * a.ndim, dtype=a.dtype)
    p.flags.writeable = a.flags.writeable
    return p


def _cfunc(pyfunc: Any, sig: Any, cache: _StoreCache | None) -> Any:
    """``numba.cfunc(sig)(pyfunc)``, loading from / saving to ``cache`` when given."""
    from numba.core import sigutils
    from numba.core.ccallback import CFunc

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Cannot cache compiled function")
        res = CFunc(pyfunc, sigutils.normalize_signature(sig), locals={}, options={})
        if cache is not None:
            res._cache = cache
        res.compile()
    return res


@dataclass
class _Functions:
    """What nutpie's ``_make_functions`` builds for a model, with the shared values and
    the key of the callbacks to be compiled from them."""

    n_dim: int
    n_expanded: int
    logp_pt: Any
    expand_pt: Any
    initial_point_fn: Any
    shape_info: Any
    shared_data: dict[str, np.ndarray]
    user_data: Any
    key: str | None


def _functions(model: pm.Model) -> _Functions:
    import nutpie.compile_pymc as cp
    from pymc.initial_point import make_initial_point_fn
    from pytensor.link.numba.cache import CACHED_SRC_FUNCTIONS

    register_cacheable_psi()
    initial_point_fn = cp._wrap_with_lock(make_initial_point_fn(
        model=model, overrides=None, default_strategy="support_point",
        jitter_rvs=set(model.free_RVs), return_transformed=True))
    n_dim, n_expanded, logp_pt, expand_pt, initial_point_fn, shape_info = \
        cp._make_functions(model, mode="NUMBA", compute_grad=True, join_expanded=True,
                           pymc_initial_point_fn=initial_point_fn, var_names=None)
    shared_data: dict[str, np.ndarray] = {}
    shared_vars: dict[str, Any] = {}
    seen: set[Any] = set()
    for val in [*logp_pt.get_shared(), *expand_pt.get_shared()]:
        if val.name in shared_data and val not in seen:
            raise ValueError(f"Shared variables must have unique names: {val.name}")
        shared_data[val.name] = np.array(val.get_value(), order="C", copy=True)
        shared_vars[val.name] = val
        seen.add(val)
    for arr in shared_data.values():
        arr.flags.writeable = False
    # PyTensor's key of each function graph (None: it cannot be cached) numbers the nodes
    # in the order of one build of the model, which varies from one build to the next:
    # the structure's own key instead (graph_key)
    key = cache_key([graph_key(fn.maker.fgraph)
                     if CACHED_SRC_FUNCTIONS.get(fn.vm.jit_fn.py_func) else None
                     for fn in (logp_pt, expand_pt)],
                    n_dim, n_expanded, shared_data)
    return _Functions(n_dim, n_expanded, logp_pt, expand_pt, initial_point_fn, shape_info,
                      shared_data, cp.make_user_data(shared_vars, shared_data), key)


def model_key(model: pm.Model) -> str | None:
    """The key :func:`compile_model` keeps ``model``'s compiled callbacks under (None:
    not cacheable), from the model's graphs alone: nothing is compiled by Numba."""
    return _functions(model).key


def fixed_data(name: str, value: Any) -> Any:
    """``pm.Data(name, value)`` with its shape fixed: how a model passes an array so
    that its compiled code can be kept for the next run.

    As data the array is read at run time (not a constant of the code: a constant Numba
    reaches through a process address cannot be kept, :func:`uncacheable_constants`);
    with its shape known, PyTensor needs no run-time checks that arrays combined element
    by element have equal lengths. Those checks compare one array's length with
    another's, picked by the order of a set, so the compiled graph and its key
    (:func:`model_key`) differed from one process to the next: the propensity model got
    3 keys in 3 processes from the same rows, and every run compiled it again. The key
    then holds the arrays' lengths: other data of other sizes compile again.

    Parameters
    ----------
    name
        The container's name (unique in the model).
    value
        Array-like; must be called inside a ``pm.Model`` context.
    """
    import pymc as pm

    value = np.asarray(value)
    return pm.Data(name, value, shape=value.shape)


#: Numba puts a constant array into the code by value only when it is C- or
#: F-contiguous and at most this many bytes (``BaseContext.make_constant_array``)
FROZEN_CONSTANT_BYTES = 10**6


def uncacheable_constants(model: pm.Model) -> list[str]:
    """The constant arrays of ``model``'s compiled graphs that Numba would reach through
    a process address, which makes the callback impossible to keep for another run
    (:func:`compile_model` compiles it in every process): a non-contiguous array (a
    column of a pandas frame's 2-D block, ``frame["col"].to_numpy()``, is one) or one
    over :data:`FROZEN_CONSTANT_BYTES`. Empty when every constant is kept by value.
    Pass such arrays with :func:`fixed_data` (read at run time, whatever their layout).

    Returns
    -------
    list of str
        One line per such constant: the function (``logp`` or ``expand``), the operation
        using it, its shape, dtype and strides.
    """
    from pytensor.graph.basic import Constant

    f = _functions(model)
    found = []
    for name, fn in (("logp", f.logp_pt), ("expand", f.expand_pt)):
        for node in fn.maker.fgraph.toposort():
            for v in node.inputs:
                d = v.data if isinstance(v, Constant) else None
                if isinstance(d, np.ndarray) and (
                        not (d.flags.c_contiguous or d.flags.f_contiguous)
                        or d.nbytes > FROZEN_CONSTANT_BYTES):
                    found.append(f"{name}: {str(node.op)[:60]} {d.shape} {d.dtype} "
                                 f"strides {d.strides}")
    return found


def compile_model(model: pm.Model, store: CFuncStore | None = None
                  ) -> tuple[Any, dict[str, Any]]:
    """Compile ``model`` for nutpie, reusing the callbacks ``store`` has for it.

    Does what ``nutpie.compile_pymc_model(model)`` does with its defaults (numba backend,
    support-point initial values with jitter, every variable kept), with the callbacks'
    compilation loaded from ``store`` when it holds them under the model's
    :func:`cache_key` and saved there otherwise: the same machine code, so the same
    draws for the same seed.

    Parameters
    ----------
    model
        A PyMC model.
    store
        Where callbacks are kept; None: compiled every time, nothing loaded or saved.

    Returns
    -------
    (compiled, info)
        nutpie's compiled model and ``{"cached": bool, "key": str | None}`` (``cached``:
        both callbacks were loaded, not compiled).
    """
    import nutpie

    # with a store or without: the same code for psi, so the same numbers
    register_cacheable_psi()
    if not supported():
        return nutpie.compile_pymc_model(model), {"cached": False, "key": None}
    import nutpie.compile_pymc as cp

    f = _functions(model)
    caches = {n: _StoreCache(store, f.key, n) if store is not None and f.key else None
              for n in ("logp", "expand")}
    # the callbacks read the shared values through user_data at run time; nutpie also puts
    # the values themselves in the code, only for their types (dtype, rank, layout), where
    # an array over 1 MB becomes a process address: placeholders of the same types instead
    types = {k: _placeholder(v) for k, v in f.shared_data.items()}
    raw, sig = cp._make_c_logp_func(f.n_dim, f.logp_pt.vm.jit_fn, f.user_data,
                                    [v.name for v in f.logp_pt.get_shared()], types)
    logp_c = _cfunc(raw, sig, caches["logp"])
    raw, sig = cp._make_c_expand_func(f.n_dim, f.n_expanded, f.expand_pt.vm.jit_fn,
                                      f.user_data,
                                      [v.name for v in f.expand_pt.get_shared()], types)
    expand_c = _cfunc(raw, sig, caches["expand"])

    dims, coords = cp._prepare_dims_and_coords(model, f.shape_info)
    compiled = cp.CompiledPyMCModel(
        _n_dim=f.n_dim, dims=dims, _coords=coords,
        _shapes={name: tuple(shape) for name, _, shape in zip(*f.shape_info, strict=True)},
        compiled_logp_func=logp_c, compiled_expand_func=expand_c,
        initial_point_func=f.initial_point_fn, shared_data=f.shared_data,
        user_data=f.user_data, n_expanded=f.n_expanded, shape_info=f.shape_info,
        logp_func=f.logp_pt, expand_func=f.expand_pt)
    cached = bool(f.key) and all(c is not None and c.hit for c in caches.values())
    return compiled, {"cached": cached, "key": f.key}
