"""timm modules of the `convnext` family (src/graph/families/convnext.rs)."""
MODULES = ['convnext']
