"""timm modules of the `twins` family (src/graph/families/twins.rs)."""
MODULES = ['twins']
