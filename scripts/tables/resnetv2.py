"""timm modules of the `resnetv2` family (src/graph/families/resnetv2.rs)."""
MODULES = ['resnetv2']
