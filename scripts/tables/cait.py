"""timm modules of the `cait` family (src/graph/families/cait.rs)."""
MODULES = ['cait']
