"""timm modules of the `fastvit` family (src/graph/families/fastvit.rs)."""
MODULES = ["fastvit"]
