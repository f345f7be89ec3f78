"""timm modules of the `volo` family (src/graph/families/volo.rs)."""
MODULES = ['volo']
