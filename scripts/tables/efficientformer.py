"""timm modules of the `efficientformer` family (src/graph/families/efficientformer.rs)."""
MODULES = ['efficientformer']
