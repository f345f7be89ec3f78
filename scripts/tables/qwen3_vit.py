"""timm modules of the `qwen3_vit` family (src/graph/families/qwen3_vit.rs)."""
MODULES = ['qwen3_vit']
