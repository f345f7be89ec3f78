"""timm modules of the `rexnet` family (src/graph/families/rexnet.rs)."""
MODULES = ['rexnet']
