"""Training folders and command-line numbers as a trust boundary: what a folder holds besides images, names that would
take over a terminal, numbers that would exhaust the machine, outputs that would be lost after a long run, and
messages that named the wrong cause.

Classes: folder walks (links, loops, hidden entries, FIFOs, a bomb header); class names with control characters and
bidi overrides, printed escaped everywhere; every CLI number bounded (checked over every command's options) and the
red team's numbers refused in one line; outputs checked before the run (a bundle that cannot take reports, a batch
range no runtime loads); `model.weights` given a URL.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from helpers import tiny_checkpoint, write_png
from test_data import _isolated, write_folder  # noqa: F401  (the fixture isolates the data/cache lookup)
from test_finetune import SMALL, folder_cfg

from resnet_deploy.cli import main
from resnet_deploy.data.pipeline import prepare
from resnet_deploy.data.sources import image_folder
from resnet_deploy.data.spec import parse_spec
from resnet_deploy.runtime import Predictor, ResnetDeployError
from resnet_deploy.runtime.errors import printable
from resnet_deploy.runtime.preprocess import Preprocess

PRE = Preprocess(input_size=(32, 32), channels=3, resize=36, crop=32, mean=(0.5,) * 3, std=(0.25,) * 3)
# control characters and bidi overrides: a newline starts a line that looks like the program's, ESC sequences
# recolour or clear the screen, U+202E shows the rest of the line backwards
HOSTILE_CLASSES = ["ant\nEpoch 1: 100% (fake)", "bee\u202egnp.exe", "cat\x1b[2J\x1b[31m"]


def cli(*args: str):
    return CliRunner().invoke(main, list(args))


def one_line(r) -> str:
    lines = r.output.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1, (r.exit_code, r.output, r.exception)
    return lines[0]


def _raw_free(text: str) -> bool:
    """No control character but the newlines between lines, no bidi or other format character, in printed text."""
    return all(printable(line) == line for line in text.split("\n"))


# --------------------------------------------------------------------------------------------- 6. training folders
def _hostile_folder(root: Path) -> Path:
    """Two classes of 4 images, and everything a downloaded folder may also hold."""
    write_folder(root, classes=("ant", "bee"), per_class=4, size=(20, 20), splits=False)
    (root / "ant" / "up").symlink_to("..")  # a loop: torchvision's walk put the whole tree under "ant" again
    for hidden in (".git/objects", ".ipynb_checkpoints", "ant/.ipynb_checkpoints"):
        (root / hidden).mkdir(parents=True)
        shutil.copyfile(root / "ant" / "0.png", root / hidden / "copy.png")
    shutil.copyfile(root / "ant" / "0.png", root / "ant" / "._0.png")  # a macOS resource fork
    (root / "bee" / "stolen.png").symlink_to(root / "ant" / "1.png")  # another class's image
    (root / "bee" / "again.png").symlink_to("0.png")  # inside its own folder: kept
    (root / "bee" / "nowhere.png").symlink_to(root / "missing.png")
    os.mkfifo(root / "bee" / "pipe.png")  # opened, it would wait for a writer forever
    (root / "cow").symlink_to(root / "ant", target_is_directory=True)  # a class that is another class
    return root


def test_a_folder_walk_stays_in_its_class_folders(tmp_path: Path) -> None:
    root = _hostile_folder(tmp_path / "data")
    folder = image_folder(parse_spec(f"folder:{root}"), "train")
    assert folder.classes == ["ant", "bee"]
    assert sorted((Path(p).relative_to(root).as_posix(), c) for p, c in folder.samples) == [
        *((f"ant/{i}.png", 0) for i in range(4)), ("bee/0.png", 1), ("bee/1.png", 1), ("bee/2.png", 1),
        ("bee/3.png", 1), ("bee/again.png", 1)]
    assert sorted((Path(p).relative_to(root).as_posix(), why) for p, why in folder.ignored) == [
        (".git", "hidden"), (".ipynb_checkpoints", "hidden"), ("ant/._0.png", "hidden"),
        ("ant/.ipynb_checkpoints", "hidden"), ("ant/up", "a link to a folder"),
        ("bee/nowhere.png", "a link that leads nowhere"), ("bee/pipe.png", "not a regular file"),
        ("bee/stolen.png", "a link out of its class folder"),
        ("cow", "a link (class folders must be folders of their own)")]


def test_a_bomb_header_is_an_unreadable_image_whatever_data_unreadable_says(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "data", classes=("ant", "bee"), per_class=4, size=(20, 20), splits=False)
    bomb = root / "bee" / "bomb.png"
    write_png(bomb, 100_000, 100_000, rows=0)  # a header of 10^10 pixels and no pixel data
    assert bomb.stat().st_size < 300
    with pytest.raises(ResnetDeployError) as e:
        prepare(folder_cfg(root), default_size=32, batch_size=2, seed=0)  # the mean image reads every image
    assert str(e.value).startswith(f"not a readable image: {bomb} (Image size (10000000000 pixels) exceeds limit")
    folder = image_folder(parse_spec(f"folder:{root}"), "train", unreadable="skip")
    assert folder.skipped == [str(bomb)] and len(folder.samples) == 8


def test_train_export_predict_print_hostile_names_escaped(tmp_path: Path) -> None:
    root = _hostile_folder(tmp_path / "data")
    for good, bad in zip(("ant", "bee"), HOSTILE_CLASSES, strict=False):
        (root / good).rename(root / bad)
    (root / "cow").unlink()
    write_png(root / HOSTILE_CLASSES[1] / "bomb.png", 100_000, 100_000, rows=0)
    weights = tmp_path / "pre.pt"
    tiny_checkpoint(weights, ["a", "b", "c"], PRE)
    out, bundle = tmp_path / "run", tmp_path / "bundle"
    r = cli("train", "--recipe", SMALL, "--data", f"folder:{root}", "--out", str(out), "--no-progress",
            "--set", f"model.weights={weights}", "--set", "schedule.iterations=2", "--set",
            "schedule.warmup_iterations=1", "--set", "optim.batch_size=4", "--set", "run.amp=none",
            "--set", "data.unreadable=skip", "--set", "run.threads=1")
    assert r.exit_code == 0, r.output
    assert _raw_free(r.output), r.output
    notes = [line for line in r.output.splitlines() if line.startswith("data: ")]
    bomb = printable(str(root / HOSTILE_CLASSES[1] / "bomb.png"))
    assert notes == [  # one folder for both splits here: the bomb counted in each, the folder's entries once
        f"data: skipped 1 unreadable train image(s) (data.unreadable=skip): {bomb}",
        f"data: skipped 1 unreadable evaluation image(s) (data.unreadable=skip): {bomb}",
        f"data: left out 8 entries of the train folders (hidden, links, not regular files): {root / '.git'} (hidden), "
        f"{root / '.ipynb_checkpoints'} (hidden), {printable(str(root / HOSTILE_CLASSES[0]))}/.ipynb_checkpoints "
        "(hidden) ..."]
    assert cli("export", str(out / "last.pt"), "--out", str(bundle), "--quiet").exit_code == 0
    assert json.loads((bundle / "manifest.json").read_text())["classes"] == HOSTILE_CLASSES[:2]  # kept as they are
    image = str(root / HOSTILE_CLASSES[0] / "0.png")
    r = cli("predict", str(bundle), image, "--topk", "2")
    assert r.exit_code == 0 and _raw_free(r.output), r.output
    lines = r.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith(printable(image) + ": ")  # one line per class: no fake line
    assert {printable(c) for c in HOSTILE_CLASSES[:2]} == {lines[0][len(printable(image)) + 2:].rsplit(" (", 1)[0],
                                                          lines[1].strip().rsplit(" (", 2)[0]}
    got = json.loads(cli("predict", str(bundle), image, "--json").stdout)  # JSON holds the names themselves
    assert {t["label"] for t in got[0]["topk"]} == set(HOSTILE_CLASSES[:2])


def test_errors_naming_a_hostile_folder_are_one_escaped_line(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "data", classes=("ant",), per_class=2, size=(20, 20), splits=False)
    (root / "ant").rename(root / HOSTILE_CLASSES[2])
    line = one_line(cli("train", "--recipe", SMALL, "--data", f"folder:{root}", "--out", str(tmp_path / "run")))
    assert line == printable(f"Error: {root} has one class folder ({HOSTILE_CLASSES[2]}); a classifier needs at "
                             "least two: add a folder of images for every class")
    assert _raw_free(line) and not (tmp_path / "run").exists()


# --------------------------------------------------------------------------------------- 9. every CLI number
# options whose type is a plain number because the library owns their range (ExportOptions, export/source.py)
LIBRARY_BOUNDED = {("export", "--opset"), ("export", "--opt-level"), ("export", "--input-size")}


def test_every_number_option_has_an_upper_bound() -> None:
    unbounded = set()
    for name, command in main.commands.items():
        for p in command.params:
            if isinstance(p.type, (click.IntRange, click.FloatRange)):
                assert p.type.max is not None, (name, p.opts)
            elif p.type in (click.INT, click.FLOAT):
                unbounded.add((name, p.opts[0]))
    assert unbounded == LIBRARY_BOUNDED


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from resnet_deploy.export import ExportOptions, export_bundle

    root = tmp_path_factory.mktemp("numbers")
    return export_bundle(root / "bundle", ExportOptions(batch=(1, 2, 4)),
                         checkpoint=tiny_checkpoint(root / "tiny.pt", ["a", "b", "c"], PRE))


@pytest.mark.parametrize("args, line", [
    (["bench", "{b}", "--batch", "99999999"], "Error: --batch must be an integer from 1 to 4096, found 99999999"),
    (["predict", "{b}", "x.png", "--threads", "99999999999"],
     "Error: Invalid value for '--threads': 99999999999 is not in the range 1<=x<=1024."),
    (["validate", "{b}", "--data", "fashion-mnist", "--limit", "99999999999999"],
     "Error: Invalid value for '--limit': 99999999999999 is not in the range 1<=x<=100000000."),
    (["bench", "{b}", "--duration-s", "1e300"],
     "Error: Invalid value for '--duration-s': 1e+300 is not in the range 0<=x<=86400."),
    (["export", "{ckpt}", "--out", "{out}", "--batch", "1:1:99999999"],
     "Error: --batch MIN:OPT:MAX needs 1 <= MIN <= OPT <= MAX <= 4096; found 1:1:99999999"),
    (["export", "{ckpt}", "--out", "{out}", "--opset", "999999999"], "Error: --opset must be between 7 and 25, found "
                                                                     "999999999"),
    (["export", "{ckpt}", "--out", "{out}", "--calib-size", "10000000000"],
     "Error: Invalid value for '--calib-size': 10000000000 is not in the range 1<=x<=100000000."),
])
def test_the_numbers_that_broke_commands_are_one_line(bundle: Path, tmp_path: Path, args: list[str],
                                                      line: str) -> None:
    subs = {"{b}": str(bundle), "{ckpt}": str(bundle.parent / "tiny.pt"), "{out}": str(tmp_path / "out")}
    assert one_line(cli(*[subs.get(a, a) for a in args])) == line
    assert not (tmp_path / "out").exists()


def test_the_runtime_refuses_the_same_numbers(bundle: Path) -> None:
    with pytest.raises(ResnetDeployError, match=r"^threads must be an integer from 1 to 1024, found 99999999999$"):
        Predictor.from_bundle(bundle, threads=99_999_999_999)


# ------------------------------------------------------------------------- 8. outputs checked before the run
@pytest.mark.parametrize("how", ["reports is a file", pytest.param("read-only bundle", marks=pytest.mark.skipif(
    os.geteuid() == 0, reason="root writes into a chmod 0555 folder; the other case covers root"))])
def test_bench_and_validate_refuse_a_bundle_they_cannot_write_before_running(bundle: Path, tmp_path: Path,
                                                                             how: str) -> None:
    b = Path(shutil.copytree(bundle, tmp_path / "bundle"))
    if how == "reports is a file":
        (b / "reports").write_text("in the way")
        why = f": {b / 'reports'} is not a folder;"
    else:
        for p in (b, *b.iterdir()):
            p.chmod(0o555 if p.is_dir() else 0o444)
        why = " (Permission denied);"
    try:
        for args in (["bench", str(b), "--duration-s", "60", "--no-pytorch"],
                     ["validate", str(b), "--data", "fashion-mnist", "--limit", "100000"]):
            r = cli(*args)
            assert one_line(r) == (f"Error: cannot write report {b / 'reports' / 'validate.json'}{why} choose a "
                                   "path you can write"), args
    finally:
        for p in (b, *b.iterdir()):
            p.chmod(0o755 if p.is_dir() else 0o644)
    if (b / "reports").is_file():
        (b / "reports").unlink()
    assert one_line(cli("bench", str(b), "--json", str(tmp_path), "--no-pytorch")) == (
        f"Error: cannot write --json file {tmp_path}: it is a directory; give a file name")


# ----------------------------------------------------------------------------------------------- 10. messages
def test_weights_given_as_a_url_are_refused_as_such(tmp_path: Path) -> None:
    line = one_line(cli("train", "--recipe", SMALL, "--out", str(tmp_path / "run"), "--set",
                        "model.weights=https://download.pytorch.org/models/resnet50-11ad3fa6.pth"))
    assert line == ("Error: 'model.weights' in --set must be a local file path or null (download a URL yourself "
                    "first, then give the file), found 'https://download.pytorch.org/models/resnet50-11ad3fa6.pth'")
    assert not (tmp_path / "run").exists()
