"""Compiled models reused across runs: same key, same machine code, same draws."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

nutpie = pytest.importorskip("nutpie")
pm = pytest.importorskip("pymc")

from models.compiled import (  # noqa: E402
    compile_model,
    model_key,
    register_cacheable_psi,
    supported,
)
from tests.conftest import run_python  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not supported(), reason="nutpie release not followed")


class DictStore:
    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], bytes] = {}
        self.loads = 0

    def load(self, key: str, name: str) -> bytes | None:
        self.loads += 1
        return self.entries.get((key, name))

    def save(self, key: str, name: str, payload: bytes) -> None:
        self.entries[(key, name)] = payload


def gamma_model(y: np.ndarray, with_data: bool = False) -> pm.Model:
    """Gamma spend with a learned shape: psi (digamma) is in its gradient."""
    with pm.Model() as m:
        obs = pm.Data("y", y) if with_data else y
        shape = pm.HalfNormal("shape", 2.0)
        mu = pm.LogNormal("mu", 3.0, 1.0)
        pm.Gamma("spend", alpha=shape, beta=shape / mu, observed=obs)
    return m


def draws(compiled, seed: int = 5) -> np.ndarray:
    tr = nutpie.sample(compiled, draws=60, tune=60, chains=2, seed=seed, progress_bar=False)
    return np.concatenate([tr.posterior[v].values.ravel() for v in ("shape", "mu")])


@pytest.fixture(scope="module")
def spend() -> np.ndarray:
    return np.random.default_rng(3).gamma(2.0, 20.0, size=300)


@pytest.fixture(scope="module")
def pair(spend: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One model compiled (and saved), then the same model built again and loaded."""
    from analysis.compile_cache import CompileCache

    folder = tmp_path_factory.mktemp("compiled")
    store = CompileCache(folder)
    first, info1 = compile_model(gamma_model(spend), store)
    second, info2 = compile_model(gamma_model(spend), store)  # a new model, same graph
    return {"folder": folder, "store": store, "first": first, "info1": info1,
            "second": second, "info2": info2}


def test_psi_is_scipys_function_and_keyed() -> None:
    import pytensor
    import pytensor.tensor as pt
    from pytensor.link.numba.cache import CACHED_SRC_FUNCTIONS
    from scipy.special import psi

    register_cacheable_psi()
    x = pt.dvector("x")
    f = pytensor.function([x], pt.psi(x), mode="NUMBA")
    xs = np.random.default_rng(0).gamma(0.5, 3.0, size=5000) + 1e-3
    np.testing.assert_array_equal(f(xs), psi(xs))  # bit for bit
    assert CACHED_SRC_FUNCTIONS.get(f.vm.jit_fn.py_func) is not None


def test_second_compile_loads_the_same_code(pair: dict, spend: np.ndarray) -> None:
    assert not pair["info1"]["cached"] and pair["info1"]["key"]
    assert pair["info2"] == {"cached": True, "key": pair["info1"]["key"]}
    assert sorted(p.name.split("-")[1] for p in pair["folder"].glob("*.nbc")) == [
        "expand.nbc", "logp.nbc"]
    np.testing.assert_array_equal(draws(pair["first"]), draws(pair["second"]))
    plain = nutpie.compile_pymc_model(gamma_model(spend))  # what nutpie alone compiles
    np.testing.assert_array_equal(draws(pair["first"]), draws(plain))


def test_other_data_other_key(spend: np.ndarray) -> None:
    assert model_key(gamma_model(spend)) == model_key(gamma_model(spend.copy()))
    assert model_key(gamma_model(spend)) != model_key(gamma_model(spend * 1.5))  # constants
    # pm.Data values are read at run time: not part of the key
    assert model_key(gamma_model(spend, True)) == model_key(gamma_model(spend * 1.5, True))


def test_unreadable_entry_is_compiled_again(pair: dict, spend: np.ndarray) -> None:
    store = DictStore()
    key = pair["info1"]["key"]
    store.entries = {(key, n): b"not a compile result" for n in ("logp", "expand")}
    compiled, again = compile_model(gamma_model(spend), store)
    assert again == {"cached": False, "key": key}  # compiled again, saved over the bad entry
    assert store.entries[(key, "logp")] != b"not a compile result"
    np.testing.assert_array_equal(draws(compiled), draws(pair["first"]))


def test_loaded_model_takes_new_data(spend: np.ndarray) -> None:
    store = DictStore()
    compiled, _ = compile_model(gamma_model(spend, with_data=True), store)
    loaded, info = compile_model(gamma_model(spend, with_data=True), store)
    assert info["cached"]  # pm.Data values are read at run time: not part of the key
    np.testing.assert_array_equal(draws(loaded.with_data(y=spend * 2.0)),
                                  draws(compiled.with_data(y=spend * 2.0)))
    assert not np.array_equal(draws(loaded.with_data(y=spend * 2.0)), draws(loaded))


def test_another_process_loads_what_this_one_saved(pair: dict, spend: np.ndarray,
                                                   tmp_path: Path) -> None:
    """The code is rebuilt in a new process (new addresses, SciPy's psi found by name)."""
    np.save(tmp_path / "spend.npy", spend)
    script = textwrap.dedent(f"""
        import json, sys
        import numpy as np
        sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_compiled import gamma_model, draws
        from analysis.compile_cache import CompileCache
        from models.compiled import compile_model
        c, info = compile_model(gamma_model(np.load({str(tmp_path / "spend.npy")!r})),
                                CompileCache({str(pair["folder"])!r}))
        print(json.dumps({{"info": info, "draws": draws(c).tolist()}}))
    """)
    out = run_python(script)
    child = json.loads(out.stdout.strip().splitlines()[-1])
    assert child["info"] == {"cached": True, "key": pair["info1"]["key"]}
    np.testing.assert_array_equal(np.array(child["draws"]), draws(pair["first"]))


def test_graph_key_ignores_node_and_commutative_operand_order() -> None:
    """PyTensor's rewrites may list a model's nodes, and the operands of its sums and
    products, in another order from one build to the next: the key stays, and it still
    tells apart graphs that compute something else."""
    import pytensor.tensor as pt
    from pytensor.graph.fg import FunctionGraph

    from models.compiled import graph_key

    def fgraph(build):
        x, y, z = pt.dvector("x"), pt.dvector("y"), pt.dvector("z")
        return FunctionGraph([x, y, z], build(x, y, z), clone=True)

    base = graph_key(fgraph(lambda x, y, z: [pt.exp(x) * y + pt.log(z), pt.exp(x) - y]))
    assert base is not None
    # the same function, nodes created and operands listed in another order
    assert graph_key(fgraph(lambda x, y, z: [pt.log(z) + y * pt.exp(x),
                                             pt.exp(x) - y])) == base
    # other functions: operands of a non-commutative operation swapped, another input
    assert graph_key(fgraph(lambda x, y, z: [pt.exp(x) * y + pt.log(z),
                                             y - pt.exp(x)])) != base
    assert graph_key(fgraph(lambda x, y, z: [pt.exp(x) * z + pt.log(y),
                                             pt.exp(x) - y])) != base
