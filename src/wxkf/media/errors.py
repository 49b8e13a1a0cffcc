"""Media errors, in the shape of `wxkf.wecom.errors` (Chinese first, English beside it).

MediaError
├── MediaStoreError        the store cannot be used (unreachable, refused); the message says which setting
│   └── MediaNotFound      no bytes under that key
└── MediaRejected          the media cannot be used at all (too large, expired); retrying cannot help
"""

from __future__ import annotations


class MediaError(Exception):
    """A media operation failed; the message says why and what to do."""


class MediaStoreError(MediaError):
    pass


class MediaNotFound(MediaStoreError):
    def __init__(self, key: str, store: str) -> None:
        super().__init__(f"媒体存储中没有 {key[:12]}… / no media under that key in the {store} store")
        self.key = key


class MediaRejected(MediaError):
    """`reason` is a short machine-readable word (too_large, expired, invalid_media_id …)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
