"""timm modules of the `eva` family (src/graph/families/eva.rs)."""
MODULES = ['eva']
