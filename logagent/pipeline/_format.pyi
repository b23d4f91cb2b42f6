# Types of the C module _format.c (see its comment and message.py).

def build_plain(before: bytes, after: bytes, id_before: bytes | None, end: bytes, start: int, lines: list[bytes],
                ts: bytes, /) -> list[bytes]: ...
