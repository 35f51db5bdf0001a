"""Source adapters: the generic contract, Shopify exports and column mappings, one entry point."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from juno.errors import InputError
from juno.sources.base import SourceResult
from juno.sources.mapping import read_mapped
from juno.sources.shopify import is_shopify_store, read_shopify

__all__ = ["SourceResult", "read_store"]


def read_store(
    store: Path, config_mapping: dict[str, Any] | None, config_dir: Path | None, *, defer: bool = False
) -> SourceResult:
    """Read a store: through the config's mapping when it has one, as Shopify exports when the
    folder holds them, otherwise as the generic contract.

    `defer`: generic tables may be left for validation to read when it takes them (see
    `SourceResult.deferred`), for a caller that validates the result at once with `consume`."""
    store = Path(store).expanduser()
    if not store.exists():
        raise InputError(
            "the store folder does not exist",
            file=str(store),
            expected="a folder holding orders.csv, a Shopify orders_export.csv, or the files "
            "a [mapping] names",
        )
    if config_mapping:
        base = config_dir if config_dir is not None else (store if store.is_dir() else store.parent)
        return read_mapped(store, config_mapping, base)
    if store.is_dir() and is_shopify_store(store):
        return read_shopify(store)
    from juno.sources.generic import read_generic

    return read_generic(store, defer=defer)
