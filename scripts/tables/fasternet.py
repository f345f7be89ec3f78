"""timm modules of the `fasternet` family (src/graph/families/fasternet.rs)."""
MODULES = ['fasternet']
