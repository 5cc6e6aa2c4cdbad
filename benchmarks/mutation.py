"""Mutation check: plant small bugs in the pure-numpy modules and see whether the tests notice.

    python benchmarks/mutation.py [--only maps,metrics] [--list] [--record benchmarks/results/mutation.md]

Each mutant changes ONE node of ONE listed function (an AST rewrite, not text search):
arithmetic (+ <-> -, * <-> /, // -> /), comparison (< <-> <=, > <-> >=, == <-> !=),
boolean (and <-> or, drop a ``not``), a numeric constant (0 -> 1, n -> n + 1, x -> 2x),
``max`` <-> ``min`` and ``argmax`` <-> ``argmin``. The fast tests of that module then run
against it (``pytest -x`` in a forked child that imports the mutated source; files on disk are
never changed). A mutant is *killed* when a test fails, *survives* when all pass and *times
out* (counted as killed: a hang is noticed) after --timeout seconds.

Mutants per function are capped (--per-function, spread evenly over the function) so that the
whole check stays a few minutes on 2 busy cores. The kill rate and every survivor, with the
reason it is harmless where it is (an equivalent mutant), go to the results file.
"""
from __future__ import annotations

import argparse
import ast
import copy
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: target name -> (module file, functions, test node ids that exercise them fast).
TARGETS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "metrics": ("labtf/evaluation.py", ("compute_metrics", "confusion_table"),
                ("tests/test_evaluation.py::test_metrics_by_hand",
                 "tests/test_evaluation.py::test_poster_layout")),
    "maps": ("labtf/maps.py", ("normalize_maps", "pearson_r"), ("tests/test_maps.py",)),
    "faithfulness": ("labtf/explain/metrics.py",
                     ("auc", "spearman", "mask_scores", "deletion_insertion"),
                     ("tests/test_explain_eval.py::test_auc_and_curve_endpoints",
                      "tests/test_explain_eval.py::test_pointing_game_tolerance_is_15_px",
                      "tests/test_explain_eval.py::test_spearman_identical_reversed_and_unrelated_maps",
                      "tests/test_explain_eval.py::test_deletion_insertion_curves_by_hand")),
    "split": ("labtf/manifest.py", ("stratified_split",),
              ("tests/test_manifest.py::test_stratified_split_fractions_and_seed",
               "tests/test_manifest.py::test_split_reused_when_dataset_grows")),
    "phash": ("labtf/curate/phash.py", ("phash_bits", "dhash_bits", "pack64", "hamming_matrix",
                                        "group_pairs", "find", "union"),
              ("tests/test_phash.py",)),  # the precision/recall test: 2+ min, too slow per mutant
    "grouped_split": ("labtf/curate/split.py", ("split_units", "assign", "straddling_pairs"),
                      ("tests/test_curate.py::test_committed_clipart_split_keeps_near_duplicate_groups_whole",
                       "tests/test_curate.py::test_fresh_plain_split_warns_about_straddling_near_duplicates",
                       "tests/test_curate.py::test_curate_apply_and_grouped_split")),
}

#: Survivors that cannot be killed because the mutant behaves the same (equivalent mutants):
#: "target:function:line:description" -> why. Filled in from reading each survivor.
EQUIVALENT: dict[str, str] = {
    "phash:union:345:Lt -> LtE": "equivalent: union by size with ties joined the other way; the "
    "sets (and group_pairs' sorted members) are the same",
    "metrics:compute_metrics:72:constant 0 -> 1": "unreachable: the empty-input branch of the "
    "accuracy; sklearn's confusion_matrix raises on empty input before it",
}

_SWAP_BIN = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
             ast.FloorDiv: ast.Div}
_SWAP_CMP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
             ast.NotEq: ast.Eq}
_SWAP_NAME = {"max": "min", "min": "max", "argmax": "argmin", "argmin": "argmax",
              "maximum": "minimum", "minimum": "maximum"}


@dataclass
class Mutant:
    target: str
    function: str
    line: int
    what: str
    source: str = ""
    outcome: str = ""
    seconds: float = 0.0

    @property
    def key(self) -> str:
        return f"{self.target}:{self.function}:{self.line}:{self.what}"


def _sites(fn: ast.AST) -> list[tuple[ast.AST, str, object]]:
    """(node, description, replacement maker) for every mutable node of a function."""
    out = []
    for node in ast.walk(fn):
        if isinstance(node, ast.BinOp) and type(node.op) in _SWAP_BIN:
            new = _SWAP_BIN[type(node.op)]
            out.append((node, f"{type(node.op).__name__} -> {new.__name__}",
                        lambda n, new=new: setattr(n, "op", new())))
        elif isinstance(node, ast.Compare) and type(node.ops[0]) in _SWAP_CMP:
            new = _SWAP_CMP[type(node.ops[0])]
            out.append((node, f"{type(node.ops[0]).__name__} -> {new.__name__}",
                        lambda n, new=new: n.ops.__setitem__(0, new())))
        elif isinstance(node, ast.BoolOp):
            new = ast.Or if isinstance(node.op, ast.And) else ast.And
            out.append((node, f"{type(node.op).__name__} -> {new.__name__}",
                        lambda n, new=new: setattr(n, "op", new())))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            out.append((node, "drop not", lambda n: setattr(n, "op", ast.UAdd())))
        elif (isinstance(node, ast.Constant) and type(node.value) in (int, float)
              and not isinstance(node.value, bool)):
            v = node.value
            new_v = 1 if v == 0 else (v + 1 if isinstance(v, int) else v * 2)
            out.append((node, f"constant {v!r} -> {new_v!r}",
                        lambda n, new_v=new_v: setattr(n, "value", new_v)))
        elif isinstance(node, ast.Attribute) and node.attr in _SWAP_NAME:
            new = _SWAP_NAME[node.attr]
            out.append((node, f".{node.attr} -> .{new}", lambda n, new=new: setattr(n, "attr", new)))
        elif isinstance(node, ast.Name) and node.id in ("max", "min"):
            new = _SWAP_NAME[node.id]
            out.append((node, f"{node.id}() -> {new}()", lambda n, new=new: setattr(n, "id", new)))
    # `not x` turned into `+x` would break on non-numbers; make it plain `x` instead
    return out


class _DropUAdd(ast.NodeTransformer):
    def visit_UnaryOp(self, node):
        self.generic_visit(node)
        return node.operand if isinstance(node.op, ast.UAdd) else node


def mutants(target: str, per_function: int) -> list[Mutant]:
    """Every planned mutant of a target (up to ``per_function`` per function, spread evenly)."""
    path, functions, _ = TARGETS[target]
    tree = ast.parse((ROOT / path).read_text())
    out = []
    for fname in functions:
        fns = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == fname]
        if not fns:
            raise SystemExit(f"error: {path} has no function {fname}; update TARGETS")
        sites = _sites(fns[0])
        if per_function and len(sites) > per_function:
            step = len(sites) / per_function
            sites = [sites[int(i * step)] for i in range(per_function)]
        for node, what, _ in sites:
            # re-find the node in a fresh copy of the tree and mutate it there
            fresh = copy.deepcopy(tree)
            fn = [n for n in ast.walk(fresh) if isinstance(n, ast.FunctionDef) and n.name == fname][0]
            twin = [s for s in _sites(fn) if s[1] == what and s[0].lineno == node.lineno
                    and s[0].col_offset == node.col_offset][0]
            twin[2](twin[0])
            src = ast.unparse(ast.fix_missing_locations(_DropUAdd().visit(fresh)))
            out.append(Mutant(target, fname, node.lineno, what, src))
    return out


def _module_name(path: str) -> str:
    return path[:-3].replace("/", ".")


def _pytest_forked(mutant: Mutant | None, tests: tuple[str, ...], timeout: float) -> tuple[str, float]:
    """Run ``tests`` in a forked child in which the target module is the mutant's source.

    The parent imported numpy/scipy/sklearn/Pillow/pytest once (never labtf), so each child
    starts in a fraction of a second; the mutated module is installed in ``sys.modules``
    before pytest imports the test files, so every ``from labtf... import f`` sees the mutant.
    The checkout on disk is never changed.
    """
    t = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # child
        code = 3
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            signal.alarm(int(timeout))
            if mutant is not None:
                import importlib.util

                path = TARGETS[mutant.target][0]
                name = _module_name(path)
                importlib.import_module(name.rsplit(".", 1)[0])  # the package
                spec = importlib.util.spec_from_file_location(name, ROOT / path)
                mod = importlib.util.module_from_spec(spec)
                sys.modules[name] = mod
                exec(compile(mutant.source, str(ROOT / path), "exec"), mod.__dict__)
            import pytest

            code = int(pytest.main(["-x", "-q", "-p", "no:cacheprovider", "-m", "not slow",
                                    "--rootdir", str(ROOT), *[str(ROOT / x) for x in tests]]))
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    secs = time.perf_counter() - t
    if os.WIFSIGNALED(status):
        return ("timeout" if os.WTERMSIG(status) == signal.SIGALRM else
                f"error signal {os.WTERMSIG(status)}"), secs
    rc = os.WEXITSTATUS(status)
    return {0: "survived", 1: "killed"}.get(rc, f"error {rc}"), secs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(TARGETS), help="comma-separated targets")
    ap.add_argument("--per-function", type=int, default=4, help="mutants per function (0: all)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per mutant's tests")
    ap.add_argument("--list", action="store_true", help="list the mutants, run nothing")
    args = ap.parse_args()
    targets = [t for t in args.only.split(",") if t]
    bad = sorted(set(targets) - set(TARGETS))
    if bad:
        raise SystemExit(f"error: unknown target(s) {bad}; choose from: {', '.join(TARGETS)}")
    plan = [m for t in targets for m in mutants(t, args.per_function)]
    if args.list:
        for m in plan:
            print(m.key)
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "tests"))
    import numpy  # noqa: F401  (imported once, shared by every forked child)
    import PIL.Image  # noqa: F401
    import pytest  # noqa: F401
    import scipy.ndimage  # noqa: F401
    import scipy.stats  # noqa: F401
    import sklearn.metrics  # noqa: F401
    t0 = time.time()
    for t in targets:  # the unmutated code must pass, else every mutant looks killed
        status, secs = _pytest_forked(None, TARGETS[t][2], args.timeout)
        if status != "survived":
            raise SystemExit(f"error: the tests of '{t}' fail without any mutant ({status})")
        print(f"baseline {t}: tests pass ({secs:.1f} s)", flush=True)
    for i, m in enumerate(plan, 1):
        m.outcome, m.seconds = _pytest_forked(m, TARGETS[m.target][2], args.timeout)
        print(f"[{i}/{len(plan)}] {m.outcome:8s} {m.key} ({m.seconds:.1f} s; "
              f"{i / (time.time() - t0) * 60:.1f} mutants/min)", flush=True)
    report(plan, targets, args, time.time() - t0)


def report(plan: list[Mutant], targets: list[str], args, seconds: float) -> None:
    killed = [m for m in plan if m.outcome in ("killed", "timeout")]
    errors = [m for m in plan if m.outcome.startswith("error")]
    survivors = [m for m in plan if m.outcome == "survived"]
    lines = ["# Mutation check of the pure-numpy modules", "",
             f"{len(plan)} mutants ({args.per_function or 'all'} per function at most) in "
             f"{len(targets)} targets, {seconds / 60:.1f} min: **{len(killed)} killed, "
             f"{len(survivors)} survived, {len(errors)} errors; kill rate "
             f"{len(killed) / max(1, len(plan) - len(errors)):.1%}**.", "",
             "| target | module | functions | tests run per mutant | mutants | killed | kill rate |",
             "|---|---|---|---|---:|---:|---:|"]
    for t in targets:
        ms = [m for m in plan if m.target == t]
        k = sum(m.outcome in ("killed", "timeout") for m in ms)
        path, fns, tests = TARGETS[t]
        lines.append(f"| {t} | `{path}` | {', '.join(fns)} | {'<br>'.join(tests)} | {len(ms)} | {k} | "
                     f"{k / max(1, len(ms)):.0%} |")
    lines += ["", "## Survivors", ""]
    if not survivors:
        lines.append("None.")
    for m in survivors:
        why = EQUIVALENT.get(m.key, "**not explained: add an assertion that kills it**")
        lines.append(f"- `{m.key}`: {why}")
    if errors:
        lines += ["", "## Errors (mutant broke the import or the test run)", ""]
        lines += [f"- `{m.key}`: {m.outcome}" for m in errors]
    print("\n".join(lines))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from record import run_recorded  # benchmarks/record.py

    run_recorded(main)
