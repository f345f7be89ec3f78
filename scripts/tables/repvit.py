"""timm modules of the `repvit` family (src/graph/families/repvit.rs)."""
MODULES = ['repvit']
