"""timm modules of the `lowformer` family (src/graph/families/lowformer.rs)."""
MODULES = ['lowformer']
