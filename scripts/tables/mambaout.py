"""timm modules of the `mambaout` family (src/graph/families/mambaout.rs)."""
MODULES = ['mambaout']
