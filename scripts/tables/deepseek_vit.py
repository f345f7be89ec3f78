"""timm modules of the `deepseek_vit` family (src/graph/families/deepseek_vit.rs)."""
MODULES = ['deepseek_vit']
