"""timm modules of the `naflexvit` family (src/graph/families/naflexvit.rs)."""
MODULES = ['naflexvit']
