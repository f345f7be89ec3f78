"""timm modules of the `vitamin` family (src/graph/families/vitamin.rs).

Every entrypoint builds its MbConv backbone (`MbConvStages` from a `VitCfg`) itself and passes it to
VisionTransformer inside `embed_layer=partial(HybridEmbed, backbone=..., proj=False)`: the table
describes that backbone (stem width, the two MbConv stages' widths and blocks, the StridedConv's
output width) and HybridEmbed's own arguments; `mlp_layer` is vitamin's `GeGluMlp` ('geglumlp').
"""
MODULES = ['vitamin']


def _backbone(m):
    return dict(
        stem_width=m.stem.out_chs,
        widths=[s[0].out_chs for s in m.stages],
        depths=[len(s) for s in m.stages],
        embed_dim=m.pool.proj.out_channels,
    )


def serialize(arch, kwargs):
    from gen_tables import to_json
    kw = dict(kwargs)
    embed = kw.pop('embed_layer')
    args = to_json(kw)
    embed_kw = dict(embed.keywords)
    args['backbone'] = _backbone(embed_kw.pop('backbone'))
    args['embed_args'] = to_json(embed_kw)
    return args
