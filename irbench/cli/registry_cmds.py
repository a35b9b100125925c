"""`bench methods` and `bench datasets`: what is registered, with config fields and defaults."""

from __future__ import annotations

import json

import click
from rich.table import Table
from rich.text import Text

from irbench.cli.ui import console
from irbench.harness.registry import DATASETS, METHODS, Registry, describe


def _show(registry: Registry, as_json: bool) -> None:
    data = describe(registry)
    if as_json:
        click.echo(json.dumps(data, indent=1))
        return
    key = registry.kind + "s"
    table = Table(title=f"{registry.kind}s", show_lines=True)
    table.add_column("name", style="bold")
    table.add_column("description")
    table.add_column("config fields (default)")
    for item in data[key]:
        name = item["name"] + (":ARG" if item["argument"] else "")
        if item["source"] != "irbench":
            name += f"\n(from {item['source']})"
        fields = Text()
        for i, f in enumerate(item["fields"]):
            if i:
                fields.append("\n")
            fields.append(f"{f['name']}", style="cyan")
            fields.append(f"={json.dumps(f['default'])}")
            if f["help"]:
                fields.append(f"  {f['help']}", style="dim")
        table.add_row(name, item["description"], fields if item["fields"] else Text("—"))
    console.print(table)
    for b in data["broken"]:
        console.print(Text.assemble(("broken plugin ", "bold red"), f"{b['name']} ",
                                    (f"({b['source']}: {b['target']}): ", "dim"), b["error"]))


@click.command("methods")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def methods_cmd(as_json: bool) -> None:
    """List registered methods: name, description, config fields and defaults."""
    _show(METHODS, as_json)


@click.command("datasets")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def datasets_cmd(as_json: bool) -> None:
    """List registered datasets: name, description, options and defaults."""
    _show(DATASETS, as_json)
