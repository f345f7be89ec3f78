"""timm modules of the `swin_transformer_v2` family (src/graph/families/swin_transformer_v2.rs)."""
MODULES = ['swin_transformer_v2']
