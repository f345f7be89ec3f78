"""timm modules of the `hgnet` family (src/graph/families/hgnet.rs)."""
MODULES = ['hgnet']
