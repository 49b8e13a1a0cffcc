"""Real bytes for what simulated customers send: a PNG picture and an AMR-NB voice note.

WeChat delivers voice as AMR (wecom-api §3, voice_format 0); the voice note is encoded with PyAV's
libopencore_amrnb, so a receiver's AMR decoder meets the real format, not a stand-in.
"""

from __future__ import annotations

import array
import io
import math
import struct
import zlib


def sample_png(width: int = 32, height: int = 24, rgb: tuple[int, int, int] = (200, 60, 40)) -> bytes:
    """A small solid-colour PNG (8-bit RGB), made with the standard library."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + bytes(rgb) * width  # filter type 0, then the pixels
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


AMR_RATE = 8000  # AMR-NB is 8 kHz mono, 20 ms frames of 160 samples
_FRAME = 160


def sample_amr(seconds: float = 1.0, frequency: float = 440.0) -> bytes:
    """An AMR-NB file ("#!AMR\\n" + frames) of a tone, `seconds` long."""
    import av
    from av.audio.frame import AudioFrame

    count = int(AMR_RATE * seconds) // _FRAME * _FRAME
    pcm = array.array(
        "h", (int(8000 * math.sin(2 * math.pi * frequency * i / AMR_RATE)) for i in range(count))
    ).tobytes()
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="amr") as container:
        stream = container.add_stream("libopencore_amrnb", rate=AMR_RATE)
        stream.layout = "mono"
        stream.bit_rate = 12200
        for start in range(0, count, _FRAME):
            frame = AudioFrame(format="s16", layout="mono", samples=_FRAME)
            frame.planes[0].update(pcm[start * 2 : (start + _FRAME) * 2])
            frame.sample_rate = AMR_RATE
            frame.pts = start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def sample_file(text: str = "订单号 20240101-0001\n问题：包裹破损\n") -> bytes:
    """A plain-text file, UTF-8."""
    return text.encode("utf-8")
