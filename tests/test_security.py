"""The bundle, images, recipes and checkpoints as a trust boundary: one test per class of bad input, exact lines.

Classes: manifest paths that leave the bundle; image memory; 16-bit images; a missing reference; recipe ranges; YAML
alias bombs; hand-edited manifest values; refused checkpoints. (Predictor API misuse is in test_predictor_misuse.py,
crashes in test_crash.py, property-based fuzzing in test_fuzz.py.)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers import tiny_checkpoint, write_png
from PIL import Image

from resnet_deploy.cli import main
from resnet_deploy.runtime import BundleError, Predictor, ResnetDeployError, read_manifest, verify_files
from resnet_deploy.runtime.manifest import unlisted_files
from resnet_deploy.runtime.preprocess import MAX_IMAGE_PIXELS, Preprocess

ROOT = Path(__file__).resolve().parent.parent
CLASSES = ["ant", "bee", "cat", "dog"]
PRE = Preprocess(input_size=(32, 32), channels=3, resize=36, crop=32, mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26))
QUICK = str(ROOT / "recipes" / "fashion_mnist_quick.yaml")


def cli(*args: str):
    return CliRunner().invoke(main, list(args))


def one_line(r) -> str:
    lines = r.output.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1, (r.exit_code, r.output, r.exception)
    return lines[0]


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete fp32 bundle of a tiny network (exported once; tests work on copies)."""
    from resnet_deploy.export import ExportOptions, export_bundle

    root = tmp_path_factory.mktemp("sec")
    ckpt = tiny_checkpoint(root / "tiny.pt", CLASSES, PRE)
    return export_bundle(root / "bundle", ExportOptions(batch=(1, 4, 8)), checkpoint=ckpt)


@pytest.fixture
def bundle(made: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(made, tmp_path / "bundle"))


def edit(bundle: Path, change) -> None:
    """Apply `change(manifest_dict)` to bundle/manifest.json."""
    d = json.loads((bundle / "manifest.json").read_text())
    change(d)
    (bundle / "manifest.json").write_text(json.dumps(d))


# ----------------------------------------------------------------------------------------- 1. paths out of the bundle
@pytest.mark.parametrize("path", ["/etc/passwd", "../secret.onnx", "sub/../../secret.onnx", "./model.onnx",
                                  "C:\\model.onnx", ""])
def test_manifest_paths_must_be_relative_and_inside(bundle: Path, path: str) -> None:
    edit(bundle, lambda d: d["files"][0].update(path=path))
    with pytest.raises(BundleError) as e:
        read_manifest(bundle)
    want = ("a relative path of 1 to 255 characters" if not path else
            "a relative path inside the bundle (no '..', not absolute)")
    assert str(e.value) == f"manifest field files[0].path must be {want}, found {path!r}"


def test_a_link_out_of_the_bundle_is_refused_before_it_is_opened(bundle: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.onnx"
    secret.write_bytes(os.urandom(12345))
    (bundle / "model.onnx").unlink()
    (bundle / "model.onnx").symlink_to(secret)
    line = ("bundle file 'model.onnx' resolves outside the bundle (a link that leads out of it); refused without "
            "opening it")
    with pytest.raises(BundleError) as e:
        read_manifest(bundle)
    assert str(e.value) == line and "12345" not in str(e.value)
    with pytest.raises(BundleError, match="resolves outside the bundle"):
        Predictor.from_bundle(bundle, backend="onnx")
    assert one_line(cli("predict", str(bundle), str(secret))) == f"Error: {line}"
    (bundle / "manifest.json").rename(bundle / "m.json")  # the manifest itself may not be a link out either
    (bundle / "manifest.json").symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(BundleError, match="^bundle file 'manifest.json' resolves outside the bundle"):
        read_manifest(bundle)


def test_a_link_inside_the_bundle_is_fine_and_unlisted_files_are_reported(bundle: Path) -> None:
    (bundle / "model.onnx").rename(bundle / "real.onnx")
    (bundle / "model.onnx").symlink_to("real.onnx")
    (bundle / "sub").mkdir()
    (bundle / "sub" / "payload.bin").write_bytes(b"\x00" * 10)
    (bundle / "reports").mkdir()
    (bundle / "reports" / "validate.json").write_text("{}")  # written by validate: expected, not reported
    verify_files(bundle, read_manifest(bundle))
    assert unlisted_files(bundle, read_manifest(bundle)) == ["real.onnx", "sub/payload.bin"]

    from resnet_deploy.validate.parity import check_parity_arrays
    from resnet_deploy.validate.report import validate_summary

    rng = np.random.default_rng()
    x = rng.standard_normal((6, 3, 32, 32), dtype=np.float32)
    result = check_parity_arrays(bundle, x, rng.integers(0, 4, 6), CLASSES, threads=1)
    assert result.unlisted_files == ["real.onnx", "sub/payload.bin"]
    assert ("WARNING: 2 file(s) in the bundle are not in its manifest (never verified, never loaded): real.onnx, "
            "sub/payload.bin") in validate_summary(result.to_dict())


def test_reports_never_go_through_a_link_out_of_the_bundle(bundle: Path, tmp_path: Path) -> None:
    from resnet_deploy.validate import report

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "report.md").write_text("precious")
    (bundle / "reports").symlink_to(elsewhere)
    line = ("bundle file 'reports' resolves outside the bundle (a link that leads out of it); refused without "
            "opening it")
    with pytest.raises(BundleError) as e:
        report.save({"schema": "resnet-deploy/validate"}, bundle)
    assert str(e.value) == line
    assert one_line(cli("report", str(bundle))) == f"Error: {line}"
    (bundle / "reports").unlink()
    (bundle / "reports").mkdir()
    (bundle / "reports" / "report.md").symlink_to(elsewhere / "report.md")
    with pytest.raises(BundleError, match="^bundle file 'reports/report.md' resolves outside the bundle"):
        report.write_reports(bundle / "reports")
    assert sorted(p.name for p in elsewhere.iterdir()) == ["report.md"]
    assert (elsewhere / "report.md").read_text() == "precious"


def test_size_mismatch_names_the_entry(bundle: Path) -> None:
    with open(bundle / "model.onnx", "ab") as f:
        f.write(b"\x00" * 7)
    size = (bundle / "model.onnx").stat().st_size
    with pytest.raises(BundleError) as e:
        verify_files(bundle, read_manifest(bundle))
    assert str(e.value) == (f"bundle file model.onnx does not match the manifest's blake3/size (expected {size - 7} "
                            f"bytes, found {size}); it was changed after export")


@pytest.mark.parametrize("change", ["same size, other bytes", "grown", "shrunk"])
def test_a_changed_model_file_is_refused_at_load(bundle: Path, change: str) -> None:
    data = (bundle / "model.onnx").read_bytes()
    data = {"same size, other bytes": data[:-1] + bytes([data[-1] ^ 1]), "grown": data + b"\x00",
            "shrunk": data[:-1]}[change]
    (bundle / "model.onnx").write_bytes(data)
    with pytest.raises(BundleError, match=r"^bundle file model.onnx does not match the manifest's blake3/size"):
        Predictor.from_bundle(bundle, backend="onnx")


@pytest.mark.parametrize("without", ["the manifest's blake3 field", "the blake3 module"])
def test_without_blake3_files_are_checked_by_sha256(bundle: Path, without: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # Bundles written before the blake3 field, or a runtime installed without the module: sha256 is checked.
    from resnet_deploy.runtime import checksum

    x = np.random.default_rng().standard_normal((3, *read_manifest(bundle).input_shape), dtype=np.float32)
    with Predictor.from_bundle(bundle, backend="onnx") as p:
        want = p.run(x)
    assert read_manifest(bundle).file("model.onnx").blake3 is not None
    if without == "the blake3 module":
        monkeypatch.setattr(checksum, "_Blake3", None)
    else:
        edit(bundle, lambda d: [f.pop("blake3") for f in d["files"]])
    with Predictor.from_bundle(bundle, backend="onnx") as p:
        np.testing.assert_array_equal(p.run(x), want)
    data = bytearray((bundle / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bundle / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"^bundle file model.onnx does not match the manifest's sha256/size"):
        Predictor.from_bundle(bundle, backend="onnx")


@pytest.mark.parametrize("how", ["read", "check"])
@pytest.mark.parametrize("change", ["grows", "shrinks"])
def test_a_file_changed_while_it_is_checked_is_refused(bundle: Path, how: str, change: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # The size is read first, then the bytes: a file that changes in between must not pass.
    from resnet_deploy.runtime import manifest
    from resnet_deploy.runtime.verified import VerifiedFile

    entry = read_manifest(bundle).file("model.onnx")
    real_fstat = os.fstat

    def fstat_then_change(fd: int) -> os.stat_result:
        result = real_fstat(fd)
        with open(bundle / "model.onnx", "r+b") as f:
            f.seek(0, os.SEEK_END) if change == "grows" else f.truncate(entry.size // 2)
            if change == "grows":
                f.write(b"\x00" * 9)
        return result

    monkeypatch.setattr(manifest.os, "fstat", fstat_then_change)
    found = entry.size + (1 if how == "read" else 9) if change == "grows" else entry.size // 2
    with pytest.raises(BundleError) as e:
        getattr(VerifiedFile(bundle, entry), how)()
    assert str(e.value) == (f"bundle file model.onnx does not match the manifest's blake3/size (expected {entry.size} "
                            f"bytes, found {found}); it was changed after export")


def test_a_bundle_whose_two_checksums_disagree_fails_the_full_check(bundle: Path) -> None:
    # Runtimes with and without blake3 check different digests: the full check (export's last step, validate,
    # triton) holds both to the same bytes.
    edit(bundle, lambda d: d["files"][0].update(sha256="0" * 64))
    with Predictor.from_bundle(bundle, backend="onnx"):  # a load checks blake3 only
        pass
    with pytest.raises(BundleError, match=r"^bundle file model.onnx does not match the manifest's sha256/size"):
        verify_files(bundle, read_manifest(bundle))


# ---------------------------------------------------------------------------------------------- 2. image memory
_MEASURE = """
import sys
import numpy as np
from helpers import peak_memory_mb, reset_peak_memory
from resnet_deploy.runtime.preprocess import Preprocess
pre = Preprocess(input_size=(224, 224), channels=int(sys.argv[1]), resize=256, crop=224,
                 mean=(0.5,) * int(sys.argv[1]), std=(0.25,) * int(sys.argv[1]))
pre(np.full((300, 300, 3), 7, np.uint8))  # warm: every import and first-call allocation before the baseline
base = reset_peak_memory()
for path in sys.argv[2:]:
    assert pre(path).shape == (pre.channels, 224, 224)
print(peak_memory_mb() - base)
"""


def _peak_mb(channels: int, *images: Path) -> float:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)])}
    r = subprocess.run([sys.executable, "-c", _MEASURE, str(channels), *map(str, images)], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return float(r.stdout)


@pytest.fixture(scope="module")
def big_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("big")
    paths = {"strip": d / "strip.png", "rgba": d / "rgba.png", "grey16": d / "grey16.png", "over": d / "over.png"}
    write_png(paths["strip"], 65535, 1, 16, 6)  # 2 kB on disk; resized to a 256 shorter side it would be 4.3 Gpixels
    write_png(paths["rgba"], 6000, 4000, 8, 6)  # at the pixel limit, the costliest mode: RGBA decoded then converted
    write_png(paths["grey16"], 6000, 4000, 16, 0)
    write_png(paths["over"], 6001, 4000, 8, 0, rows=1)
    return paths


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads peak memory from Linux /proc")
def test_peak_memory_per_image_stays_under_256_mb(big_images: dict[str, Path]) -> None:
    assert big_images["strip"].stat().st_size < 4096
    assert _peak_mb(3, big_images["strip"]) < 16  # the strip: only what the crop keeps is resized
    peak = _peak_mb(3, big_images["rgba"], big_images["grey16"])
    assert 96 < peak < 256  # above 96 MB: the RGBA image itself was decoded, so the figure measures something
    assert _peak_mb(1, big_images["rgba"], big_images["grey16"]) < 256


def test_images_over_the_limits_are_refused_by_their_header(big_images: dict[str, Path]) -> None:
    over = big_images["over"]
    with pytest.raises(ResnetDeployError) as e:
        PRE(over)
    assert str(e.value) == (f"{over} is 6001x4000 = 24,004,000 pixels, over the limit of {MAX_IMAGE_PIXELS:,} pixels "
                            "and 65,535 per side; scale it down first")
    no_crop = Preprocess(input_size=(32, 32), channels=3, resize=36, mean=(0.5,) * 3, std=(0.25,) * 3)
    with pytest.raises(ResnetDeployError) as e:
        no_crop(big_images["strip"])
    assert str(e.value) == ("image of 65535x1 would be resized to 2359260x36, over the limit of 24,000,000 pixels; "
                            "crop it to a less elongated shape first")
    for empty in (np.zeros((0, 0, 3), np.uint8), Image.new("RGB", (0, 5))):
        with pytest.raises(ResnetDeployError, match=r"^image (array )?is 0x[05] pixels: an image needs at least 1x1$"):
            PRE(empty)


def test_only_raster_formats_are_decoded(tmp_path: Path) -> None:
    eps = tmp_path / "x.eps"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    with pytest.raises(ResnetDeployError) as e:
        PRE(eps)
    assert str(e.value).startswith(f"not a readable image: {eps} (cannot identify image file")


# ------------------------------------------------------------------------------------------------- 3. 16-bit images
def test_16_bit_grey_is_scaled_to_8_bits_not_clipped(tmp_path: Path) -> None:
    rng = np.random.default_rng()
    v16 = rng.integers(0, 65536, (20, 24), dtype=np.uint16)
    Image.fromarray(v16).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    grey = Preprocess(input_size=(20, 24), channels=1, mean=(0.5,), std=(0.25,))
    want = grey.normalize((v16 >> 8).astype(np.uint8)[None])
    np.testing.assert_array_equal(grey(tmp_path / "g16.png"), want)
    np.testing.assert_array_equal(grey(v16), want)  # a uint16 array: the same rule
    rgb = Preprocess(input_size=(20, 24), channels=3, mean=(0.5,) * 3, std=(0.25,) * 3)
    np.testing.assert_array_equal(rgb(tmp_path / "g16.png"), rgb.normalize(np.repeat((v16 >> 8)[None], 3, 0)))
    assert float((grey(tmp_path / "g16.png") == grey.normalize(np.full((1, 20, 24), 255, np.uint8))).mean()) < 0.05


# --------------------------------------------------------------------------------------------- 4. missing reference
def test_a_missing_reference_is_an_error_not_a_pass(bundle: Path, tmp_path: Path) -> None:
    from test_data import write_folder

    data = write_folder(tmp_path / "imgs", classes=CLASSES, per_class=2, size=(40, 36))
    r = cli("validate", str(bundle), "--data", f"folder:{data}", "--checkpoint", "/no/such.pt")
    assert one_line(r) == ("Error: reference checkpoint not found: /no/such.pt (--checkpoint names the file the "
                           "bundle was exported from)")


# ------------------------------------------------------------------------------------------------ 5. recipe ranges
@pytest.mark.parametrize("setting, line", [
    ("optim.batch_size=0", "'optim.batch_size' in --set must be from 1 to 65536, found 0"),
    ("run.log_every=0", "'run.log_every' in --set must be >= 1, found 0"),
    ("optim.lr=-0.1", "'optim.lr' in --set must be >= 0, found -0.1"),
    ("optim.lr=.nan", "'optim.lr' in --set must be >= 0, found nan"),
    ("data.pad=-4", "'data.pad' in --set must be from 0 to 64, found -4"),
    ("run.device=gpu0", "'run.device' in --set must be auto, cpu, cuda or cuda:N, found 'gpu0'"),
    ("schedule.iterations=-5", "'schedule.iterations' in --set must be >= 1, found -5"),
    ("schedule.milestones=[30, 20]", "'schedule.milestones' in --set must be increasing iteration numbers >= 1, "
                                     "found (30, 20)"),
    ("data.input_size=100000", "'data.input_size' in --set must be from 8 to 4096, found 100000"),
    ("run.threads=1.5", "'run.threads' in --set must be int or null, found 1.5"),
])
def test_recipe_values_out_of_range_are_one_line(setting: str, line: str, tmp_path: Path) -> None:
    r = cli("train", "--recipe", QUICK, "--out", str(tmp_path / "run"), "--set", setting)
    assert one_line(r) == f"Error: {line}"
    assert not (tmp_path / "run").exists()


def test_config_made_in_code_meets_the_same_rules() -> None:
    from resnet_deploy.config import OptimConfig

    with pytest.raises(ResnetDeployError) as e:
        OptimConfig(batch_size=0)
    assert str(e.value) == "'batch_size' must be from 1 to 65536, found 0"


# --------------------------------------------------------------------------------------------- 6. YAML alias bombs
def test_alias_bombs_are_refused_before_they_expand(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"  # `name` would be a list of 9^9 strings, its repr gigabytes
    levels = ['  - &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        levels.append(f"  - &{name} [{', '.join([f'*{prev}'] * 9)}]")
    bomb.write_text("\n".join(["name:", *levels]) + "\n")
    assert one_line(cli("train", "--recipe", str(bomb))) == (
        f"Error: recipe {bomb} is not valid YAML: line 3: YAML aliases (*name) are not allowed; write the value out")


def test_long_values_are_quoted_short(tmp_path: Path) -> None:
    recipe = tmp_path / "long.yaml"
    recipe.write_text("optim:\n  lr: [" + ", ".join(["1"] * 100_000) + "]\nname: " + "x" * 300_000 + "\n")
    assert one_line(cli("train", "--recipe", str(recipe))) == (
        f"Error: 'optim.lr' in recipe {recipe} must be float, found [1, 1, 1, 1, 1, 1, 1, 1, ...]")
    recipe.write_text("optim:\n  lr: " + "x" * 300_000 + "\n")
    line = one_line(cli("train", "--recipe", str(recipe)))
    assert line == f"Error: 'optim.lr' in recipe {recipe} must be float, found '{'x' * 97}...{'x' * 98}'"
    recipe.write_text("x" * 300 + "_key: 1\n")
    assert len(one_line(cli("train", "--recipe", str(recipe)))) < 1200  # the valid-key list, not the key
    recipe.write_text("name: " + "x" * (1 << 20) + "\n")
    assert one_line(cli("train", "--recipe", str(recipe))) == (
        f"Error: recipe {recipe} is 1,048,583 bytes, over the limit of 1,048,576; a recipe is a page of YAML")


# --------------------------------------------------------------------------------------- 7. hand-edited manifests
@pytest.mark.parametrize("change, line", [
    (lambda d: d["preprocess"].update(std=[0, 0.2, 0.2]), "preprocess.std[0] must be a finite number above 0, found 0"),
    (lambda d: d["input"]["batch"].update(max=0), "input.batch.max must be an integer from 1 to 4096, found 0"),
    (lambda d: d["input"]["batch"].update(max=10**12), "input.batch.max must be an integer from 1 to 4096, "
                                                        "found 1000000000000"),
    (lambda d: d["preprocess"].update(resize="36"), "preprocess.resize must be an integer from 1 to 4096, found '36'"),
    (lambda d: d["preprocess"].update(resize=36.5), "preprocess.resize must be an integer from 1 to 4096, found 36.5"),
    (lambda d: d["preprocess"].update(resize=True), "preprocess.resize must be an integer from 1 to 4096, found True"),
    (lambda d: d["preprocess"].update(crop=40), "preprocess.crop must be at most resize (36), found 40"),
    (lambda d: d["preprocess"].update(input_size=[32, -32]), "preprocess.input_size[1] must be an integer from 1 to "
                                                             "4096, found -32"),
    (lambda d: d["preprocess"].update(mean=[0.5, "x", 0.5]), "preprocess.mean[1] must be a finite number, found 'x'"),
    (lambda d: d["preprocess"].update(mean=[[0.5]]), "preprocess.mean must be 3 number(s) or a 3 x 32 x 32 mean "
                                                     "image, found 'shape (1, 1)'"),
    (lambda d: d["preprocess"].update(interpolation="nearest"), "preprocess.interpolation must be one of "
                                                                "'bilinear', found 'nearest'"),
    (lambda d: d["files"][0].update(size=-1), "files[0].size must be an integer >= 0, found -1"),
    (lambda d: d["files"][0].update(sha256=None), "files[0].sha256 must be 64 lower-case hex digits, found None"),
    (lambda d: d["files"][0].update(blake3="AB" * 32), "files[0].blake3 must be 64 lower-case hex digits, found "
                                                        "'ABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABAB'"),
    (lambda d: d["files"][0].update(precision="fp4"), "files[0].precision must be one of 'fp32', 'fp16', 'int8', "
                                                      "'fp8', 'none', found 'fp4'"),
    (lambda d: d["files"].append(dict(d["files"][0])), "files must be distinct paths, found 'model.onnx'"),
    (lambda d: d.update(classes="ant"), "classes must be a list, found 'ant'"),
    (lambda d: d.update(classes=[]), "classes must hold 1 to 100000 items, found 0"),
    (lambda d: d.pop("files"), "files is missing"),
    (lambda d: d["input"].update(shape=[1, 32, 32]), "input.shape must be [C, H, W] of preprocess, found [1, 32, 32]"),
])
def test_hand_edited_manifest_values_are_one_bundle_error(bundle: Path, change, line: str) -> None:
    edit(bundle, change)
    with pytest.raises(BundleError) as e:
        read_manifest(bundle)
    assert str(e.value) == f"manifest field {line}"
    assert one_line(cli("predict", str(bundle), "x.png")) == f"Error: manifest field {line}"


def test_deep_or_huge_manifests_are_refused(bundle: Path) -> None:
    (bundle / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(BundleError) as e:
        read_manifest(bundle)
    assert str(e.value) == (f"{bundle}/manifest.json is not valid JSON (nested too deeply); the bundle is damaged, "
                            "export it again")
    with open(bundle / "manifest.json", "wb") as f:
        f.truncate((32 << 20) + 1)
    with pytest.raises(BundleError, match=r"manifest.json is over 32 MB; a manifest is a few kB"):
        read_manifest(bundle)


# ------------------------------------------------------------------------------------------ 10. refused checkpoints
class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_a_malicious_checkpoint_is_refused_and_said_so(tmp_path: Path) -> None:
    evil = tmp_path / "evil.pt"
    torch.save({"model": _Payload()}, evil)
    r = cli("export", str(evil), "--out", str(tmp_path / "b"), "--quiet")
    assert one_line(r) == (
        f"Error: refused checkpoint {evil}: safe loading (weights_only) does not allow the objects it contains "
        "(Trying to load unsupported GLOBAL posix.system whose module posix is blocked.); resnet-deploy never runs "
        "pickled code: if you trust the file, re-save its weights with torch.save(model.state_dict(), ...)")
    notes = tmp_path / "notes.txt"
    notes.write_text("not a checkpoint\n")
    assert one_line(cli("eval", str(notes), "--data", "fashion-mnist")) == (
        f"Error: cannot read checkpoint {notes}: not a complete torch.save file (UnpicklingError: Unsupported "
        "operand 110)")
    assert not (tmp_path / "b").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["evil.pt", "notes.txt"]
