"""timm modules of the `sknet` family (src/graph/families/sknet.rs)."""

MODULES = ['sknet']
