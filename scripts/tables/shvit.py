"""timm modules of the `shvit` family (src/graph/families/shvit.rs)."""
MODULES = ['shvit']
