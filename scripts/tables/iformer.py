"""timm modules of the `iformer` family (src/graph/families/iformer.rs)."""
MODULES = ['iformer']
