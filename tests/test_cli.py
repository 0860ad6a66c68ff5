"""CLI behaviour through click's CliRunner: exit codes and messages."""

import json

from click.testing import CliRunner

from resnet_deploy import __version__, models
from resnet_deploy.cli import main


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_version_and_help():
    r = run("--version")
    assert r.exit_code == 0 and __version__ in r.output
    r = run("--help")
    assert r.exit_code == 0 and "info" in r.output


def test_info_lists_every_architecture():
    r = run("info", "--json")
    assert r.exit_code == 0
    names = [row["name"] for row in json.loads(r.output)]
    assert names == list(models.ARCHITECTURES)


def test_info_name_json_has_counts_and_paper_numbers():
    r = run("info", "cifar_resnet56", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["params"] == 853_018
    assert d["paper"]["params_M"] == 0.85 and d["paper"]["test_error_pct"] == 6.97


def test_info_table_for_resnet34_option_a():
    r = run("info", "resnet34", "--shortcut", "A")
    assert r.exit_code == 0
    assert "25.03 / 7.76" in r.output  # Table 3, option A


def test_unknown_architecture_is_one_line_exit_2():
    r = run("info", "resnet51")
    assert r.exit_code == 2
    lines = r.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("Error: unknown architecture 'resnet51'; choose one of: resnet18,")


def test_bad_shortcut_choice_exit_2():
    r = run("info", "resnet18", "--shortcut", "D")
    assert r.exit_code == 2
    assert r.output.strip() == "Error: Invalid value for '--shortcut': 'D' is not one of 'A', 'B', 'C'."


def test_info_off_a_terminal_keeps_whole_names_one_row_per_line():
    r = run("info")  # CliRunner's output is not a terminal, as a pipe, a CI log or `| less`
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0] == "resnet-deploy model zoo (He et al. 2015)"
    assert lines[1].split() == ["name", "family", "depth", "shortcuts", "default", "shortcut", "input"]
    assert set(lines[2]) <= {"-", " "} and "…" not in r.output
    rows = {ln.split()[0]: ln.split() for ln in lines[3:]}
    assert list(rows) == list(models.ARCHITECTURES)  # every name whole: cifar_resnet110 and cifar_resnet1202 differ
    assert rows["cifar_resnet1202"][:3] == ["cifar_resnet1202", "cifar", "1202"]
    assert rows["cifar_plain110"][3:6] == ["none", "(plain)", "-"]


def test_info_compares_a_cifar_net_with_table_6_only_for_option_a():
    a = run("info", "cifar_resnet56").output.splitlines()
    assert a[-3].split() == ["parameters", "(M)", "0.853", "0.85", "(Table", "6)"]
    b = run("info", "cifar_resnet56", "--shortcut", "B").output.splitlines()
    assert b[-3].startswith("parameters (M)") and b[-3].endswith("- (Table 6 (option A only))")
    assert b[-1].endswith("- (Table 6 (option A only))") and float(b[-3].split()[2]) > 0.853  # projections add some
