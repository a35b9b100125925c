"""`bench data fetch / verify / info`: get a dataset onto disk, check it, describe it."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table
from rich.text import Text

from irbench.cli.ui import console, make_progress, setup_logging
from irbench.core.parallel import default_workers
from irbench.datasets import manage
from irbench.datasets.registry import default_data_root


def _data_root(value: Path | None) -> Path:
    return Path(value).expanduser() if value else default_data_root()


data_root_option = click.option(
    "--data-root", type=click.Path(path_type=Path), default=None,
    help="Root of downloaded datasets [env IRBENCH_DATA; default: <cache dir>/data].")


@click.group("data")
def data_cmd() -> None:
    """Get datasets onto disk (fetch), check them (verify), describe them (info).

    NAME is a dataset (`bench datasets`) or a data package (flickr100k, r1m,
    holidays-upright, ...); `bench data info` with no NAME lists them all.
    """


@data_cmd.command("fetch")
@click.argument("name")
@click.option("--from", "from_path", type=click.Path(path_type=Path), default=None,
              help="Import from files you already have: one archive, a folder holding the "
                   "archives, or a folder with the extracted layout (linked, not copied).")
@click.option("--force", is_flag=True, help="Fetch and unpack again what is already installed.")
@click.option("--keep-archives", is_flag=True,
              help="Keep downloaded archives after unpacking (under <package>/.irbench).")
@data_root_option
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or info messages.")
@click.option("-v", "--verbose", is_flag=True, help="Debug messages.")
def fetch_cmd(name, from_path, force, keep_archives, data_root, quiet, verbose) -> None:
    """Download NAME from its official address (mirrors as fallbacks), resumably, check
    its checksums and unpack it under the data root."""
    setup_logging(quiet, verbose)
    root = _data_root(data_root)
    lines = manage.fetch(name, root, from_path=from_path, force=force,
                         keep_archives=keep_archives, progress=make_progress(quiet))
    for line in lines:
        console.print(line, soft_wrap=True)
    result = manage.info(name, root)
    console.print(f"{name}: {result['status']} under {root}")


@data_cmd.command("verify")
@click.argument("name")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Processes decoding images [env IRBENCH_WORKERS].")
@click.option("--no-decode", is_flag=True, help="Only check that files exist, do not decode them.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@data_root_option
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def verify_cmd(name, workers, no_decode, as_json, data_root, quiet) -> None:
    """Check NAME: image counts, every ground-truth name resolves to an image, every image
    decodes. NAME may also be folder:PATH or manifest:FILE.json (every image of it is
    checked). Lists what is missing or corrupt; exits 1 when anything is."""
    setup_logging(quiet or as_json, False)
    report = manage.verify(name, _data_root(data_root), workers=workers or default_workers(),
                           progress=make_progress(quiet or as_json), decode=not no_decode)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        for pkg, (found, expected) in report.counts.items():
            exp = f" (expected {expected:,})" if expected is not None else ""
            console.print(f"{pkg}: {found:,} image files{exp}")
        console.print(f"{report.images_checked:,} images of {name} checked", markup=False,
                      soft_wrap=True)
        for title, items in (("problems", report.problems), ("missing", report.missing),
                             ("corrupt", report.corrupt)):
            if items:
                console.print(Text(f"{title} ({len(items)}):", style="bold red"))
                for item in items:
                    console.print(f"  {item}", soft_wrap=True, markup=False)
        console.print(Text("OK", style="green") if report.ok
                      else Text("NOT OK", style="bold red"))
    if not report.ok:
        raise SystemExit(1)


@data_cmd.command("info")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the information as JSON.")
@data_root_option
def info_cmd(name, as_json, data_root) -> None:
    """Counts, protocol, location, size on disk and status of NAME (all when omitted)."""
    root = _data_root(data_root)
    if name is None:
        rows = [manage.info(n, root) for n in _all_names()]
        if as_json:
            click.echo(json.dumps(rows, indent=2))
            return
        table = Table(title=f"datasets under {root}")
        for col in ("name", "status", "packages", "size"):
            table.add_column(col)
        for row in rows:
            table.add_row(row["name"], row["status"],
                          ", ".join(f"{p['name']} ({p['status']})" for p in row["packages"]),
                          _size(sum(p["bytes"] for p in row["packages"])))
        console.print(table)
        return
    result = manage.info(name, root)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    console.print(Text.assemble((name, "bold"), f": {result['status']}"
                                + (f" — {result['description']}" if "description" in result
                                   else "")))
    if "dataset" in result:
        d = result["dataset"]
        console.print(f"  version {d['version']}: {d['database']:,} database images, "
                      f"{d['queries']:,} queries, {d['train']:,} train images"
                      + (f" in {d['classes']} classes" if d["classes"] else ""))
        console.print(f"  protocol: {d['protocol']['description']}", markup=False)
    if result.get("corrupt"):
        console.print(Text.assemble("  ", (f"{len(result['corrupt'])} damaged image(s)", "red"),
                                    " (quick check of both ends of each file; `bench data "
                                    "verify` decodes them all):"))
        for line in result["corrupt"]:
            console.print(f"    {line}", markup=False, soft_wrap=True)
    if "error" in result:
        console.print(Text.assemble("  ", ("error:", "red"), f" {result['error']}"),
                      soft_wrap=True)
    for p in result["packages"]:
        exp = f" of {p['expected_images']:,}" if p["expected_images"] else ""
        console.print(f"  package {p['name']}: {p['status']}, {p['images']:,}{exp} images, "
                      f"{_size(p['bytes'])} at {p['path']}", markup=False)
        console.print(f"    source: {p['homepage']}", markup=False)
        if p["status"] != "installed" and p["status"] != "present":
            console.print("    expected layout:\n      " + p["layout"].replace("\n", "\n      "),
                          markup=False)
            console.print(f"    get it with: bench data fetch {p['name']}"
                          + (" --from PATH" if "manual" in p else ""), markup=False)
    for note in result.get("notes_on_files", []):
        console.print(f"  {note}", markup=False, soft_wrap=True)


def _all_names() -> list[str]:
    from irbench.datasets.catalog import PACKAGES
    from irbench.datasets.registry import DATASETS

    names = [e.name for e in DATASETS.entries() if getattr(e.obj, "packages", ())]
    return names + sorted(p for p in PACKAGES if p not in names)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
