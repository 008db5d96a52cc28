"""Fill fuzz/corpus/ with the seed inputs for fuzz_reader.py.

The three committed torch-made checkpoints (tests/data) are copied as they are; the other
inputs are generated from them here, so that no other binary file needs committing:

- each zip seed rebuilt by Python's zipfile (another writer's layout: no alignment padding,
  no data descriptors);
- a training checkpoint around each parametrized seed's state dict: {"model": sd, "ema": the same
  sd shared through the memo, "optimizer": {"param_groups": [{"param_names": [...]}]}, "epoch": 3};
- an RVC-style file: {"weight": sd, "config": [...], "info": "...", "sr": "40k", "f0": 1};
- the legacy-format seed's main pickle wrapped the same way, in the legacy format;
- files torch.load reads by another route than they seem to need: path-configuration text, a
  protocol-0 pickle in text, a Git LFS pointer, a pre-1.6 tar.

Usage: python fuzz/make_corpus.py [CORPUS_DIR]   (default: fuzz/corpus next to this script)
"""

import io
import pickletools
import shutil
import struct
import sys
import tarfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / "tests" / "data"
SEEDS = ("parametrized.bin", "legacy.bin", "parametrized_legacy_format.bin")
WRAPPER_MEMO = 1_000_000  # memo index for the wrapped state dict: far above what the seeds use


def text(value):
    encoded = value.encode("utf-8")
    return b"X" + struct.pack("<I", len(encoded)) + encoded


def zip_records(data):
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return [(info.filename, archive.read(info)) for info in archive.infolist()]


def rebuild_zip(records):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, payload in records:
            archive.writestr(name, payload)
    return buffer.getvalue()


def body(pickle):
    """The opcodes of a protocol-2 pickle between PROTO and STOP: they push its root."""
    assert pickle[:2] == b"\x80\x02" and pickle[-1:] == b"."
    return pickle[2:-1]


def key_strings(pickle):
    """The state dict's keys: every string the pickle defines that looks like a parameter name."""
    names = []
    for opcode, arg, _ in pickletools.genops(pickle):
        if opcode.name == "BINUNICODE" and "." in arg and arg not in names:
            names.append(arg)
    return names


def training_checkpoint(pickle):
    state_dict = body(pickle) + b"r" + struct.pack("<I", WRAPPER_MEMO)  # LONG_BINPUT
    shared = b"j" + struct.pack("<I", WRAPPER_MEMO)  # LONG_BINGET
    param_names = b"](" + b"".join(text(name) for name in key_strings(pickle)) + b"e"
    optimizer = (b"}(" + text("param_groups") + b"](}(" + text("lr") + b"K\x01" + text("param_names")
                 + param_names + b"ue" + text("state") + b"}u")
    return (b"\x80\x02}(" + text("model") + state_dict + text("ema") + shared + text("optimizer") + optimizer
            + text("epoch") + b"K\x03u.")


def rvc_model(pickle):
    config = b"](" + b"".join(b"K" + bytes([n]) for n in (1, 2, 3, 4)) + text("40k") + b"e"
    return (b"\x80\x02}(" + text("weight") + body(pickle) + text("config") + config + text("info")
            + text("300epoch") + text("sr") + text("40k") + text("f0") + b"K\x01" + text("version")
            + text("v2") + b"u.")


def legacy_format_parts(data):
    """Split a legacy-format file into (before the main pickle, the main pickle, after it)."""
    stream = io.BytesIO(data)
    starts = []
    for _ in range(4):
        starts.append(stream.tell())
        for _ in pickletools.genops(stream):
            pass
    main_end = stream.tell()
    return data[:starts[3]], data[starts[3]:main_end], data[main_end:]


def safetensors_file(entries):
    """A .safetensors file as the safetensors library writes one: compact JSON padded with spaces to 8 bytes."""
    import json

    header, data = {}, b""
    for name, value in entries.items():
        if name == "__metadata__":
            header[name] = value
            continue
        dtype, shape, raw = value
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def tar_file(members):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def make(corpus):
    corpus = Path(corpus)
    corpus.mkdir(parents=True, exist_ok=True)
    made = []

    def put(name, data):
        (corpus / name).write_bytes(data)
        made.append(name)

    for name in SEEDS:
        shutil.copyfile(DATA / name, corpus / name)
        made.append(name)
    for name in ("parametrized.bin", "legacy.bin"):
        data = (DATA / name).read_bytes()
        records = zip_records(data)
        stem = name.split(".")[0]
        put(f"{stem}-zipfile.bin", rebuild_zip(records))
        pickle = next(payload for record, payload in records if record.endswith("/data.pkl"))
        for kind, wrap in (("training", training_checkpoint), ("rvc", rvc_model)):
            put(f"{stem}-{kind}.bin", rebuild_zip(
                [(record, wrap(pickle) if record.endswith("/data.pkl") else payload) for record, payload in records]))
    put("parametrized.safetensors", safetensors_file({
        "__metadata__": {"format": "pt"},
        "a.bias": ("F32", [2], bytes(8)),
        "a.parametrizations.weight.original0": ("F16", [2, 1, 1], bytes(4)),
        "a.parametrizations.weight.original1": ("F16", [2, 3, 1], bytes(range(12))),
        "d.parametrizations.weight.original": ("F32", [2, 3], bytes(24)),
        "d.parametrizations.weight.0._u": ("F32", [2], bytes(8)),
        "d.parametrizations.weight.0._v": ("F32", [3], bytes(12)),
    }))
    # Files torch.load reads by another route than the one they look like: texts it reads as a
    # pickle from byte 0, an LFS pointer, a tar (the pre-1.6 format), so mutations explore
    # each route's edge.
    put("path-configuration.pth", b"./foo-1.0-py3.egg\nimport _virtualenv\n/usr/lib/python3/dist-packages\n")
    put("protocol-0-text.pth", b"I1\n0(dp0\nS'key'\np1\nL5L\nsS'x'\ng1\ns.")
    put("lfs-pointer.pth", b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"4d7a" * 16
        + b"\nsize 12345\n")
    put("tar.pth", tar_file([("storages", b"\x80\x02K\x00."), ("tensors", b"\x80\x02K\x00."),
                             ("pickle", b"\x80\x02}q\x00.")]))
    before, pickle, after = legacy_format_parts((DATA / "parametrized_legacy_format.bin").read_bytes())
    for kind, wrap in (("training", training_checkpoint), ("rvc", rvc_model)):
        put(f"parametrized_legacy_format-{kind}.bin", before + wrap(pickle) + after)
    return made


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else HERE / "corpus"
    names = make(target)
    print(f"{len(names)} inputs in {target}: {', '.join(names)}")
