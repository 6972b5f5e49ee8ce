"""jaxdrop.inspect: the site table and its warnings (Linen and NNX), and assert_deterministic."""

import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest
from flax import nnx

import jaxdrop
from jaxdrop import linen as jdl
from jaxdrop import nnx as jdn


class Net(nn.Module):
    @nn.compact
    def __call__(self, x, train):
        x = nn.Dense(16)(x)
        skip = nn.Dropout(0.1, deterministic=not train)(x)  # dropout on the skip path
        x = nn.Dense(16)(x) + skip
        x = jdl.Dropout(0.7, deterministic=not train)(x)  # rate > 0.5, then straight into BatchNorm
        x = nn.BatchNorm(use_running_average=not train)(x)
        x = nn.MultiHeadDotProductAttention(num_heads=2, dropout_rate=0.4, deterministic=not train)(x[:, None, :])
        x = jdl.ConcreteDropout(nn.Dense(4))(x, deterministic=not train)
        return jdl.Dropout(0.2, deterministic=not train)(nn.Dense(1)(x))  # dropout on a regression output


X = jnp.ones((2, 4))


@pytest.fixture(scope="module")
def variables():
    return Net().init(jax.random.key(0), X, train=False)


def test_linen_report_rows(variables):
    report = jaxdrop.inspect(Net(), X, variables=variables, train=True)
    rows = [(r.path, r.layer, r.kind, r.rate, r.input_shape, r.mask_bytes, r.active) for r in report.rows]
    assert rows == [
        ("Dropout_0", "Dropout", "dropout", 0.1, (2, 16), 2 * 16, True),  # flax keeps a bool mask
        ("Dropout_1", "Dropout", "dropout", 0.7, (2, 16), 0, True),  # ours keeps the key only
        ("MultiHeadDotProductAttention_0", "MultiHeadDotProductAttention", "attention", 0.4, (2, 2, 1, 1), 4, True),
        ("ConcreteDropout_0", "ConcreteDropout", "concrete", pytest.approx(0.1), (2, 1, 16), 0, True),
        ("Dropout_2", "Dropout", "dropout", 0.2, (2, 1, 1), 0, True),
    ]
    assert [r.active for r in jaxdrop.inspect(Net(), X, variables=variables, train=False).rows] == [False] * 5
    table = str(report)
    assert table.splitlines()[0].split() == [
        "path",
        "layer",
        "kind",
        "rate",
        "input",
        "shape",
        "mask",
        "bytes",
        "active",
    ]
    assert "Dropout_1" in table and "warning:" in table


def test_linen_report_warnings(variables):
    warnings = jaxdrop.inspect(Net(), X, variables=variables, train=True).warnings
    assert len(warnings) == 5
    assert warnings[0].startswith("Dropout_0: its input is also consumed by Dense_1")
    assert warnings[1].startswith("Dropout_1: rate 0.7 > 0.5 next to a dense layer")
    assert warnings[2].startswith("Dropout_1: dropout feeds BatchNorm_0 (BatchNorm) directly")
    assert warnings[3].startswith("MultiHeadDotProductAttention_0: attention dropout rate 0.4")
    assert warnings[4].startswith("Dropout_2: dropout is applied to the model output (a regression head)")


def test_linen_clean_model_has_no_warnings():
    class Clean(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Dense(8)(x))
            x = x + jdl.Dropout(0.1, deterministic=False)(nn.Dense(8)(x))  # dropout on the residual branch
            return nn.Dense(1)(x)

    variables = Clean().init(jax.random.key(0), X)
    report = jaxdrop.inspect(Clean(), X, variables=variables)
    assert report.warnings == []
    assert [r.path for r in report.rows] == ["Dropout_0"]


def test_linen_without_variables_initialises_them_abstractly(variables):
    given = jaxdrop.inspect(Net(), X, variables=variables, train=True)
    report = jaxdrop.inspect(Net(), X, train=True)  # the README's form: nothing computed, shapes only
    assert [r.path for r in report.rows] == [r.path for r in given.rows]
    assert report.warnings == given.warnings
    concrete = {r.path: r.rate for r in report.rows}["ConcreteDropout_0"]
    assert concrete is None  # a learned rate is unknown without the variables
    assert {r.path: r.rate for r in given.rows}["ConcreteDropout_0"] == pytest.approx(0.1)


def test_linen_variables_passed_positionally_or_to_nnx_are_clear_errors(variables):
    with pytest.raises(TypeError, match="pass them as `variables=`"):
        jaxdrop.inspect(Net(), variables, X, train=True)
    with pytest.raises(TypeError, match="`variables` is only for linen modules"):
        jaxdrop.inspect(jdn.Dropout(0.1, rngs=nnx.Rngs(0)), X, variables=variables)


def test_jaxdrop_layers_are_reported_active_inside_stochastic(variables):
    with jaxdrop.stochastic():
        report = jaxdrop.inspect(Net(), X, variables=variables, train=False)
    active = {r.path: r.active for r in report.rows}
    assert active == {  # flax's own layers keep the model's flag
        "Dropout_0": False,
        "Dropout_1": True,
        "MultiHeadDotProductAttention_0": False,
        "ConcreteDropout_0": True,
        "Dropout_2": True,
    }


class Tagger(nnx.Module):
    def __init__(self, rngs):
        self.embed = nnx.Embed(10, 8, rngs=rngs)
        self.drop = nnx.Dropout(0.6, rngs=rngs)  # flax's: keeps a mask; high rate on embeddings
        self.linear = nnx.Linear(8, 1, rngs=rngs)
        self.unused = jdn.DropPath(0.1, rngs=rngs)
        self.out = jdn.Dropout(0.1, rngs=rngs)

    def __call__(self, ids):
        return self.out(self.linear(self.drop(self.embed(ids))))


def test_nnx_report_and_the_model_is_untouched():
    model = Tagger(nnx.Rngs(0))
    ids = jnp.ones((2, 3), jnp.int32)
    counts = int(model.drop.rngs.count[...]), int(model.out.rngs.count[...])
    report = jaxdrop.inspect(model, ids)
    rows = [(r.path, r.layer, r.kind, r.rate, r.input_shape, r.mask_bytes, r.active) for r in report.rows]
    assert rows == [
        ("drop", "Dropout", "dropout", 0.6, (2, 3, 8), 2 * 3 * 8, True),
        ("out", "Dropout", "dropout", 0.1, (2, 3, 1), 0, True),
        ("unused", "DropPath", "drop_path", 0.1, None, 0, False),
    ]
    assert [w.split(":")[0] for w in report.warnings] == ["drop", "drop", "out"]
    assert "embedding dropout rate 0.6" in report.warnings[1]
    assert (int(model.drop.rngs.count[...]), int(model.out.rngs.count[...])) == counts
    model.eval()
    assert not any(r.active for r in jaxdrop.inspect(model, ids).rows)


def test_assert_deterministic_linen(variables):
    jaxdrop.assert_deterministic(lambda x: Net().apply(variables, x, train=False), X)
    train = lambda x, key: Net().apply(variables, x, train=True, rngs={"dropout": key}, mutable=["batch_stats"])
    with pytest.raises(AssertionError, match="5 site") as err:
        jaxdrop.assert_deterministic(train, X, jax.random.key(0))
    assert "test_inspect.py" in str(err.value)  # names the lines of the model


def test_assert_deterministic_names_user_code_at_a_path_that_spells_library_names(tmp_path):
    """User files under folders named jaxdrop/, flax/ and jax/ (a clone at such a path) are still user code."""
    import importlib.util

    folder = tmp_path / "jaxdrop" / "flax" / "jax"
    folder.mkdir(parents=True)
    (folder / "user_model.py").write_text(
        "import jaxdrop\n\n\ndef model(x, key):\n    return jaxdrop.dropout(x, 0.5, key=key)\n"
    )
    spec = importlib.util.spec_from_file_location("user_model", folder / "user_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(AssertionError, match="1 site") as err:
        jaxdrop.assert_deterministic(module.model, X, jax.random.key(0))
    assert f"{folder / 'user_model.py'}:5" in str(err.value)


def test_assert_deterministic_nnx_and_key_plumbing():
    model = Tagger(nnx.Rngs(0))
    ids = jnp.ones((2, 3), jnp.int32)
    with pytest.raises(AssertionError, match="2 site"):
        jaxdrop.assert_deterministic(lambda m, ids: m(ids), model, ids)
    model.eval()
    jaxdrop.assert_deterministic(lambda m, ids: m(ids), model, ids)
    # keys may be passed and split without sampling; the outputs must not depend on them
    jaxdrop.assert_deterministic(lambda x, key: (x * 2, jax.random.split(key)), X, jax.random.key(1))
    with pytest.raises(AssertionError):
        jaxdrop.assert_deterministic(lambda x, key: jaxdrop.dropout(x, 0.5, key=key), X, jax.random.key(1))


def test_inspect_is_a_function_and_assert_deterministic_lives_in_debug():
    import importlib.util

    assert isinstance(jaxdrop.inspect, types.FunctionType)  # a plain function, not a callable module
    assert importlib.util.find_spec("jaxdrop.inspect") is None
    assert jaxdrop.assert_deterministic is jaxdrop.debug.assert_deterministic
    with pytest.raises(TypeError, match=r"flax\.linen\.Module or a flax\.nnx\.Module"):
        jaxdrop.inspect(object())


def test_nnx_inspect_changes_no_class_and_records_only_the_model():
    registry = []

    class Registered(nnx.Module):
        def __init_subclass__(cls):  # a user's registry of model classes
            super().__init_subclass__()
            registry.append(cls)

    class LoudDropout(nnx.Dropout):
        def __call__(self, inputs, **kwargs):  # a subclass calling its parent: one call, one row
            return super().__call__(inputs, **kwargs)

    class Probe(Registered):
        def __init__(self, rngs):
            self.norm = nnx.BatchNorm(4, rngs=rngs)
            self.blocks = nnx.List([LoudDropout(0.6, rngs=rngs), nnx.BatchNorm(4, rngs=rngs)])
            self.heads = nnx.Dict(
                attn=nnx.MultiHeadAttention(2, 4, dropout_rate=0.1, decode=False, deterministic=False, rngs=rngs)
            )
            self.out = jdn.Dropout(0.1, rngs=rngs)

        def __call__(self, x):
            seen.append((own_calls(), [type(module) for module in (model, model.blocks[0], stranger)]))
            x = stranger(self.blocks[0](self.norm(x)))  # if the stranger were recorded, dropout would feed it
            return self.out(self.heads["attn"](self.blocks[1](x)))

    classes = (Probe, Registered, LoudDropout, nnx.Dropout, nnx.BatchNorm, nnx.MultiHeadAttention, jdn.Dropout)
    own_calls = lambda: [vars(cls).get("__call__") for cls in classes]
    stranger = nnx.BatchNorm(4, use_running_average=True, rngs=nnx.Rngs(1))  # a model's class, not in the model
    model, seen, x = Probe(nnx.Rngs(0)), [], jnp.ones((2, 3, 4))
    values = lambda: jax.tree.leaves(nnx.state(model, nnx.Not(nnx.RngKey)))  # parameters, statistics, RNG counts
    calls_before, graphdef, registered, values_before = own_calls(), nnx.graphdef(model), list(registry), values()
    report = jaxdrop.inspect(model, x)
    # The classes were the same objects inside the traced call as before and after it; the user's modules kept
    # their classes, no subclass reached the user's registry, and the model's state did not move.
    assert seen == [(calls_before, [Probe, LoudDropout, nnx.BatchNorm])]
    assert own_calls() == calls_before and registry == registered == [Probe]
    assert nnx.graphdef(model) == graphdef
    assert all(jnp.array_equal(a, b) for a, b in zip(values(), values_before, strict=True))
    rows = [(r.path, r.layer, r.kind, r.rate, r.input_shape, r.mask_bytes, r.active) for r in report.rows]
    assert rows == [
        ("blocks/0", "LoudDropout", "dropout", 0.6, (2, 3, 4), 2 * 3 * 4, True),
        ("heads/attn", "MultiHeadAttention", "attention", 0.1, (2, 2, 3, 3), 3 * 3 * 4, True),  # one float mask
        ("out", "Dropout", "dropout", 0.1, (2, 3, 4), 0, True),
    ]
    assert [w.split(":")[0] for w in report.warnings] == ["out"]  # on the model output; nothing on blocks/0


def test_nnx_learned_rate_is_read_outside_the_trace():
    model = jdn.ConcreteDropout(nnx.Linear(4, 2, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(0))
    [row] = jaxdrop.inspect(model, X).rows  # its rate is a function of p_logit, a tracer inside the trace
    assert (row.path, row.kind, row.rate, row.input_shape) == ("", "concrete", pytest.approx(0.1), (2, 4))
