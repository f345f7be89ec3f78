"""timm modules of the `starnet` family (src/graph/families/starnet.rs)."""
MODULES = ['starnet']
