"""Pure dropout functions: explicit key, rate and ``deterministic`` flag; no Flax."""

from jaxdrop.functional._attention import dot_product_attention
from jaxdrop.functional._concrete import concrete_dropout, concrete_dropout_regularizer
from jaxdrop.functional._drop_path import drop_path, linear_drop_path_rates, residual_drop_path
from jaxdrop.functional._dropblock import dropblock, dropblock2d, dropblock3d
from jaxdrop.functional._dropout import dropout
from jaxdrop.functional._layer_drop import layer_drop, prune_layers, scan_layer_drop
from jaxdrop.functional._mixout import mixout
from jaxdrop.functional._noise import alpha_dropout, feature_alpha_dropout, gaussian_dropout, gaussian_noise
from jaxdrop.functional._patch_dropout import patch_dropout
from jaxdrop.functional._sequence import locked_dropout, locked_mask, token_dropout, word_dropout
from jaxdrop.functional._spatial import spatial_dropout, spatial_dropout1d, spatial_dropout2d, spatial_dropout3d
from jaxdrop.functional._weights import dropconnect, dropconnect_params

__all__ = [
    "alpha_dropout",
    "concrete_dropout",
    "concrete_dropout_regularizer",
    "dot_product_attention",
    "drop_path",
    "dropblock",
    "dropblock2d",
    "dropblock3d",
    "dropconnect",
    "dropconnect_params",
    "dropout",
    "feature_alpha_dropout",
    "gaussian_dropout",
    "gaussian_noise",
    "layer_drop",
    "linear_drop_path_rates",
    "locked_dropout",
    "locked_mask",
    "mixout",
    "patch_dropout",
    "prune_layers",
    "residual_drop_path",
    "scan_layer_drop",
    "spatial_dropout",
    "spatial_dropout1d",
    "spatial_dropout2d",
    "spatial_dropout3d",
    "token_dropout",
    "word_dropout",
]
