"""timm modules of the `senet` family (src/graph/families/senet.rs)."""

MODULES = ['senet']
