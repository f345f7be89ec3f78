"""timm modules of the `resnest` family (src/graph/families/resnest.rs)."""

MODULES = ['resnest']
