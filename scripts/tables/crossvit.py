"""timm modules of the `crossvit` family (src/graph/families/crossvit.rs)."""
MODULES = ['crossvit']
