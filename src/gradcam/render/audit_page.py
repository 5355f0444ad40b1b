"""``audit.html``: one self-contained page (pictures inline, no network) for an audit's findings.

Sections: the class table (sortable; by shortcut score first), a page per class with its mean map and
clusters (flagged ones in red, with the reason, and their most typical photos), photos right for the
wrong reason, wrong predictions (the true class's map beside the predicted class's), the comparison
with a second model, and the photos that could not be read. Every name is escaped.
"""

from __future__ import annotations

from html import escape
from typing import Any, Protocol

from .audit_followed import followed_section
from .audit_parts import cell as _cell
from .audit_parts import figure as _figure
from .audit_parts import number as _number
from .audit_parts import photos as _photos
from .audit_parts import share as _share
from .report import colour_scale_css

PAGE_CLASSES = 60
PAGE_PHOTOS = 24
TYPICAL_SHOWN = 6


class Pictures(Protocol):
    def file(self, relative: str) -> str: ...

    def photo(self, key: str, which: str = "map") -> str | None: ...


_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f4f4f6;color:#222}
header{background:#fff;border-bottom:1px solid #ddd;padding:10px 16px}
header h1{font-size:18px;margin:0 0 4px}
nav a{margin-right:12px}
section{padding:8px 16px}
h2{font-size:16px;margin:18px 0 8px}
h3{font-size:14px;margin:0 0 6px}
table{border-collapse:collapse;background:#fff}
td,th{border:1px solid #ddd;padding:4px 8px;text-align:right;white-space:nowrap}
th{cursor:pointer;background:#fafafa;user-select:none}
th.sorted::after{content:" \\25BE"}
td.name,th.name,td.reasons{text-align:left}
td.reasons{white-space:normal;max-width:520px;font-size:12px}
tr.flagged td{background:#fdecea}
.card{background:#fff;border-radius:8px;box-shadow:0 1px 3px #0002;padding:10px;margin:0 0 14px}
.card.flagged{border-left:5px solid #c0392b}
.row{display:flex;gap:12px;flex-wrap:wrap;align-items:flex-start}
figure{margin:0;text-align:center;font-size:12px;color:#555;max-width:140px}
figure img{width:128px;height:128px;border-radius:4px;display:block;background:#eee}
figcaption{overflow-wrap:anywhere}
figure.experiment{max-width:none}figure.experiment img{width:auto;height:128px}
.cluster{border:1px solid #ddd;border-radius:6px;padding:8px}
.cluster.flagged{border:2px solid #c0392b}
.reason{color:#c0392b;font-size:12px;margin:2px 0}
.pair{display:flex;gap:4px;border:1px solid #ddd;border-radius:6px;padding:6px;background:#fff}
.muted{color:#666;font-size:12px}
.scale{display:inline-flex;align-items:center;gap:6px;font-size:12px}
.scale i{display:inline-block;width:160px;height:10px;border-radius:2px}
.error{color:#c0392b;font-family:monospace;font-size:12px}
"""

_SCRIPT = """
for (const table of document.querySelectorAll('table.sortable')) {
  const headers = [...table.querySelectorAll('th')];
  headers.forEach((th, column) => th.addEventListener('click', () => {
    const body = table.tBodies[0];
    const descending = !(th.classList.contains('sorted') && th.dataset.order === 'desc');
    headers.forEach(h => h.classList.remove('sorted'));
    th.classList.add('sorted');
    th.dataset.order = descending ? 'desc' : 'asc';
    const value = row => row.children[column].dataset.value ?? row.children[column].textContent;
    const rows = [...body.rows].sort((a, b) => {
      const x = value(a), y = value(b), nx = parseFloat(x), ny = parseFloat(y);
      const order = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : String(x).localeCompare(String(y));
      return descending ? -order : order;
    });
    body.append(...rows);
  }));
}
"""


def _worst_corner(corners: dict[str, float | None]) -> tuple[float | None, str]:
    known = {k: v for k, v in corners.items() if v is not None}
    if not known:
        return None, "-"
    name, value = max(known.items(), key=lambda kv: kv[1])
    return value, f"{value:.0%} {name.replace('_', '-')}"


def _class_table(classes: list[dict[str, Any]], paged: set[int]) -> str:
    head = ("<tr><th class=name>Class</th><th>Photos</th><th>Accuracy</th><th>Border</th><th>Worst corner</th>"
            "<th>In boxes</th><th>Agreement</th><th>Clusters</th><th class=sorted data-order=desc>Shortcut score</th>"
            "<th class=name>Possible shortcut</th></tr>")  # fmt: skip
    rows = []
    for entry in classes:
        name = escape(entry["name"])
        link = f'<a href="#class-{entry["index"]}">{name}</a>' if entry["index"] in paged else name
        corner_value, corner_text = _worst_corner(entry["energy_corners"])
        reasons = "; ".join(entry["reasons"]) if entry["flagged"] else ""
        rows.append(
            f'<tr class="{"flagged" if entry["flagged"] else ""}"><td class=name data-value="{name}">{link}</td>'
            f'{_cell(entry["photos"], str(entry["photos"]))}{_cell(entry["accuracy"])}'
            f'{_cell(entry["energy_border"])}{_cell(corner_value, corner_text)}{_cell(entry["energy_in_boxes"])}'
            f'{_cell(_agreement(entry))}{_cell(len(entry["clusters"]), str(len(entry["clusters"])))}'
            f'{_cell(entry["shortcut_score"], _number(entry["shortcut_score"]))}'
            f'<td class=reasons>{escape(reasons)}</td></tr>'
        )  # fmt: skip
    return f"<table class=sortable id=class-table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


def _agreement(entry: dict[str, Any]) -> float | None:
    agreed = entry.get("agreement")
    return None if agreed is None else agreed["maps"]


def _evidence(entry: dict[str, Any], pictures: Pictures, followed: bool = False) -> str:
    """The experiment behind a flag: its verdict, its figures and its picture. ``followed``: a followed
    class's, run on other classes' photos (removed where the class is most probable, pasted where least)."""
    e = entry.get("evidence")
    if e is None:
        return ""
    drop = _signed_share(e["occlusion_drop"], e["occlusion_drop_std"])
    drop_random = _signed_share(e["occlusion_drop_random"], e["occlusion_drop_random_std"])
    removed_from, pasted_onto = (
        ("where the class is most probable", "where it is least probable")
        if followed
        else ("of the class", "of other classes")
    )
    figures = (f"region: {_share(e['region_area'])} of the frame; removed from {_photos(e['photos'])} {removed_from}: "
               f"probability {drop} lower (random region of the same size: {drop_random})")  # fmt: skip
    if e["transplant_gain"] is not None:
        figures += (f"; pasted onto {_photos(e['other_photos'])} {pasted_onto}: probability "
                    f"{e['transplant_gain']:+.2f} ± {e['transplant_gain_std']:.2f} (random region: "
                    f"{e['transplant_gain_random']:+.2f} ± {e['transplant_gain_random_std']:.2f})")  # fmt: skip
    picture = ""
    if e["picture"]:
        caption = "a photo | the region | removed | another class's photo | the region pasted on"
        if followed:
            caption = (
                "a photo where it is most probable | the region | removed | one where it is least probable | "
                "the region pasted on"
            )
        picture = (f'<figure class=experiment><img src="{escape(pictures.file(e["picture"]))}" alt="{caption}">'
                   f"<figcaption>{caption}</figcaption></figure>")  # fmt: skip
    css = "reason" if e["confirmed"] else "muted"
    return (f'<div class=evidence><h4>Experiment</h4><p class={css}><b>{escape(e["verdict"])}</b></p>'
            f"<p class=muted>{escape(figures)}</p>{picture}</div>")  # fmt: skip


def _signed_share(mean: float | None, spread: float | None) -> str:
    return "-" if mean is None else f"{mean:.0%} ± {spread or 0:.0%}"


def _class_page(entry: dict[str, Any], pictures: Pictures) -> str:
    flagged = " flagged" if entry["flagged"] else ""
    corner_value, corner_text = _worst_corner(entry["energy_corners"])
    facts = (f'{_photos(entry["photos"])}; accuracy {_share(entry["accuracy"])}; '
             f'border {_share(entry["energy_border"])}; worst corner {corner_text}; '
             f'in boxes {_share(entry["energy_in_boxes"])}')  # fmt: skip
    agreed = entry.get("agreement")
    if agreed is not None and agreed["maps"] is not None:
        facts += (f"; its maps agree {_share(agreed['maps'])} across its photos (its photos' runner-up class: "
                  f"{_share(agreed['runner_up_maps'])})")  # fmt: skip
    clusters = []
    for cluster in entry["clusters"]:
        reasons = "".join(f"<p class=reason>{escape(r)}</p>" for r in cluster["reasons"])
        typical = "".join(
            _figure(pictures.photo(key), key, f"typical photo {key}") for key in cluster["typical"][:TYPICAL_SHOWN]
        )
        note = "" if cluster["eligible"] else "<p class=muted>too small to flag</p>"
        clusters.append(
            f'<div class="cluster{" flagged" if cluster["flagged"] else ""}" data-cluster="{cluster["index"]}">'
            f'<h3>Cluster {cluster["index"]}: {_photos(cluster["size"])} ({_share(cluster["share"])})</h3>'
            f"{reasons}{note}"
            f'<div class=row>{_figure(pictures.file(cluster["picture"]), "its mean map")}{typical}</div></div>'
        )  # fmt: skip
    return (
        f'<div class="card{flagged}" id="class-{entry["index"]}"><h3>{escape(entry["name"])} '
        f"(class {entry['index']})</h3><p class=muted>{escape(facts)}</p>"
        + "".join(f"<p class=reason>{escape(r)}</p>" for r in entry["reasons"])
        + _evidence(entry, pictures)
        + f"<div class=row>{_figure(pictures.file(entry['picture']), 'mean map of the class')}"
        + f"<div class=row>{''.join(clusters)}</div></div></div>"
    )


def _photo_lists(lists: dict[str, Any], pictures: Pictures) -> str:
    parts = []
    if lists["boxes"]:
        figures = "".join(
            _figure(pictures.photo(p["key"]), f"{p['key']}: {p['predicted']['label']}, "
                    f"{_share(p['energy_in_boxes'])} in the box")
            for p in lists["right_for_wrong_reason"]
        )  # fmt: skip
        parts.append(f'<h2 id=wrong-reason>Right for the wrong reason ({lists["right_for_wrong_reason_count"]})</h2>'
                     f'<p class=muted>Right predictions whose map sits mostly outside the object\'s boxes.</p>'
                     f'<div class=row>{figures or "none"}</div>')  # fmt: skip
    if lists["truth"]:
        pairs = "".join(
            f'<div class=pair data-key="{escape(p["key"])}">'
            f'{_figure(pictures.photo(p["key"]), p["key"] + ": true " + p["truth"]["label"])}'
            f'{_figure(pictures.photo(p["key"], "predicted"), _said(p))}</div>'
            for p in lists["wrong"]
        )  # fmt: skip
        parts.append(f'<h2 id=wrong>Wrong predictions ({lists["wrong_count"]})</h2><p class=muted>The map of the true '
                     f'class beside the map of the class the model said, most confident mistakes first.</p>'
                     f'<div class=row>{pairs or "none"}</div>')  # fmt: skip
    return "".join(parts)


def _said(photo: dict[str, Any]) -> str:
    predicted = photo["predicted"]
    return f"said: {predicted['label']} ({_share(predicted['probability'])})"


def _comparison(report: dict[str, Any], lists: dict[str, Any], pictures: Pictures) -> str:
    comparison = report.get("comparison")
    if comparison is None:
        return ""
    other = escape(report["compared_model"] or "the second model")
    rows = "".join(
        f'<tr><td class=name data-value="{escape(c["name"])}"><a href="#compare-{c["index"]}">'
        f'{escape(c["name"])}</a></td>{_cell(c["photos"], str(c["photos"]))}'
        f'{_cell(c["rank_correlation"], _number(c["rank_correlation"]))}'
        f'{_cell(c["top20_iou"], _number(c["top20_iou"]))}'
        f'{_cell(c["prediction_changes"], str(c["prediction_changes"]))}</tr>'
        for c in comparison["classes"]
    )  # fmt: skip
    table = ("<table class=sortable id=compare-table><thead><tr><th class=name>Class</th><th>Photos</th>"
             "<th class=sorted data-order=asc>Rank correlation</th><th>Top-20% IoU</th><th>Prediction changes</th></tr>"
             f"</thead><tbody>{rows}</tbody></table>")  # fmt: skip
    pages = []
    for entry in comparison["classes"][:PAGE_CLASSES]:
        worst = "".join(
            f'<div class=pair>{_figure(pictures.photo(key), key + ": audited")}'
            f'{_figure(pictures.photo(key, "compared"), "compared")}</div>'
            for key in entry["by_disagreement"][:TYPICAL_SHOWN]
        )  # fmt: skip
        pages.append(
            f'<div class=card id="compare-{entry["index"]}"><h3>{escape(entry["name"])}: rank correlation '
            f'{_number(entry["rank_correlation"])}, top-20% IoU {_number(entry["top20_iou"])}</h3><div class=row>'
            f'{_figure(pictures.file(_class_picture(report, entry["index"])), "audited model, mean")}'
            f'{_figure(pictures.file(entry["compared_picture"]), "compared model, mean")}</div>'
            f'<p class=muted>Photos where the two maps disagree most:</p><div class=row>{worst}</div></div>'
        )  # fmt: skip
    changed = lists["changed"]
    change_rows = "".join(
        f'<tr><td class=name>{escape(p["key"])}</td><td class=name>{escape(p["predicted"]["label"])}</td>'
        f'<td class=name>{escape(p["compared_predicted"]["label"])}</td></tr>'
        for p in changed
    )  # fmt: skip
    return (
        f"<h2 id=comparison>Comparison with {other}</h2><p>Mean rank correlation of the maps "
        f"{_number(comparison['rank_correlation'])}, mean IoU of their top 20% {_number(comparison['top20_iou'])}, "
        f"{comparison['prediction_changes']} predictions changed.</p>{table}{''.join(pages)}"
        f"<h3>Predictions that changed ({lists['changed_count']}, the first {len(changed)} listed)</h3>"
        "<table><thead><tr><th class=name>Photo</th>"
        f"<th class=name>Audited model</th><th class=name>{other}</th></tr></thead><tbody>{change_rows}</tbody></table>"
    )


def _class_picture(report: dict[str, Any], index: int) -> str:
    return next(c["picture"] for c in report["classes"] if c["index"] == index)


def audit_page(report: dict[str, Any], lists: dict[str, Any], pictures: Pictures) -> str:
    """The page of an audit: ``report`` is ``audit.json`` without its per-photo lists (with the PNG paths
    added), ``lists`` the photos the page lists (:func:`gradcam.audits.output.page_lists`)."""
    summary = report["summary"]
    classes = report["classes"]
    paged = classes[:PAGE_CLASSES]
    more = len(classes) - len(paged)
    compared = f", compared with {report['compared_model']}" if report.get("compared_model") else ""
    subtitle = (f'{_photos(summary["audited"])} ({summary["failed"]} unreadable), {summary["classes"]} classes, '
                f'accuracy {_share(summary["accuracy"])}; {report["method"]} on layer {report["layer"]}{compared}; '
                f'maps in the model\'s input frame ({report["input_size"][1]} x '
                f'{report["input_size"][0]})')  # fmt: skip
    flagged = summary["flagged_classes"]
    verdict = (f'<p class=reason><b>{flagged} class{"es" if flagged != 1 else ""} with a possible shortcut</b> '
               "(red rows; the reasons say what was measured, the class pages the experiment that tests it)</p>"
               ) if flagged else (
               "<p>No class flagged: no class's maps agree across its photos far more than the same photos' maps "
               "for another class, and no cluster of maps sits in a corner, on the border, outside the boxes or "
               "at one fixed off-centre place.</p>")  # fmt: skip
    verdict += "".join(f"<p class=reason>{escape(hint)}</p>" for hint in report.get("hints", []))
    frame = report.get("frame", "crop")
    seen = report.get("preprocessing")
    if seen:
        subtitle += f"; frame {frame}, {seen['resize']}/{seen['crop'][0]}x{seen['crop'][1]} {seen['interpolation']}"
    failed = "".join(f"<p class=error>{escape(f['error'] or f['path'])}</p>" for f in report["failed"][:200])
    failed_section = f"<h2 id=failed>Unreadable photos ({len(report['failed'])})</h2>{failed}" if failed else ""
    links = ['<a href="#classes">Classes</a>']
    if report.get("followed"):
        links.append('<a href="#followed">Followed classes</a>')
    if report.get("comparison"):
        links.append('<a href="#comparison">Comparison</a>')
    if report["failed"]:
        links.append('<a href="#failed">Unreadable photos</a>')
    scale = f'<span class=scale>low <i style="background:{colour_scale_css("jet")}"></i> high</span>'
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>gradcam audit: {escape(report["model"])}</title>
<style>{_STYLE}</style></head><body>
<header><h1>gradcam audit: {escape(report["model"])}</h1><p class=muted>{escape(subtitle)}</p>
<nav>{"".join(links)}</nav></header>
<section id=classes><h2>Classes</h2>{verdict}<p class=muted>Click a column to sort. Border: share of the map's energy
on the outer eighth of each side (44% of the frame); worst corner: the largest share in one corner (6% of the frame);
agreement: how much the class's maps agree across its different photos, beyond the other classes' mean map (100%: the
same map on every photo; 0%: no more alike than unrelated photos); shortcut score: the largest ratio of a rule's figure
to its threshold (1 or more: flagged). {scale}</p>
{_class_table(classes, {c["index"] for c in paged})}
{f"<p class=muted>{more} more classes are in audit.json.</p>" if more else ""}
<h2>Class pages</h2>{"".join(_class_page(entry, pictures) for entry in paged)}
{followed_section(report.get("followed", []), pictures, _evidence)}
{_photo_lists(lists, pictures)}
{_comparison(report, lists, pictures)}
{failed_section}
</section>
<script>{_SCRIPT}</script>
</body></html>
"""
