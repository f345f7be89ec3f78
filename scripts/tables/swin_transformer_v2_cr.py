"""timm modules of the `swin_transformer_v2_cr` family (src/graph/families/swin_transformer_v2_cr.rs)."""
MODULES = ['swin_transformer_v2_cr']
