"""Self-contained HTML pages: ``index.html`` for a ``gradcam explain`` run, ``report.html`` for
``gradcam evaluate``. No network, no CDN: inline CSS and JavaScript, relative links to the PNGs.

The explain page embeds the manifest as JSON and renders it in pages of cards, so 10,000 photos stay
usable: only one page of cards is in the document at a time, and images load lazily.
"""

from __future__ import annotations

import html
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..io.files import write_atomic

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f4f4f6;color:#222}
header{position:sticky;top:0;background:#fff;border-bottom:1px solid #ddd;padding:10px 16px;z-index:1}
header h1{font-size:18px;margin:0 0 6px}
.controls{display:flex;gap:12px;flex-wrap:wrap;align-items:center}
main{display:grid;grid-template-columns:repeat(auto-fill,minmax(460px,1fr));gap:14px;padding:16px}
.card{background:#fff;border-radius:8px;box-shadow:0 1px 3px #0002;padding:10px;overflow:hidden}
.card.failed{border-left:4px solid #c0392b}
.card h2{font-size:13px;margin:0 0 6px;word-break:break-all}
.card img{width:100%;border-radius:4px;background:#eee}
.maps figure{margin:0}.maps figcaption{font-size:12px;color:#555}
.card figure.photo img{max-height:160px;width:auto;max-width:100%}
.target{display:flex;flex-wrap:wrap;gap:6px;margin:8px 0;
  padding-top:6px;border-top:1px solid #eee}
.target h3{flex-basis:100%;font-size:13px;margin:0}.target>figure{flex:1 1 300px;max-width:100%}
.target>figure img{width:auto;max-width:100%;display:block}
.card img{cursor:zoom-in}
.card figure{margin:0}
.target details.grid{flex-basis:100%;font-size:12px;color:#555}.target details.grid summary{cursor:pointer}
dialog{border:0;padding:0;background:#000c;max-width:100vw;max-height:100vh}
dialog img{max-width:96vw;max-height:92vh;display:block;cursor:zoom-out}
dialog p{color:#fff;margin:4px 8px;font-size:13px}
.scale{display:inline-flex;align-items:center;gap:6px;font-size:12px}
.scale i{display:inline-block;width:160px;height:10px;border-radius:2px}
.bar{display:flex;align-items:center;gap:6px;font-size:12px;margin:2px 0}
.bar span.label{flex:0 0 45%;overflow:hidden;white-space:nowrap;text-overflow:ellipsis}
.bar span.fill{height:10px;background:#3b7dd8;border-radius:2px}
.error{color:#c0392b;font-family:monospace;font-size:12px;overflow-wrap:anywhere}
nav{padding:0 16px 16px}
table{border-collapse:collapse;background:#fff}td,th{border:1px solid #ddd;padding:4px 8px;text-align:right}
th:first-child,td:first-child,th:nth-child(2),td:nth-child(2){text-align:left}
"""

_SCRIPT = """
const data = JSON.parse(document.getElementById('data').textContent);
const PAGE = 60;
let page = 0;
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const c of children) node.append(c);
  return node;
};
function best(entry) { return entry.predictions && entry.predictions.length ? entry.predictions[0] : null; }
function figure(src, alt, caption) {
  const image = el('img', {src, loading: 'lazy', alt});
  image.onclick = () => zoom(src, caption);
  return el('figure', {}, image, el('figcaption', {}, caption));
}
function zoom(src, caption) {
  const dialog = document.getElementById('zoom');
  dialog.querySelector('img').src = src;
  dialog.querySelector('p').textContent = caption;
  dialog.showModal();
}
function probabilityOf(entry, index) {
  const p = (entry.predictions || []).find(q => q.index === index);
  return p && p.probability !== undefined ? `, p = ${p.probability.toFixed(2)}` : '';
}
function card(entry) {
  const box = el('div', {class: 'card' + (entry.status === 'ok' ? '' : ' failed'), 'data-path': entry.path});
  box.append(el('h2', {}, entry.path));
  if (entry.status !== 'ok') { box.append(el('div', {class: 'error'}, entry.error)); return box; }
  for (const p of entry.predictions) {
    const value = p.probability ?? p.similarity;
    const text = p.probability !== undefined ? `${(100 * value).toFixed(1)}%` : `cosine ${value.toFixed(3)}`;
    box.append(el('div', {class: 'bar'}, el('span', {class: 'label'}, p.label), el('span', {class: 'fill', style: `width:${Math.max(1, 50 * Math.max(0, value))}%`}), text));
  }
  if (entry.photo) {
    const size = entry.size ? `, ${entry.size[0]} x ${entry.size[1]}` : '';
    const photo = figure(entry.photo, 'photo', `the photo${size}`);
    photo.className = 'photo';
    box.append(photo);
  }
  for (const t of entry.targets) {
    const row = el('div', {class: 'target maps'});
    const what = `${t.label} (${t.index})`;
    const confidence = t.score >= 0.01 ? t.score.toFixed(2) : t.score.toExponential(0);
    const score = t.area != null ? `mean probability ${confidence} over ${Math.round(100 * t.area)}% of the image, region's box ${t.box.map(Math.round).join(', ')}`
      : t.box ? `confidence ${confidence}, box ${t.box.map(Math.round).join(', ')}`
      : `score ${t.score.toFixed(2)}${probabilityOf(entry, t.index)}`;
    row.append(el('h3', {}, `${what}: ${score}`));
    const method = entry.method || data.method;
    if (t.files.video) {
      row.append(el('figure', {}, el('video', {src: t.files.video, controls: '', muted: '', loop: '', preload: 'metadata',
        style: 'width:100%'}), el('figcaption', {}, `${method} for ${what}, ${entry.frames} frames`)));
      if (t.files.contact_sheet) row.append(figure(t.files.contact_sheet, 'contact sheet', `every few frames: ${method} for ${what}`));
    } else if (t.files.overlay) row.append(figure(t.files.overlay, `${method} for ${t.label}`, `${method} for ${what}`));
    else if (t.files.montage || t.files.plot) {
      const shown = figure(t.files.montage || t.files.plot, `${method} for ${t.label}`,
        `${method} for ${what}: ${t.files.montage ? 'slices of the volume' : 'the signal'} ${JSON.stringify(entry.shape)}`);
      shown.className = 'grid';
      row.append(shown);
    }
    else row.append(el('p', {}, 'overlay not saved (--save); the map is in results.json'));
    if (t.files.guided) row.append(figure(t.files.guided, 'Guided Grad-CAM', `Guided Grad-CAM for ${what}`));
    if (t.files.channels) {  // folded: the overlay stays the page's main picture, however many maps
      const grid = el('details', {class: 'grid'}, el('summary', {}, `the feature maps adding up to the map for ${what}`),
        figure(t.files.channels, 'feature maps', `the feature maps adding up to the map for ${what}`));
      row.append(grid);
    }
    box.append(row);
  }
  return box;
}
function visible() {
  const wanted = document.getElementById('filter').value;
  const order = document.getElementById('sort').value;
  let rows = data.images.filter(e => !wanted || (wanted === '__failed__' ? e.status !== 'ok' : best(e) && best(e).label === wanted));
  if (order !== 'path') {
    const sign = order === 'desc' ? -1 : 1;
    rows = rows.slice().sort((a, b) => sign * ((best(a) ? (best(a).probability ?? best(a).similarity) : -1) - (best(b) ? (best(b).probability ?? best(b).similarity) : -1)));
  }
  return rows;
}
function render() {
  const rows = visible();
  const pages = Math.max(1, Math.ceil(rows.length / PAGE));
  page = Math.min(page, pages - 1);
  const main = document.querySelector('main');
  main.replaceChildren(...rows.slice(page * PAGE, (page + 1) * PAGE).map(card));
  document.getElementById('count').textContent = `${rows.length} of ${data.images.length} images`;
  document.getElementById('page').textContent = `page ${page + 1} / ${pages}`;
}
const classes = [...new Set(data.images.map(best).filter(Boolean).map(p => p.label))].sort();
const filter = document.getElementById('filter');
for (const c of classes) filter.append(el('option', {value: c}, c));
if (data.images.some(e => e.status !== 'ok')) filter.append(el('option', {value: '__failed__'}, 'failed images'));
filter.onchange = document.getElementById('sort').onchange = () => { page = 0; render(); };
document.getElementById('prev').onclick = () => { page = Math.max(0, page - 1); render(); };
document.getElementById('next').onclick = () => { page += 1; render(); };
render();
"""


FRAME_NOTES = {
    "crop": "frame: the model's own centre crop (outside it dimmed)",
    "full": "frame: the whole photo, aspect ratio kept",
    "squash": "frame: the whole photo resized to the model's input",
}
SCORE_NOTE = "the explained logit, before the softmax (p = its class probability)"
DETECTION_NOTE = (
    "the detector's confidence in the box's class (a segmentation class: its mean probability over the pixels "
    "painted with it); each box or class explained on its own"
)
PROMPT_NOTE = "the cosine similarity of the photo to the prompt"


def colour_scale_css(colormap: str, stops: int = 11) -> str:
    """A CSS ``linear-gradient`` of ``colormap`` from low (left) to high (right)."""
    from .viz import colormap_table

    table = colormap_table(colormap)
    colours = []
    for i in range(stops):
        r, g, b = (int(round(255 * float(v))) for v in table[round(i * 255 / (stops - 1))])
        colours.append(f"rgb({r},{g},{b}) {100 * i / (stops - 1):.0f}%")
    return f"linear-gradient(90deg,{','.join(colours)})"


def json_for_script(data: Any) -> str:
    """JSON that is inert inside a ``<script>`` element: ``<``, ``>`` and ``&`` as ``\\u`` escapes, so no
    file name (``</script>``, ``<!--<script>``) can end the element or change how the parser reads it."""
    return json.dumps(data).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _relative(path: str, start: Path) -> str:
    """A URL to ``path`` relative to the page in ``start``, percent-encoded: a file called
    ``javascript:x.jpg`` or ``a#b.jpg`` stays a plain relative link."""
    try:
        return quote(Path(os.path.relpath(Path(path).resolve(), start.resolve())).as_posix())
    except ValueError:  # another drive on Windows
        return Path(path).resolve().as_uri()


def explain_page(manifest: dict[str, Any], out: Path) -> str:
    """The HTML of ``index.html`` for a run's manifest; file links are made relative to ``out``."""
    images = []
    for entry in manifest.get("images", []):
        item = {key: value for key, value in entry.items() if key != "geometry"}  # the page needs no geometry
        if entry.get("status") == "ok":
            thumbnail = entry.get("thumbnail")  # a copy inside the output folder: the page moves with it
            item["photo"] = _relative(thumbnail, out) if thumbnail else None
            item["targets"] = [
                {**{k: v for k, v in t.items() if k != "map"}, "files": {kind: _relative(p, out) for kind, p in
                 t["files"].items()}}
                for t in entry["targets"]
            ]  # fmt: skip
        images.append(item)
    method = ", ".join(manifest.get("methods") or [manifest.get("method", "")])
    payload = json_for_script({"images": images, "method": method})
    summary = manifest.get("summary", {})
    title = f"gradcam: {method} on {manifest.get('model', '')}"
    detection = manifest.get("kind") == "detection"
    arrays_only = bool(images) and all(entry.get("kind") or entry.get("status") != "ok" for entry in images)
    frame = "volumes and signals as stored" if arrays_only else FRAME_NOTES.get(manifest.get("frame") or "crop", "")
    if detection:  # YOLO letterboxes, DETR keeps the aspect ratio, SegFormer and RT-DETR squash
        frame = "frame: the whole photo, as the model's own predictor resizes it"
    note = DETECTION_NOTE if detection else PROMPT_NOTE if manifest.get("prompts") else SCORE_NOTE
    subtitle = (
        f"layer {manifest.get('layer')}, {frame}; {summary.get('ok', 0)} explained, {summary.get('failed', 0)} "
        f"failed. Score: {note}"
    )
    scale = colour_scale_css(manifest.get("colormap") or "jet")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<meta name="viewport" content="width=device-width,initial-scale=1"><style>{_STYLE}</style></head>
<body><header><h1>{html.escape(title)}</h1>{_untrained_note(manifest)}<div class="controls">
<span>{html.escape(subtitle)}</span>
<span class="scale">heat: low <i style="background:{scale}"></i> high (each map scaled to its own maximum)</span>
<label>predicted class <select id="filter"><option value="">all</option></select></label>
<label>sort <select id="sort"><option value="path">by path</option><option value="desc">most confident first</option>
<option value="asc">least confident first</option></select></label>
<button id="prev">&larr;</button><span id="page"></span><button id="next">&rarr;</button><span id="count"></span>
</div></header><main></main>
<dialog id="zoom" onclick="this.close()"><img alt="enlarged"><p></p></dialog>
<script type="application/json" id="data">{payload}</script>
<script>{_SCRIPT}</script></body></html>
"""


UNTRAINED = "random weights"  # how a model source says it learnt nothing (io.models, io.yolo)


def untrained_warning(model: str, source: str) -> str | None:
    """One line when ``model`` has random weights (``--weights none``, a YOLO config): its maps show what an
    untrained network responds to, and its class names are no prediction (#27 item 6)."""
    if UNTRAINED not in (source or "").lower():
        return None
    how = "" if source.strip().lower() == UNTRAINED else f" ({source})"
    return (
        f"{model} has random weights{how}: its maps show what an untrained network responds to, "
        "and its class names are no prediction"
    )


def _untrained_note(manifest: dict[str, Any]) -> str:
    said = untrained_warning(str(manifest.get("model", "")), str(manifest.get("model_source") or ""))
    return (
        f'<p id="untrained" style="color:#c0392b;margin:4px 0"><b>Untrained model.</b> {html.escape(said)}</p>'
        if said
        else ""
    )


def write_explain_page(manifest: dict[str, Any], out: Path) -> Path:
    path = out / "index.html"
    page = explain_page(manifest, out)
    write_atomic(path, lambda temporary: temporary.write_text(page, encoding="utf-8"))
    return path


def _cell(text: str) -> str:
    """A Markdown table cell as HTML: escaped, ``**best**`` in bold."""
    if text.startswith("**") and text.endswith("**") and len(text) > 4:
        return f"<td><b>{html.escape(text[2:-2])}</b></td>"
    return f"<td>{html.escape(text)}</td>"


def evaluation_page(
    model: str,
    table_markdown: str,
    errors: list[str],
    identical: Sequence[Sequence[str]] = (),
    verdict: str = "",
    reading: Sequence[tuple[str, str]] = (),
) -> str:
    """``report.html``: the evaluation table (the best value of each column in bold), the identical maps,
    the curves and what each column measures (``reading``: title, meaning), one page."""
    guide = "".join(f"<dt>{html.escape(title)}</dt><dd>{html.escape(meaning)}</dd>" for title, meaning in reading)
    lines = [line for line in table_markdown.splitlines() if line.startswith("|") and not line.startswith("|---")]
    # cells split on the table's own bars, not on an escaped "\|" inside a title ("|r|")
    cells = [[c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])] for line in lines]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cells[0]) if cells else ""
    body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in cells[1:])
    skipped = "".join(f"<li class='error'>{html.escape(e)}</li>" for e in errors)
    same = "".join(f"<li>{html.escape(' = '.join(group))}: their curves coincide</li>" for group in identical)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>gradcam evaluation: {html.escape(model)}</title>
<style>{_STYLE}</style></head><body><header><h1>gradcam evaluation: {html.escape(model)}</h1>
<div class="controls">Top-1 class of each photo; how to read each column: at the end.</div></header>
<nav>{f"<h2>Verdict</h2><p>{html.escape(verdict)}</p>" if verdict else ""}<h2>Metrics</h2><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
{f"<h2>Identical maps</h2><ul>{same}</ul>" if same else ""}
<h2>Deletion and insertion curves</h2><img src="curves.png" alt="deletion and insertion curves" style="max-width:100%">
{f"<h2>Skipped</h2><p>Photos that could not be read, methods that refused the layer.</p><ul>{skipped}</ul>" if skipped else ""}
{f"<h2>How to read it</h2><dl>{guide}</dl>" if guide else ""}</nav></body></html>
"""


def concepts_page(found: dict[str, Any], out: Path) -> str:
    """The HTML of ``concepts.html`` for ``gradcam concepts``' concepts.json: the concepts with their colours
    and classes, then every photo's picture (lazy images, relative links), its strongest concept first.
    Static: a few hundred photos at most (``--max-photos``), every name escaped."""
    concepts = found.get("concepts", [])
    legend = "".join(
        f"<li><span class='swatch' style='background:{html.escape(c['colour'])}'></span>{c['concept']}. "
        + html.escape(", ".join(f"{k['class']} {k['probability']:.0%}" for k in c["classes"]) or "(no class scores)")
        + "</li>"
        for c in concepts
    )
    cards = []
    for photo in found.get("photos", []):
        shares = photo.get("shares", [])
        strongest = max(range(len(shares)), key=shares.__getitem__) if shares else None
        caption = f"mostly concept {strongest + 1} ({shares[strongest]:.0%})" if strongest is not None else ""
        name = html.escape(Path(photo["image"]).name)
        cards.append(
            f"<div class='card'><h2 title='{html.escape(photo['image'])}'>{name}</h2>"
            f"<a href='{html.escape(_relative(photo['picture'], out))}'><img loading='lazy' alt='{name}' "
            f"src='{html.escape(_relative(photo['picture'], out))}'></a><p>{html.escape(caption)}</p></div>"
        )
    failed = "".join(
        f"<div class='card failed'><h2>{html.escape(Path(f['image']).name)}</h2><p>{html.escape(f['error'])}</p></div>"
        for f in found.get("failed", [])
    )
    title = f"gradcam concepts: {found.get('k')} concepts at {found.get('layer')} ({found.get('model')})"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_STYLE}
.legend{{list-style:none;padding:0;margin:4px 0;display:flex;flex-wrap:wrap;gap:6px 18px}}
.swatch{{display:inline-block;width:14px;height:14px;border:1px solid #555;margin-right:6px;vertical-align:-2px}}
main{{grid-template-columns:repeat(auto-fill,minmax(320px,1fr))}}</style></head>
<body><header><h1>{html.escape(title)}</h1><ul class="legend">{legend}</ul></header>
<main>{"".join(cards)}{failed}</main></body></html>
"""


def write_concepts_page(found: dict[str, Any], out: Path) -> Path:
    """Write ``concepts.html`` into ``out`` (atomically) and return its path."""
    path = out / "concepts.html"
    text = concepts_page(found, out)
    write_atomic(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))
    return path
