"""Per-site MC: ``mc.predict(..., sites=...)`` keeps only the chosen dropout sites of a linen or nnx model sampling."""

import jax
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx
from test_mc import _dot_shapes  # one walker of jaxprs for the prefix-once checks

import jaxdrop
from jaxdrop import mc

pytestmark = [
    pytest.mark.filterwarnings("error::jaxdrop.mc.IdenticalSamplesWarning"),
    pytest.mark.filterwarnings("error::jaxdrop.mc.RecompileWarning"),
]

BATCH, FEATURES, HIDDEN, WIDE, CLASSES, T = 4, 3, 16, 24, 5, 5
X = jax.random.normal(jax.random.key(1), (BATCH, FEATURES))
KEY = jax.random.key(3)


class Linen(nn.Module):
    """Dense, Dropout, BatchNorm, Dense, Dropout "head_drop", Dense; a rate of 0 turns a site off."""

    body_rate: float = 0.5
    head_rate: float = 0.5

    @nn.compact
    def __call__(self, x, train: bool = False):
        hidden = jaxdrop.linen.Dropout(self.body_rate)(nn.relu(nn.Dense(HIDDEN)(x)), deterministic=not train)
        hidden = nn.Dense(WIDE)(nn.BatchNorm(use_running_average=not train)(hidden))
        hidden = jaxdrop.linen.Dropout(self.head_rate, name="head_drop")(hidden, deterministic=not train)
        return nn.Dense(CLASSES)(hidden)


VARIABLES = Linen().init(jax.random.key(0), X)


def _linen(model, inputs=X, **options):
    kw = {"variables": VARIABLES, "apply_kwargs": {"train": False}, "return_samples": True}
    return mc.predict(model, inputs, key=KEY, num_samples=T, **kw, **options).samples


def test_linen_sites_equal_the_model_with_the_other_sites_off():
    """Sample ``t`` with only the head sampling equals the model whose body rate is 0 (same keys, same masks)."""
    head_only = _linen(Linen(body_rate=0.0))
    np.testing.assert_allclose(_linen(Linen(), sites="last"), head_only, rtol=1e-5, atol=1e-6)
    body_only = _linen(Linen(), sites=["Drop*"])  # a shell pattern: "Dropout_0", not "head_drop"
    np.testing.assert_allclose(body_only, _linen(Linen(head_rate=0.0)), rtol=1e-5, atol=1e-6)
    flat = np.asarray(head_only).reshape(T, -1)
    assert all(not np.allclose(flat[i], flat[j]) for i in range(T) for j in range(i))


def test_batchnorm_stays_in_evaluation_mode():
    """With one site sampling and function samples, an input's samples do not depend on the rest of the batch: no
    batch statistics are used anywhere (BatchNorm reads its running averages)."""
    whole = _linen(Linen(), sites="last", function_samples=True)
    part = _linen(Linen(), X[2:], sites="last", function_samples=True)
    np.testing.assert_allclose(part, whole[:, 2:], rtol=1e-5, atol=1e-6)


def test_the_deterministic_prefix_before_the_chosen_site_is_computed_once():
    """Only the last site samples: both matmuls before it stay unbatched ((B, H), (B, W)), only the head is batched
    over samples; with every site sampling, the (B, W) matmul is batched too."""

    def shapes(sites):
        run = lambda key, x: mc.predict(Linen(), x, key=key, num_samples=T, variables=VARIABLES, sites=sites)
        return _dot_shapes(jax.make_jaxpr(run)(KEY, X).jaxpr)

    last = shapes("last")
    assert (BATCH, HIDDEN) in last and (BATCH, WIDE) in last, last
    assert not any(len(s) == 3 and s[-1] in (HIDDEN, WIDE) for s in last), last  # the prefix is never batched
    assert any(len(s) == 3 and s[-1] == CLASSES for s in last), last
    assert any(len(s) == 3 and s[-1] == WIDE for s in shapes(None))


class Nnx(nnx.Module):
    def __init__(self, rngs, body_rate=0.5, head_rate=0.5):
        self.l1 = nnx.Linear(FEATURES, HIDDEN, rngs=rngs)
        self.body = jaxdrop.nnx.Dropout(body_rate, rngs=rngs)
        self.bn = nnx.BatchNorm(HIDDEN, rngs=rngs)
        self.l2 = nnx.Linear(HIDDEN, WIDE, rngs=rngs)
        self.head = nnx.Dropout(head_rate, rngs=rngs)  # flax's own: switched on (or off) by its attribute
        self.l3 = nnx.Linear(WIDE, CLASSES, rngs=rngs)

    def __call__(self, x):
        return self.l3(self.head(self.l2(self.bn(self.body(nnx.relu(self.l1(x)))))))


def _nnx(sites=None, inputs=X, dropout_flags=(True, True), **rates):
    model = Nnx(nnx.Rngs(0, dropout=1), **rates)
    model.eval()
    model.body.deterministic, model.head.deterministic = dropout_flags
    return mc.predict(model, inputs, key=KEY, num_samples=T, sites=sites, return_samples=True).samples


def test_nnx_sites_equal_the_model_with_the_other_sites_off():
    head_only = _nnx(body_rate=0.0)
    np.testing.assert_allclose(_nnx("last"), head_only, rtol=1e-5, atol=1e-6)  # the last is flax's nnx.Dropout
    # the other site (flax's) is set deterministic even when its own flag says train
    body_only = _nnx(lambda path: path == "body", dropout_flags=(None, False))  # a predicate on the path
    np.testing.assert_allclose(body_only, _nnx(head_rate=0.0), rtol=1e-5, atol=1e-6)
    assert not np.allclose(head_only[0], head_only[1])


def test_flax_linen_dropout_cannot_be_chosen():
    class WithFlaxDropout(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            hidden = jaxdrop.linen.Dropout(0.5)(nn.Dense(HIDDEN)(x), deterministic=not train)
            return nn.Dropout(0.5, deterministic=not train)(nn.Dense(CLASSES)(hidden))

    model = WithFlaxDropout()
    variables = model.init(jax.random.key(0), X)
    options = {"key": KEY, "num_samples": T, "variables": variables, "apply_kwargs": {"train": False}}
    for sites in ("last", "Dropout_1"):
        with pytest.raises(ValueError, match=r"chooses 'Dropout_1', a flax.linen.Dropout: .* `jaxdrop.linen.Dropout`"):
            mc.predict(model, X, sites=sites, **options)


@pytest.mark.parametrize(
    ("sites", "error", "match"),
    [
        (
            "body/*",
            ValueError,
            r"the pattern 'body/\*' matches none of the model's dropout sites \('Dropout_0', "
            r"'head_drop'\)",
        ),
        (["head_drop", "nope"], ValueError, r"the pattern 'nope' matches none"),
        ([], ValueError, r"`sites` is an empty sequence"),
        (
            3,
            TypeError,
            r"`sites` must be 'last', a module path .* or a predicate `path -> bool` \(a callable\); "
            r"got 3",
        ),
        ([0], TypeError, r"`sites` must be a sequence of module paths or patterns \(str\); got 0"),
        (lambda path: False, ValueError, r"returned False for every dropout site"),
    ],
)
def test_bad_sites_name_the_argument(sites, error, match):
    with pytest.raises(error, match=match):
        mc.predict(Linen(), X, key=KEY, num_samples=2, variables=VARIABLES, sites=sites)


def test_sites_for_a_function_or_a_model_without_dropout_say_what_to_do():
    with pytest.raises(
        ValueError, match=r"a function model has no module paths.* `jaxdrop.dropout\(h, rate, key=key\)`"
    ):
        mc.predict(lambda k, x: jaxdrop.dropout(x, 0.5, key=k), X, key=KEY, num_samples=2, sites="last")
    plain = nn.Dense(CLASSES)
    with pytest.raises(ValueError, match=r"the model called no dropout layer"):
        mc.predict(plain, X, key=KEY, num_samples=2, variables=plain.init(KEY, X), sites="last")
