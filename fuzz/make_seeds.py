#!/usr/bin/env python3
"""Writes the committed fuzz seeds (fuzz/seeds/<target>/) from the test fixtures.

Standard library only. The image seeds (fuzz/seeds/image/) are 24x16 and 9x7 reductions of
tests/fixtures/images made once with the `image` crate; they are not regenerated here.
Run from anywhere: python3 fuzz/make_seeds.py [target ...]   (default: every target)
"""
import json
import pathlib
import shutil
import struct
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
SEEDS = ROOT / "fuzz" / "seeds"
MODELS = ROOT / "tests" / "fixtures" / "models"


ONLY = set(sys.argv[1:])


def reset(target):
    """The target's emptied seed folder; a scratch folder when the command line names others."""
    if ONLY and target not in ONLY:
        return pathlib.Path(tempfile.mkdtemp())
    d = SEEDS / target
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    return d


def st_build(tensors, metadata=None, prefix=""):
    """A safetensors file from (name, dtype, shape, data) tuples, offsets assigned in order."""
    header, data, off = {}, b"", 0
    for name, dtype, shape, raw in tensors:
        header[prefix + name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(raw)]}
        data += raw
        off += len(raw)
    if metadata is not None:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(h)) + h + data


def st_read(path):
    b = path.read_bytes()
    n = struct.unpack("<Q", b[:8])[0]
    header = json.loads(b[8 : 8 + n])
    meta = header.pop("__metadata__", None)
    items = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0])
    out = [(k, v["dtype"], v["shape"], b[8 + n + v["data_offsets"][0] : 8 + n + v["data_offsets"][1]]) for k, v in items]
    return out, meta


def reduced(path, limit_bytes=2048):
    """The fixture's small tensors only (real names, dtypes and data), re-packed."""
    tensors, meta = st_read(path)
    keep = [t for t in tensors if len(t[3]) <= 256][:12]
    while sum(len(t[3]) for t in keep) > limit_bytes:
        keep.pop()
    return st_build(keep, meta)


def main():
    fixtures = sorted(p for p in MODELS.iterdir() if (p / "model.safetensors").exists())

    d = reset("spec")
    specs = [
        "resnet50", "resnet50.a1_in1k", "vit_base_patch16_224.augreg2_in21k_ft_in1k",
        "local:/models/resnet50", "local-dir:relative/dir", "local:/m/a b#frag?q=1@x:y",
        "hf-hub:timm/resnet50.a1_in1k", "hf_hub:timm/vit@v1.0", "hf-hub:org/name@refs/pr/1",
        "hf-hub:timm/vit@", "hf-hub:a/../b", "C:\\models\\r50", "s3://bucket/model",
        "timm/resnet50", "", "   ", "res net", "local:", "x.-",
    ]
    for i, s in enumerate(specs):
        (d / f"spec-{i:02}").write_text(s)

    d = reset("config")
    for p in fixtures:
        (d / f"{p.name}.json").write_bytes((p / "config.json").read_bytes())
    extra = {
        "flat-legacy": {"architecture": "resnet18", "num_classes": 2, "num_features": 512,
                        "input_size": [3, 100, 120], "labels": ["cat", "dog"]},
        "label-dict": {"architecture": "x", "num_classes": 4, "pretrained_cfg": {},
                       "label_names": {"0": "zero", "3": "three"}, "label_descriptions": {"zero": "0"}},
        "model-args": {"architecture": "vit", "num_classes": 5, "model_args": {"in_chans": 1, "img_size": [96, 64]},
                       "pretrained_cfg": {"input_size": [3, 224, 224], "fixed_input_size": True, "mean": 0.5, "std": [0.5],
                                          "test_input_size": [3, 256, 256], "test_crop_pct": 1.0, "crop_mode": "squash",
                                          "interpolation": "lanczos", "label_offset": 1, "pool_size": [7, 7]}},
        "wrapper": {"architecture": "resnet18", "architectures": ["TimmWrapperForImageClassification"],
                    "model_type": "timm_wrapper", "model_args": None, "num_classes": 5,
                    "pretrained_cfg": {"input_size": [3, 64, 64]}},
    }
    for name, cfg in extra.items():
        (d / f"{name}.json").write_text(json.dumps(cfg))

    d = reset("safetensors")
    f32 = struct.pack("<4f", 1.0, -2.0, 0.5, float("inf"))
    for p in fixtures[:4]:
        (d / f"{p.name}-small.safetensors").write_bytes(reduced(p / "model.safetensors"))
    (d / "empty-header.safetensors").write_bytes(st_build([]))
    (d / "metadata-only.safetensors").write_bytes(st_build([], {"format": "pt"}))
    (d / "dtypes.safetensors").write_bytes(st_build([
        ("a", "F32", [2, 2], f32), ("b", "F16", [2], b"\x00\x3c\x00\xc0"), ("c", "BF16", [1, 2], b"\x80\x3f\x00\x40"),
        ("d", "F64", [1], struct.pack("<d", 3.25)), ("e", "I64", [], struct.pack("<q", 7)),
        ("f", "I32", [1], b"\x01\0\0\0"), ("g", "I16", [1], b"\x01\0"), ("h", "I8", [2], b"\x01\xff"),
        ("i", "U8", [1], b"\x05"), ("j", "BOOL", [1], b"\x01"), ("k", "F32", [0, 3], b""),
    ], {"format": "pt"}))
    (d / "transformers-prefix.safetensors").write_bytes(st_build([("fc.weight", "F32", [2, 2], f32)], prefix="timm_model."))

    d = reset("onnx_scan")
    for name in ["test_resnet", "test_efficientnet", "test_resnet-external"]:
        (d / f"{name}.onnx").write_bytes((MODELS / name / "model.onnx").read_bytes())

    d = reset("folder")
    for p in fixtures:
        cfg = (p / "config.json").read_bytes()
        # One config per fixture, so every native family is seeded. Small tensors only: a whole
        # fixture's weights (~300 KB) would slow every execution tenfold; the target builds each
        # family's graph from seeded random weights too, so the whole graph is still built.
        weights = reduced(p / "model.safetensors")
        (d / f"{p.name}.bin").write_bytes(struct.pack("<I", len(cfg)) + cfg + weights)

    hub_seeds(reset("hub_response"), MODELS / "test_resnet")


SEP = b"\0SEP\0"


def hub_seeds(d, fixture):
    """Response sequences for hub_response: HEAD config.json, HEAD model.safetensors, GET
    config.json, GET model.safetensors, as the Hub answers them (a CDN redirect for the LFS file),
    and variations the client must refuse or survive."""
    import hashlib
    cfg = (fixture / "config.json").read_bytes()
    st = reduced(fixture / "model.safetensors")
    commit = hashlib.sha1(b"fuzz").hexdigest()
    git = hashlib.sha1(b"blob %d\0" % len(cfg) + cfg).hexdigest()
    lfs = hashlib.sha256(st).hexdigest()

    def resp(status, headers, body=b""):
        head = "".join(f"{k}: {v}\r\n" for k, v in headers)
        return f"HTTP/1.1 {status}\r\n{head}\r\n".encode() + body

    head_cfg = resp("200 OK", [("X-Repo-Commit", commit), ("ETag", f'"{git}"'), ("Content-Length", len(cfg))])
    head_st = resp("302 Found", [("X-Repo-Commit", commit), ("X-Linked-Etag", f'"{lfs}"'),
                                 ("X-Linked-Size", len(st)), ("Location", "https://cdn-lfs.example/x/model.safetensors"),
                                 ("Content-Length", 0)])
    get_cfg = resp("200 OK", [("Content-Length", len(cfg)), ("Connection", "close")], cfg)
    get_st = resp("200 OK", [("Content-Length", len(st)), ("Connection", "close")], st)
    seqs = {
        "ok": [head_cfg, head_st, get_cfg, get_st],
        "same-origin-redirect": [resp("307 Temporary Redirect", [("Location", "/timm/renamed/resolve/main/config.json")]),
                                 head_cfg, head_st, get_cfg, get_st],
        "truncated-weights-then-resume": [head_cfg, head_st, get_cfg,
                                          resp("200 OK", [("Content-Length", len(st))], st[: len(st) // 2]),
                                          resp("206 Partial Content", [("Content-Length", len(st) - len(st) // 2),
                                                                       ("Content-Range", f"bytes {len(st) // 2}-{len(st) - 1}/{len(st)}")],
                                               st[len(st) // 2:])],
        "wrong-bytes": [head_cfg, head_st, get_cfg, get_st[:-4] + b"XXXX"],
        "chunked": [head_cfg, head_st, get_cfg,
                    resp("200 OK", [("Transfer-Encoding", "chunked")], b"%x\r\n" % len(st) + st + b"\r\n0\r\n\r\n")],
        "repo-not-found": [resp("404 Not Found", [("X-Error-Code", "RepoNotFound")])],
        "no-weights": [head_cfg, resp("404 Not Found", [("X-Repo-Commit", commit)]), resp("404 Not Found", [("X-Repo-Commit", commit)])],
        "pickle-only": [head_cfg, resp("404 Not Found", [("X-Repo-Commit", commit)]),
                        resp("200 OK", [("X-Repo-Commit", commit), ("ETag", f'"{lfs}"'), ("Content-Length", 10)])],
        "unauthorized": [resp("401 Unauthorized", [("X-Error-Code", "GatedRepo")])],
        "not-a-hub": [resp("200 OK", [("Content-Length", 2)], b"{}")],
        "huge-size": [head_cfg, resp("200 OK", [("X-Repo-Commit", commit), ("X-Linked-Etag", f'"{lfs}"'), ("X-Linked-Size", 1 << 50)])],
        "redirect-loop": [resp("302 Found", [("Location", "/loop")])] * 12,
        "garbage": [b"\x00\xffnot http at all\r\n\r\n"],
    }
    for name, seq in seqs.items():
        (d / f"{name}.bin").write_bytes(SEP.join(seq))


if __name__ == "__main__":
    main()
