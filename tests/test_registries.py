"""Every registry name is accepted by the CLI and documented in README.md's tables.

A name added to a registry without a line in README's tables (or one the CLI would
refuse) fails here. The CLI's choices are read from the registries, never repeated.
"""
from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import cli

README = Path(__file__).resolve().parent.parent / "README.md"


def _explain_methods():
    from labtf.explain.registry import explain_choices

    return explain_choices()


def _formats():
    from exporters import FORMATS

    return list(FORMATS)


def _quantize_modes():
    from exporters import FORMATS

    return sorted({q for f in FORMATS.values() for q in f.quantize})


def _io_types():
    from exporters.tflite import IO_TYPES

    return list(IO_TYPES)


def _roundings():
    from exporters.tflite import ROUNDING

    return list(ROUNDING)


def _providers():
    from labtf.collect import PROVIDERS

    return list(PROVIDERS)


def _backbones():
    from labtf.backbones import BACKBONES

    return list(BACKBONES)


def _resize_modes():
    from labtf.images import RESIZE_MODES

    return list(RESIZE_MODES)


def _config(name):
    def names():
        import labtf.config

        return list(getattr(labtf.config, name))
    return names


#: (command, option, the registry's names); a row per registry that a CLI option reads.
REGISTRIES = [
    ("explain", "--method", _explain_methods),
    ("export", "--format", _formats),
    ("export", "--quantize", _quantize_modes),
    ("export", "--io-type", _io_types),
    ("export", "--int8-rounding", _roundings),
    ("collect", "--provider", _providers),
    ("train", "--backbone", _backbones),
    ("train", "--resize", _resize_modes),
    ("train", "--mixed-precision", _config("PRECISIONS")),
    ("train", "--strategy", _config("STRATEGIES")),
    ("train", "--lr-schedule", _config("LR_SCHEDULES")),
    ("train", "--augment-preset", _config("AUGMENT_PRESETS")),
]
IDS = [f"{c} {o}" for c, o, _ in REGISTRIES]


def _option(command: str, flag: str) -> click.Option:
    cmd = cli.main.commands[command]
    return next(p for p in cmd.params if flag in getattr(p, "opts", ()))


def _tables(text: str) -> list[list[str]]:
    """README's Markdown tables, each a list of its row lines (header first)."""
    tables, current = [], []
    for line in text.splitlines():
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    return tables + ([current] if current else [])


def _tokens(row: str) -> set[str]:
    return {t.rstrip(".") for t in re.findall(r"[A-Za-z0-9_+.-]+", row)}


def documented(text: str, flag: str) -> set[str]:
    """Names in README table rows that mention ``flag``, and in tables whose header does."""
    found: set[str] = set()
    for table in _tables(text):
        whole = flag in table[0]
        for row in table:
            if whole or flag in row:
                found |= _tokens(row)
    return found


@pytest.mark.parametrize("command,flag,names", REGISTRIES, ids=IDS)
def test_every_registry_name_is_documented_in_readme_tables(command, flag, names):
    missing = [n for n in names() if n not in documented(README.read_text(), flag)]
    assert not missing, f"README.md's tables do not document {flag} {missing}"


def test_the_docs_check_fails_for_an_undocumented_name():
    text = ("| command | what |\n|---|---|\n| `labtf explain --method a\\|b` | x |\n\n"
            "| `--backbone` | input |\n|---|---|\n| `net1` | 224 |\n")
    assert {"a", "b"} <= documented(text, "--method") and "c" not in documented(text, "--method")
    assert "net1" in documented(text, "--backbone") and "x" not in documented(text, "--backbone")
    assert "net1" not in documented(text, "--method")


CHOICES = [r for r in REGISTRIES if r[0] in ("explain", "export")]


@pytest.mark.parametrize("command,flag,names", CHOICES, ids=IDS[:len(CHOICES)])
def test_choice_options_accept_exactly_the_registry(command, flag, names):
    opt = _option(command, flag)
    assert isinstance(opt.type, click.Choice)
    assert sorted(opt.type.choices) == sorted(names())
    for n in names():
        assert opt.type.convert(n, opt, None) == n


@pytest.fixture
def fake_training(monkeypatch):
    """labtf.training / labtf.distribute stand-ins: the train command's config, no TensorFlow."""
    seen = {}

    def train(config, out, resume=False):
        seen["config"] = config
        return types.SimpleNamespace(path=Path(out))

    monkeypatch.setitem(sys.modules, "labtf.training", types.SimpleNamespace(
        train=train, is_finished=lambda path: False))
    monkeypatch.setitem(sys.modules, "labtf.distribute", types.SimpleNamespace(
        set_cluster=lambda *a: None))
    return seen


@pytest.mark.parametrize("command,flag,names", [r for r in REGISTRIES if r[0] == "train"],
                         ids=[i for i in IDS if i.startswith("train")])
def test_train_accepts_every_registry_name(command, flag, names, fake_training, tmp_path):
    field = _option(command, flag).name
    for n in names():
        res = CliRunner().invoke(cli.main, ["train", str(tmp_path), flag, n,
                                            "--out", str(tmp_path / "run")])
        assert res.exit_code == 0, (n, res.output)
        assert getattr(fake_training["config"], field) == n
    bad = CliRunner().invoke(cli.main, ["train", str(tmp_path), flag, "no-such-name"])
    assert bad.exit_code == 2 and "choose one of: " + ", ".join(names()) in bad.output


def test_collect_accepts_every_provider(monkeypatch, tmp_path):
    import labtf.collect

    seen = []

    def collect(*args, **kwargs):  # positional providers, or options=CollectOptions(...)
        seen.append(tuple(kwargs["options"].providers) if "options" in kwargs else args[2])
        return {"candidates": 0, "ok": 0, "duplicate": 0, "failed": 0}

    monkeypatch.setattr(labtf.collect, "collect", collect)
    monkeypatch.setenv("LABTF_CONTACT", "tests@example.org")   # wikimedia's User-Agent policy
    for name in _providers():
        res = CliRunner().invoke(cli.main, ["collect", str(tmp_path), "--provider", name])
        assert res.exit_code == 0, res.output
    assert seen == [(n,) for n in _providers()]


def test_explain_eval_accepts_every_method_and_defaults_come_from_the_registry():
    from labtf import LabtfError
    from labtf.explain.faithfulness import ExplainEvalOptions
    from labtf.explain.registry import BASELINE, METHODS, default_eval_methods

    for name in METHODS:
        assert ExplainEvalOptions(methods=[name]).methods == [name]
    assert ExplainEvalOptions().methods == default_eval_methods()
    assert default_eval_methods() == [n for n, m in METHODS.items() if m.evaluate and n != BASELINE]
    assert "scorecam" in METHODS and "scorecam" not in default_eval_methods()
    help_text = _option("explain-eval", "--methods").help
    assert f"[{','.join(default_eval_methods())}]" in help_text
    with pytest.raises(LabtfError, match="unknown method 'x'; choose one of: gradcam, "):
        ExplainEvalOptions(methods=["gradcam", "x"])


def test_explain_eval_options_refuse_unknown_keys_and_bad_values(tmp_path):
    from labtf import LabtfError
    from labtf.explain.faithfulness import ExplainEvalOptions

    with pytest.raises(LabtfError, match=r"unknown explain-eval option key\(s\) \['step'\]; "
                                         r"valid keys: data, methods, mask_dir, steps, "):
        ExplainEvalOptions.from_dict({"step": 3})
    with pytest.raises(LabtfError, match="--steps must be at least 1, got 0"):
        ExplainEvalOptions(steps=0)
    with pytest.raises(LabtfError, match="--batch-size must be at least 1, got -1"):
        ExplainEvalOptions(batch_size=-1, limit=0)  # the first bad one is named
    with pytest.raises(LabtfError, match=f"mask folder {tmp_path / 'm'} does not exist"):
        ExplainEvalOptions(mask_dir=str(tmp_path / "m"))
    assert ExplainEvalOptions.from_dict({"steps": 4, "limit": None}).steps == 4


def test_cli_explain_eval_refuses_before_opening_the_run(tmp_path):
    res = CliRunner().invoke(cli.main, ["explain-eval", str(tmp_path / "no-run"), "--steps", "0"])
    assert res.exit_code == 2 and res.output.strip() == "error: --steps must be at least 1, got 0"


def test_a_method_registered_at_run_time_is_a_cli_choice(monkeypatch):
    from labtf.explain.registry import METHODS, Method

    monkeypatch.setitem(METHODS, "toy", Method(lambda ex, x, classes: None, evaluate=True))
    assert "toy" in _option("explain", "--method").type.choices
    res = CliRunner().invoke(cli.main, ["explain", "--help"])
    assert "guided-gradcam|toy]" in res.output
    from labtf.explain.registry import default_eval_methods

    assert default_eval_methods()[-1] == "toy"


def test_cli_import_stays_cheap():
    """The registries the CLI reads at import are pure Python: no numpy, no TensorFlow."""
    import subprocess

    code = "import sys, cli; print(sorted(m for m in ('numpy', 'tensorflow', 'keras') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=README.parent)
    assert out.stdout.strip() == "[]"


def test_backbone_table_matches_the_registry():
    from labtf.backbones import BACKBONES

    table = next(t for t in _tables(README.read_text()) if "`--backbone`" in t[0])
    rows = {cells[0].strip("`"): cells[1:4] for cells in
            ([c.strip() for c in row.strip("|").split("|")] for row in table[2:])}
    assert list(rows) == list(BACKBONES)
    for name, spec in BACKBONES.items():
        assert rows[name] == [str(spec.input_size), spec.preprocessing, spec.weight_source], name


def test_every_explanation_method_entry_loads_its_function():
    from labtf.explain import methods
    from labtf.explain.registry import METHODS

    for name, entry in METHODS.items():
        fn = entry.load()
        assert callable(fn) and fn is getattr(methods, entry.function.split(":")[1]), name
