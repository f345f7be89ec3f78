"""timm modules of the `ghostnet` family (src/graph/families/ghostnet.rs)."""
MODULES = ['ghostnet']
