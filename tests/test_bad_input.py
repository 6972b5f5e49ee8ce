"""The bad-input catalogue (docs/bad_input.md): invalid calls across the public API raise a clear error.

Each case names the call, the exception and a pattern the message must match: the argument's name in backticks
and the accepted range (or what was expected). The table in docs/bad_input.md lists the same case ids; a test keeps
the two in step. tests/test_dropout.py holds the core's own cases for ``jaxdrop.dropout``; these are the rest.
Traced values cannot raise inside ``jit``: for those, the contract is a NaN output, never a silently wrong number
(last section).
"""

# ruff: noqa: E501  (the catalogue is a table: one case per line reads best)
from __future__ import annotations

import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdrop
from jaxdrop import uncertainty as unc

KEY = jax.random.key(0)
X3 = jnp.ones((2, 4, 3))
X4 = jnp.ones((2, 5, 5, 3))
PROBS = jnp.full((4, 3), 1 / 3)
SAMPLE_PROBS = jnp.full((5, 4, 3), 1 / 3)
LABELS = jnp.array([0, 1, 2, 0])
QKV = jnp.ones((2, 5, 2, 4))  # (batch, length, heads, depth)


def _mc_fn(key, x):
    return jaxdrop.dropout(x, 0.5, key=key)


# (id, call, exception, pattern). The pattern names the argument and what is accepted.
CASES = [
    # --- dropout: beyond tests/test_dropout.py
    ("dropout/rate-inf", lambda: jaxdrop.dropout(X3, float("inf"), key=KEY), ValueError, r"`rate` must be in \[0, 1\]; got inf"),
    ("dropout/rate-complex", lambda: jaxdrop.dropout(X3, 0.5 + 0.5j, key=KEY), TypeError, r"`rate` must be a real number"),
    ("dropout/rate-shape-1", lambda: jaxdrop.dropout(X3, np.array([0.5]), key=KEY), ValueError, r"`rate` must be a scalar in \[0, 1\]"),
    ("dropout/x-complex", lambda: jaxdrop.dropout(X3.astype(jnp.complex64), 0.5, key=KEY), TypeError, r"`x` must have a floating-point dtype"),
    ("dropout/x-bool", lambda: jaxdrop.dropout(X3 > 0, 0.5, key=KEY), TypeError, r"`x` must have a floating-point dtype"),
    ("dropout/inverted-str", lambda: jaxdrop.dropout(X3, 0.5, key=KEY, inverted="yes"), TypeError, r"`inverted` must be a bool"),
    ("dropout/broadcast-dims-out-of-range", lambda: jaxdrop.dropout(X3, 0.5, key=KEY, broadcast_dims=3), ValueError, r"`broadcast_dims` entry 3 is out of range .* accepted range is \[-3, 2\]"),
    ("dropout/key-int", lambda: jaxdrop.dropout(X3, 0.5, key=0), TypeError, r"`key` must be a PRNG key"),
    ("dropout/key-uint32-2x2", lambda: jaxdrop.dropout(X3, 0.5, key=jnp.zeros((2, 2), jnp.uint32)), TypeError, r"`key` must be a PRNG key.*shape \(2, 2\)"),
    # --- spatial dropout
    ("spatial_dropout/rank-1", lambda: jaxdrop.spatial_dropout(jnp.ones(4), 0.5, key=KEY), ValueError, r"`x` must have a batch axis and a channel axis \(rank >= 2\)"),
    ("spatial_dropout/channel-axis-batch", lambda: jaxdrop.spatial_dropout(X4, 0.5, key=KEY, channel_axis=0), ValueError, r"`channel_axis`=0 names axis 0, the batch axis; accepted range is \[1, 3\]"),
    ("spatial_dropout/channel-axis-out-of-range", lambda: jaxdrop.spatial_dropout(X4, 0.5, key=KEY, channel_axis=4), ValueError, r"`channel_axis` entry 4 is out of range"),
    ("spatial_dropout/channel-axis-float", lambda: jaxdrop.spatial_dropout(X4, 0.5, key=KEY, channel_axis=1.0), TypeError, r"`channel_axis` must be an int"),
    ("spatial_dropout2d/rank-3", lambda: jaxdrop.spatial_dropout2d(X3, 0.5, key=KEY), ValueError, r"`x` must have rank 4 \(batch, height, width, channels\)"),
    ("spatial_dropout1d/missing-key", lambda: jaxdrop.spatial_dropout1d(X3, 0.5), ValueError, r"`key` is required"),
    # --- noise variants
    ("alpha_dropout/rate-2", lambda: jaxdrop.alpha_dropout(X3, 2.0, key=KEY), ValueError, r"`rate` must be in \[0, 1\]; got 2.0"),
    ("alpha_dropout/x-int", lambda: jaxdrop.alpha_dropout(jnp.ones(3, jnp.int32), 0.5, key=KEY), TypeError, r"`x` must have a floating-point dtype"),
    ("feature_alpha_dropout/rank-1", lambda: jaxdrop.feature_alpha_dropout(jnp.ones(4), 0.5, key=KEY), ValueError, r"rank >= 2"),
    ("gaussian_dropout/rate-negative", lambda: jaxdrop.gaussian_dropout(X3, -0.1, key=KEY), ValueError, r"`rate` must be in \[0, 1\]"),
    ("gaussian_dropout/key-string", lambda: jaxdrop.gaussian_dropout(X3, 0.1, key="0"), TypeError, r"`key` must be a PRNG key"),
    ("gaussian_noise/stddev-negative", lambda: jaxdrop.gaussian_noise(X3, -1.0, key=KEY), ValueError, r"`stddev` must be a finite number >= 0; got -1.0"),
    ("gaussian_noise/stddev-inf", lambda: jaxdrop.gaussian_noise(X3, float("inf"), key=KEY), ValueError, r"`stddev` must be a finite number >= 0; got inf"),
    ("gaussian_noise/stddev-nan", lambda: jaxdrop.gaussian_noise(X3, float("nan"), key=KEY), ValueError, r"`stddev` must be a finite number >= 0; got nan"),
    # --- drop path
    ("drop_path/mode", lambda: jaxdrop.drop_path(X3, 0.5, key=KEY, mode="column"), ValueError, r"`mode` must be one of \('row', 'batch'\)"),
    ("drop_path/batch-axis", lambda: jaxdrop.drop_path(X3, 0.5, key=KEY, batch_axis=3), ValueError, r"`batch_axis` entry 3 is out of range"),
    ("drop_path/scalar-row", lambda: jaxdrop.drop_path(jnp.float32(1.0), 0.5, key=KEY), ValueError, r"`x` must have a batch axis"),
    ("drop_path/scale-by-keep-int", lambda: jaxdrop.drop_path(X3, 0.5, key=KEY, scale_by_keep=1), TypeError, r"`scale_by_keep` must be a bool"),
    ("residual_drop_path/shapes", lambda: jaxdrop.residual_drop_path(X3, X3[0], 0.5, key=KEY), ValueError, r"`residual` and `branch` must have the same shape"),
    ("linear_drop_path_rates/depth-0", lambda: jaxdrop.linear_drop_path_rates(0.2, 0), ValueError, r"`depth` must be >= 1; got 0"),
    ("linear_drop_path_rates/depth-float", lambda: jaxdrop.linear_drop_path_rates(0.2, 2.5), TypeError, r"`depth` must be a positive Python int"),
    ("linear_drop_path_rates/max-rate", lambda: jaxdrop.linear_drop_path_rates(1.5, 4), ValueError, r"`max_rate` must be in \[0, 1\]; got 1.5"),
    # --- DropBlock
    ("dropblock/block-size-0", lambda: jaxdrop.dropblock(X4, 0.1, key=KEY, block_size=0), ValueError, r"`block_size` must be >= 1; got 0"),
    ("dropblock/block-size-too-large", lambda: jaxdrop.dropblock(X4, 0.1, key=KEY, block_size=6), ValueError, r"`block_size` 6 is larger than the feature map \(5, 5\); accepted range is \[1, 5\]"),
    ("dropblock/block-size-length", lambda: jaxdrop.dropblock(X4, 0.1, key=KEY, block_size=(3,)), ValueError, r"`block_size` must be an int or have one entry per spatial axis \(2\)"),
    ("dropblock/block-size-float", lambda: jaxdrop.dropblock(X4, 0.1, key=KEY, block_size=2.5), TypeError, r"`block_size` must be an int|`block_size` must be a positive Python int"),
    ("dropblock/no-spatial-axis", lambda: jaxdrop.dropblock(jnp.ones((2, 3)), 0.1, key=KEY, block_size=1), ValueError, r"`x` must have at least one spatial axis \(rank >= 3\)"),
    ("dropblock3d/rank-4", lambda: jaxdrop.dropblock3d(X4, 0.1, key=KEY, block_size=2), ValueError, r"`x` must have rank 5"),
    ("dropblock2d/share-flag", lambda: jaxdrop.dropblock2d(X4, 0.1, key=KEY, block_size=2, share_across_channels="no"), TypeError, r"`share_across_channels` must be a bool"),
    # --- DropConnect
    ("dropconnect/w-int", lambda: jaxdrop.dropconnect(jnp.ones((3, 3), jnp.int32), 0.5, key=KEY), TypeError, r"`w` must have a floating-point dtype"),
    ("dropconnect_params/where", lambda: jaxdrop.dropconnect_params({"w": X3}, 0.5, key=KEY, where=5), TypeError, r"`where` must be a callable \(path, leaf\) -> bool, a name or a sequence of names"),
    ("dropconnect_params/int-leaf", lambda: jaxdrop.dropconnect_params({"ids": jnp.ones((3, 3), jnp.int32)}, 0.5, key=KEY, where="ids"), TypeError, r"`where` selected the leaf 'ids' of dtype int32"),
    ("dropconnect_params/missing-key", lambda: jaxdrop.dropconnect_params({"w": X3}, 0.5), ValueError, r"`key` is required"),
    # --- sequences
    ("locked_dropout/time-axis", lambda: jaxdrop.locked_dropout(X3, 0.5, key=KEY, time_axis=3), ValueError, r"`time_axis` entry 3 is out of range .* accepted range is \[-3, 2\]"),
    ("locked_dropout/rank-1", lambda: jaxdrop.locked_dropout(jnp.ones(4), 0.5, key=KEY), ValueError, r"`x` must have a time axis and at least one other axis \(rank >= 2\)"),
    ("locked_mask/negative-shape", lambda: jaxdrop.locked_mask(KEY, 0.5, (2, -1)), ValueError, r"`shape` must have non-negative sizes"),
    ("locked_mask/h-int", lambda: jaxdrop.locked_mask(KEY, 0.5, (2, 3))(jnp.ones((2, 3), jnp.int32)), TypeError, r"`h` must have a floating-point dtype"),
    ("token_dropout/feature-axis", lambda: jaxdrop.token_dropout(X3, 0.5, key=KEY, feature_axis=-4), ValueError, r"`feature_axis` entry -4 is out of range"),
    ("word_dropout/ids-float", lambda: jaxdrop.word_dropout(X3, jnp.ones((2, 4)), 0.5, key=KEY), TypeError, r"`token_ids` must be an integer array; got dtype float32"),
    ("word_dropout/ids-shape", lambda: jaxdrop.word_dropout(X3, jnp.ones((2, 3), jnp.int32), 0.5, key=KEY), ValueError, r"`token_ids` must have the shape of `tokens_embedded` without its feature axis"),
    # --- attention
    ("dot_product_attention/rate", lambda: jaxdrop.dot_product_attention(QKV, QKV, QKV, dropout_rng=KEY, dropout_rate=1.2), ValueError, r"`dropout_rate` must be in \[0, 1\]; got 1.2"),
    ("dot_product_attention/missing-rng", lambda: jaxdrop.dot_product_attention(QKV, QKV, QKV, dropout_rate=0.1), ValueError, r"`dropout_rng` is required"),
    ("dot_product_attention/rank-2", lambda: jaxdrop.dot_product_attention(QKV[0, :, 0], QKV[0, :, 0], QKV[0, :, 0]), ValueError, r"`query`, `key` and `value` must have the same rank, at least 3"),
    ("dot_product_attention/depth", lambda: jaxdrop.dot_product_attention(QKV, QKV[..., :3], QKV), ValueError, r"`query` and `key` depths \(axis -1\) must match"),
    ("dot_product_attention/heads", lambda: jaxdrop.dot_product_attention(QKV, QKV[:, :, :1], QKV), ValueError, r"same number of heads"),
    ("dot_product_attention/one-einsum", lambda: jaxdrop.dot_product_attention(QKV, QKV, QKV, qk_attn_weights_einsum=jnp.einsum), ValueError, r"`qk_attn_weights_einsum` and `attn_weights_value_einsum` must be given together"),
    ("dot_product_attention/int-inputs", lambda: jaxdrop.dot_product_attention(*(jnp.ones((2, 5, 2, 4), jnp.int32),) * 3), TypeError, r"`query` must have a floating-point dtype"),
    # --- concrete dropout
    ("concrete_dropout/p-logit-vector", lambda: jaxdrop.concrete_dropout(X3, jnp.zeros(3), key=KEY), ValueError, r"`p_logit` must be a scalar"),
    ("concrete_dropout/p-logit-int", lambda: jaxdrop.concrete_dropout(X3, 0, key=KEY), TypeError, r"`p_logit` must be a floating-point scalar"),
    ("concrete_dropout/temperature-0", lambda: jaxdrop.concrete_dropout(X3, 0.0, key=KEY, temperature=0.0), ValueError, r"`temperature` must be a finite number > 0; got 0.0"),
    ("concrete_dropout/missing-key", lambda: jaxdrop.concrete_dropout(X3, 0.0), ValueError, r"`key` is required"),
    ("concrete_dropout_regularizer/input-dim", lambda: jaxdrop.concrete_dropout_regularizer(0.0, X3, weight_regularizer=1e-2, dropout_regularizer=1e-1, input_dim=0), ValueError, r"`input_dim` must be >= 1; got 0"),
    ("concrete_dropout_regularizer/negative", lambda: jaxdrop.concrete_dropout_regularizer(0.0, X3, weight_regularizer=-1.0, dropout_regularizer=1e-1, input_dim=3), ValueError, r"`weight_regularizer` must be a finite number >= 0; got -1.0"),
    # --- Monte Carlo
    ("mc.sample/num-samples-0", lambda: jaxdrop.mc.sample(_mc_fn, KEY, 0, X3), ValueError, r"`num_samples` must be >= 1"),
    ("mc.sample/num-samples-float", lambda: jaxdrop.mc.sample(_mc_fn, KEY, 2.5, X3), TypeError, r"`num_samples` must be"),
    ("mc.sample/chunk-size-0", lambda: jaxdrop.mc.sample(_mc_fn, KEY, 4, X3, chunk_size=0), ValueError, r"`chunk_size` must be >= 1"),
    ("mc.sample/missing-key", lambda: jaxdrop.mc.sample(_mc_fn, None, 4, X3), ValueError, r"`key` is required"),
    ("mc.predict/num-samples-negative", lambda: jaxdrop.mc.predict(_mc_fn, X3, key=KEY, num_samples=-1), ValueError, r"`num_samples` must be >= 1"),
    ("mc.predict/task", lambda: jaxdrop.mc.predict(_mc_fn, X3, key=KEY, num_samples=2, task="segmentation"), ValueError, r"`task` must be one of \('classification', 'regression'\)"),
    ("mc.predict/tau-0", lambda: jaxdrop.mc.predict(_mc_fn, X3, key=KEY, num_samples=2, task="regression", tau=0.0), ValueError, r"`tau` must be a finite number > 0"),
    ("mc.predict/labels-float", lambda: jaxdrop.mc.predict(_mc_fn, X3, key=KEY, num_samples=2, labels=jnp.ones(2)), TypeError, r"`labels` must be integer class indices"),
    # --- uncertainty metrics
    ("predictive_entropy/not-normalised", lambda: unc.predictive_entropy(jnp.array([[0.5, 0.6]])), ValueError, r"`probs` must sum to 1 along the last \(class\) axis"),
    ("predictive_entropy/nan", lambda: unc.predictive_entropy(jnp.array([[0.5, jnp.nan]])), ValueError, r"`probs` must hold probabilities in \[0, 1\]"),
    ("predictive_entropy/negative", lambda: unc.predictive_entropy(jnp.array([[1.5, -0.5]])), ValueError, r"`probs` must hold probabilities in \[0, 1\]"),
    ("mutual_information/no-sample-axis", lambda: unc.mutual_information(jnp.array([0.5, 0.5])), ValueError, r"`sample_probs` must have at least 2 axes"),
    ("expected_entropy/int", lambda: unc.expected_entropy(jnp.ones((2, 3, 1), jnp.int32)), TypeError, r"`sample_probs` must have a floating-point dtype"),
    ("nll/labels-shape", lambda: unc.nll(PROBS, LABELS[:3]), ValueError, r"`labels` must have the batch shape of the probabilities \(4,\)"),
    ("nll/labels-range", lambda: unc.nll(PROBS, jnp.array([0, 1, 2, 3])), ValueError, r"`labels` must be in \[0, 2\]; got values in \[0, 3\]"),
    ("brier_score/labels-float", lambda: unc.brier_score(PROBS, jnp.zeros(4)), TypeError, r"`labels` must be integer class indices"),
    ("expected_calibration_error/num-bins-0", lambda: unc.expected_calibration_error(PROBS, LABELS, num_bins=0), ValueError, r"`num_bins` must be in \[1, 2147483647\]; got 0"),
    ("expected_calibration_error/binning", lambda: unc.expected_calibration_error(PROBS, LABELS, binning="log"), ValueError, r"`binning` must be one of \('uniform', 'quantile'\)"),
    ("reliability_diagram/rank-3", lambda: unc.reliability_diagram(SAMPLE_PROBS, jnp.zeros((5, 4), jnp.int32)), ValueError, r"`probs` must have shape \(num_examples, num_classes\)"),
    ("bald_top_k/k-0", lambda: unc.bald_top_k(SAMPLE_PROBS, 0), ValueError, r"`k` must be in \[1, 4\]; got 0"),
    ("bald_top_k/k-too-large", lambda: unc.bald_top_k(SAMPLE_PROBS, 5), ValueError, r"`k` must be in \[1, 4\]; got 5"),
    ("gaussian_log_likelihood/targets-shape", lambda: unc.gaussian_log_likelihood(jnp.zeros((5, 3)), jnp.zeros(4), tau=1.0), ValueError, r"`targets` must have the shape of one sample \(3,\)"),
    ("gaussian_log_likelihood/two-noise-models", lambda: unc.gaussian_log_likelihood(jnp.zeros((5, 3)), jnp.zeros(3), tau=1.0, log_variance=jnp.zeros((5, 3))), ValueError, r"Pass exactly one noise model: the precision `tau`"),
    ("gaussian_log_likelihood/tau-inf", lambda: unc.gaussian_log_likelihood(jnp.zeros((5, 3)), jnp.zeros(3), tau=float("inf")), ValueError, r"`tau` must be"),
    ("gaussian_log_likelihood/tau-negative", lambda: unc.gaussian_log_likelihood(jnp.zeros((5, 3)), jnp.zeros(3), tau=-1.0), ValueError, r"`tau` must be a finite number > 0; got -1.0"),
    ("gaussian_log_likelihood/log-variance-shape", lambda: unc.gaussian_log_likelihood(jnp.zeros((5, 3)), jnp.zeros(3), log_variance=jnp.zeros((4, 3))), ValueError, r"`log_variance` and `samples` must have the same shape"),
    ("epistemic_variance/empty", lambda: unc.epistemic_variance(jnp.zeros((0, 3))), ValueError, r"`samples` must have a leading sample axis of size >= 1"),
    ("rmse/shapes", lambda: unc.rmse(jnp.zeros(3), jnp.zeros(4)), ValueError, r"`predictions` and `targets` must have the same shape"),
    ("flag_for_review/budget-fraction", lambda: unc.flag_for_review(jnp.zeros(4), 1.5), ValueError, r"`budget` as a fraction must be in \(0, 1\]; got 1.5"),
    ("flag_for_review/budget-count", lambda: unc.flag_for_review(jnp.zeros(4), 5), ValueError, r"`budget` must be in \[0, 4\]; got 5"),
    ("flag_for_review/budget-str", lambda: unc.flag_for_review(jnp.zeros(4), "10%"), TypeError, r"`budget` must be a float fraction in \(0, 1\] or an int count in \[0, 4\]"),
    ("ood_auroc/2d", lambda: unc.ood_auroc(jnp.zeros((2, 2)), jnp.zeros(3)), ValueError, r"`scores_in` must be 1-D"),
    ("aurc/lengths", lambda: unc.aurc(jnp.zeros(3), jnp.zeros(4)), ValueError, r"`uncertainty` and `errors` must have the same shape"),
    ("risk_coverage_curve/empty", lambda: unc.risk_coverage_curve(jnp.zeros(0), jnp.zeros(0)), ValueError, r"`uncertainty` must not be empty"),
]  # fmt: skip


# Known bugs, reported to their owners: each must fail until fixed (strict), then the mark goes.
KNOWN_BUGS: dict[str, str] = {}  # name -> reason, for a case that documents a bug not yet fixed (strict xfail)


def _params():
    for name, call, error, pattern in CASES:
        marks = [pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[name])] if name in KNOWN_BUGS else []
        yield pytest.param(call, error, pattern, id=name, marks=marks)


@pytest.mark.parametrize(("call", "error", "pattern"), list(_params()))
def test_invalid_call_raises_a_clear_error(call, error, pattern):
    with pytest.raises(error, match=pattern) as info:
        call()
    assert re.search(r"`\w+", str(info.value)), "the message must name the argument in backticks"


def test_catalogue_is_large_and_matches_the_docs():
    ids = [case[0] for case in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 40
    table = (Path(__file__).parent.parent / "docs" / "bad_input.md").read_text()
    documented = set(re.findall(r"^\| `([^`]+)` \|", table, flags=re.MULTILINE))
    assert documented == set(ids), (sorted(set(ids) - documented), sorted(documented - set(ids)))


# --- traced invalid values: NaN, never a plausible number ------------------------------------------------------------

TRACED_RATE_FUNCTIONS = {
    "dropout": lambda x, r: jaxdrop.dropout(x, r, key=KEY),
    "spatial_dropout": lambda x, r: jaxdrop.spatial_dropout(x, r, key=KEY),
    "alpha_dropout": lambda x, r: jaxdrop.alpha_dropout(x, r, key=KEY),
    "gaussian_dropout": lambda x, r: jaxdrop.gaussian_dropout(x, r, key=KEY),
    "gaussian_noise/stddev": lambda x, r: jaxdrop.gaussian_noise(x, r, key=KEY),
    "drop_path": lambda x, r: jaxdrop.drop_path(x, r, key=KEY),
    "dropblock": lambda x, r: jaxdrop.dropblock(x, r, key=KEY, block_size=2),
    "dropconnect": lambda x, r: jaxdrop.dropconnect(x, r, key=KEY),
    "locked_dropout": lambda x, r: jaxdrop.locked_dropout(x, r, key=KEY),
    "locked_mask": lambda x, r: jaxdrop.locked_mask(KEY, r, x.shape)(x),
    "token_dropout": lambda x, r: jaxdrop.token_dropout(x, r, key=KEY),
    "word_dropout": lambda x, r: jaxdrop.word_dropout(x, jnp.zeros(x.shape[:-1], jnp.int32), r, key=KEY),
    "dot_product_attention": lambda x, r: jaxdrop.dot_product_attention(x, x, x, dropout_rng=KEY, dropout_rate=r),
    "concrete_dropout/temperature": lambda x, r: jaxdrop.concrete_dropout(x, 0.0, key=KEY, temperature=r),
}
# A stddev or temperature is invalid below 0 (a temperature also at 0), not above 1.
BAD_TRACED = {"gaussian_noise/stddev": (-0.5, float("nan")), "concrete_dropout/temperature": (-0.5, 0.0, float("nan"))}


TRACED_DEFAULT_RUN = {
    "dropout",
    "alpha_dropout",
    "gaussian_noise/stddev",
    "dropblock",
    "word_dropout",
    "concrete_dropout/temperature",
}


@pytest.mark.parametrize(
    "name",
    [n if n in TRACED_DEFAULT_RUN else pytest.param(n, marks=pytest.mark.slow) for n in TRACED_RATE_FUNCTIONS],
)
def test_traced_invalid_rate_gives_nan_not_a_silent_result(name):
    fn = jax.jit(TRACED_RATE_FUNCTIONS[name])
    x = jnp.ones((2, 4, 4, 3))
    for bad in BAD_TRACED.get(name, (-0.5, 1.5, float("nan"))):
        out = np.asarray(fn(x, jnp.float32(bad)), np.float32)
        assert np.isnan(out).all(), (name, bad, out.ravel()[:4])
    assert np.isfinite(np.asarray(fn(x, jnp.float32(0.25)))).all()  # a valid traced rate still works


def markdown_table() -> str:
    """The catalogue as the markdown table of docs/bad_input.md, with each call's actual message."""
    import inspect

    rows = ["| case | call | raises | message |", "| --- | --- | --- | --- |"]
    for name, call, error, _ in CASES:
        source = inspect.getsource(call).strip()
        source = source[source.index("lambda: ") + len("lambda: ") :].rsplit(", " + error.__name__, 1)[0]
        try:
            call()
            now = "returns a result"
            message, raised = now, "-"
        except Exception as err:  # whatever is raised is reported
            message, raised = str(err).replace("|", "\\|").replace("\n", " "), type(err).__name__
            now = f"raises {raised}: {message}"
        if name in KNOWN_BUGS:
            message = f"**known bug**: {KNOWN_BUGS[name]}. Now {now}"
            raised = f"should raise {error.__name__}"
        rows.append(f"| `{name}` | `{source.replace('|', chr(92) + '|')}` | {raised} | {message} |")
    return "\n".join(rows)


if __name__ == "__main__":  # regenerate the table of docs/bad_input.md: python tests/test_bad_input.py
    print(markdown_table())
