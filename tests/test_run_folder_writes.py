"""Only the run-folder module writes files into a run folder.

An ast-level check over genbench/: a call that writes, copies or deletes a file (the
write primitives of ``genbench.utils.files``, ``torch.save``, PIL's ``save``,
``open(..., "w")``, ``shutil`` copies, ``Path.write_text`` / ``unlink`` / ``mkdir``, ...)
whose target names a run folder is allowed only in the run-folder module. A target names a
run folder when it mentions ``run_dir``, ``rd``, ``RunFolder``, a ``.folder`` attribute, one
of the folder module's file-name constants or a run-folder file name ("metrics.json",
"copies.png", ...), directly or through a variable assigned from one in the same function.

Exceptions (docs/layout.md): ``genbench/utils/files.py`` holds the primitives themselves;
``genbench/train/`` writes the training log into the run folder it is handed, the rest of
the storage layer (``genbench/storage/``) writes checkpoints and weights, and
``genbench/runs/snapshots.py`` writes the snapshots taken during training.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDER_MODULE = "genbench/storage/folder.py"
ALLOWED = {FOLDER_MODULE, "genbench/utils/files.py", "genbench/runs/snapshots.py"}
ALLOWED_TREES = ("genbench/train/", "genbench/storage/")

#: Functions that write (or copy onto, or delete) the path at this argument position.
WRITERS = {
    "write_json": 0,
    "write_jsonl": 0,
    "write_text": 0,
    "append_jsonl": 0,
    "atomic_write": 0,
    "save_torch": 0,
    "write_files": 0,
    "write_sample_set": 0,
    "put_snapshot": 0,
    "truncate_log": 0,
    "rmtree": 0,
    "save_png": 1,
    "save_grid": 1,
    "copy": 1,
    "copy2": 1,
    "copyfile": 1,
    "copytree": 1,
    "move": 1,
}
#: Methods of a path that write to it (the receiver is the target).
PATH_METHODS = {"write_text", "write_bytes", "unlink", "mkdir", "touch", "rename", "replace"}
MARK_NAMES = {"run_dir", "rd", "run_folder", "RunFolder"}
MARK_ATTRS = {"folder"}
#: The folder module's names of the files and folders of a run.
MARK_CONSTANTS = {
    "STATUS",
    "CONFIG",
    "SPLIT",
    "TRAIN_LOG",
    "SNAPSHOTS",
    "SAMPLES",
    "METRICS",
    "GRIDS",
    "TENSORBOARD",
    "WANDB_ID",
    "MANIFEST",
    "CHECKPOINT_DIR",
    "LOCK_NAME",
}
FILE_NAMES = {
    "status.json",
    "config.toml",
    "split.json",
    "train_log.jsonl",
    "snapshots.jsonl",
    "metrics.json",
    "copies.json",
    "copies.png",
    "bootstrap.json",
    "manifest.json",
    "wandb.json",
    "checkpoints",
}
#: Modules whose functions are called as ``module.function``; any other ``x.write_...(...)``
#: is a method of ``x`` (a RunFolder's methods are the folder module's own code).
MODULES = {"shutil", "os", "files", "torch"}


def _marked(node: ast.AST, tainted: set[str]) -> bool:
    for n in ast.walk(node):
        if isinstance(n, ast.Name) and (n.id in MARK_NAMES | MARK_CONSTANTS | tainted):
            return True
        if isinstance(n, ast.Attribute) and (n.attr in MARK_ATTRS | MARK_CONSTANTS):
            return True
        if isinstance(n, ast.Constant) and n.value in FILE_NAMES:
            return True
    return False


def _tainted(scope: ast.AST) -> set[str]:
    """Names assigned, in this function, from an expression that names a run folder."""
    out: set[str] = set()
    for _ in range(3):  # a = run.folder; b = a / "x": a few hops
        for n in ast.walk(scope):
            if isinstance(n, ast.Assign) and _marked(n.value, out):
                for t in n.targets:
                    out |= {e.id for e in ast.walk(t) if isinstance(e, ast.Name)}
    return out


def _target(call: ast.Call) -> ast.AST | None:
    """The path a write call writes to, or None if it is no write call."""
    f = call.func
    if isinstance(f, ast.Attribute) and f.attr in PATH_METHODS:
        return f.value
    if isinstance(f, ast.Name):
        name = f.id
    elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id in MODULES:
        name = f.attr
    elif isinstance(f, ast.Attribute) and f.attr == "save":
        name = "save"  # PIL's image.save(path)
    else:
        return None
    if name == "open":
        mode = call.args[1] if len(call.args) > 1 else None
        mode = mode or next((k.value for k in call.keywords if k.arg == "mode"), None)
        writes = isinstance(mode, ast.Constant) and any(c in str(mode.value) for c in "wax+")
        return call.args[0] if writes and call.args else None
    if name == "save":  # torch.save(obj, path); PIL's image.save(path)
        torch_save = isinstance(f, ast.Attribute) and getattr(f.value, "id", "") == "torch"
        i = 1 if torch_save else 0
        return call.args[i] if len(call.args) > i else None
    if name in WRITERS and len(call.args) > WRITERS[name]:
        return call.args[WRITERS[name]]
    return None


def run_folder_writes(source: str) -> list[int]:
    """Line numbers of calls in ``source`` that write into a run folder."""
    tree = ast.parse(source)
    found = []
    scopes = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    for scope in [tree, *scopes]:
        tainted = _tainted(scope) if scope is not tree else set()
        body = scope.body if scope is tree else [scope]
        for stmt in body:
            if scope is tree and isinstance(stmt, (ast.FunctionDef, ast.ClassDef)):
                continue  # functions are scopes of their own; classes' methods too
            for n in ast.walk(stmt):
                t = _target(n) if isinstance(n, ast.Call) else None
                if t is not None and _marked(t, tainted):
                    found.append(n.lineno)
    return sorted(set(found))


def test_the_check_finds_run_folder_writes():
    # What genbench did before the run-folder module owned every write.
    old = (
        "def write(run, metrics):\n"
        "    write_json(run.folder.metrics, metrics)\n"
        "def prepare(run):\n"
        "    cfg, folder = run.config, run.folder\n"
        "    write_text(folder.config, 'x')\n"
        "    folder.path.mkdir(parents=True)\n"
        "def score_real_data(results_dir, key):\n"
        "    rd = results_dir / key\n"
        "    write_json(rd / 'metrics.json', {})\n"
        "def unit(x, boot):\n"
        "    write_json(x.out_dir / 'bootstrap.json', boot)\n"
        "def grid(run_dir, images, out=None):\n"
        "    path = out or run_dir / 'grids' / 'a.png'\n"
        "    save_grid(images, path, nrow=8)\n"
        "def tracker(run_dir, wb_id):\n"
        "    write_json(run_dir / WANDB_ID, {'id': wb_id})\n"
        "def checkpoint(run_dir, state):\n"
        "    torch.save(state, run_dir / 'checkpoints' / 'step.pt')\n"
        "    shutil.copy2(state, rd / METRICS)\n"
    )
    assert run_folder_writes(old) == [2, 5, 6, 9, 11, 14, 16, 18, 19]
    fine = (
        "def report(out_dir, table, src):\n"
        "    write_text(out_dir / 'summary.md', table)\n"
        "    shutil.copyfile(src / 'metrics.json', out_dir / 'a.json')\n"
        "    open(src / 'metrics.json').read()\n"
        "def real_row(folder, scored):\n"
        "    folder.write_files(scored.files)\n"
    )
    assert run_folder_writes(fine) == []


def test_only_the_run_folder_module_writes_into_run_folders():
    assert (ROOT / FOLDER_MODULE).is_file()
    offenders = []
    for path in sorted((ROOT / "genbench").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel in ALLOWED or rel.startswith(ALLOWED_TREES):
            continue
        offenders += [f"{rel}:{line}" for line in run_folder_writes(path.read_text())]
    assert not offenders, "run-folder writes outside " + FOLDER_MODULE + ": " + ", ".join(offenders)
