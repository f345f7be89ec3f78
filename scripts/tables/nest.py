"""timm modules of the `nest` family (src/graph/families/nest.rs)."""
MODULES = ['nest']
