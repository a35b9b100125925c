"""The README documents every command and option of the CLI."""

import click

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
