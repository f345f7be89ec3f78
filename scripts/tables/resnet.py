"""timm modules of the `resnet` family (src/graph/families/resnet.rs)."""
import pkgutil

MODULES = ['resnet']


def _pruned_widths(arch):
    """The output channels of every conv of a `pruned=True` architecture, as timm's
    `adapt_model_from_file` reads them from `timm/models/_pruned/<arch>.txt` (conv module -> width)."""
    text = pkgutil.get_data('timm.models', f'_pruned/{arch}.txt').decode('utf-8')
    widths = {}
    for item in text.strip().split('***'):
        key, shape = item.split(':')
        dims = [int(d) for d in shape.strip()[1:-1].split(',') if d.strip()]
        if key.endswith('.weight') and len(dims) == 4:
            widths[key[:-len('.weight')]] = dims[0]
    return widths


def serialize(arch, kwargs):
    from gen_tables import to_json
    args = to_json(kwargs)
    if args.get('pruned'):
        # Without weights the pruned widths are timm's pruning file; with weights, the weights'.
        args['pruned'] = _pruned_widths(arch)
    return args
