"""timm modules of the `vision_transformer_relpos` family (src/graph/families/vision_transformer_relpos.rs)."""
MODULES = ['vision_transformer_relpos']
