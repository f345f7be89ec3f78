"""timm modules of the `pit` family (src/graph/families/pit.rs)."""
MODULES = ['pit']
