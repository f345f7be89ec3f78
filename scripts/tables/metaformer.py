"""timm modules of the `metaformer` family (src/graph/families/metaformer.rs)."""
MODULES = ['metaformer']
