"""timm modules of the `tnt` family (src/graph/families/tnt.rs)."""
MODULES = ['tnt']
