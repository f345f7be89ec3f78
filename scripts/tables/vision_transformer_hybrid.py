"""timm modules of the `vision_transformer_hybrid` family (src/graph/families/vision_transformer_hybrid.rs).

Every entrypoint builds its CNN backbone itself and passes it to VisionTransformer inside
`embed_layer=partial(HybridEmbed, backbone=..., **embed_args)`: the table describes that backbone
(its class, and for ResNetV2 its stage depths; for a features_only ResNet its out_indices, stage
depths, block class, stem type and width and whether its shortcuts average-pool; for ConvStem its
convs) and HybridEmbed's own arguments.
"""
MODULES = ['vision_transformer_hybrid']


def _backbone(m):
    from torch import nn
    name = type(m).__name__
    d = {'class': name.lower()}
    if name == 'ResNetV2':
        d['layers'] = [len(s.blocks) for s in m.stages]
    elif name == 'Sequential' or name == 'Sequential'.lower():
        d['class'] = 'resnetv2_stem'
    elif name == 'FeatureListNet':
        d['class'] = 'resnet_features'
        d['layers'] = [len(getattr(m, f'layer{i}')) for i in range(1, 5) if hasattr(m, f'layer{i}')]
        d['out_indices'] = list(m.feature_info.out_indices)
        d['block'] = type(m.layer1[0]).__name__.lower()
        deep = isinstance(m.conv1, nn.Sequential)
        d['stem_type'] = 'deep' if deep else ''
        d['stem_width'] = m.conv1[0].out_channels if deep else 64
        d['avg_down'] = isinstance(m.layer2[0].downsample[0], nn.AvgPool2d)
    elif name == 'ConvStem':
        d['convs'] = [dict(out=c.conv.out_channels, kernel=c.conv.kernel_size[0], stride=c.conv.stride[0])
                      for c in m]
    return d


def serialize(arch, kwargs):
    from gen_tables import to_json
    kw = dict(kwargs)
    embed = kw.pop('embed_layer')
    args = to_json(kw)
    embed_kw = dict(embed.keywords)
    args['backbone'] = _backbone(embed_kw.pop('backbone'))
    args['embed_args'] = to_json(embed_kw)
    return args
