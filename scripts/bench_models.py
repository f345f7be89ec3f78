#!/usr/bin/env python3
"""Writes the benchmark's models (run by scripts/bench inside the generator venv, .venv-gen/):

    .bench/models/<name>/        config.json + model.safetensors, exactly what timm's save_for_hf writes
    .bench/onnx/<name>.onnx      timm's own ONNX export (timm.utils.onnx.onnx_export, TorchScript
                                 exporter, weights embedded) for the ONNX Runtime Python peer
    .bench/ref/<name>/           input.f32 (batch 2) and timm's logits.f32, to check every contender
                                 computes the same function before its speed means anything

Architectures are built at timm's default arguments (full size: 224x224, 1000 classes) with random
weights made the way the project's fixture generator makes them (scripts/fixtures/common.py:
constant tensors randomised, BatchNorm statistics calibrated), so the numbers a model computes are
realistic (no all-zero activations that a kernel could shortcut). The real EfficientNet-Lite0 folder
from scripts/fetch-demo-model is benchmarked as it is; only its ONNX export and reference are made.

Idempotent: a model whose files are all present (and were made by the same timm/torch) is skipped.
The ONNX files live outside the model folders on purpose: a folder with model.onnx would make libtimm
run that file instead of its native graph.
"""
import argparse
import json
import shutil
import sys
import time
import warnings
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
REPO = SCRIPTS.parent
sys.path.insert(0, str(SCRIPTS))

# name -> timm architecture. The name is the folder name; the demo model keeps its pretrained tag.
DEFAULT_MODELS = ['resnet50', 'efficientnet_b0', 'vit_small_patch16_224', 'convnext_tiny',
                  'mobilenetv3_large_100',
                  # Measured by the OpenVINO rows only (scripts/bench_run.py OV_MODELS).
                  'vit_base_patch16_224']
DEMO = 'tf_efficientnet_lite0.in1k'
REF_BATCH = 2


def stamp_text():
    import timm
    import torch
    return json.dumps({'timm': timm.__version__, 'torch': torch.__version__.split('+')[0], 'format': 1})


def complete(bench, name, stamp):
    folder = bench / 'models' / name
    files = [folder / 'config.json', folder / 'model.safetensors', bench / 'onnx' / f'{name}.onnx',
             bench / 'ref' / name / 'input.f32', bench / 'ref' / name / 'logits.f32',
             bench / 'ref' / name / 'stamp.json']
    return all(f.is_file() for f in files) and (bench / 'ref' / name / 'stamp.json').read_text() == stamp


def export_and_reference(model, name, bench, stamp, log):
    """timm's ONNX export with weights embedded, checked against timm on image-like inputs."""
    import numpy as np
    import onnxruntime as ort
    import torch
    from timm.utils.onnx import onnx_export
    from fixtures.common import smooth_images, write_f32

    cfg = model.pretrained_cfg
    x = smooth_images(REF_BATCH, tuple(cfg['input_size']), cfg['mean'], cfg['std'],
                      torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits = model(x)
    onnx_dir = bench / 'onnx'
    onnx_dir.mkdir(parents=True, exist_ok=True)
    tmp = onnx_dir / f'.{name}.onnx.tmp'
    # Dynamic batch (timm's default), input/output names as timm's onnx_export.py writes them.
    try:
        onnx_export(model, str(tmp), example_input=x, check=True)
    except TypeError as e:
        # Some attention modules (eva's, with a rotary embedding) pass tensors the TorchScript
        # tracer cannot hand to F.scaled_dot_product_attention. timm's attention modules all keep
        # the explicit softmax(q k^T) v path behind `fused_attn`; exporting that computes the same.
        fused = [m for m in model.modules() if getattr(m, 'fused_attn', False)]
        if not fused:
            raise
        log(f'  {name}: export with fused attention fails ({str(e).splitlines()[0][:120]}); '
            f'exporting with fused_attn off in {len(fused)} modules')
        for m in fused:
            m.fused_attn = False
        onnx_export(model, str(tmp), example_input=x, check=True)
    sess = ort.InferenceSession(str(tmp), providers=['CPUExecutionProvider'])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    diff = float(np.max(np.abs(got - logits.numpy())))
    if diff > 1e-3 * max(1.0, float(logits.abs().max())):
        raise SystemExit(f'error: {name}: the ONNX export differs from timm by {diff:.3g}')
    tmp.replace(onnx_dir / f'{name}.onnx')
    ref = bench / 'ref' / name
    ref.mkdir(parents=True, exist_ok=True)
    write_f32(ref / 'input.f32', x)
    write_f32(ref / 'logits.f32', logits)
    (ref / 'stamp.json').write_text(stamp)
    log(f'  {name}: onnx export max|diff| vs timm {diff:.2g}')


def make_random(arch, bench, stamp, log):
    import torch
    import timm
    from fixtures.common import calibrate_batchnorm, clean_dir, randomize_constants

    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False)
    gen = torch.Generator().manual_seed(1)
    cfg = model.pretrained_cfg
    randomize_constants(model, gen)
    calibrate_batchnorm(model, tuple(cfg['input_size']), cfg['mean'], cfg['std'], gen)
    model.eval()
    folder = bench / 'models' / arch
    clean_dir(folder)
    timm.models.save_for_hf(model, str(folder), safe_serialization=True)
    # Reload through timm's own loader, as the benchmark's timm peer does, so the exported ONNX and
    # the reference come from exactly the folder's weights.
    model = timm.create_model(f'local-dir:{folder}', pretrained=True).eval()
    export_and_reference(model, arch, bench, stamp, log)


def make_demo(bench, stamp, log):
    import timm
    src = REPO / '.models' / DEMO
    if not (src / 'model.safetensors').is_file():
        raise SystemExit(f'error: {src} is missing; run scripts/fetch-demo-model')
    dst = bench / 'models' / DEMO
    dst.mkdir(parents=True, exist_ok=True)
    for f in ('config.json', 'model.safetensors'):
        shutil.copyfile(src / f, dst / f)
    model = timm.create_model(f'local-dir:{dst}', pretrained=True).eval()
    export_and_reference(model, DEMO, bench, stamp, log)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--out', default=str(REPO / '.bench'), help='benchmark folder (default .bench)')
    ap.add_argument('--models', default=','.join(DEFAULT_MODELS + [DEMO]),
                    help=f'comma-separated timm architectures, and/or {DEMO} for the real demo model')
    ap.add_argument('--force', action='store_true', help='rewrite models that are already there')
    args = ap.parse_args()
    warnings.filterwarnings('ignore')  # exporter tracer chatter
    import torch
    torch.set_num_threads(max(1, torch.get_num_threads()))
    bench = Path(args.out).resolve()
    stamp = stamp_text()
    for name in [m.strip() for m in args.models.split(',') if m.strip()]:
        if not args.force and complete(bench, name, stamp):
            print(f'{name}: up to date')
            continue
        t0 = time.time()
        print(f'{name}: writing ...', flush=True)
        if name == DEMO:
            make_demo(bench, stamp, print)
        else:
            make_random(name, bench, stamp, print)
        print(f'  done in {time.time() - t0:.1f}s', flush=True)


if __name__ == '__main__':
    main()
