"""Media: bytes kept by content hash in a store behind a seam (`storage`), what customers send
downloaded with media/get (`inbound`), and uploads reused while their media_id lives (`uploads`)."""
