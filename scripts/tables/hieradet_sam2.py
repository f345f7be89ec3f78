"""timm modules of the `hieradet_sam2` family (src/graph/families/hieradet_sam2.rs)."""
MODULES = ['hieradet_sam2']
