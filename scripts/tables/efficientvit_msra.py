"""timm modules of the `efficientvit_msra` family (src/graph/families/efficientvit_msra.rs)."""
MODULES = ['efficientvit_msra']
