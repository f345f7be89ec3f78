"""timm modules of the `repghost` family (src/graph/families/repghost.rs)."""
MODULES = ['repghost']
