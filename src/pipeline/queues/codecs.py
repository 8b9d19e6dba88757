"""How a durable queue turns items into bytes: JSON by default, pickle only when asked.

A codec has a `name` (stored in the queue file, so a file is never read with the wrong
codec) and two functions. JSON stores the JSON types only (a tuple comes back as a
list) and is safe to read from any file. Pickle stores almost any Python object, but
unpickling runs code chosen by whoever wrote the file: open a pickle queue only if you
trust every process that could have written to it.
"""

from __future__ import annotations

import json
import pickle
from typing import Any, Protocol

__all__ = ["JSON", "PICKLE", "Codec", "JsonCodec", "PickleCodec"]


class Codec(Protocol):
    """Turns items into bytes and back; `name` is recorded in the queue file."""

    @property
    def name(self) -> str:
        """The codec's name, stored with the queue and checked on every open."""
        ...

    def encode(self, item: Any) -> bytes:
        """Return the bytes of `item`; raise (any exception) if it cannot be encoded."""
        ...

    def decode(self, data: bytes) -> Any:
        """Return the item stored as `data`; raise (any exception) if it cannot be decoded."""
        ...


class JsonCodec:
    """JSON in UTF-8, strict: NaN, infinities and non-JSON types are refused, not mangled."""

    name = "json"

    def __init__(self) -> None:
        # Built once: json.dumps with any non-default option builds an encoder per call.
        self._encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        self._decoder = json.JSONDecoder()

    def encode(self, item: Any) -> bytes:
        """Return `item` as compact UTF-8 JSON."""
        return self._encoder.encode(item).encode()

    def decode(self, data: bytes) -> Any:
        """Return the item stored as `data`."""
        return self._decoder.decode(data.decode())


class PickleCodec:
    """Pickle: any picklable object. Unsafe for files others could write (see the module)."""

    name = "pickle"

    def encode(self, item: Any) -> bytes:
        """Return `item` pickled with the highest protocol."""
        return pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)

    def decode(self, data: bytes) -> Any:
        """Return the item stored as `data` (running whatever code the pickle names)."""
        return pickle.loads(data)


JSON = JsonCodec()
PICKLE = PickleCodec()
