"""Generate toolkit/data/llamafactory/schema-<version>.json: the keys LLaMA-Factory accepts in a training
YAML, read from its released source (no import: the dataclasses are read with `ast`).

LLaMA-Factory parses a training file with HfArgumentParser over ModelArguments, DataArguments, its
TrainingArguments (a subclass of transformers' Seq2SeqTrainingArguments), FinetuningArguments and
GeneratingArguments, and refuses a key none of them declares. This script collects the `init` fields of
those dataclasses (following their bases, into transformers' own TrainingArguments for the transformers
version LLaMA-Factory pins), their literal defaults and their value sets (Literal[...] annotations and the
enums LLaMA-Factory checks against: QuantizationMethod, transformers' OptimizerNames).

Usage (the two archives as `pip download --no-deps` gives them):
    pip download llamafactory==0.9.5 --no-deps --no-binary :all: -d /tmp/lf
    pip download transformers==5.6.0 --no-deps -d /tmp/lf
    python scripts/llamafactory_schema.py /tmp/lf/llamafactory-0.9.5.tar.gz \
        /tmp/lf/transformers-5.6.0-py3-none-any.whl
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import re
import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "toolkit" / "data" / "llamafactory"
TRAIN_GROUPS = (
    "ModelArguments",
    "DataArguments",
    "TrainingArguments",
    "FinetuningArguments",
    "GeneratingArguments",
)  # hparams/parser.py, _TRAIN_ARGS
LF_FILES = ("model_args.py", "data_args.py", "training_args.py", "finetuning_args.py", "generating_args.py")
# the value sets LLaMA-Factory or transformers convert a key's text into (an unknown value is an error there)
ENUMS = {
    "quantization_method": "QuantizationMethod",  # llamafactory/extras/constants.py
    "flash_attn": "AttentionFunction",  # llamafactory/extras/constants.py
    "optim": "OptimizerNames",  # transformers/training_args.py
    "lr_scheduler_type": "SchedulerType",  # transformers/trainer_utils.py
}


def _members(archive: Path) -> dict[str, bytes]:
    """name -> bytes of the archive's python files."""
    if archive.suffix == ".whl" or archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as zf:
            return {n: zf.read(n) for n in zf.namelist() if n.endswith(".py")}
    with tarfile.open(archive) as tf:
        return {
            m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isfile() and m.name.endswith(".py")
        }


def _pick(members: dict[str, bytes], suffix: str) -> tuple[str, bytes]:
    found = [n for n in members if n.endswith(suffix)]
    if len(found) != 1:
        raise SystemExit(f"expected one {suffix} in the archive, found {found}")
    return found[0], members[found[0]]


def _literal(node):
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None


def _field_info(stmt: ast.AnnAssign) -> dict | None:
    """A dataclass field's default and init flag, or None for a ClassVar."""
    annotation = ast.unparse(stmt.annotation)
    if "ClassVar" in annotation:
        return None
    info = {"annotation": annotation, "default": None, "init": True}
    value = stmt.value
    if isinstance(value, ast.Call) and ast.unparse(value.func) in ("field", "dataclasses.field"):
        for kw in value.keywords:
            if kw.arg == "default":
                info["default"] = _default(kw.value)
            elif kw.arg == "init":
                info["init"] = bool(_literal(kw.value))
    elif value is not None:
        info["default"] = _default(value)
    choices = re.findall(r"Literal\[([^\]]*)\]", annotation)
    if choices:
        info["choices"] = [c for group in choices for c in _literal(ast.parse(f"[{group}]").body[0].value)]
    return info


def _default(node):
    """A literal default, or the expression's text (an enum member, a class-level name) marked `expr:`."""
    value = _literal(node)
    if value is None and not (isinstance(node, ast.Constant) and node.value is None):
        return f"expr:{ast.unparse(node)}"
    return value


def _classes(source: bytes) -> dict[str, ast.ClassDef]:
    return {n.name: n for n in ast.parse(source).body if isinstance(n, ast.ClassDef)}


def _enum_values(cls: ast.ClassDef) -> dict[str, str]:
    return {
        t.id: s.value.value
        for s in cls.body
        if isinstance(s, ast.Assign) and isinstance(s.value, ast.Constant)
        for t in s.targets
        if isinstance(t, ast.Name)
    }


def _fields(name: str, spaces: list[dict[str, ast.ClassDef]], seen: set[int]) -> dict[str, dict]:
    """The fields of `name` with those of its bases (a subclass's field wins, as in dataclasses). `spaces`
    is where a name is looked up, first to last: LLaMA-Factory's classes, then transformers' (both have a
    TrainingArguments: LLaMA-Factory's subclasses transformers' through BaseTrainingArguments)."""
    for index, classes in enumerate(spaces):  # noqa: B007 (index is used after the loop)
        if name in classes and id(classes[name]) not in seen:
            break
    else:
        return {}
    seen.add(id(spaces[index][name]))
    cls, below = spaces[index][name], spaces[index:]
    out: dict[str, dict] = {}
    for base in reversed(cls.bases):
        base_name = ast.unparse(base).split(".")[-1]
        if base_name == "BaseTrainingArguments":  # hparams/training_args.py (without Megatron's adapter)
            base_name = "Seq2SeqTrainingArguments"
        out.update(_fields(base_name, below, seen))
    for stmt in cls.body:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            info = _field_info(stmt)
            if info is not None:
                out[stmt.target.id] = {**info, "class": name}
    return out


def build(lf_archive: Path, tf_archive: Path) -> dict:
    lf, tf = _members(lf_archive), _members(tf_archive)
    version = re.search(r"llamafactory-([0-9][^/]*?)(?:\.tar\.gz|-py3)", lf_archive.name)
    tf_version = re.search(r"transformers-([0-9][^-]*)-", tf_archive.name)
    sources, lf_classes, tf_classes = [], {}, {}
    for suffix in (*(f"hparams/{f}" for f in LF_FILES), "extras/constants.py"):
        path, data = _pick(lf, f"llamafactory/{suffix}")
        sources.append({"file": path, "sha256": hashlib.sha256(data).hexdigest()})
        lf_classes.update(_classes(data))
    for suffix in (
        "transformers/training_args.py",
        "transformers/training_args_seq2seq.py",
        "transformers/trainer_utils.py",
    ):
        path, data = _pick(tf, suffix)
        sources.append({"file": path, "sha256": hashlib.sha256(data).hexdigest()})
        tf_classes.update(_classes(data))
    classes = {**tf_classes, **lf_classes}
    keys: dict[str, dict] = {}
    for group in TRAIN_GROUPS:
        for key, info in _fields(group, [lf_classes, tf_classes], set()).items():
            if info.pop("init"):
                keys.setdefault(key, {**info, "group": group})
    enums = {key: sorted(_enum_values(classes[name]).values()) for key, name in ENUMS.items()}
    return {
        "llamafactory_version": version.group(1) if version else lf_archive.name,
        "transformers_version": tf_version.group(1) if tf_version else tf_archive.name,
        "archives": [lf_archive.name, tf_archive.name],
        "sources": sources,
        "generator": "scripts/llamafactory_schema.py",
        "enums": enums,
        "keys": dict(sorted(keys.items())),
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    schema = build(Path(argv[0]), Path(argv[1]))
    OUT.mkdir(parents=True, exist_ok=True)
    target = OUT / f"schema-{schema['llamafactory_version']}.json"
    buffer = io.StringIO()
    json.dump(schema, buffer, indent=1, sort_keys=False, default=str)
    target.write_text(buffer.getvalue() + "\n", encoding="utf-8")
    version = schema["llamafactory_version"]
    print(f"{target.relative_to(ROOT)}: {len(schema['keys'])} keys of LLaMA-Factory {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
