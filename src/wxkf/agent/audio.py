"""Voice notes for speech-to-text: WeChat's AMR converted to a format transcription endpoints accept.

WeChat delivers voice as AMR-NB (wecom-api §3, voice_format 0); OpenAI-compatible
`/audio/transcriptions` endpoints take WAV, MP3, FLAC or Ogg, not AMR. PyAV (FFmpeg's codecs in a
registry wheel) decodes AMR-NB/WB and encodes 16 kHz mono PCM WAV, MP3 or FLAC.
"""

from __future__ import annotations

import io
from typing import Literal, cast

AudioFormat = Literal["wav", "mp3", "flac"]
_CODECS = {"wav": "pcm_s16le", "mp3": "libmp3lame", "flac": "flac"}
CONTENT_TYPES = {"wav": "audio/wav", "mp3": "audio/mpeg", "flac": "audio/flac"}
TARGET_RATE = 16_000  # what speech models are trained on


class AudioConversionError(ValueError):
    """The voice note could not be decoded (not audio, or a codec PyAV lacks)."""


def convert_voice(data: bytes, target: AudioFormat = "wav") -> bytes:
    """AMR (or any audio FFmpeg reads) → 16 kHz mono `target`."""
    import av
    from av.audio.stream import AudioStream

    try:
        source = av.open(io.BytesIO(data), "r")
    except (av.FFmpegError, ValueError) as exc:
        raise AudioConversionError(f"无法解码语音 / cannot decode the voice note: {exc}") from exc
    out = io.BytesIO()
    try:
        with source, av.open(out, "w", format=target) as sink:
            stream = cast(AudioStream, sink.add_stream(_CODECS[target], rate=TARGET_RATE))
            stream.layout = "mono"
            resampler = av.AudioResampler(
                format="s16p" if target == "mp3" else "s16", layout="mono", rate=TARGET_RATE
            )
            for frame in source.decode(audio=0):
                for resampled in resampler.resample(frame):
                    for packet in stream.encode(resampled):
                        sink.mux(packet)
            for resampled in resampler.resample(None):
                for packet in stream.encode(resampled):
                    sink.mux(packet)
            for packet in stream.encode(None):
                sink.mux(packet)
    except (av.FFmpegError, ValueError) as exc:
        raise AudioConversionError(f"语音转换失败 / converting the voice note failed: {exc}") from exc
    return out.getvalue()
