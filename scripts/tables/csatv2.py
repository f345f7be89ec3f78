"""timm modules of the `csatv2` family (src/graph/families/csatv2.rs)."""
MODULES = ['csatv2']
