"""timm modules of the `efficientvim` family (src/graph/families/efficientvim.rs)."""
MODULES = ['efficientvim']
