"""openpi's wire format: msgpack with numpy arrays, as openpi's policy servers and ``openpi-client`` speak it.

One codec for both directions: the teacher server's openpi endpoint (:mod:`robot_rl.teachers.server`) and the
``teacher.kind=openpi`` client (:mod:`robot_rl.teachers.openpi`). It follows ``openpi-client`` 0.1.2's
``openpi_client/msgpack_numpy.py`` (itself adapted from ``lebedov/msgpack-numpy`` without its pickle fallback),
built on the ``msgpack`` library's ``default`` / ``object_hook``:

- an ``ndarray`` is the map ``{b"__ndarray__": True, b"data": arr.tobytes(), b"dtype": arr.dtype.str,
  b"shape": arr.shape}`` (bytes keys, C order); a numpy scalar is ``{b"__npgeneric__": True, b"data": item,
  b"dtype": str}``;
- object (``O``), void (``V``) and complex (``c``) dtypes are refused, packing and (unlike upstream, which lets
  numpy fail) unpacking, with a :class:`OpenpiWireError` naming the dtype; no pickle anywhere;
- decoded arrays are read-only views of the frame (as upstream's).

The protocol around it (``openpi_client/websocket_client_policy.py``, openpi's ``serving/websocket_policy_server.py``;
FACTS.md "openpi's policy-server protocol"): one WebSocket at ``ws://host:port`` (path ignored, no compression);
the server first sends a msgpack metadata map, then answers each msgpack observation frame with a msgpack action
frame (``"actions"`` ``(H, dim)``, ``"server_timing"`` / ``"policy_timing"`` ``{"infer_ms"}``); an error is a text
frame with the traceback followed by close code 1011 and the reason :data:`ERROR_CLOSE_REASON`.
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

from robot_rl.teacher_protocol import check_wire_shape

#: dtype kinds msgpack-numpy refuses (openpi's ``pack_array``): void, object, complex.
REFUSED_KINDS = frozenset("VOc")
#: Close code and reason of an error (openpi's ``WebsocketPolicyServer``: ``CloseCode.INTERNAL_ERROR``).
ERROR_CLOSE_CODE = 1011
ERROR_CLOSE_REASON = "Internal server error. Traceback included in previous frame."
#: Close code of a frame over the size limit (RFC 6455 "message too big").
TOO_BIG_CLOSE_CODE = 1009
#: The header openpi's client sends its API key in: ``Authorization: Api-Key <key>``.
AUTHORIZATION_HEADER = "Authorization"
API_KEY_SCHEME = "Api-Key"


class OpenpiWireError(ValueError):
    """A value msgpack-numpy cannot carry (packing) or a frame that is not valid msgpack-numpy (unpacking)."""


def _check_dtype(dtype: np.dtype) -> None:
    if dtype.kind in REFUSED_KINDS:
        raise OpenpiWireError(f"unsupported dtype {dtype} (msgpack-numpy refuses object, void and complex dtypes)")


def _default(obj: Any) -> Any:
    """The msgpack ``default``: an ndarray or numpy scalar as its msgpack-numpy map."""
    if isinstance(obj, np.ndarray):
        _check_dtype(obj.dtype)
        return {b"__ndarray__": True, b"data": obj.tobytes(), b"dtype": obj.dtype.str, b"shape": obj.shape}
    if isinstance(obj, np.generic):
        _check_dtype(obj.dtype)
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise TypeError(f"cannot serialize {type(obj).__name__} with msgpack-numpy")


def _object_hook(obj: dict) -> Any:
    """The msgpack ``object_hook``: a msgpack-numpy map back to its ndarray / numpy scalar (other maps unchanged)."""
    if b"__ndarray__" in obj:
        try:
            dtype = np.dtype(obj[b"dtype"])
            _check_dtype(dtype)
            return np.ndarray(buffer=obj[b"data"], dtype=dtype, shape=check_wire_shape(obj[b"shape"]))
        except OpenpiWireError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise OpenpiWireError(f"not a valid msgpack-numpy array: {type(exc).__name__}: {exc}") from None
    if b"__npgeneric__" in obj:
        try:
            dtype = np.dtype(obj[b"dtype"])
            _check_dtype(dtype)
            return dtype.type(obj[b"data"])
        except OpenpiWireError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise OpenpiWireError(f"not a valid msgpack-numpy scalar: {type(exc).__name__}: {exc}") from None
    return obj


def packb(obj: Any) -> bytes:
    """One msgpack-numpy frame of ``obj`` (maps, lists, strings, numbers, ndarrays, numpy scalars).

    Raises:
        OpenpiWireError: an array or scalar of an object, void or complex dtype.
        TypeError: a value msgpack cannot serialize.
    """
    return msgpack.packb(obj, default=_default)


def unpackb(data: bytes) -> Any:
    """Decode one msgpack-numpy frame (arrays come back read-only).

    Raises:
        OpenpiWireError: not valid msgpack, trailing bytes, or an array map with a refused or malformed dtype, a
            shape that does not match its data, or missing fields.
    """
    try:
        return msgpack.unpackb(data, object_hook=_object_hook)
    except OpenpiWireError:
        raise
    except (msgpack.UnpackException, msgpack.ExtraData, ValueError, TypeError) as exc:
        detail = f": {exc}" if str(exc) else ""
        raise OpenpiWireError(f"malformed msgpack frame ({type(exc).__name__}{detail})") from None


def api_key_of(headers: Any) -> str | None:
    """The API key of a WebSocket handshake: openpi's ``Authorization: Api-Key <key>``, else ``None``.

    Args:
        headers: a case-insensitive mapping of the handshake's headers (Starlette's ``Headers``).
    """
    value = headers.get(AUTHORIZATION_HEADER)
    if not value:
        return None
    scheme, _, key = value.partition(" ")
    return key.strip() if scheme == API_KEY_SCHEME else None


__all__ = ["API_KEY_SCHEME", "AUTHORIZATION_HEADER", "ERROR_CLOSE_CODE", "ERROR_CLOSE_REASON", "OpenpiWireError",
           "REFUSED_KINDS", "TOO_BIG_CLOSE_CODE", "api_key_of", "packb", "unpackb"]
