"""timm modules of the `swin_transformer` family (src/graph/families/swin_transformer.rs)."""
MODULES = ['swin_transformer']
