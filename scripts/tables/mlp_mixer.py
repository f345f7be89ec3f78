"""timm modules of the `mlp_mixer` family (src/graph/families/mlp_mixer.rs)."""
MODULES = ['mlp_mixer']
