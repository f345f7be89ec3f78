"""timm modules of the `focalnet` family (src/graph/families/focalnet.rs)."""
MODULES = ['focalnet']
