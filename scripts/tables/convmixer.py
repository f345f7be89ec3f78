"""timm modules of the `convmixer` family (src/graph/families/convmixer.rs)."""
MODULES = ['convmixer']
