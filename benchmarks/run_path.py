"""The way one run takes through the package's modules (issue 23's measure of the code's shape).

    python benchmarks/run_path.py [--strategy partial_unfreeze] [--show] [OVERRIDE ...]

Runs one tiny in-process run (a BERT-architecture model of about 100k parameters, built on the
spot, on a generated sentiment CSV) under `sys.setprofile`, and follows the calls from one
module of `hf_transfer` into another, each call site counted once (a callback the Trainer
calls every step is one edge). Prints:

- the hallway: the modules `run._run` itself calls into, in order (a module called twice in a
  row is one visit), and its returns: visits to a module `_run` had already left;
- modules entered: the distinct modules the run's calls reach;
- entries per module, and returns: entries into a module the run had already been in;
- climbs: calls from a module into one that imports it (a step calling back up a layer);
- the places that change TrainingArguments after it is built (its own fields, set from our code);
- how many times a checkpoint's config is read (AutoConfig.from_pretrained);
- the length of `run._run` in lines.

The figures go into the closing note of a change to the run's assembly; they are not timings.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# hf_transfer comes from the install (`pip install -e .` maps its conf/ as a package too).
sys.path.insert(0, str(ROOT / "tests"))

PACKAGE = ROOT / "hf_transfer"


def module_of(filename: str) -> str | None:
    path = Path(filename)
    try:
        parts = path.resolve().relative_to(PACKAGE.parent).with_suffix("").parts
    except ValueError:
        return None
    if parts[0] != "hf_transfer":
        return None
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def trace_run(strategy: str, extra: list[str]) -> tuple[list[tuple[str, str, str]], list[str], set[str], int]:
    """(caller module, callee module, callee function) for each module-crossing call site, in
    the order first seen; the places in our code that set a field of a built TrainingArguments;
    the number of checkpoint config reads; the modules `_run` called into, in order."""
    from conftest import build_checkpoint, compose_tiny, sentiment_rows, write_csv

    from hf_transfer.run import run

    work = Path(tempfile.mkdtemp(prefix="run-path-"))
    checkpoint = build_checkpoint(work / "bert", "bert")
    data = work / "data"
    data.mkdir()
    write_csv(data / "train.csv", sentiment_rows(96, seed=1))
    write_csv(data / "test.csv", sentiment_rows(32, seed=2))
    cfg = compose_tiny(checkpoint, data, f"strategy={strategy}", *extra)

    edges: dict[tuple[str, int, str], tuple[str, str, str]] = {}
    inside = [False]
    hallway: list[str] = []

    def profile(frame, event, arg):
        if event != "call":
            return
        callee = module_of(frame.f_code.co_filename)
        if callee is None:
            return
        if frame.f_code.co_name == "_run" and callee == "hf_transfer.run":
            inside[0] = True
        if not inside[0]:
            return
        caller_frame = frame.f_back
        while caller_frame is not None and module_of(caller_frame.f_code.co_filename) is None:
            caller_frame = caller_frame.f_back  # through the libraries (the Trainer calling a callback)
        if caller_frame is None:
            return
        caller = module_of(caller_frame.f_code.co_filename)
        own_call = caller_frame is frame.f_back and caller_frame.f_code.co_name == "_run" and caller == "hf_transfer.run"
        if own_call and (not hallway or hallway[-1] != callee):
            hallway.append(callee)  # _run's own calls, into its own module too
        if caller != callee and frame.f_code.co_name not in ("<genexpr>", "<listcomp>", "<lambda>"):
            site = (caller_frame.f_code.co_filename, caller_frame.f_lineno, frame.f_code.co_qualname)
            edges.setdefault(site, (caller, callee, frame.f_code.co_qualname))

    changes, config_reads = watch_arguments_and_configs()
    sys.setprofile(profile)
    try:
        run(cfg, work / "run")
    finally:
        sys.setprofile(None)
    return list(edges.values()), hallway, changes, config_reads[0]


def watch_arguments_and_configs() -> tuple[set[str], list[int]]:
    """Count, from here on, fields of built TrainingArguments set by our code, and config reads."""
    import dataclasses

    from transformers import AutoConfig, TrainingArguments

    changes: set[str] = set()
    fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    init, setattr_ = TrainingArguments.__init__, TrainingArguments.__setattr__

    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        object.__setattr__(self, "_built", True)

    def __setattr__(self, name, value):
        if name in fields and self.__dict__.get("_built"):
            caller = sys._getframe(1)
            if module_of(caller.f_code.co_filename):
                changes.add(f"{Path(caller.f_code.co_filename).name}:{caller.f_lineno} {name}")
        setattr_(self, name, value)

    TrainingArguments.__init__, TrainingArguments.__setattr__ = __init__, __setattr__
    reads = [0]
    original = AutoConfig.from_pretrained.__func__

    def from_pretrained(cls, *args, **kwargs):
        reads[0] += 1
        return original(cls, *args, **kwargs)

    AutoConfig.from_pretrained = classmethod(from_pretrained)
    return changes, reads


def imports_of() -> dict[str, set[str]]:
    from test_architecture import import_graph

    graph = import_graph()
    closure: dict[str, set[str]] = {}
    for start in graph:
        seen, todo = set(), [start]
        while todo:
            for other in graph.get(todo.pop(), ()):
                if other not in seen:
                    seen.add(other)
                    todo.append(other)
        closure[start] = seen
    return closure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategy", default="partial_unfreeze")
    parser.add_argument("overrides", nargs="*", help="more overrides, e.g. strategy.min_steps=40 strategy.head_epochs=2")
    parser.add_argument("--show", action="store_true", help="print every module-crossing call site")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    edges, hallway, changes, config_reads = trace_run(args.strategy, args.overrides)
    closure = imports_of()
    entries = Counter(callee for _, callee, _ in edges)
    climbs = [(a, b, f) for a, b, f in edges if a in closure.get(b, set())]
    if args.show:
        for caller, callee, function in edges:
            mark = "  ^ climb" if (caller, callee, function) in climbs else ""
            print(f"{caller:32s} -> {callee}.{function}{mark}")
    from hf_transfer import run as run_module

    run_lines = len(inspect.getsource(run_module._run).splitlines())
    left: set[str] = set()
    returns = 0
    for before, here in zip(["hf_transfer.run", *hallway], hallway):
        returns += here in left
        left.add(before)
    print("run._run's hallway: " + " > ".join(m.removeprefix("hf_transfer.") for m in hallway))
    print(f"  {len(hallway)} visits to {len(set(hallway))} modules; {returns} returns to a module already left")
    print(f"strategy {args.strategy}: {len(entries)} modules entered; {len(edges)} module-crossing call sites")
    print(f"returns (entries into a module already entered): {sum(n - 1 for n in entries.values())}")
    print(f"climbs (a call into a module that imports the caller): {len(climbs)}")
    print("entries: " + ", ".join(f"{m.removeprefix('hf_transfer.')} {n}" for m, n in entries.most_common()))
    print(f"TrainingArguments changed after it was built, at {len(changes)} places: {sorted(changes)}")
    print(f"checkpoint config reads: {config_reads}")
    print(f"run._run: {run_lines} lines")


if __name__ == "__main__":
    main()
