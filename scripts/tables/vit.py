"""timm modules of the `vit` family (src/graph/families/vit.rs)."""
MODULES = ['vision_transformer', 'deit']
