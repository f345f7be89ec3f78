"""timm modules of the `efficientformer_v2` family (src/graph/families/efficientformer_v2.rs)."""
MODULES = ['efficientformer_v2']
