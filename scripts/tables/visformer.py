"""timm modules of the `visformer` family (src/graph/families/visformer.rs)."""
MODULES = ['visformer']
