"""timm modules of the `lcnetv2` family (src/graph/families/lcnetv2.rs)."""
MODULES = ['lcnetv2']
