"""timm modules of the `convit` family (src/graph/families/convit.rs)."""
MODULES = ['convit']
