"""timm modules of the `vision_transformer_sam` family (src/graph/families/vision_transformer_sam.rs)."""
MODULES = ['vision_transformer_sam']
