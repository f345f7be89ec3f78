"""timm modules of the `nextvit` family (src/graph/families/nextvit.rs)."""
MODULES = ['nextvit']
