"""timm module `dla` (src/graph/families/dla.rs)."""
MODULES = ["dla"]
