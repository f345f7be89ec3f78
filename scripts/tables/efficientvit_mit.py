"""timm modules of the `efficientvit_mit` family (src/graph/families/efficientvit_mit.rs)."""
MODULES = ['efficientvit_mit']
