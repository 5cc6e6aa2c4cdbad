"""Licence names across providers -> one canonical id, what each allows, and the filter.

Openverse says ``license: "by-sa", license_version: "4.0"``, Wikimedia Commons
``LicenseShortName: "CC BY-SA 4.0"`` (or ``License: "cc-by-sa-4.0"``), a URL list
whatever its author wrote; all become ``CC-BY-SA-4.0`` (SPDX spelling; a ported licence
keeps its jurisdiction: ``CC-BY-SA-3.0-DE``). ``cc0`` / ``CC0`` -> ``CC0-1.0``;
``pdm`` / ``Public domain`` -> ``PDM``. A name not in the table stays as given and
counts as *unknown*: a licence filter lets nothing unknown through.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from labtf.errors import LabtfError

#: What a licence lets you do (``--licence-allows``): names -> meaning.
PERMISSIONS = {
    "commercial": "commercial use allowed (no NC)",
    "modification": "derivatives allowed (no ND)",
    "no-attribution": "no credit required (CC0, public domain)",
    "no-share-alike": "derivatives need not use the same licence (no SA)",
}

#: Non-CC families: canonical id -> (permissions, spellings after lower-casing).
_OTHER = {
    "CC0-1.0": ({"commercial", "modification", "no-attribution", "no-share-alike"},
                ("cc0", "cc0 1.0", "cc-zero", "cc zero", "cc0-1.0", "zero", "publicdomain zero")),
    "PDM": ({"commercial", "modification", "no-attribution", "no-share-alike"},
            ("pdm", "pdm 1.0", "public domain", "public domain mark", "pd", "publicdomain mark",
             "no restrictions")),
    "GFDL": ({"commercial", "modification"}, ("gfdl", "gnu free documentation license")),
    "FAL": ({"commercial", "modification"}, ("fal", "free art license", "lal", "art libre")),
    "CC-SAMPLING+-1.0": ({"modification", "no-share-alike"}, ("sampling+", "sampling+ 1.0")),
    "CC-NC-SAMPLING+-1.0": ({"modification", "no-share-alike"},
                            ("nc-sampling+", "nc-sampling+ 1.0")),
}
_SPELLING = {s: cid for cid, (_, names) in _OTHER.items() for s in names}
_CC = re.compile(r"^(?:cc[\s-]*)?(by(?:[\s-]+(?:nc|nd|sa))*)(?:[\s-]+v?(\d(?:\.\d)?)"
                 r"(?:\s*,\s*\d\.\d)*)?(?:[\s-]+([a-z]{2,3}))?$")   # "3.0,2.5": the first
_CC_URL = re.compile(r"creativecommons\.org/(?:licenses/([a-z-]+)/(\d\.\d)(?:/([a-z]{2,3}))?"
                     r"|publicdomain/(zero|mark)/)")


def normalise_licence(name: str | None, version: str | None = "", url: str | None = "") -> str:
    """One canonical id for a licence however a provider spells it.

    Args:
        name: the provider's licence name (``by-sa``, ``CC BY-SA 4.0``, ``cc0``, ...).
        version: a separate version (Openverse's ``license_version``).
        url: the licence URL, used when the name says nothing.

    Returns:
        ``CC-BY-SA-4.0``, ``CC0-1.0``, ``PDM``, ... ; a name not in the table as given
        (stripped); ``""`` when nothing is known.
    """
    raw = " ".join(str(name or "").split())
    text = raw.lower().replace("_", " ").replace("creative commons", "cc")
    text = re.sub(r"\s*(?:license|licence)\s*$", "", text)
    ver = " ".join(str(version or "").split()).lower()
    if ver and not text.endswith(ver):
        text = f"{text} {ver}"
    text = text.strip()
    if not text and url:
        m = _CC_URL.search(str(url).lower())
        if m:
            text = {"zero": "cc0", "mark": "pdm"}.get(m.group(4) or "", "") or \
                " ".join(filter(None, (m.group(1), m.group(2), m.group(3))))
    if not text:
        return ""
    bare = re.sub(r"[\s-]+v?\d(?:\.\d+)*(?:\s*,.*)?$", "", text)   # GFDL 1.2 -> gfdl
    for key in (text, bare):
        if key in _SPELLING:
            return _SPELLING[key]
    if text.startswith("pd-") or text.startswith("pd "):   # Commons templates: PD-old, PD-US ...
        return "PDM"
    m = _CC.match(text)
    if not m:
        return raw
    elements = set(re.split(r"[\s-]+", m.group(1))) - {"by"}
    parts = ["CC", "BY", *(e.upper() for e in ("nc", "nd", "sa") if e in elements)]
    if m.group(2):
        parts.append(m.group(2) if "." in m.group(2) else f"{m.group(2)}.0")
        if m.group(3):
            parts.append(m.group(3).upper())
    elif m.group(3):
        return raw
    return "-".join(parts)


def licence_family(lid: str) -> str:
    """``CC-BY-SA-4.0`` / ``CC-BY-SA-3.0-DE`` -> ``CC-BY-SA`` (other ids: unchanged)."""
    return re.sub(r"-\d\.\d(?:-[A-Z]{2,3})?$", "", lid) if lid.startswith("CC-BY") else lid


def licence_permissions(lid: str) -> set[str] | None:
    """What the canonical licence ``lid`` allows (names of :data:`PERMISSIONS`); None: unknown."""
    if lid in _OTHER:
        return set(_OTHER[lid][0])
    fam = licence_family(lid)
    if not re.fullmatch(r"CC-BY(-NC)?(-ND|-SA)?", fam):
        return None
    allowed = set()
    if "-NC" not in fam:
        allowed.add("commercial")
    if "-ND" not in fam:
        allowed.add("modification")
    if "-SA" not in fam:
        allowed.add("no-share-alike")
    return allowed


def _known_families() -> list[str]:
    cc = [f"CC-BY{nc}{x}" for nc in ("", "-NC") for x in ("", "-ND", "-SA")]
    return cc + list(_OTHER)


@dataclass(frozen=True)
class LicenceFilter:
    """Which licences to keep: all of ``allows`` granted, and (if given) one of ``ids``.

    Args:
        allows: permission names (:data:`PERMISSIONS`).
        ids: licences in any spelling; an id without version (``CC-BY-SA``) means every
            version and port of it.
    """

    allows: tuple[str, ...] = ()
    ids: tuple[str, ...] = ()

    @classmethod
    def parse(cls, allows: Iterable[str] = (), ids: Iterable[str] = ()) -> "LicenceFilter":
        """Split comma lists, check the names, normalise the ids.

        Raises:
            LabtfError: an unknown permission or licence (the message lists the valid ones).
        """
        perms = tuple(dict.fromkeys(p.strip().lower() for item in allows for p in str(item).split(",")
                                    if p.strip()))
        for p in perms:
            if p not in PERMISSIONS:
                raise LabtfError(f"unknown licence permission '{p}'; choose from: "
                                 f"{', '.join(PERMISSIONS)}")
        out = []
        for item in ids:
            for name in str(item).split(","):
                if not name.strip():
                    continue
                lid = normalise_licence(name)
                if licence_permissions(lid) is None:
                    raise LabtfError(f"unknown licence '{name.strip()}'; known: "
                                     f"{', '.join(_known_families())} (with or without a version)")
                out.append(lid)
        return cls(perms, tuple(dict.fromkeys(out)))

    def __bool__(self) -> bool:
        return bool(self.allows or self.ids)

    def accepts(self, lid: str) -> bool:
        """Whether a canonical licence id passes (an unknown licence never does)."""
        granted = licence_permissions(lid)
        if granted is None:
            return not self
        if not set(self.allows) <= granted:
            return False
        return not self.ids or lid in self.ids or licence_family(lid) in self.ids
