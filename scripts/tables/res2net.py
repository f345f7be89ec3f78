"""timm modules of the `res2net` family (src/graph/families/res2net.rs)."""

MODULES = ['res2net']
