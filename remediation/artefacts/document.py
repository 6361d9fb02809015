"""What the typed JSON documents of the artefact owners share (run.json's RunRecord, summary.json's DetectSummary).

A document is a dataclass whose fields are its known keys: written in ORDER, a field that is None left out, and keys
this version does not know kept in `extra` and written back after the known ones, so a newer tool's additions survive
an older tool's rewrite.
"""

from __future__ import annotations

from dataclasses import MISSING, fields


class OrderedDocument:
    ORDER = ()  # the known keys, in the order they are written
    ABSENT_AS_NONE = ()  # fields with a default that a document written without them reads as None

    @classmethod
    def required(cls) -> tuple[str, ...]:
        """The keys a document must have: the fields without a default."""
        return tuple(f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING)

    @classmethod
    def _from_known(cls, value: dict):
        known = {k: value[k] for k in cls.ORDER if k in value}
        unknown = {k: v for k, v in value.items() if k not in cls.ORDER}
        return cls(**{**dict.fromkeys(cls.ABSENT_AS_NONE), **known}, extra=unknown)

    def to_json(self) -> dict:
        document = {k: getattr(self, k) for k in self.ORDER if getattr(self, k) is not None}
        return {**document, **self.extra}
