"""timm modules of the `tiny_vit` family (src/graph/families/tiny_vit.rs)."""
MODULES = ['tiny_vit']
