"""timm modules of the `gcvit` family (src/graph/families/gcvit.rs)."""
MODULES = ['gcvit']
