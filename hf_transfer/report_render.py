"""The report as a document: built once as blocks, written as Markdown and as one HTML file.

report.md links its figures (PNG files in report_files/); report.html carries them inside
(base64 data URIs) and its style inline: it opens anywhere, offline, and asks nothing of any
server (no fonts, scripts or style sheets from elsewhere).
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from typing import Any

from hf_transfer.report_plots import INSTALL
from hf_transfer.report_summary import Task, findings


@dataclass
class Document:
    title: str
    # ("h2", text) | ("p", text) | ("ul", [items]) | ("table", (header, rows)) | ("img", (title, file))
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def add(self, kind: str, content: Any) -> None:
        self.blocks.append((kind, content))


def _spread(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def task_table(task: Task) -> tuple[list[str], list[list[str]]]:
    """A row per cell; a model column first only where the task's runs have several models."""
    models = task.several_models
    header = [*(["model"] if models else []), "strategy", "start", "budget", "train examples", "seeds",
              f"test {task.metric}", "± (sd)"]  # fmt: skip
    header += [f"{name} {task.metric}" for name in task.extra_sets]
    header += ["train s", "samples/s", "trainable", "peak MB"]
    rows = []
    for cell in task.cells:
        extra = [cell.extra_mean(name) for name in task.extra_sets]
        peak = max(cell.peak_mb) if cell.peak_mb else None
        rows.append([
            *([cell.model] if models else []), cell.strategy + (f" ({cell.variant})" if cell.variant else ""),
            cell.start, cell.budget,
            f"{cell.examples:,.0f}", str(len(cell.test)),
            f"{cell.mean:.4f}", _spread(cell.spread), *("-" if e is None else f"{e:.4f}" for e in extra),
            f"{cell.seconds:.1f}", f"{sum(cell.samples_per_s) / len(cell.samples_per_s):.1f}",
            f"{cell.trainable[0]:,}", "-" if peak is None else f"{peak:.0f}",
        ])  # fmt: skip
    return header, rows


def build(
    tasks: list[Task],
    images: dict[str, dict[str, tuple[str, bytes]]] | None,
    runs_table: tuple[list[str], list[list[str]]],
    where: str,
    unfinished: int,
) -> Document:
    """`images`: {task title: {file stem: (title, png)}}, or None without matplotlib."""
    doc = Document("hf_transfer comparison report")
    count = sum(len(c.test) for t in tasks for c in t.cells)
    doc.add(
        "p",
        f"{count} finished runs under `{where}`"
        + (f"; {unfinished} did not finish (see Every run)." if unfinished else "."),
    )
    if images is None:
        doc.add(
            "p",
            f"The plots need matplotlib: `{INSTALL}` (or `pip install matplotlib`), then run `hf-transfer report` again.",
        )
    for task in tasks:
        direction = "higher" if task.greater_is_better else "lower"
        doc.add("h2", task.title)
        doc.add("p", f"Headline metric: `{task.metric}` ({direction} is better), the one each run chose its best "
                     "checkpoint by. Means and standard deviations are over seeds.")  # fmt: skip
        doc.add("ul", findings(task))
        doc.add("table", task_table(task))
        for stem, (title, _) in (images or {}).get(task.title, {}).items():
            doc.add("img", (title, f"{slug(task.title)}-{stem}.png"))
    doc.add("h2", "Every run")
    doc.add("table", runs_table)
    return doc


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "task"


def markdown(doc: Document, image_folder: str) -> str:
    lines = [f"# {doc.title}", ""]
    for kind, content in doc.blocks:
        if kind == "h2":
            lines += [f"## {content}", ""]
        elif kind == "p":
            lines += [content, ""]
        elif kind == "ul":
            lines += [f"- {item}" for item in content] + [""]
        elif kind == "table":
            header, rows = content
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows] + [""]
        elif kind == "img":
            title, name = content
            lines += [f"![{title}]({image_folder}/{name})", ""]
    return "\n".join(lines)


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|")


STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto; max-width: 1100px;
       padding: 0 1rem; color: #1b1f23; line-height: 1.45; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2rem; border-bottom: 1px solid #d0d7de; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.85rem; display: block; overflow-x: auto; }
th, td { border: 1px solid #d0d7de; padding: 0.25rem 0.5rem; text-align: right; white-space: nowrap; }
th { background: #f6f8fa; } td:first-child, th:first-child { text-align: left; }
tbody tr:nth-child(even) { background: #fafbfc; }
code { background: #f6f8fa; padding: 0 0.2rem; border-radius: 3px; }
.figures { display: grid; grid-template-columns: repeat(auto-fit, minmax(480px, 1fr)); gap: 1rem; }
figure { margin: 0; } figure img { width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.85rem; color: #57606a; }
"""


def html_page(doc: Document, pictures: dict[str, bytes]) -> str:
    """One self-contained page; `pictures`: {file name: PNG bytes} of the img blocks."""
    body = [f"<h1>{html.escape(doc.title)}</h1>"]
    previous = None
    for kind, content in doc.blocks:
        if previous == "img" and kind != "img":
            body.append("</div>")
        if kind == "img" and previous != "img":
            body.append('<div class="figures">')  # side by side where the window is wide enough
        previous = kind
        if kind == "h2":
            body.append(f"<h2>{html.escape(content)}</h2>")
        elif kind == "p":
            body.append(f"<p>{_inline(content)}</p>")
        elif kind == "ul":
            body.append("<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in content) + "</ul>")
        elif kind == "table":
            header, rows = content
            head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
            cells = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>")
        elif kind == "img" and content[1] in pictures:  # (a figure without its PNG: none drawn)
            title, name = content
            data = base64.b64encode(pictures[name]).decode("ascii")
            body.append(
                f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(title)}</figcaption></figure>"
            )
    if previous == "img":
        body.append("</div>")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(doc.title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def _inline(text: str) -> str:
    """Escaped text, with `code` spans as in the Markdown."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))
