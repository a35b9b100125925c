"""The README documents every command and option of the CLI."""

import click
import pytest

from irbench.cli.main import cli
from tests.conftest import REPO


def _commands(group: click.Group, prefix: str = "bench"):
    for name, cmd in group.commands.items():
        yield f"{prefix} {name}", cmd
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, f"{prefix} {name}")


def test_every_option_is_in_the_readme():
    readme = (REPO / "README.md").read_text()
    missing = []
    for name, cmd in _commands(cli):
        if name not in readme:
            missing.append(name)
        for param in cmd.params:
            if isinstance(param, click.Option):
                longs = [o for o in param.opts if o.startswith("--")]
                if longs and not any(f"`{o}" in readme or f" {o}" in readme for o in longs):
                    missing.append(f"{name} {longs[0]}")
    assert not missing, f"not documented in README.md: {missing}"


def test_set_up_section_has_two_commands():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Set up", 1)[1].split("##", 1)[0]
    block = section.split("```", 2)[1].strip().splitlines()
    assert block == ['pip install -e ".[dev]"', "python -m pytest"]


def _sections(readme: str) -> dict[str, str]:
    """README sections by their `### ` heading."""
    out, heading = {}, None
    for line in readme.splitlines():
        if line.startswith("## "):
            heading = None
        elif line.startswith("### "):
            heading = line[4:]
            out[heading] = ""
        elif heading is not None:
            out[heading] += line + "\n"
    return out


def _section_of(name: str, sections: dict[str, str]) -> str | None:
    words = name.split()
    for heading in sections:
        if f"`{name}`" in heading or (len(words) == 3 and f"`{' '.join(words[:2])} " in heading
                                       and words[2] in heading.replace("`", " ").split()):
            return heading
    return None


def test_each_command_section_matches_its_help():
    """Each command's README section names exactly the options its --help has: every
    real option is documented there, and no option documented there is gone."""
    import re

    sections = _sections((REPO / "README.md").read_text())
    covered: dict[str, set[str]] = {}
    problems = []
    for name, cmd in _commands(cli):
        if isinstance(cmd, click.Group):
            continue
        heading = _section_of(name, sections)
        if heading is None:
            problems.append(f"{name}: no README section whose heading names it")
            continue
        longs = {o for p in cmd.params if isinstance(p, click.Option)
                 for o in p.opts if o.startswith("--")} | {"--help"}
        covered.setdefault(heading, set()).update(longs)
        body = sections[heading]
        for p in cmd.params:
            opts = [o for o in p.opts if o.startswith("--")] if isinstance(p, click.Option) else []
            if opts and not any(re.search(rf"{re.escape(o)}(?![\w-])", body) for o in opts):
                problems.append(f"{name} {opts[0]}: missing from section {heading!r}")
    for heading, longs in covered.items():
        for o in sorted(set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", sections[heading]))):
            if o not in longs:
                problems.append(f"section {heading!r} documents {o}, which its commands lack")
    assert not problems, "\n".join(problems)


@pytest.mark.slow
def test_the_python_example_runs(tmp_path, monkeypatch):
    """The README's "From Python" example, executed as written (in a scratch folder)."""
    section = (REPO / "README.md").read_text().split("### From Python", 1)[1]
    code = section.split("```python", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IRBENCH_CACHE", str(tmp_path / "cache"))
    scope: dict = {}
    exec(compile(code, "README.md (From Python)", "exec"), scope)  # noqa: S102
    records, problems = scope["records"], scope["problems"]
    assert not problems and len(records) == 3
    assert scope["comparison"].settings
