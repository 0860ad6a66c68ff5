"""The C++ SDK (cpp/) against the Python runtime it must equal, through its C API (ctypes):

- pixels: its input tensor equals `Preprocess`'s bit for bit over a generated corpus (every PNG colour type and depth,
  baseline/progressive/grey JPEG, 1x1 to 4000x3000 and strips, odd and even crop margins, per-channel and per-pixel
  means, raw HxW[xC] arrays), and every difference that remains is listed and tested as such;
- the manifest: the same documents refused for the same field (mutations of a valid manifest, field by field; with
  docs/manifest.schema.json where it exists, the schema's verdict too), the same bundles refused (digest, paths);
- the variant registry and `auto`'s choice equal Python's; logits within 1e-5 of Python's OpenVINO backend; the
  example app's --json lines equal Python's predictions.

Skipped with the reason when the library is not built (`make cpp`) or, for inference, when it or Python lacks OpenVINO.
"""

from __future__ import annotations

import copy
import json
import os
import re
import secrets
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import PIL
import pytest
from cpp_corpus import SIZES, STRIPS, encode, jpeg_cases, pattern, png_bytes, png_cases, specs
from PIL import Image

from resnet_deploy.runtime import BundleError, Predictor, ResnetDeployError, read_manifest, variants
from resnet_deploy.runtime import backend as rt_backend
from resnet_deploy.runtime import manifest as rt_manifest
from resnet_deploy.runtime.autotune import machine_key, record_order
from resnet_deploy.runtime.cache import CACHE_ENV
from resnet_deploy.runtime.machine import BF16_FLAGS, INT8_DOT_FLAGS, ISA_CAPS, cpu_flags, cpu_has_bf16, usable_flags
from resnet_deploy.runtime.openvino_backend import ov_installed
from resnet_deploy.runtime.predictor import choose_backend
from resnet_deploy.runtime.preprocess import Preprocess

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "cpp" / "python"))
from resnet_deploy_c import CError, CLib, library_path  # noqa: E402

LIB = library_path()
pytestmark = pytest.mark.skipif(not LIB.exists(), reason=f"the C++ SDK is not built: {LIB} is missing (`make cpp`)")
SCHEMA = ROOT / "docs" / "manifest.schema.json"
# Pillow 13 runs the vertical pass of a resize first when the height shrinks by more than twice as many pixels as the
# width; earlier versions always ran the horizontal pass first, and the two orders round differently (one grey level
# in some pixels). The SDK follows Pillow 13, so with an older Pillow those resizes differ by one level at most.
PILLOW_13 = int(PIL.__version__.split(".")[0]) >= 13


@pytest.fixture(scope="module")
def lib() -> CLib:
    return CLib(LIB)


@pytest.fixture(scope="module")
def has_ov(lib: CLib) -> None:
    if not lib.registry()["openvino"]:
        pytest.skip("this build of the C++ SDK has no OpenVINO backend (OpenVINO_DIR was not set at configure)")
    if not ov_installed():
        pytest.skip("openvino is not installed for Python (the `openvino` extra), so there is nothing to compare with")


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))  # both runtimes: never the user's cache


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from test_runtime import _build_bundle  # the tiny bundle every runtime test uses (fp32, fp16, both int8)

    return _build_bundle(tmp_path_factory.mktemp("cpp") / "bundle")


def _python(spec: Preprocess, image) -> np.ndarray | str:
    try:
        return spec(image)
    except ResnetDeployError as e:
        return f"refused: {e}"


def _cpp(pre, image) -> np.ndarray | str:
    try:
        return pre.encoded(image) if isinstance(image, bytes) else pre.pixels(image)
    except CError as e:
        assert e.status == "image" and "\n" not in str(e), (e.status, str(e))
        return f"refused: {e}"


def _tolerance(spec: Preprocess) -> float:
    """0, or one grey level in the tensor's units where Pillow is older than 13 (see PILLOW_13)."""
    return 0.0 if PILLOW_13 else 1.0001 / 255 / min(spec.std)


def _compare(lib: CLib, cases: list[tuple[str, Preprocess, str, object]]) -> list[str]:
    """(spec name, spec, image name, bytes or array) -> the cases where C++ and Python differ."""
    found = []
    handles = {}
    for spec_name, spec, name, image in cases:
        pre = handles.setdefault(spec_name, lib.preprocessor(spec.to_dict()))
        want, got = _python(spec, image), _cpp(pre, image)
        if isinstance(want, str) or isinstance(got, str):
            if isinstance(want, str) != isinstance(got, str):
                found.append(f"{spec_name} / {name}: Python {str(want)[:120]!r}, C++ {str(got)[:120]!r}")
            continue
        worst = float(np.abs(want - got).max()) if want.shape == got.shape else float("inf")
        if worst > _tolerance(spec):
            found.append(f"{spec_name} / {name}: largest difference {worst:.3g} in {(want != got).sum()} values")
    for pre in handles.values():
        pre.close()
    return found


# ------------------------------------------------------------------------------------------------------------ pixels
@pytest.mark.filterwarnings("ignore:Palette images with Transparency")  # PIL's advice, not an error
def test_pngs_of_every_colour_type_and_depth_give_pythons_pixels(lib: CLib) -> None:
    seed = secrets.randbits(32)
    rng = np.random.default_rng(seed)
    cases = []
    for spec_name, spec in specs(rng).items():
        for h, w in SIZES[:-1]:  # the camera frame has its own test
            cases += [(spec_name, spec, f"{name} {w}x{h}", data) for name, data in png_cases(rng, h, w)]
    assert len(cases) > 1500
    assert _compare(lib, cases) == [], f"seed {seed}"


def test_jpegs_baseline_progressive_and_grey_give_pythons_pixels(lib: CLib) -> None:
    seed = secrets.randbits(32)
    rng = np.random.default_rng(seed)
    cases = []
    for spec_name, spec in specs(rng).items():
        for h, w in SIZES[:-1]:
            cases += [(spec_name, spec, f"{name} {w}x{h}", data) for name, data in jpeg_cases(rng, h, w)]
    assert _compare(lib, cases) == [], f"seed {seed}"


def test_camera_frames_and_strips_give_pythons_pixels(lib: CLib) -> None:
    """4000x3000 (PNG and JPEG) and strips up to 100,000 pixels long, where Python resizes only the part the centre
    crop keeps (PIL's resize with a box) or refuses a resize over MAX_IMAGE_PIXELS."""
    seed = secrets.randbits(32)
    rng = np.random.default_rng(seed)
    chosen = {k: v for k, v in specs(rng).items() if k in ("imagenet", "cifar_like", "fashion_per_pixel",
                                                           "resize_only")}
    h, w = SIZES[-1]
    frame = pattern(rng, h, w, 3)
    images = [("jpeg 4000x3000", encode(Image.fromarray(frame), "JPEG", quality=90)),
              ("png 4000x3000", png_bytes(frame, 2, 8))]
    for sh, sw in STRIPS:
        images.append((f"grey8 {sw}x{sh}", png_bytes(pattern(rng, sh, sw, 1), 0, 8)))
        images.append((f"rgb8 {sw}x{sh}", png_bytes(pattern(rng, sh, sw, 3), 2, 8)))
        if max(sh, sw) <= 65500:
            images.append((f"jpeg {sw}x{sh}", encode(Image.fromarray(pattern(rng, sh, sw, 3)), "JPEG")))
    cases = [(sn, spec, name, data) for sn, spec in chosen.items() for name, data in images]
    assert _compare(lib, cases) == [], f"seed {seed}"


@pytest.mark.parametrize("shape", [(37, 50), (37, 50, 1), (37, 50, 3), (37, 50, 4), (1, 1, 3), (300, 7, 4)])
def test_raw_pixels_give_pythons_pixels(lib: CLib, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng()
    cases = [(sn, spec, f"array {shape}", rng.integers(0, 256, shape, dtype=np.uint8))
             for sn, spec in specs(rng).items()]
    assert _compare(lib, cases) == []


def test_one_grey_level_of_difference_would_be_seen(lib: CLib) -> None:
    """The comparison is exact: the same image with one pixel changed by one level is a difference."""
    spec = specs(np.random.default_rng())["cifar_like"]
    a = pattern(np.random.default_rng(), 36, 36, 3)
    b = a.copy()
    b[18, 18, 0] ^= 1
    with lib.preprocessor(spec.to_dict()) as pre:
        assert np.array_equal(pre.pixels(a), spec(a))
        assert not np.array_equal(pre.pixels(b), spec(a))


# ------------------------------------------------------------------------------------------------------ bad images
def _png(rng: np.random.Generator) -> bytes:
    return png_bytes(pattern(rng, 40, 30, 3), 2, 8)


def _jpeg(rng: np.random.Generator, **options) -> bytes:
    return encode(Image.fromarray(pattern(rng, 40, 30, 3)), "JPEG", **options)


def _header_only_png(w: int, h: int) -> bytes:
    """A PNG whose header says w x h, with an empty image-data chunk."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


BAD_IMAGES = {
    "empty": lambda rng: b"",
    "garbage": lambda rng: rng.integers(0, 256, 1000, dtype=np.uint8).tobytes(),
    "png signature only": lambda rng: _png(rng)[:8],
    "png cut in its header": lambda rng: _png(rng)[:20],
    "png cut in its pixels": lambda rng: _png(rng)[:-40],
    "png with garbage pixels": lambda rng: _png(rng)[:41] + rng.integers(0, 256, 300, dtype=np.uint8).tobytes(),
    "jpeg cut in its header": lambda rng: _jpeg(rng)[:100],
    "jpeg cut in its scan": lambda rng: _jpeg(rng)[:-200],
    "progressive jpeg cut": lambda rng: _jpeg(rng, progressive=True)[:-200],
    # under PIL's own limit (178,956,970 pixels, where its decompression-bomb message comes first), over ours
    "png over the pixel limit": lambda rng: _header_only_png(8000, 4000),
}


@pytest.mark.parametrize("name", list(BAD_IMAGES))
def test_bad_images_are_refused_by_both_in_one_line(lib: CLib, name: str) -> None:
    data = BAD_IMAGES[name](np.random.default_rng())
    spec = specs(np.random.default_rng())["cifar_like"]
    want = _python(spec, data)
    with lib.preprocessor(spec.to_dict()) as pre:
        got = _cpp(pre, data)
    assert isinstance(want, str) and isinstance(got, str), (want, got)
    if name == "empty":
        assert want == got == "refused: empty image: 0 bytes"
    elif name == "png over the pixel limit":
        assert want == got, (want, got)
    else:
        assert got.startswith(f"refused: not a readable image: image of {len(data)} bytes"), got


def test_the_pixel_limits_say_what_python_says(lib: CLib) -> None:
    spec = specs(np.random.default_rng())["cifar_like"]
    data = BAD_IMAGES["png over the pixel limit"](None)  # an 8000 x 4000 header
    with lib.preprocessor(spec.to_dict()) as pre:
        assert _cpp(pre, data) == _python(spec, data) == (
            f"refused: image of {len(data)} bytes is 8000x4000 = 32,000,000 pixels, over the limit of 24,000,000 "
            "pixels and 65,535 per side; scale it down first")
        side = _header_only_png(70000, 1)
        assert _cpp(pre, side) == _python(spec, side) == (
            f"refused: image of {len(side)} bytes is 70000x1 = 70,000 pixels, over the limit of 24,000,000 "
            "pixels and 65,535 per side; scale it down first")
        strip = np.zeros((1, 60000), np.uint8)  # no crop step: the whole resize would be 33 x 1,980,000
        wide = Preprocess((33, 33), 1, 33, None, (0.0,), (1.0,))
        with lib.preprocessor(wide.to_dict()) as pre2:
            assert _cpp(pre2, strip) == _python(wide, strip) == (
                "refused: image of 60000x1 would be resized to 1980000x33, over the limit of 24,000,000 pixels; "
                "crop it to a less elongated shape first")
        for shape in ((10, 10, 2), (10, 10, 5)):
            a = np.zeros(shape, np.uint8)
            assert _cpp(pre, a) == _python(spec, a) == (
                f"refused: image array has shape {shape}; expected HxW, HxWx1, HxWx3 or HxWx4 (uint8)")


def test_files_cut_at_their_end_get_pythons_verdict(lib: CLib) -> None:
    """A PNG without its end chunk or without its image data's checksum: PIL stops once it has every row, and so does
    the SDK. A JPEG without its end marker: refused by both when the decoder still waits for the last rows' data,
    read by both otherwise."""
    rng = np.random.default_rng()
    jpeg, png = _jpeg(rng), _png(rng)
    assert jpeg.endswith(b"\xff\xd9") and png.endswith(b"IEND\xaeB`\x82")
    cases = [(name, data) for name, data in (("jpeg without EOI", jpeg[:-2]), ("png without IEND", png[:-12]),
                                             ("png without IDAT's CRC", png[:-16]))]
    spec = specs(rng)["cifar_like"]
    assert _compare(lib, [("cifar_like", spec, name, data) for name, data in cases]) == []
    for _, data in cases[1:]:
        assert isinstance(_python(spec, data), np.ndarray)


@pytest.mark.filterwarnings("ignore:Palette images with Transparency")
def test_damaged_files_get_pythons_verdict(lib: CLib) -> None:
    """Bytes changed at random in PNGs of every kind and in JPEGs: never a crash, a one-line refusal when refused,
    and the same verdict as Python's, and the same pixels, in nearly every case (the exceptions are the differences
    below: checksums and cuts inside a PNG's image data, and libjpeg-turbo 2.1 against PIL's 3.x recovering from
    damaged progressive scans)."""
    seed = secrets.randbits(32)
    rng = np.random.default_rng(seed)
    spec = specs(rng)["cifar_like"]
    base = list(png_cases(rng, 30, 40)) + list(jpeg_cases(rng, 30, 40))
    same = 0
    with lib.preprocessor(spec.to_dict()) as pre:
        for i in range(1500):
            data = bytearray(base[i % len(base)][1])
            for _ in range(1 + i % 4):
                data[int(rng.integers(len(data)))] = int(rng.integers(256))
            want, got = _python(spec, bytes(data)), _cpp(pre, bytes(data))  # _cpp checks status and one line
            same += (isinstance(want, str) and isinstance(got, str)) or (
                isinstance(want, np.ndarray) and isinstance(got, np.ndarray) and np.array_equal(want, got))
    assert same >= 0.99 * 1500, f"seed {seed}: {same} of 1500"


# The differences that remain, each tested so that it is known rather than found: what Python reads and C++ refuses.
def test_differences_formats_other_than_png_and_jpeg(lib: CLib) -> None:
    """Python decodes BMP, GIF, TIFF, WebP and PPM too; the SDK decodes PNG and JPEG and names the others (an app
    decodes them itself and passes pixels)."""
    spec = specs(np.random.default_rng())["cifar_like"]
    im = Image.fromarray(pattern(np.random.default_rng(), 40, 30, 3))
    with lib.preprocessor(spec.to_dict()) as pre:
        for fmt, name in (("BMP", "BMP"), ("GIF", "GIF"), ("TIFF", "TIFF"), ("WEBP", "WEBP"), ("PPM", "PPM")):
            data = encode(im, fmt)
            assert isinstance(_python(spec, data), np.ndarray)
            assert _cpp(pre, data) == (f"refused: not a readable image: image of {len(data)} bytes (a {name} image: "
                                       "the C++ SDK decodes PNG and JPEG; decode it in the app and pass its pixels)")


def _two_idat_png(rng: np.random.Generator) -> tuple[bytes, int]:
    """A PNG whose compressed pixels are split into two IDAT chunks, and the offset of the first chunk's CRC."""
    raw = b"".join(b"\x00" + bytes(row) for row in pattern(rng, 40, 30, 3).reshape(40, -1))
    z = zlib.compress(raw)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    head = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 30, 40, 8, 2, 0, 0, 0))
    first = chunk(b"IDAT", z[:len(z) // 2])
    return head + first + chunk(b"IDAT", z[len(z) // 2:]) + chunk(b"IEND", b""), len(head) + len(first) - 4


def test_differences_cmyk_jpegs_and_damaged_png_image_data(lib: CLib) -> None:
    """CMYK JPEGs: PIL converts them, the SDK refuses them. PNG image data: PIL checks no checksum of it and reads
    what the compressed stream gives until it has every row; libpng checks each image-data chunk's checksum and needs
    the compressed stream's own (its last 4 bytes). So a PNG with a damaged checksum in an image-data chunk before the
    last, or cut inside its last 20 bytes' compressed part, is read by Python and refused by the SDK."""
    rng = np.random.default_rng()
    spec = specs(rng)["cifar_like"]
    cmyk = encode(Image.fromarray(pattern(rng, 40, 30, 3)).convert("CMYK"), "JPEG")
    png, crc_at = _two_idat_png(rng)
    damaged = png[:crc_at] + bytes([png[crc_at] ^ 0xFF]) + png[crc_at + 1:]
    cut = _png(rng)[:-20]  # IEND, the IDAT chunk's CRC and the zlib stream's Adler-32
    with lib.preprocessor(spec.to_dict()) as pre:
        assert np.array_equal(_python(spec, png), _cpp(pre, png))
        assert isinstance(_python(spec, cmyk), np.ndarray)
        assert "a JPEG with 4 components (CMYK/YCCK)" in _cpp(pre, cmyk)
        assert isinstance(_python(spec, damaged), np.ndarray)
        assert _cpp(pre, damaged).endswith("(IDAT: CRC error)")
        assert isinstance(_python(spec, cut), np.ndarray)
        assert _cpp(pre, cut).endswith("(image file is truncated)")


# -------------------------------------------------------------------------------------------------------- manifest
def _leaves(d, path=()):
    """Every (path, value) of a JSON document, containers included."""
    yield path, d
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            yield from _leaves(v, (*path, i))


def _set(d, path, value):
    d = copy.deepcopy(d)
    target = d
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return d


_DELETE = object()
# Values every field is set to in turn: other types, bounds, huge and fractional numbers, empty and long strings,
# names that are not identifiers.
VALUES = [None, True, False, 0, 1, -1, 3, 1.0, 3.0, 0.5, 4096, 4097, 2**53, -(2**63), "", "x", "a" * 65, "L", "RGB",
          "in put", "x\n", "_x", "9x", "a.b-c", [], [1], [1, 2], {}, {"a": 1}, _DELETE]
PATHS = ["model.onnx", "../model.onnx", "/etc/passwd", "a//b", "./model.onnx", "model.onnx/", "C:model.onnx",
         "a\\b", "a/../b", "x\u0000y", ".", "..", "d" * 256, "é" * 255, "reports/a.onnx", "sub/model.onnx"]


def _mutations(doc: dict) -> list[tuple[str, dict]]:
    out = []
    for path, _ in _leaves(doc):
        if not path or len(path) > 6:
            continue
        if path[0] == "preprocess" and path[1:2] == ("mean",) and len(path) > 2:
            continue  # covered by the whole-list values below
        if (path[0] in ("versions", "export_args", "source") and len(path) > 2) or "info" in path[3:4] or (
                path[0] in ("files", "classes") and len(path) > 1 and path[1] > 0):
            continue  # inside free-form objects (the object itself is changed); later files and classes are alike
        for v in VALUES:
            out.append((f"{'.'.join(map(str, path))} = {v if v is not _DELETE else '<deleted>'!r}", _set(doc, path, v)))
    for p in PATHS:
        out.append((f"files[0].path = {p!r}", _set(doc, ("files", 0, "path"), p)))
    for mean in ([[0.5] * 32] * 32, [[[0.5] * 32] * 32] * 3, [[[0.5] * 31] * 32] * 3, [0.5, [0.5], 0.5],
                 [[[[0.5]]]], [1e308, 0.5, 0.5]):
        out.append((f"preprocess.mean = {str(mean)[:40]}", _set(doc, ("preprocess", "mean"), mean)))
    out.append(("files[1] = files[0]", _set(doc, ("files", 1), doc["files"][0])))
    out.append(("format_version = 1.0", _set(doc, ("format_version",), 1.0)))
    return out


def _field(message: str) -> str:
    m = re.match(r"manifest field ([^ ]+)", message)
    return m.group(1) if m else message.split(" (")[0]


# The schema's x-reader-rules that a manifest valid under the schema can still break, by the field a reader names:
# cross-field rules, and integers written with a fraction (JSON Schema's "integer" takes 3.0).
CROSS_FIELD = {"input.batch", "input.shape", "output.shape", "preprocess.crop", "preprocess.mean", "files"}


def _reader_rule(message: str) -> bool:
    return _field(message) in CROSS_FIELD or bool(re.search(r"must be an integer.*, found -?\d+\.0$", message))


def _verdicts(lib: CLib, work: Path, doc: dict) -> tuple[str | None, str | None]:
    """(Python's refusal or None, C++'s refusal or None) for `doc` written as work/manifest.json."""
    (work / "manifest.json").write_text(json.dumps(doc))
    try:
        read_manifest(work)
        py = None
    except BundleError as e:
        py = str(e)
    try:
        lib.manifest_check(work)
        cc = None
    except CError as e:
        assert e.status == "bundle" and "\n" not in str(e), str(e)
        cc = str(e)
    return py, cc


def test_manifest_mutations_are_refused_as_the_schema_and_python_refuse_them(lib: CLib, bundle: Path,
                                                                            tmp_path: Path) -> None:
    """Every field of a valid manifest set to other types and out-of-range values, and deleted: C++ refuses exactly
    the documents Python refuses, with the same message; every document the schema refuses; and beyond the schema
    only what its x-reader-rules add."""
    from conftest import manifest_validator

    schema = manifest_validator()
    if schema is None:
        pytest.skip("jsonschema is not installed (the dev extra installs it)")
    doc = json.loads((bundle / "manifest.json").read_text())
    assert schema.is_valid(doc)
    work = tmp_path / "m"
    work.mkdir()
    disagree, refused = [], 0
    for what, mutated in _mutations(doc):
        py, cc = _verdicts(lib, work, mutated)
        valid = schema.is_valid(mutated)
        refused += cc is not None
        if py != cc:
            disagree.append(f"{what}: Python {py!r}, C++ {cc!r}")
        if not valid and cc is None:
            disagree.append(f"{what}: the schema refuses it, C++ accepts it")
        if valid and cc is not None and not _reader_rule(cc):
            disagree.append(f"{what}: the schema accepts it, C++ refuses it ({cc})")
    assert refused > 500
    assert disagree == []


def test_the_shared_manifest_corpus_gets_the_same_verdicts(lib: CLib, tmp_path: Path) -> None:
    """tests/manifest_cases.py, which holds the schema and the Python reader to one contract: C++ agrees on each."""
    from manifest_cases import CASES, changed
    from test_manifest_schema import base_manifest

    work = tmp_path / "m"
    work.mkdir()
    wrong = []
    for name, change, accepted, _ in CASES:
        py, cc = _verdicts(lib, work, changed(base_manifest(), change))
        if (cc is None) != accepted or py != cc:
            wrong.append(f"{name}: expected {'accepted' if accepted else 'refused'}, C++ {cc!r}, Python {py!r}")
    assert wrong == []


def _copy(bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle, tmp_path / "b", symlinks=True))


def _both_refuse(lib: CLib, b: Path, variant: str = "ov-fp32") -> tuple[str, str]:
    with pytest.raises(ResnetDeployError) as py:
        Predictor.from_bundle(b, backend=variant).close()
    with pytest.raises(CError) as cc:
        lib.predictor(b, variant).close()
    assert "\n" not in str(cc.value)
    return str(py.value), str(cc.value)


def test_a_tampered_model_file_is_refused_before_openvino_reads_it(lib: CLib, has_ov, bundle: Path,
                                                                    tmp_path: Path) -> None:
    """Also when a compiled blob of the original content is in the cache: the SDK imports it while the file is
    checked, and drops it when the file does not match."""
    b = _copy(bundle, tmp_path)
    lib.predictor(b, "ov-fp32").close()  # compiled once: the SDK's cache now holds a blob of this content
    assert list((tmp_path / "cache" / "openvino").glob("sha256-*/*.blob"))
    with open(b / "model.onnx", "r+b") as f:
        f.seek(200)
        byte = f.read(1)
        f.seek(200)
        f.write(bytes([byte[0] ^ 1]))
    py, cc = _both_refuse(lib, b)
    size = (b / "model.onnx").stat().st_size
    assert cc == (f"bundle file model.onnx does not match the manifest's sha256/size (expected {size} bytes, found "
                  f"{size}); it was changed after export")
    assert py.replace("blake3", "sha256") == cc  # Python checks BLAKE3 where installed, the SDK sha256


def test_paths_out_of_the_bundle_are_refused_without_opening(lib: CLib, has_ov, bundle: Path, tmp_path: Path) -> None:
    b = _copy(bundle, tmp_path)
    (b / "model.onnx").unlink()
    (b / "model.onnx").symlink_to("/etc/passwd")
    py, cc = _both_refuse(lib, b)
    assert py == cc == ("bundle file 'model.onnx' resolves outside the bundle (a link that leads out of it); refused "
                        "without opening it")
    (b / "model.onnx").unlink()
    (b / "model.onnx").symlink_to("model.onnx")  # a loop
    py, cc = _both_refuse(lib, b)
    assert py == cc == (f"bundle file 'model.onnx' is not a plain relative path inside the bundle (Symlink loop from "
                        f"'{b.resolve() / 'model.onnx'}')")


def test_missing_files_and_variants_say_why(lib: CLib, has_ov, bundle: Path, tmp_path: Path) -> None:
    b = _copy(bundle, tmp_path)
    (b / "model.int8.onnx").unlink()
    py, cc = _both_refuse(lib, b, "ov-int8")
    assert py == cc == (f"backend 'ov-int8' cannot run on device=cpu: model.int8.onnx is listed in the manifest but "
                        f"missing from {b}")
    doc = json.loads((b / "manifest.json").read_text())
    doc["files"] = [f for f in doc["files"] if f["path"] != "model.int8.onnx"]
    (b / "manifest.json").write_text(json.dumps(doc))
    py, cc = _both_refuse(lib, b, "ov-int8")
    assert py == cc == ("backend 'ov-int8' cannot run on device=cpu: the bundle has no ov-int8 model (export it with "
                        "`resnet-deploy export ... --int8`)")
    with pytest.raises(CError, match=r"^unknown backend 'ov-fp64'; choose one of: auto, trt, onnx, ") as e:
        lib.predictor(b, "ov-fp64")
    assert e.value.status == "argument"
    with pytest.raises(CError, match=r"^backend 'int8' cannot run on device=cpu: the C\+\+ SDK has no ONNX Runtime"):
        lib.predictor(bundle, "int8")


# ---------------------------------------------------------------------------------------------- registry and auto
def test_the_registry_is_pythons(lib: CLib) -> None:
    reg = lib.registry()
    rows = [{"name": v.name, "file": v.file, "format": v.format, "precision": v.precision, "target": v.target,
             "loader": v.loader, "flags": list(v.flags), "devices": list(v.devices), "options": dict(v.options),
             "cpu_rank": v.rank.get("cpu"), "runs": v.runs} for v in variants.variants()]
    assert reg["variants"] == rows
    assert reg["ranked_cpu"] == [v.name for v in variants.ranked("cpu")]
    assert reg["allowed"] == {"format": list(rt_manifest.allowed("format", "text")),
                              "precision": list(rt_manifest.allowed("precision", "none")),
                              "target": list(rt_manifest.allowed("target", "any"))}
    assert reg["int8_dot_flags"] == list(INT8_DOT_FLAGS) and reg["bf16_flags"] == list(BF16_FLAGS)
    assert reg["int8_needs_dot_product"] == [n for n, ld in rt_backend.LOADERS.items() if ld.int8_needs_dot_product]
    assert reg["machine_key"] == machine_key() and reg["cpu_flags"] == sorted(cpu_flags())
    assert reg["isa_caps"] == list(ISA_CAPS)


REGISTRY_KEY = """
import json, sys
sys.path.insert(0, sys.argv[1])
from resnet_deploy_c import CLib

print(json.dumps(CLib(sys.argv[2]).registry()["machine_key"]))
"""


def test_a_capped_process_is_another_machine_class(lib: CLib, monkeypatch: pytest.MonkeyPatch) -> None:
    # in a process of its own: the SDK reads the caps once, as oneDNN does
    env = os.environ | {"ONEDNN_MAX_CPU_ISA": "AVX2"}
    r = subprocess.run([sys.executable, "-c", REGISTRY_KEY, str(ROOT / "cpp" / "python"), str(LIB)], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    key = json.loads(r.stdout)
    # the CPU's own key with the cap beside it: no record of the uncapped CPU matches, nor Python's capped records
    # (keyed by the flags the cap leaves usable, which the SDK does not work out)
    assert key == machine_key() | {"isa_caps": "ONEDNN_MAX_CPU_ISA=AVX2"}
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    if usable_flags() == cpu_flags():  # an AVX2-only CPU: the cap hides nothing, so the two keys name one class
        assert key == machine_key()
    else:
        assert key != machine_key()


class _NoOrt:
    """ONNX Runtime's loader with its facts (title, int8_needs_dot_product, ...), refused as the SDK refuses it."""

    def __init__(self, real: object) -> None:
        self._real = real

    def __getattr__(self, name: str) -> object:
        return getattr(self._real, name)

    def refuse(self, *args) -> str:
        return "not in the C++ SDK"


@pytest.mark.parametrize("case", ["all files", "fp32 only", "measured here", "measured elsewhere"])
def test_auto_chooses_what_python_chooses_among_openvino_variants(lib: CLib, has_ov, bundle: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    """Python's `auto` with ONNX Runtime refused (the SDK runs OpenVINO only) and the SDK pick the same variant."""
    b = _copy(bundle, tmp_path)
    if case == "fp32 only":
        doc = json.loads((b / "manifest.json").read_text())
        doc["files"] = [f for f in doc["files"] if f["precision"] != "int8"]
        (b / "manifest.json").write_text(json.dumps(doc))
    elif case == "measured here":
        record_order(b, ["ov-fp32", "onnx", "ov-int8"])
    elif case == "measured elsewhere":
        record_order(b, ["ov-fp32"], key={"cpu": "another CPU", "flags": "0" * 16})
    monkeypatch.setitem(rt_backend.LOADERS, "onnxruntime", _NoOrt(rt_backend.LOADERS["onnxruntime"]))
    name, _, why = choose_backend(b, read_manifest(b), "auto")
    with lib.predictor(b) as p:
        assert p.variant == name
        assert p.why.split(";")[0] == why.split(";")[0]


# -------------------------------------------------------------------------------------------------------- logits
@pytest.mark.parametrize("variant", ["ov-fp32", "ov-int8", pytest.param("ov-bf16", marks=pytest.mark.skipif(
    not cpu_has_bf16()[0], reason="this CPU has no native bf16 (avx512_bf16/amx)"))])
def test_logits_equal_pythons_openvino_backend(lib: CLib, has_ov, bundle: Path, variant: str) -> None:
    rng = np.random.default_rng()
    images = [pattern(rng, int(rng.integers(20, 80)), int(rng.integers(20, 80)), 3) for _ in range(24)]
    encoded = [png_bytes(a, 2, 8) if i % 2 else encode(Image.fromarray(a), "JPEG") for i, a in enumerate(images)]
    with Predictor.from_bundle(bundle, backend=variant, threads=1) as py, lib.predictor(bundle, variant, 1) as cc:
        x = py.preprocess_images(encoded)
        want = py.run(x)
        got = cc.run(x)  # the same tensor through both runtimes
        assert np.abs(got - want).max() <= 1e-5
        np.testing.assert_array_equal(got.argmax(1), want.argmax(1))
        preds = py.predict(encoded, topk=3)
        for data, pred, row in zip(encoded, preds, want, strict=True):
            top, logits = cc.classify_encoded(data, k=3)  # decoding and preprocessing in C++ too
            assert np.abs(logits - row).max() <= 1e-5
            assert [c for c, _ in top] == [c for c, _, _ in pred.topk]
            np.testing.assert_allclose([s for _, s in top], [s for _, _, s in pred.topk], rtol=1e-5)
        top, logits = cc.classify_pixels(images[0], k=1)
        assert np.abs(logits - py.run(py.preprocess_images(images[0]))[0]).max() <= 1e-5


def test_a_batch_larger_than_the_profile_is_split_and_nan_is_refused(lib: CLib, has_ov, bundle: Path) -> None:
    with lib.predictor(bundle, "ov-fp32") as cc, Predictor.from_bundle(bundle, backend="ov-fp32") as py:
        x = np.random.default_rng().normal(size=(cc.max_batch * 2 + 3, *cc.shape)).astype(np.float32)
        assert np.abs(cc.run(x) - py.run(x)).max() <= 1e-5
        x[3, 0, 0, 0] = np.nan
        with pytest.raises(CError, match=r"^input image\(s\) 3 of 35 hold NaN or Inf$"):
            cc.run(x)


def test_the_example_app_prints_pythons_predictions_as_json(lib: CLib, has_ov, bundle: Path, tmp_path: Path) -> None:
    app = LIB.parent / "classify"
    if not app.exists():
        pytest.skip(f"{app} was not built")
    rng = np.random.default_rng()
    paths = []
    for i in range(4):
        p = tmp_path / f"im{i}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(pattern(rng, 40 + i, 50, 3)).save(p)
        paths.append(p)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    run = subprocess.run([str(app), str(bundle), *map(str, paths), str(tmp_path / "bad.png"), "--variant", "ov-fp32",
                          "--topk", "2", "--json"], capture_output=True, text=True, timeout=120,
                         env={**os.environ, CACHE_ENV: str(tmp_path / "cache")})
    assert run.returncode == 1, run.stderr  # one image could not be read
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert [r["image"] for r in lines] == list(map(str, paths))
    with Predictor.from_bundle(bundle, backend="ov-fp32") as py:
        logits = py.run(py.preprocess_images(paths))
        for r, pred, row in zip(lines, py.predict(paths, topk=2), logits, strict=True):
            assert (r["class_id"], r["label"]) == (pred.class_id, pred.label)
            assert abs(r["score"] - pred.score) <= 1e-6
            assert np.abs(np.array(r["logits"]) - row).max() <= 1e-5
            assert [t["class_id"] for t in r["topk"]] == [c for c, _, _ in pred.topk]
    err = run.stderr.splitlines()
    assert err[0] == (f"{tmp_path / 'bad.png'}: skipped (not a readable image: image of 12 bytes (none of PNG, "
                      "JPEG; it starts b'not an i'))")
    summary = json.loads(err[-1])
    assert summary["variant"] == "ov-fp32" and summary["images"] == 4 and summary["failures"] == 1


SIGNAL_AFTER_TWO = """
import os, signal, sys
import numpy as np
sys.path.insert(0, sys.argv[2])
from resnet_deploy_c import CLib

lib = CLib(sys.argv[3])
x = np.zeros((1, 3, 32, 32), np.float32)
first = lib.predictor(sys.argv[1], variant="ov-fp32")
second = lib.predictor(sys.argv[1], variant="ov-int8")
for p in (first, second):  # freed in the order they were made, not the reverse
    p.run(x)
    p.close()
got = []
signal.signal(signal.SIGUSR1, lambda *_: got.append(1))  # Python's handlers run on the alternate signal stack
os.kill(os.getpid(), signal.SIGUSR1)
print("handled" if got else "not handled")
"""


def test_a_signal_after_two_predictors_freed_out_of_order_is_handled(lib: CLib, has_ov: None, bundle: Path) -> None:
    # in a process of its own: the failure this guards against is a segmentation fault (a freed signal stack)
    r = subprocess.run([sys.executable, "-X", "faulthandler", "-c", SIGNAL_AFTER_TWO, str(bundle),
                        str(ROOT / "cpp" / "python"), str(LIB)], capture_output=True, text=True, timeout=300)
    assert (r.returncode, r.stdout.strip()) == (0, "handled"), r.stderr[-2000:]
