"""timm modules of the `coat` family (src/graph/families/coat.rs)."""
MODULES = ['coat']
