"""timm modules of the `hiera` family (src/graph/families/hiera.rs)."""
MODULES = ['hiera']
