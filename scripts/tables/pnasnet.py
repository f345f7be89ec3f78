"""timm modules of the `pnasnet` family (src/graph/families/pnasnet.rs)."""
MODULES = ['pnasnet']
