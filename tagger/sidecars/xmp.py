"""The XMP itself: tagger's keywords merged into a sidecar, with the standard library only.

Three fields, as the apps read them: `dc:subject` (flat keywords), `lr:hierarchicalSubject`
(`tagger|animal|cat|tabby`) and `digiKam:TagsList` (`tagger/animal/cat/tabby`). tagger's own
entries sit under the `tagger` root, so a rewrite replaces them and keeps everyone else's.
"""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence

from tagger.errors import TaggerError

ROOT = "tagger"
NS = {
    "x": "adobe:ns:meta/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "dc": "http://purl.org/dc/elements/1.1/",
    "lr": "http://ns.adobe.com/lightroom/1.0/",
    "digiKam": "http://www.digikam.org/ns/1.0/",
}
_BEGIN = '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
_END = '\n<?xpacket end="w"?>\n'
_EMPTY = (
    f'<x:xmpmeta xmlns:x="{NS["x"]}"><rdf:RDF xmlns:rdf="{NS["rdf"]}">'
    '<rdf:Description rdf:about=""/></rdf:RDF></x:xmpmeta>'
)


class SidecarError(TaggerError):
    """A sidecar that is not XMP tagger can read: it is left as it is."""


def _q(prefix: str, name: str) -> str:
    return f"{{{NS[prefix]}}}{name}"


def merged(existing: bytes | None, paths: Sequence[Sequence[str]]) -> bytes:
    """The sidecar with tagger's keywords replaced by `paths`, each from the most general
    label to the label itself (`["animal", "cat", "tabby"]`); other entries stay."""
    for prefix, uri in NS.items():
        ET.register_namespace(prefix, uri)
    root = _parse(existing) if existing else ET.fromstring(_EMPTY)
    descriptions = root.findall(f".//{_q('rdf', 'Description')}")
    if not descriptions:
        raise SidecarError("no rdf:Description in it")
    old = _items(descriptions, ("lr", "hierarchicalSubject"))
    # Every word of tagger's old paths was one of its flat keywords too.
    ours_before = {
        word for entry in old if entry.startswith(f"{ROOT}|") for word in entry.split("|")[1:]
    }
    flat = [label for path in paths for label in path]
    _replace(
        descriptions, ("dc", "subject"), "Bag", lambda item: item in ours_before, _unique(flat)
    )
    _replace(
        descriptions,
        ("lr", "hierarchicalSubject"),
        "Bag",
        lambda item: item.startswith(f"{ROOT}|"),
        ["|".join([ROOT, *path]) for path in paths],
    )
    _replace(
        descriptions,
        ("digiKam", "TagsList"),
        "Seq",
        lambda item: item.startswith(f"{ROOT}/"),
        ["/".join([ROOT, *path]) for path in paths],
    )
    ET.indent(root, space=" ")
    try:
        text = ET.tostring(root, encoding="unicode")
    except (ValueError, RecursionError) as exc:
        raise SidecarError(f"cannot write it back: {type(exc).__name__}") from None
    return (_BEGIN + text + _END).encode("utf-8")


def _parse(data: bytes) -> ET.Element:
    """The document's root (x:xmpmeta or a bare rdf:RDF), its own prefixes kept."""
    try:
        for _, (prefix, uri) in ET.iterparse(io.BytesIO(data), events=("start-ns",)):
            if prefix and prefix not in NS and not re.fullmatch(r"ns\d+", prefix):
                ET.register_namespace(prefix, uri)  # ns0... are ElementTree's own
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise SidecarError(f"not well-formed XML: {exc}") from None
    except (ValueError, RecursionError) as exc:  # odd prefixes; nesting too deep
        raise SidecarError(f"not XMP tagger can read: {type(exc).__name__}") from None
    if root.tag not in (_q("x", "xmpmeta"), _q("rdf", "RDF")):
        raise SidecarError(f"not XMP (its root element is {root.tag})")
    return root


def _items(descriptions: list[ET.Element], field: tuple[str, str]) -> list[str]:
    return [
        li.text or ""
        for description in descriptions
        for prop in description.findall(_q(*field))
        for li in prop.iter(_q("rdf", "li"))
    ]


def _replace(
    descriptions: list[ET.Element],
    field: tuple[str, str],
    container: str,
    ours: object,
    new: list[str],
) -> None:
    """Drop our old items from the field wherever it is, then add the new ones to it."""
    assert callable(ours)
    prop = next((p for d in descriptions for p in d.findall(_q(*field))), None)
    if prop is None:
        prop = ET.SubElement(descriptions[0], _q(*field))
    holder = prop.find(f"./{_q('rdf', container)}")
    if holder is None:
        holder = next(iter(prop), None) or ET.SubElement(prop, _q("rdf", container))
    for li in list(holder):
        if li.tag == _q("rdf", "li") and ours(li.text or ""):
            holder.remove(li)
    kept = {li.text for li in holder}
    for item in new:
        if item not in kept:
            ET.SubElement(holder, _q("rdf", "li")).text = item


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))
