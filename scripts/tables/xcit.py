"""timm modules of the `xcit` family (src/graph/families/xcit.rs)."""
MODULES = ['xcit']
