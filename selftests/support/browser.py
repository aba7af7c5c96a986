"""Open an HTML file in headless Chromium and read what it rendered.

pytest-html 4 builds its result rows with JavaScript from JSON embedded in the
page, so the file's source does not show them; `--dump-dom` prints the DOM after
the scripts ran. `Page` parses that DOM into a small tree, enough to find
elements by tag or class and read their text the way a reader would see it
(no script, style or template content; optionally nothing inside `.hidden`).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source"}
UNSEEN = {"script", "style", "template", "head"}
#: Elements whose text a reader sees apart from their neighbours'.
BLOCKS = {"div", "p", "pre", "h1", "h2", "h3", "h4", "li", "ul", "table", "tr", "td", "th"}


def find_chromium() -> str | None:
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _headless(binary: str, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="rp-chromium-") as profile:
        argv = [
            binary,
            "--headless",
            "--no-sandbox",  # as root in a container
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            f"--user-data-dir={profile}",
            *args,
        ]
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, check=True, cwd=profile
        )


def dump_dom(binary: str, url: str) -> str:
    """The DOM of `url` after its scripts ran, serialized as HTML."""
    return _headless(binary, "--dump-dom", url).stdout


def screenshot(binary: str, url: str, out: Path, size: str = "1400,3000") -> Path:
    _headless(binary, f"--screenshot={out}", f"--window-size={size}", url)
    return out


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    children: list[Element | str] = field(default_factory=list)

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def find_all(self, tag: str | None = None, cls: str | None = None) -> list[Element]:
        found = []
        for child in self.children:
            if isinstance(child, str):
                continue
            if (tag is None or child.tag == tag) and (cls is None or cls in child.classes):
                found.append(child)
            found += child.find_all(tag, cls)
        return found

    def find(self, tag: str | None = None, cls: str | None = None) -> Element:
        found = self.find_all(tag, cls)
        assert found, f"no <{tag or '*'} class={cls!r}> in <{self.tag} {self.attrs}>"
        return found[0]

    def by_id(self, element_id: str) -> Element:
        found = [e for e in self.find_all() if e.attrs.get("id") == element_id]
        assert len(found) == 1, f"{len(found)} elements with id {element_id!r}"
        return found[0]

    def text(self, *, visible: bool = True) -> str:
        """The text a reader sees; with visible=False also what a collapsed row hides."""
        parts = []
        for child in self.children:
            if isinstance(child, str):
                parts.append(child)
            elif child.tag in UNSEEN or (visible and "hidden" in child.classes):
                continue
            elif child.tag in BLOCKS:
                parts.append(f" {child.text(visible=visible)} ")
            else:
                parts.append(child.text(visible=visible))
        return "".join(parts)


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        element = Element(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(element)
        if tag not in VOID:
            self.stack.append(element)

    def handle_endtag(self, tag):
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data):
        self.stack[-1].children.append(data)


def parse(dom: str) -> Element:
    builder = _TreeBuilder()
    builder.feed(dom)
    builder.close()
    return builder.root


@dataclass
class Page:
    """A file as headless Chromium rendered it."""

    path: Path
    dom: str
    root: Element

    @classmethod
    def open(cls, binary: str, path: Path, query: str = "") -> Page:
        dom = dump_dom(binary, path.resolve().as_uri() + query)
        return cls(path, dom, parse(dom))

    @property
    def body(self) -> Element:
        return self.root.find("body")

    def text(self, *, visible: bool = True) -> str:
        return " ".join(self.body.text(visible=visible).split())


#: Run in the page once it has loaded: every visible element with text of its own whose
#: colour is below 4.5:1 (WCAG's minimum for body text) against the background it is
#: drawn on, as "tag ratio text"; written into the page for --dump-dom to carry out.
_CONTRAST = """<script>
window.addEventListener("load", function () {
  function rgba(text) { return (text.match(/[\\d.]+/g) || []).map(Number); }
  function luminance(c) {
    var lin = c.slice(0, 3).map(function (v) {
      v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
    });
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2];
  }
  function background(el) {
    for (; el; el = el.parentElement) {
      var c = rgba(getComputedStyle(el).backgroundColor);
      if (c.length === 3 || c[3] > 0) { return c; }
    }
    return [255, 255, 255];
  }
  var low = [];
  document.querySelectorAll("body *").forEach(function (el) {
    var own = Array.prototype.some.call(el.childNodes, function (n) {
      return n.nodeType === 3 && n.textContent.trim();
    });
    var style = getComputedStyle(el);
    if (!own || !el.getClientRects().length || style.visibility === "hidden") { return; }
    var fg = luminance(rgba(style.color)), bg = luminance(background(el));
    var ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
    if (ratio < 4.5) {
      low.push(el.tagName.toLowerCase() + " " + ratio.toFixed(2) + " " +
               el.textContent.trim().slice(0, 50));
    }
  });
  var out = document.createElement("pre");
  out.id = "rp-contrast";
  out.textContent = JSON.stringify(low);
  document.body.appendChild(out);
});
</script>"""


def low_contrast(binary: str, path: Path) -> list[str]:
    """The text of the page, as rendered, drawn in a colour too faint to read."""
    import json

    html = path.read_text()
    with tempfile.TemporaryDirectory(prefix="rp-contrast-") as tmp:
        probed = Path(tmp) / path.name
        before, end, after = html.rpartition("</body>")
        probed.write_text(before + _CONTRAST + end + after)
        page = parse(dump_dom(binary, probed.as_uri()))
    found: list[str] = json.loads(page.find("body").by_id("rp-contrast").text())
    return found
