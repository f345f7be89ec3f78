"""timm modules of the `beit` family (src/graph/families/beit.rs)."""
MODULES = ['beit']
