"""`report.html`: the report's markdown rendered by markdown-it-py (CommonMark with pipe tables) as
one self-contained page, the PNG plots next to the report inlined as data URIs."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from markdown_it import MarkdownIt

HTML_STYLE = ("body{font:15px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,Arial,sans-serif;max-width:1100px;"
              "margin:24px auto;padding:0 20px;color:#1d232b}table{border-collapse:collapse;margin:8px 0 16px}"
              "th,td{border:1px solid #d8dde3;padding:3px 8px;text-align:left}th{background:#f3f5f7}"
              "td{font-variant-numeric:tabular-nums}code{background:#f3f5f7;padding:0 3px;border-radius:3px}"
              "img{max-width:100%}h1{font-size:24px}h2{font-size:18px;margin-top:28px}")


def markdown_to_html(text: str, base: Path) -> str:
    """`text` (markdown with pipe tables) as HTML; PNG images relative to `base` are embedded."""
    parser = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = parser.parse(text)
    for token in tokens:
        for child in token.children or ():
            if child.type == "image":
                path = base / str(child.attrGet("src"))
                if path.suffix == ".png" and path.is_file():
                    child.attrSet("src", f"data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}")
    return parser.renderer.render(tokens, parser.options, {})


def write_report_html(out_dir: Path, markdown: str) -> Path:
    """`report.html`: the report as one self-contained page, its plots inline."""
    title = markdown.splitlines()[0].lstrip("# ").strip() if markdown.strip() else "report"
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">'
            f"<title>{html.escape(title)}</title><style>{HTML_STYLE}</style></head>\n<body>\n"
            f"{markdown_to_html(markdown, out_dir)}\n</body></html>\n")
    path = out_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
