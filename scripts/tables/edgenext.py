"""timm modules of the `edgenext` family (src/graph/families/edgenext.rs)."""
MODULES = ['edgenext']
