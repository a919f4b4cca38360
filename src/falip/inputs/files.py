"""The door for files read as data: lines, and every pickled or torch-saved file.

falip never executes code from the files it reads. Python's pickle runs whatever a file asks for, and
annotation files and checkpoints travel through mirrors, forks and drive links, so every pickled or
torch-saved file falip opens is opened here, and nowhere else (a test checks that no other module calls
`pickle.load` or `torch.load`):

- `read_plain_pickle`: pickles of plain data (refer's `refs(unc).p`). The unpickler allows no global at
  all: dicts, lists, tuples, sets, strings, bytes, numbers, booleans and None are all a pickle can then
  build. Python 2's byte strings (`str`) become text as refer's Python 3 ports read them: UTF-8, or
  Latin-1 where a string is not valid UTF-8 (those ports' default, ASCII, fails on a non-ASCII one).
- `read_torch_data`: files written by `torch.save` (TransVG's `unc_testA.pth`, state dicts), through
  `torch.load(weights_only=True)`: tensors, containers, strings and numbers; no other global.
- `read_torchscript`: a TorchScript archive (OpenAI's `ViT-B-16.pt`) through `torch.jit.load`, which
  reads TorchScript code, not Python.

A file that asks for anything more is refused with one line naming the file and what it asked for.

`lines` splits text files on "\\n" alone (JSON-lines, falip's own results files, plain lists): a JSON
string may hold U+2028, U+0085 or a form feed unescaped, which `str.splitlines` would take for line ends.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

from ..errors import FalipError, first_line

_REFUSAL = "falip never runs code from the files it reads"


def lines(text: str) -> list[str]:
    """The lines of `text`, split on "\\n" alone (a trailing "\\r" dropped, for files written on Windows).

    Unlike `str.splitlines`, U+2028, U+2029, U+0085, form feeds and the other characters Python also
    counts as line ends stay inside their line. A final newline does not make an empty last line."""
    parts = text.split("\n")
    if parts and parts[-1] == "":
        parts.pop()
    return [part[:-1] if part.endswith("\r") else part for part in parts]


class _Refused(pickle.UnpicklingError):
    """A pickle asked for something a plain-data pickle never needs; `asked` says what."""

    def __init__(self, asked: str):
        super().__init__(asked)
        self.asked = asked


class _NoGlobals(pickle.Unpickler):
    """An unpickler that refuses every global: without one, no function can be called (REDUCE, BUILD,
    INST, OBJ and the extension registry all go through `find_class`)."""

    def find_class(self, module: str, name: str):
        raise _Refused(f"{module}.{name}")

    def persistent_load(self, pid):
        raise _Refused(f"the persistent object {pid!r}")


def _as_text(value):
    """Python 2 byte strings (read as bytes) made text, inside any container."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value.decode("latin-1")
    if isinstance(value, dict):
        return {_as_text(k): _as_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_text(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_as_text(v) for v in value)
    if isinstance(value, (set, frozenset)):
        return type(value)(_as_text(v) for v in value)
    return value


def read_plain_pickle(path: str | Path, what: str):
    """The data in a pickle that holds only plain Python data.

    Args:
        path: the pickle file.
        what: what the file should be, for messages ("refer annotation pickle").
    Returns:
        Its object: dicts, lists, tuples, sets, str (Python 2 byte strings decoded, see the module),
        numbers, booleans, None.
    Raises:
        FalipError: the file asks for a global (a class or function: "asks for posix.system"), or is not
            a readable pickle.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            data = _NoGlobals(handle, encoding="bytes").load()
    except _Refused as exc:
        raise FalipError(
            f"{path}: refused: it asks for {exc.asked}, but a {what} holds only plain data ({_REFUSAL})"
        ) from None
    except OSError as exc:
        raise FalipError(f"cannot read {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # a damaged pickle can raise EOFError, ValueError, KeyError, IndexError, ...
        raise FalipError(f"{path}: not a {what} ({type(exc).__name__}: {first_line(exc)})") from None
    return _as_text(data)


def _asked_globals(path: Path, message: str) -> str:
    """The globals a torch file asks for that `weights_only` refuses, for the one-line message."""
    import torch

    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # older torch, or the legacy (non-zip) format: read torch's own message
        unsafe = re.findall(r"GLOBAL ([\w.]+)", message)
    return ", ".join(unsafe) or first_line(message)


def read_torch_data(path: str | Path, what: str):
    """The object a `torch.save` file holds, loaded with `torch.load(weights_only=True)` onto the CPU.

    Args:
        path: the file (`.pth`, `.pt`, `.bin`).
        what: what the file should be, for messages ("TransVG split file", "checkpoint").
    Returns:
        Tensors, dicts, lists, tuples, strings and numbers.
    Raises:
        FalipError: the file asks for a global `weights_only` refuses ("asks for posix.system"), or is
            not a readable torch file.
    """
    import torch

    path = Path(path)
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "GLOBAL" in str(exc) or "global" in str(exc):
            asked = _asked_globals(path, str(exc))
            raise FalipError(
                f"{path}: refused: it asks for {asked}, which a {what} does not need ({_REFUSAL})"
            ) from None
        raise FalipError(f"{path}: not a {what} ({first_line(exc)})") from None
    except Exception as exc:  # torch raises many types for a damaged or foreign file
        raise FalipError(f"{path}: not a {what} ({type(exc).__name__}: {first_line(exc)})") from None


def read_torchscript(path: str | Path):
    """The state dict of a TorchScript archive (`torch.jit.load`, on the CPU), or None when the file is
    not TorchScript (then it may be a `torch.save` file: see `read_torch_data`)."""
    import torch

    try:
        return torch.jit.load(str(path), map_location="cpu").state_dict()
    except RuntimeError:
        return None


__all__ = ["lines", "read_plain_pickle", "read_torch_data", "read_torchscript"]
