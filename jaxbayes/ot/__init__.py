"""jaxbayes.ot (public names are re-exported here from private modules)."""

__all__: list[str] = []
