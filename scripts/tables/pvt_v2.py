"""timm modules of the `pvt_v2` family (src/graph/families/pvt_v2.rs)."""
MODULES = ['pvt_v2']
