"""Pure dropout functions: explicit key, rate and ``deterministic`` flag; no Flax."""

from jaxdrop.functional._dropout import dropout

__all__ = ["dropout"]
