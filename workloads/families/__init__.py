"""Tokenizer families (`tokenizer.family`): one module per family, one registry entry each.

Adding a family: a module here defining a `TokenizerFamily` subclass (its `training_view`, its
authors' constants with their source at the line) and its entry in `FAMILIES`. The orchestrator
reads the family only through this registry, so no stage changes.
"""

from workloads.families.base import TokenizerFamily, TokenizerSpec, TrainingView
from workloads.families.detok import FAMILY as DETOK
from workloads.families.eqvae import FAMILY as EQVAE
from workloads.families.rae import FAMILY as RAE
from workloads.families.repae import FAMILY as REPAE
from workloads.families.vavae import FAMILY as VAVAE

FAMILIES: dict[str, TokenizerFamily] = {
    family.name: family for family in (VAVAE, EQVAE, DETOK, REPAE, RAE)
}


def get_family(name: str) -> TokenizerFamily:
    """The registered family `name` (KeyError naming the known ones otherwise)."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown tokenizer family {name!r}; known: {sorted(FAMILIES)}") from None


__all__ = ["FAMILIES", "TokenizerFamily", "TokenizerSpec", "TrainingView", "get_family"]
