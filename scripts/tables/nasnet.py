"""timm modules of the `nasnet` family (src/graph/families/nasnet.rs)."""
MODULES = ['nasnet']
