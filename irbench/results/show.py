"""`bench show`: one run's queries and the top of their rankings as a static HTML page,
each result marked positive, junk or wrong, sortable by AP or by the gain against a
second run.

Everything comes from run records (the query ids, each query's AP and the kept top of
its ranking: `bench run --keep-ranking N`) and the dataset's files, whose content
fingerprint must be the record's. The page is a folder that opens without a server:
`index.html` (inline style and script, no network) and `thumbs/`, one JPEG per image and
box, written once and reused by later pages written to the same folder.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from irbench.core.cache import atomic_write_bytes, atomic_write_text
from irbench.datasets.base import Dataset, Image, Query
from irbench.datasets.images import read_image
from irbench.datasets.signature import ImageSigner
from irbench.errors import IrbenchError
from irbench.results.leaderboard import percent
from irbench.results.store import RunRecord

POSITIVE, JUNK, WRONG = "positive", "junk", "wrong"


class ShowError(IrbenchError):
    """A run that cannot be shown: no kept ranking, other data, other queries."""


@dataclass(frozen=True)
class Shown:
    """What `write_show` wrote: the page, its queries and the thumbnails it refers to."""

    page: Path
    queries: int
    thumbnails: int
    """Thumbnails the page shows (query crops and results); each file is written once."""
    written: int
    """Thumbnail files written this time (the others were in the folder already)."""


def _setting(record: RunRecord, setting: str | None) -> str:
    settings = list(record.metrics.get("settings", {}))
    if setting is None:
        return "medium" if "medium" in settings else settings[0]
    if setting not in settings:
        raise ShowError(f"run {record.run_id} has no protocol setting {setting!r}; it has "
                        f"{', '.join(repr(s) for s in settings)}")
    return setting


def check_shows(record: RunRecord, dataset: Dataset, signer: ImageSigner | None = None) -> None:
    """ShowError unless `record` was run on exactly `dataset` and kept its ranking."""
    if not record.ranking:
        raise ShowError(f"run {record.run_id} kept no ranking (its record predates "
                        "`--keep-ranking`, or it ran with --keep-ranking 0): run it again")
    fingerprint = dataset.fingerprint(signer or ImageSigner())
    if fingerprint != record.dataset_fingerprint:
        raise ShowError(f"run {record.run_id} was made on other data than {dataset.name} "
                        f"at {dataset.root} (fingerprint {record.dataset_fingerprint[:12]}, "
                        f"the files here give {fingerprint[:12]}): the images or the ground "
                        "truth have changed since")
    ids = [str(q.id) for q in dataset.queries]
    if record.query_ids and record.query_ids != ids:
        raise ShowError(f"run {record.run_id} names other queries than {dataset.name}")


def _thumb_name(image: Image | Query, signature: str, side: int) -> str:
    box = getattr(image, "crop_box", None) if isinstance(image, Query) else None
    key = json.dumps([signature, None if box is None else [float(v) for v in box], side])
    return hashlib.sha256(key.encode()).hexdigest()[:24] + ".jpg"


def _write_thumb(image: Image | Query, path: Path, side: int) -> None:
    box = image.crop_box if isinstance(image, Query) else None
    rgb = read_image(image.path, box)
    h, w = rgb.shape[:2]
    scale = side / max(h, w)
    if scale < 1:
        rgb = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))),
                         interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise ShowError(f"cannot encode a thumbnail of {image.path}")
    atomic_write_bytes(path, data.tobytes())


def write_show(record: RunRecord, dataset: Dataset, out: Path, *,
               vs: RunRecord | None = None, setting: str | None = None, top: int = 10,
               thumb_side: int = 128, signer: ImageSigner | None = None) -> Shown:
    """Write `out/index.html` and `out/thumbs/`: per query its crop, AP (and AP in `vs`
    with the gain), and its `top` first results marked positive / junk / wrong under
    `setting` (default: `medium` where there is one, else the first)."""
    signer = signer or ImageSigner()
    check_shows(record, dataset, signer)
    if vs is not None and vs.dataset_fingerprint != record.dataset_fingerprint:
        raise ShowError(f"runs {record.run_id} and {vs.run_id} are of other data: their "
                        "queries cannot be compared")
    name = _setting(record, setting)
    rule = dataset.protocol.settings[name]
    ap = record.metrics["settings"][name]["ap"]
    ap_vs = None if vs is None else vs.metrics["settings"].get(name, {}).get("ap")
    if vs is not None and (ap_vs is None or len(ap_vs) != len(ap)):
        raise ShowError(f"run {vs.run_id} has no per-query AP of setting {name!r} for "
                        f"these {len(ap)} queries")
    indices = record.ranking["indices"]
    scores = record.ranking["scores"]
    top = min(top, record.ranking["depth"])
    thumbs = Path(out) / "thumbs"
    thumbs.mkdir(parents=True, exist_ok=True)
    paths = [im.path for im in (*dataset.queries, *dataset.database)]
    signatures = signer.sign(paths)
    written = 0
    names: dict[tuple[str, int], str] = {}

    def thumb(image: Image | Query, role: str, i: int) -> str:
        nonlocal written
        key = (role, i)
        if key not in names:
            fname = _thumb_name(image, signatures[os.path.abspath(image.path)], thumb_side)
            if not (thumbs / fname).is_file():
                _write_thumb(image, thumbs / fname, thumb_side)
                written += 1
            names[key] = fname
        return names[key]

    blocks = []
    for qi, q in enumerate(dataset.queries):
        truth = dataset.ground_truth[qi]
        positives = set().union(*(set(truth[s].tolist()) for s in rule.positives if s in truth))
        junk = set().union(*(set(truth[s].tolist()) for s in rule.junk if s in truth))
        results = []
        for rank, (idx, score) in enumerate(zip(indices[qi][:top], scores[qi][:top],
                                                strict=True), 1):
            if idx < 0:
                break
            mark = POSITIVE if idx in positives else JUNK if idx in junk else WRONG
            im = dataset.database[idx]
            results.append(
                f'<figure class="{mark}" title="#{rank} {html.escape(str(im.id))} · '
                f'{mark} · score {"—" if score is None else f"{score:.4f}"}">'
                f'<img src="thumbs/{thumb(im, "db", idx)}" alt="{html.escape(str(im.id))}">'
                f'<figcaption>{rank}</figcaption></figure>')
        a = ap[qi]
        b = None if ap_vs is None else ap_vs[qi]
        gain = None if a is None or b is None else a - b
        stats = f"AP {percent(a)}" + ("" if vs is None else f" · in B {percent(b)} · gain "
                                   f"{'—' if gain is None else f'{100 * gain:+.2f}'}")
        blocks.append(
            f'<section class="query" data-index="{qi}" data-ap="{_num(a)}" '
            f'data-gain="{_num(gain)}"><header><b>{html.escape(str(q.id))}</b> · {stats} · '
            f'{len(positives)} positive(s)</header><div class="row">'
            f'<figure class="q" title="query {html.escape(str(q.id))}">'
            f'<img src="thumbs/{thumb(q, "q", qi)}" alt="query"><figcaption>query'
            f'</figcaption></figure>{"".join(results)}</div></section>')
    title = (f"{record.method} on {record.dataset}: {record.run_id}"
             + ("" if vs is None else f" against {vs.run_id}"))
    page = _PAGE.format(
        title=html.escape(title),
        summary=html.escape(_summary(record, name, vs)),
        gain_button="" if vs is None else '<button data-key="gain">gain over B</button>',
        blocks="\n".join(blocks))
    out_page = Path(out) / "index.html"
    atomic_write_text(out_page, page)
    return Shown(out_page, len(dataset.queries), len(set(names.values())), written)


def _num(v: float | None) -> str:
    return "" if v is None or not np.isfinite(v) else f"{v:.6f}"


def _summary(record: RunRecord, setting: str, vs: RunRecord | None) -> str:
    m = record.metrics["settings"][setting]["map"]
    text = (f"setting {setting or '(standard)'} · mAP {percent(m)} · "
            f"{len(record.ranking['indices'])} queries · top {record.ranking['depth']} kept")
    if vs is not None:
        text += f" · B: {vs.method} mAP {percent(vs.metrics['settings'][setting]['map'])}"
    return text


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 1em; }}
.query {{ margin: 0 0 1em; }}
.row {{ display: flex; flex-wrap: wrap; gap: 4px; }}
figure {{ margin: 0; border: 4px solid #bbb; text-align: center; }}
figure img {{ display: block; max-width: 128px; max-height: 128px; }}
figcaption {{ font-size: 11px; }}
.q {{ border-color: #36c; }} .positive {{ border-color: #2a2; }}
.junk {{ border-color: #999; opacity: .6; }} .wrong {{ border-color: #d22; }}
</style></head><body>
<h1>{title}</h1><p>{summary}</p>
<p>border: <b style="color:#2a2">positive</b> · <b style="color:#999">junk</b> ·
<b style="color:#d22">wrong</b> · sort by
<button data-key="index">query order</button> <button data-key="ap">AP</button>
{gain_button}</p>
<main id="queries">
{blocks}
</main>
<script>
for (const b of document.querySelectorAll("button[data-key]")) {{
  b.addEventListener("click", () => {{
    const key = b.dataset.key, main = document.getElementById("queries");
    const items = [...main.children];
    const value = e => e.dataset[key] === "" ? Infinity : parseFloat(e.dataset[key]);
    items.sort((x, y) => value(x) - value(y));
    for (const e of items) main.appendChild(e);
  }});
}}
</script>
</body></html>
"""


def dataset_spec(record: RunRecord) -> str:
    """How to load the dataset a record was run on: its name, or for `folder:` data the
    folder it recorded (a manifest must be given with `--dataset`)."""
    kind, sep, _ = record.dataset.partition(":")
    if not sep:
        return record.dataset
    if kind == "folder" and record.dataset_root:
        return f"folder:{record.dataset_root}"
    raise ShowError(f"run {record.run_id} was made on {record.dataset}; give the data with "
                    "--dataset (e.g. manifest:PATH.json)")

