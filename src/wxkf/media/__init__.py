"""Outbound media: bytes kept by content, uploaded to WeCom once and reused within their 3-day life.

    from wxkf.media import MediaUploads

    uploads = MediaUploads(pool, lambda: pipeline.client, clock=clock, margin=timedelta(hours=12))
    digest = await uploads.save(png_bytes, "cover.png")        # content-addressed, idempotent
    media_id = await uploads.media_id(digest, "image")         # cached, or uploaded now

A media_id from `media/upload` is valid for three days (wecom-api §8). An upload is reused until
`margin` before that, then the same bytes are uploaded again, so a message never leaves with a
media_id that expires on its way. Push uses it for mini-program thumbs; images and files sent by
the bot use the same cache.
"""

from wxkf.media.uploads import MEDIA_LIFETIME, MediaError, MediaNotFound, MediaUploads, StoredMedia

__all__ = ["MEDIA_LIFETIME", "MediaError", "MediaNotFound", "MediaUploads", "StoredMedia"]
