"""`bench methods` and `bench datasets`: what is registered, with config fields and defaults."""

from __future__ import annotations

import json

import click
from rich.table import Table
from rich.text import Text

from irbench.cli.ui import console
from irbench.core.registry import Registry, describe
from irbench.datasets.registry import DATASETS
from irbench.methods.registry import METHODS


def _show(registry: Registry, as_json: bool, name: str | None = None) -> None:
    data = describe(registry)
    key = registry.kind + "s"
    if name is not None:
        registry.get(name)  # an unknown name: one error with the closest matches
        data = {key: [item for item in data[key] if item["name"] == name], "broken": []}
    if as_json:
        click.echo(json.dumps(data, indent=1))
        return
    if name is not None:
        console.print(_one(data[key][0]))
        return
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


def _one(item: dict) -> Table:
    """One method or dataset: a row per config field (default, allowed values, help)."""
    source = "" if item["source"] == "irbench" else f" (from {item['source']})"
    table = Table(title=f"{item['name']}{source}: {item['description']}", show_lines=False)
    for col in ("field", "default", "allowed", "help"):
        table.add_column(col, style="cyan" if col == "field" else None,
                         overflow="fold")
    for f in item["fields"]:
        allowed = (" | ".join(map(str, f["choices"])) if f.get("choices") else
                   " ".join(f"{op} {f[k]}" for op, k in ((">=", "minimum"), ("<=", "maximum"))
                            if k in f) or f["type"])
        table.add_row(f["name"], json.dumps(f["default"]), allowed, f["help"])
    return table


@click.command("methods")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def methods_cmd(name: str | None, as_json: bool) -> None:
    """List registered methods: name, description, config fields and defaults; with NAME,
    that method's fields one per row."""
    _show(METHODS, as_json, name)


@click.command("datasets")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def datasets_cmd(name: str | None, as_json: bool) -> None:
    """List registered datasets: name, description, options and defaults; with NAME, that
    dataset's options one per row."""
    _show(DATASETS, as_json, name)
