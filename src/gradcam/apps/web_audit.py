"""The web app's "Audit a dataset" tab: open an audit (``gradcam serve --audit FOLDER``, folders the
operator names at start) or run a small one on an uploaded zip of photos, and see its class table, the
flagged classes and clusters with their reasons, and the experiments that test them.

Bounded as the rest of the app (docs/security.md): a zip is read member by member, never trusting its
declared sizes, at most ``MAX_ZIP_PHOTOS`` photos and ``MAX_UNZIPPED_MB`` in all, nothing written outside
its scratch folder; an audit opened from disk shows only pictures inside its own folder; every name from a
report is escaped (the class table is data, not markup). A zip's audit is the requester's alone.

Example:
    gradcam audit photos/ --truth photos/ --out audits/pets
    gradcam serve --audit audits/pets                    # the "Audit a dataset" tab opens it
"""

from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path, PurePosixPath
from typing import Any

from PIL import Image

from ..io.images import IMAGE_SUFFIXES
from ..io.models import LoadedModel
from .web_state import AppError

MAX_ZIP_PHOTOS = 300  # photos in one uploaded audit (about 30 s here)
MAX_UNZIPPED_MB = 200
TABLE_HEADERS = ["Class", "Photos", "Accuracy", "Border", "Worst corner", "Agreement", "Shortcut score",
                 "Flagged"]  # fmt: skip


@dataclass
class AuditView:
    """What the tab shows of one audit: a summary and the flagged classes with their pictures (HTML,
    escaped), the class table (rows of plain values), the pictures shown with their captions (experiments,
    flagged clusters' and followed classes' mean maps) and the files to download."""

    summary: str
    table: list[list[Any]]
    details: str
    pictures: list[tuple[Image.Image, str]]
    files: list[str]


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _inside(folder: Path, relative: Any) -> Path | None:
    """``folder / relative`` if it is a file inside ``folder`` (a report's picture paths are not trusted)."""
    if not isinstance(relative, str) or not relative:
        return None
    path = (folder / relative).resolve()
    return path if path.is_relative_to(folder.resolve()) and path.is_file() else None


def _picture(folder: Path, relative: Any, caption: str, pictures: list[tuple[Image.Image, str]]) -> None:
    path = _inside(folder, relative)
    if path is not None:
        with Image.open(path) as image:
            pictures.append((image.convert("RGB"), caption))


def read_report(folder: Path) -> dict[str, Any]:
    """``folder``'s ``audit.json`` with the parts the tab shows (``summary``, ``classes``); an
    :class:`AppError` (one line) when there is none or it cannot be read."""
    report_path = folder / "audit.json"
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
        if not isinstance(report["summary"], dict) or not isinstance(report["classes"], list):
            raise TypeError("summary or classes")
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise AppError(f"{report_path}: not a readable gradcam audit ({type(error).__name__})") from None
    return report


def read_audit(folder: Path) -> AuditView:
    """The view of the audit written in ``folder`` (``audit.json`` and its pictures); an :class:`AppError`
    (one line) when there is none or it cannot be read."""
    report_path = folder / "audit.json"
    report = read_report(folder)
    summary, classes = report["summary"], report["classes"]
    flagged = [c for c in classes if c.get("flagged")]
    lines = [
        f"<b>{escape(str(report.get('model')))}</b>: {summary.get('audited')} photos, {summary.get('classes')} "
        "classes, "
        f"accuracy {_share(summary.get('accuracy'))}; {escape(str(report.get('method')))} on layer "
        f"{escape(str(report.get('layer')))}; <b>{len(flagged)} class{'es' if len(flagged) != 1 else ''} flagged</b>"
    ]  # fmt: skip
    lines += [f"<span class=hint>{escape(hint)}</span>" for hint in report.get("hints", [])]
    table = []
    for entry in classes:
        corners = {k: v for k, v in (entry.get("energy_corners") or {}).items() if v is not None}
        corner = max(corners.items(), key=lambda kv: kv[1]) if corners else None
        agreed = entry.get("agreement") or {}
        table.append([
            entry["name"], entry["photos"], _share(entry.get("accuracy")), _share(entry.get("energy_border")),
            f"{corner[1]:.0%} {corner[0].replace('_', '-')}" if corner else "-", _share(agreed.get("maps")),
            entry.get("shortcut_score"), "yes" if entry.get("flagged") else "",
        ])  # fmt: skip
    pictures: list[tuple[Image.Image, str]] = []
    details = []
    for entry in [*flagged, *(c for c in classes if not c.get("flagged") and c.get("evidence"))]:
        evidence = entry.get("evidence") or {}
        own: list[tuple[Image.Image, str]] = []
        _picture(folder, evidence.get("picture"), EXPERIMENT_CAPTION, own)
        for cluster in entry.get("clusters", []):
            if cluster.get("flagged"):
                caption = f"cluster {cluster['index']} ({cluster['size']} photos): its mean map"
                _picture(folder, cluster.get("picture"), caption, own)
        details.append(_entry_details(entry, "flagged" if entry.get("flagged") else "tested on request", own))
        pictures += own
    for entry in report.get("followed", []):
        evidence = entry.get("evidence") or {}
        own = []
        _picture(folder, evidence.get("picture"), FOLLOWED_CAPTION, own)
        _picture(folder, entry.get("others_picture"), "its mean map on other classes' photos", own)
        details.append(_entry_details(entry, "followed over every photo", own))
        pictures += own
    files = [str(p) for p in (folder / "audit.html", report_path) if p.is_file()]
    return AuditView("<br>".join(lines), table, "".join(details) or "<p>No class flagged.</p>", pictures, files)


EXPERIMENT_CAPTION = "a photo | the region | removed | another class's photo | the region pasted on"
FOLLOWED_CAPTION = "where it is most probable | the region | removed | where it is least | the region pasted on"


def _entry_details(entry: dict[str, Any], why: str, pictures: list[tuple[Image.Image, str]]) -> str:
    """A class's reasons, its experiment's verdict and its pictures (inline, 128 px high), all escaped."""
    from ..render.viz import data_uri

    reasons = "".join(f"<li>{escape(reason)}</li>" for reason in entry.get("reasons", []))
    evidence = entry.get("evidence")
    verdict = f"<p><b>Experiment:</b> {escape(evidence['verdict'])}</p>" if evidence else ""
    figures = "".join(
        f'<figure style="margin:0;display:inline-block;vertical-align:top"><img src="{data_uri(picture, "PNG")}" '
        f'alt="{escape(caption)}" style="height:128px;width:auto;border-radius:4px">'
        f'<figcaption style="font-size:12px;color:#555">{escape(caption)}</figcaption></figure>'
        for picture, caption in pictures
    )
    return (
        f"<div class=audit-class><h4>{escape(entry['name'])} ({escape(why)})</h4><ul>{reasons}</ul>{verdict}"
        f'<div style="display:flex;gap:12px;flex-wrap:wrap">{figures}</div></div>'
    )


def unpack_photos(archive: Path, folder: Path) -> tuple[Path, bool]:
    """The photos of a zip written under ``folder``; returns their root and whether they sit in one
    sub-folder per class (an ImageFolder: the folders name the true classes). Members that are not photos
    are skipped; absolute paths, ``..`` and sizes past the limits are refused in one line."""
    root = folder / "photos"
    root.mkdir(parents=True, exist_ok=True)
    budget, count, parents = MAX_UNZIPPED_MB * 2**20, 0, set()
    try:
        with zipfile.ZipFile(archive) as zipped:
            for member in zipped.infolist():
                name = PurePosixPath(member.filename.replace("\\", "/"))
                if member.is_dir() or name.suffix.lower() not in IMAGE_SUFFIXES or name.name.startswith("."):
                    continue
                if name.is_absolute() or ".." in name.parts or any(part.startswith("__MACOSX") for part in name.parts):
                    raise AppError(f"{archive.name}: {member.filename!r} points outside the zip; refused")
                count += 1
                if count > MAX_ZIP_PHOTOS:
                    raise AppError(f"{archive.name}: more than {MAX_ZIP_PHOTOS} photos; audit a larger set with "
                                   "gradcam audit on the command line")  # fmt: skip
                target = root.joinpath(*name.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with zipped.open(member) as source, open(target, "wb") as sink:
                    budget -= _copy_bounded(source, sink, budget)
                parents.add(name.parent)
    except zipfile.BadZipFile:
        raise AppError(f"{archive.name}: not a zip file") from None
    if count == 0:
        raise AppError(f"{archive.name}: no photos in the zip ({', '.join(sorted(IMAGE_SUFFIXES))})")
    base = _common_root(parents)
    top = root.joinpath(*base.parts)
    by_class = len(parents) >= 2 and all(p.parent == base for p in parents)
    return top, by_class


def _copy_bounded(source: Any, sink: Any, budget: int) -> int:
    copied = 0
    while chunk := source.read(1 << 20):
        copied += len(chunk)
        if copied > budget:
            raise AppError(f"the zip unpacks to more than {MAX_UNZIPPED_MB} MB; audit it on the command line")
        sink.write(chunk)
    return copied


def _common_root(parents: set[PurePosixPath]) -> PurePosixPath:
    """The deepest folder above every photo's folder's parent ("photos/" when the zip holds photos/cat/...)."""
    tops = [p.parent for p in parents] if len(parents) >= 2 else list(parents)
    common = tops[0]
    while not all(common == t or common in t.parents for t in tops):
        common = common.parent
    return common


def audit_upload(archive: str | Path, bundle: LoadedModel, folder: Path, by_class: bool = True) -> Path:
    """Audit the photos of an uploaded zip with a served model into ``folder / "audit"`` (``by_class``: read
    the class folders as the true classes, when the zip has them); returns that folder."""
    from ..audits import AuditError, audit

    photos, has_classes = unpack_photos(Path(archive), folder)
    out = folder / "audit"
    try:
        audit(photos, bundle, truth=photos if by_class and has_classes else None, out=out, workers=0, batch_size=8)
    except AuditError as error:
        raise AppError(str(error)) from None
    finally:
        shutil.rmtree(folder / "photos", ignore_errors=True)  # the page shows what the audit drew
    return out


def audit_tab(shelf: Any, choices: list[str], new_folder: Any, audits: dict[str, Path]) -> None:
    """The tab's components, inside the caller's ``gr.Tab``: ``audits`` the operator's audit folders by
    name, ``new_folder()`` a scratch folder for an upload's audit."""
    import gradio as gr

    from .web_state import failure, in_background

    def shown(view: AuditView, status: str) -> tuple[Any, ...]:
        return status, view.summary, gr.update(value=view.table, headers=TABLE_HEADERS), view.details, view.files

    def nothing(status: str) -> tuple[Any, ...]:
        return status, "", gr.update(value=[]), "", None

    def on_open(name: str) -> tuple[Any, ...]:
        if not name:
            return nothing("")
        try:
            return shown(read_audit(audits[name]), f"Opened the audit {escape(name)}.")
        except Exception as error:  # noqa: BLE001 (one line in the page)
            return nothing(failure(error))

    def on_upload(archive: str | None, model_name: str, by_class: bool) -> Any:
        try:
            if not archive:
                raise AppError("choose a zip of photos first (one folder per class for the true classes)")
            bundle = shelf.get(model_name)
            out = yield from in_background(
                lambda: audit_upload(archive, bundle, new_folder(), by_class), (gr.skip(),) * 6
            )
            said = f"Audited {escape(Path(archive).name)} with {escape(model_name)}."
            yield *shown(read_audit(out), said), gr.update(value=None)  # the view is the zip's, not a listed audit
        except Exception as error:  # noqa: BLE001
            yield *nothing(failure(error)), gr.skip()

    gr.Markdown(
        "What does the model rely on across a whole dataset? Open an audit (`gradcam serve --audit FOLDER`), or "
        f"upload a zip of up to {MAX_ZIP_PHOTOS} photos (one folder per class for the true classes) to audit it "
        "here. The full report is `audit.html` in the downloads."
    )
    with gr.Row():
        opened = gr.Dropdown(list(audits), value=None, label="Audits on this server", elem_id="audit-choice")
        with gr.Column():
            archive = gr.File(label="A zip of photos", file_types=[".zip"], type="filepath", elem_id="audit-zip")
            model = gr.Dropdown(choices, value=choices[0], label="Model", elem_id="audit-model")
            by_class = gr.Checkbox(True, label="Its folders name the true classes", elem_id="audit-by-class")
            run = gr.Button("Audit the zip", variant="primary", elem_id="audit-run")
    status = gr.Markdown(elem_id="audit-status")
    summary = gr.HTML(elem_id="audit-summary")
    table = gr.Dataframe(headers=TABLE_HEADERS, interactive=False, label="Classes, by shortcut score",
                         column_widths=["22%", "8%", "10%", "9%", "16%", "11%", "13%", "11%"],
                         elem_id="audit-table")  # fmt: skip
    details = gr.HTML(elem_id="audit-details")
    files = gr.File(label="Downloads: audit.html, audit.json", file_count="multiple", elem_id="audit-files")
    outputs = [status, summary, table, details, files]
    opened.input(on_open, inputs=[opened], outputs=outputs)  # the user's choice only, not the menu's reset
    run.click(on_upload, inputs=[archive, model, by_class], outputs=[*outputs, opened])


def audit_folders(folders: Sequence[Path]) -> dict[str, Path]:
    """The audits offered, by folder name (numbered when two share one); each report is read once now (its
    pictures when opened), so a folder without a readable audit is refused before the server listens (an
    :class:`AppError`)."""
    named: dict[str, Path] = {}
    for folder in folders:
        read_report(Path(folder))
        name = Path(folder).resolve().name
        named[name if name not in named else f"{name} ({len(named) + 1})"] = Path(folder)
    return named
