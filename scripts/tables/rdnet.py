"""timm modules of the `rdnet` family (src/graph/families/rdnet.rs)."""
MODULES = ['rdnet']
