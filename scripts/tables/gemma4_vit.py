"""timm modules of the `gemma4_vit` family (src/graph/families/gemma4_vit.rs)."""
MODULES = ['gemma4_vit']
