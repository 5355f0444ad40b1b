"""Small pieces of the audit page (``audit.html``): shares, table cells, figures; every text escaped."""

from __future__ import annotations

from html import escape


def share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def cell(value: float | None, text: str | None = None, css: str = "") -> str:
    sort = "" if value is None else f' data-value="{value}"'
    shown = escape(text if text is not None else share(value))
    return f"<td{sort}{f' class={css}' if css else ''}>{shown}</td>"


def figure(src: str | None, caption: str, alt: str = "") -> str:
    if src is None:
        return f"<figure><figcaption>{escape(caption)} (unreadable now)</figcaption></figure>"
    image = f'<img src="{escape(src)}" alt="{escape(alt or caption)}">'
    return f"<figure>{image}<figcaption>{escape(caption)}</figcaption></figure>"


def photos(count: int) -> str:
    """ "1 photo", "2 photos"."""
    return f"{count} photo" if count == 1 else f"{count} photos"


def number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
