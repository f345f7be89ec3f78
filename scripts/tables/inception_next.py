"""timm modules of the `inception_next` family (src/graph/families/inception_next.rs)."""
MODULES = ['inception_next']
